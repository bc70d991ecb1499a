"""Model sources on the real node: the seed's example (examples/linear-regression.yaml) with its model and data in
a bucket on a real S3 server (versitygw, listening on the node's bridge address so Pods reach it), and from an OCI
artifact in the node's registry served without a build (each serving Pod pulls its own copy in an init container).
The operator is the chart's Pod; the optimizer, the build and the serving run in real Pods."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelship import fetch
from modelship.sources import s3
from modelship.sources.access import Access
from modelship_dev import node_demo as demo
from tests.e2e.conftest import RealNode, prepare_pipeline
from tests.support import servers

pytestmark = pytest.mark.e2e

NODE_IP = demo.ENV["REGISTRY"].split(":")[0]
S3_NAME = "linear-s3"
OCI_NAME = "linear-oci"


def artifact_pv(name: str, path: Path) -> dict[str, Any]:
    """A PV pre-bound to the operator's artifact claim of ``name`` (no dynamic provisioner on the node)."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"e2e-artifacts-{name}"},
        "spec": {
            "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": demo.NS, "name": f"{name}-artifacts"},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }  # fmt: skip


def secret(name: str, server: servers.S3Server) -> dict[str, Any]:
    keys = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": demo.NS}, "stringData": keys}


def s3_manifest(server: servers.S3Server) -> dict[str, Any]:
    """The seed's example with its model and evaluation data in buckets; format left to inference; each source
    with its own Secret."""
    md = copy.deepcopy(demo.manifest())
    md["metadata"]["name"] = S3_NAME
    md["spec"]["build"]["repository"] = md["spec"]["build"]["repository"].rsplit("/", 1)[0] + "/" + S3_NAME
    creds = {"secretRef": {"name": "s3-models"}, "endpoint": server.endpoint}
    md["spec"]["model"] = {"uri": "s3://models/linear-regression/model.h5", "credentials": creds}
    md["spec"]["optimization"]["data"]["evaluation"].update(
        uri="s3://datasets/linear-regression/eval.npz",
        credentials={"secretRef": {"name": "s3-datasets"}, "endpoint": server.endpoint},
    )
    md["spec"]["serving"]["replicas"] = 1
    return md  # type: ignore[no-any-return]


def oci_manifest(reference: str) -> dict[str, Any]:
    """The seed's example with its model from an OCI artifact, served without a build: the optimizer pushes the
    optimized artifact and two serving Pods each pull their own copy."""
    md = copy.deepcopy(demo.manifest())
    md["metadata"]["name"] = OCI_NAME
    registry = demo.ENV["REGISTRY"]
    md["spec"]["model"] = {"uri": reference, "credentials": {"endpoint": f"http://{registry}"}}
    md["spec"]["build"] = {"enabled": False, "repository": f"{registry}/artifacts/{OCI_NAME}",
                           "insecureRegistry": True}  # fmt: skip
    md["spec"]["serving"]["replicas"] = 2
    return md  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sourced(real_node: RealNode) -> Iterator[tuple[ModuleType, dict[str, dict[str, Any]], Path, str]]:
    prepare_pipeline(real_node)
    models = demo.prepare_storage()
    artifacts = demo.DEMO / "artifacts"
    pvs = [artifact_pv(n, artifacts) for n in (S3_NAME, OCI_NAME)]
    for pv in pvs:  # a Released PV (kept from an earlier run) never binds again
        demo.kc("delete", "pv", pv["metadata"]["name"], "--ignore-not-found", "--wait=true")
    demo.kc("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": pvs}))
    with servers.versitygw(real_node.workdir, host=NODE_IP) as server:
        admin = Access(endpoint=server.endpoint, credentials_dir=server.credentials_dir(real_node.workdir / "creds"))
        client = s3.Client(admin)
        for bucket in ("models", "datasets"):
            client.create_bucket(bucket)
        client.put("models", "linear-regression/model.h5", (models / "model.h5").read_bytes())
        client.put("datasets", "linear-regression/eval.npz", (models / "eval.npz").read_bytes())
        pushed = subprocess.run(
            [servers.PYTHON, "-m", "modelship", "push", str(models / "model.h5"),
             f"oci://{demo.ENV['REGISTRY']}/models/linear-regression:v1", "--format", "h5", "--plain-http"],
            env=servers.python_env(), capture_output=True, text=True, timeout=120, check=True,
        ).stdout.strip()  # fmt: skip
        for name in ("s3-models", "s3-datasets"):
            demo.kc("apply", "-f", "-", input_text=json.dumps(secret(name, server)))
        op = demo.ChartOperator(log_name="operator-test_sources_e2e.log")
        op.start()
        try:
            for name in (S3_NAME, OCI_NAME):
                demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=true")
            demo.forget_revisions()
            demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(s3_manifest(server)))
            demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(oci_manifest(pushed)))
            mds = demo.watch_many(900, (S3_NAME, OCI_NAME))
            yield demo, mds, models, pushed
        finally:
            op.stop()
            for name in (S3_NAME, OCI_NAME):
                demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=false",
                        check=False)  # fmt: skip


