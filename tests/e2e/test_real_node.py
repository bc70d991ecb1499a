"""Pods really run: the optimizer in a Pod on the real node, then the serving image with its output, 3
replicas, each answering a predict request over the pod network from the host."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship_dev.node_demo import predict
from tests.e2e.conftest import RealNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ns(real_node: RealNode) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    real_node.kubectl("create", "namespace", name)
    real_node.wait_for("default SA", lambda: real_node.kubectl("get", "sa", "default", "-n", name, check=False), 60)
    yield name
    real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _host_volume(path: Path) -> dict[str, Any]:
    return {"name": "data", "hostPath": {"path": str(path), "type": "Directory"}}


@pytest.fixture(scope="module")
def optimized(real_node: RealNode, ns: str) -> dict[str, Any]:
    """`modelship optimize --example linear` in a Pod of the optimizer image; its files on a hostPath."""
    out = real_node.workdir / "opt"
    out.mkdir()
    out.chmod(0o777)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "optimize"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "optimize",
                    "image": "modelship/optimizer:0.1.0",
                    "imagePullPolicy": "Never",
                    "args": ["optimize", "--example", "linear", "--out", "/out"],
                    "volumeMounts": [{"name": "data", "mountPath": "/out"}],
                }
            ],
            "volumes": [_host_volume(out)],
        },
    }
    real_node.apply(pod, ns)

    def finished() -> dict[str, Any] | None:
        p = real_node.get("pod", "optimize", ns)
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    p = real_node.wait_for("optimizer pod to finish", finished, timeout=300)
    logs = real_node.kubectl("logs", "-n", ns, "optimize", check=False)
    assert p["status"]["phase"] == "Succeeded", f"optimizer pod failed:\n{logs}"
    return {"dir": out, "pod": p, "logs": logs}


def test_node_is_a_real_kubelet(real_node: RealNode) -> None:
    node = json.loads(real_node.kubectl("get", "node", real_node.node_name, "-o", "json"))
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == ["10.213.0.1"]


def test_optimizer_runs_in_a_pod(optimized: dict[str, Any]) -> None:
    out: Path = optimized["dir"]
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert summary["ok"] and summary["gate"] == "Passed"
    model = out / summary["artifact"]
    assert "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest() == summary["artifactDigest"]
    # the container really ran on the node: the kubelet reports a real container id and exit code 0
    state = optimized["pod"]["status"]["containerStatuses"][0]
    assert state["containerID"].startswith("containerd://")
    assert state["state"]["terminated"]["exitCode"] == 0


def test_serving_three_replicas_answer(real_node: RealNode, ns: str, optimized: dict[str, Any]) -> None:
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "linear"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "linear"}},
            "template": {
                "metadata": {"labels": {"app": "linear"}},
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "image": "modelship/serving:0.1.0",
                            "imagePullPolicy": "Never",
                            "args": ["serve", "--model", "/models/model.tflite", "--name", "linear", "--workers", "1"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": 8080},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [{"name": "data", "mountPath": "/models", "readOnly": True}],
                        }
                    ],
                    "volumes": [_host_volume(optimized["dir"])],
                },
            },
        },
    }
    real_node.apply(deploy, ns)

    def ready_ips() -> list[str] | None:
        pods = json.loads(real_node.kubectl("get", "pods", "-n", ns, "-l", "app=linear", "-o", "json"))["items"]
        ips = [
            p["status"]["podIP"]
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and not p["metadata"].get("deletionTimestamp")
        ]
        return ips if len(ips) == 3 else None

    ips = real_node.wait_for("3 Ready serving pods", ready_ips, timeout=180)
    assert len(set(ips)) == 3 and all(ip.startswith("10.213.0.") for ip in ips)
    for ip in ips:
        ys = predict(ip, [0.0, 1.0, 2.0, 3.0], name="linear")
        assert ys == pytest.approx([-1.0, 1.0, 3.0, 5.0], abs=0.1), (ip, ys)