def _predicts_the_line(ip: str, name: str, port: int = 8080) -> None:
    ys = demo.predict(ip, [0.0, 1.0, 2.0, 3.0], name=name, port=port)
    assert all(abs(y - (2 * x - 1)) < 0.1 for x, y in zip([0.0, 1.0, 2.0, 3.0], ys, strict=True)), ys


def test_seed_example_from_a_bucket(sourced: tuple[ModuleType, dict[str, dict[str, Any]], Path, str]) -> None:
    demo, mds, models, _ = sourced
    st = mds[S3_NAME]["status"]
    assert st["source"]["digest"] == fetch.sha256_path(models / "model.h5")
    assert st["optimization"]["gate"] == "Passed"
    assert st["image"]["reference"].split("@")[0].endswith(f"/{S3_NAME}")
    # each source's Secret is mounted as files into the optimizer only, in a directory of its own
    job = demo.kjson("get", "job", st["optimization"]["job"], "-n", demo.NS)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "envFrom" not in c and not any("valueFrom" in e for e in c.get("env", []))
    secrets = {v["secret"]["secretName"]: v["name"] for v in pod["volumes"] if "secret" in v}
    assert set(secrets) == {"s3-models", "s3-datasets"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[secrets["s3-models"]] != mounts[secrets["s3-datasets"]]
    ip, port = demo.service_address(S3_NAME)
    _predicts_the_line(ip, S3_NAME, port)


def test_seed_example_from_an_oci_artifact_served_without_a_build(
    sourced: tuple[ModuleType, dict[str, dict[str, Any]], Path, str],
) -> None:
    demo, mds, models, _ = sourced
    st = mds[OCI_NAME]["status"]
    assert st["source"]["digest"] == fetch.sha256_path(models / "model.h5")  # the artifact's content, verified
    served = st["servingArtifact"]
    assert served.startswith(f"oci://{demo.ENV['REGISTRY']}/artifacts/{OCI_NAME}@sha256:")
    assert st["optimization"]["artifactRef"] == served and "servingImage" not in st
    dep = demo.kjson("get", "deployment", OCI_NAME, "-n", demo.NS)
    pod_spec = dep["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod_spec["volumes"])  # no shared RWO claim
    (init,) = pod_spec["initContainers"]
    assert init["args"][:2] == ["pull", served]
    assert "--model" in pod_spec["containers"][0]["args"]
    assert pod_spec["containers"][0]["args"][pod_spec["containers"][0]["args"].index("--model") + 1] == (
        "/models/model.tflite"
    )
    pods = demo.serving_pods(OCI_NAME)
    assert len(pods) == 2
    for p in pods:  # every replica pulled its own copy and answers
        (status,) = p["status"]["initContainerStatuses"]
        assert status["state"]["terminated"]["exitCode"] == 0
        _predicts_the_line(p["status"]["podIP"], OCI_NAME)
    ip, port = demo.service_address(OCI_NAME)
    _predicts_the_line(ip, OCI_NAME, port)
