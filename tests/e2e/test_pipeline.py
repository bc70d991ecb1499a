"""The whole pipeline on the real node, driven by the operator installed with its Helm chart (a real Pod):
examples/linear-regression.yaml -> optimize Job (a real Pod) -> BuildKit build Job (a real Pod) pushing
to the run's own registry -> 3 serving Pods running exactly the pushed digest -> predict y = 2x - 1.

Same steps as `make demo` (modelship_dev/node_demo.py, imported here)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelship_dev import node_demo as demo
from tests.e2e.conftest import REPO_ROOT, RealNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployed(real_node: RealNode) -> Iterator[tuple[ModuleType, dict[str, Any], Path]]:
    if subprocess.run(["docker", "image", "inspect", "modelship/buildkit:0.1.0"], capture_output=True).returncode:
        pytest.skip("docker image modelship/buildkit:0.1.0 missing: run hack/node/buildkit-image")
    demo.prepare_node()  # reuses the running node; adds the registry and pushes the base image
    demo.kc("apply", "-f", str(REPO_ROOT / "crds"))
    real_node.wait_for(
        "CRD established",
        lambda: "True" in demo.kc("get", "crd", "modeldeployments.modelship.io",
                                  "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                  check=False),
        timeout=60,
    )  # fmt: skip
    models = demo.prepare_storage()
    op = demo.ChartOperator()  # helm install of charts/modelship: the operator as a real Pod
    op.start()
    try:
        demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
        demo.forget_revisions()  # a node reused from `make demo` remembers the revision: this tier wants it cold
        demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest()))
        md = demo.watch(600)
        yield demo, md, models
    finally:
        op.stop()
        demo.kc(
            "delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False
        )


def _sha(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def test_optimization_ran_in_a_pod_and_report_matches(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, models = deployed
    st = md["status"]
    opt = st["optimization"]
    assert st["source"]["digest"] == _sha(models / "model.h5")
    artifact = demo.DEMO / "artifacts" / opt["revision"] / opt["artifact"]
    assert artifact.exists(), f"no artifact at {artifact}"
    assert opt["artifactDigest"] == _sha(artifact)
    report = json.loads((artifact.parent / "report.json").read_text())
    assert report["summary"]["artifactDigest"] == opt["artifactDigest"]
    assert opt["gate"] == "Passed"
    pod = demo.kjson("get", "pods", "-n", demo.NS, "-l", f"job-name={opt['job']}")["items"][0]
    cs = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded" and cs["containerID"].startswith("containerd://")


def test_the_operator_is_the_charts_pod(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """helm install of charts/modelship on the real node: the operator Pod (its image imported into containerd,
    the chart's ServiceAccount and RBAC) is what created the stage Jobs."""
    demo, md, _ = deployed
    ns, name = demo.ChartOperator.NAMESPACE, demo.ChartOperator.RELEASE
    pods = demo.kjson("get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={name}")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == name and pod["spec"]["nodeName"] == "modelship-node-0"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    logs = demo.kc("logs", "-n", ns, pod["metadata"]["name"], "--tail=-1")
    assert f"{demo.NS}/{demo.NAME}: created Job {md['status']['optimization']['job']}" in logs


def test_image_built_in_a_pod_pushed_and_served_by_digest(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, _ = deployed
    img = md["status"]["image"]
    digest = img["digest"]
    build = demo.kjson("get", "pods", "-n", demo.NS, "-l", f"job-name={img['job']}")["items"]
    assert any(p["status"]["phase"] == "Succeeded" for p in build)
    # the registry of this run really has that manifest
    repo = img["reference"].split("@")[0]
    host, path = repo.split("/", 1)
    req = demo.urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{digest}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
            "application/vnd.docker.distribution.manifest.v2+json"
        },
        method="HEAD",
    )
    with demo.urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == digest
    pods = demo.serving_pods()
    assert len(pods) == 3
    for p in pods:
        assert p["spec"]["containers"][0]["image"].endswith("@" + digest)
        assert [c["imageID"].split("@")[-1] for c in p["status"]["containerStatuses"]] == [digest]


def test_three_replicas_answer_y_equals_2x_minus_1(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, _, _ = deployed
    pods = demo.serving_pods()
    assert len(pods) == 3
    for p in pods:
        ys = demo.predict(p["status"]["podIP"], [0.0, 1.0, 2.0, 3.0])
        assert ys == pytest.approx([-1.0, 1.0, 3.0, 5.0], abs=0.05)


def test_scale_to_one_and_back_to_three(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, _ = deployed
    selector = md["status"]["selector"]

    def settled(n: int) -> bool:
        pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", selector)["items"]
        return len(pods) == n and len(demo.serving_pods()) == n

    for n in (1, 3):
        patch = json.dumps({"spec": {"serving": {"replicas": n}}})
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=merge", "-p", patch)
        deadline = time.monotonic() + 180
        while not settled(n):
            assert time.monotonic() < deadline, f"never exactly {n} Ready serving pods"
            time.sleep(1)
        for p in demo.serving_pods():
            assert demo.predict(p["status"]["podIP"], [4.0]) == pytest.approx([7.0], abs=0.05)


def test_predict_through_the_service(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """The Service's ClusterIP answers from the host: kube-proxy (built from the Go proxy) routes it to the pods."""
    demo, md, _ = deployed
    ip, port = demo.service_address()
    svc = demo.kjson("get", "service", "-n", demo.NS, "-l", f"modelship.io/modeldeployment={demo.NAME}")["items"][0]
    assert md["status"]["url"].startswith(f"http://{svc['metadata']['name']}.{demo.NS}.svc.cluster.local:{port}/")
    for _ in range(12):  # 3 endpoints: every one of several connections answers right
        assert demo.predict(ip, [0.0, 10.0], port=port) == pytest.approx([-1.0, 19.0], abs=0.1)


class _LoadLoop(threading.Thread):
    """Predicts through the Service, one new connection per request, until stopped; counts every outcome."""

    def __init__(self, demo: ModuleType, ip: str, port: int) -> None:
        super().__init__(daemon=True)
        self.demo, self.ip, self.port = demo, ip, port
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ys = self.demo.predict(self.ip, [4.0], port=self.port)
                if ys != pytest.approx([7.0], abs=0.1):
                    self.errors.append(f"wrong answer {ys}")
                else:
                    self.ok += 1
            except Exception as exc:  # every failure counts, whatever its kind
                self.errors.append(f"{type(exc).__name__}: {exc}")


def test_new_revision_rolls_out_with_no_failed_request(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """A spec change (dynamic -> float16 quantization) is a new revision: optimized and built again while the
    old pods serve, then rolled out; a load loop through the Service throughout sees zero failed requests."""
    demo, _, _ = deployed
    before = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
    old_rev, old_digest = before["status"]["revision"], before["status"]["image"]["digest"]
    ip, port = demo.service_address()
    loops = [_LoadLoop(demo, ip, port) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        patch = [{"op": "replace", "path": "/spec/optimization/steps/0/quantize/mode", "value": "float16"}]
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(patch))

        def rolled_out() -> dict[str, Any] | None:
            md = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
            st = md.get("status") or {}
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            if st.get("observedGeneration") != md["metadata"]["generation"] or conds.get("Ready") != "True":
                return None
            new_digest = (st.get("image") or {}).get("digest")
            if st.get("revision") == old_rev or new_digest == old_digest:
                return None
            pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", st["selector"])["items"]
            running = [[c["imageID"].split("@")[-1] for c in p["status"].get("containerStatuses", [])] for p in pods]
            return md if len(pods) == 3 and all(r == [new_digest] for r in running) else None

        deadline = time.monotonic() + 600
        while (md := rolled_out()) is None:
            assert time.monotonic() < deadline, "the new revision never rolled out"
            assert all(loop.is_alive() for loop in loops)
            time.sleep(1)
        time.sleep(3)  # a few more requests against the new pods only
    finally:
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.join(30)
    assert md["status"]["optimization"]["candidate"] != before["status"]["optimization"]["candidate"] or (
        md["status"]["optimization"]["artifactDigest"] != before["status"]["optimization"]["artifactDigest"]
    )
    errors = [e for loop in loops for e in loop.errors]
    served = sum(loop.ok for loop in loops)
    print(f"rollout: {served} requests answered through the Service, {len(errors)} failed")
    assert errors == [], errors[:10]
    assert served > 50


def test_digits_example_pruned_int8_gated_and_served_over_v2(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """examples/digits-int8.yaml as `make demo` applies it: prune 80% with fine-tuning + full int8 in the optimizer
    Pod, accuracy gate, BuildKit build, served over the Open Inference Protocol v2 through its Service."""
    demo, _, _ = deployed
    demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--wait=true")  # free the 2 CPUs
    demo.prepare_storage(digits=True)
    demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest(demo.DIGITS)))
    try:
        md = demo.watch(600, demo.DIGITS)
        opt = md["status"]["optimization"]
        assert (opt["decision"], opt["gate"], opt["candidate"]) == ("Optimized", "Passed", "prune+int8")
        assert opt["baseline"] - opt["value"] <= 0.01 + 1e-9  # the gate's maxDrop
        report = json.loads((demo.DEMO / "artifacts" / opt["revision"] / "report.json").read_text())
        assert report["summary"]["artifactDigest"] == opt["artifactDigest"]
        artifact = demo.DEMO / "artifacts" / opt["revision"] / opt["artifact"]
        assert artifact.stat().st_size == opt["optimizedBytes"] < opt["originalBytes"] / 3
        digest = md["status"]["image"]["digest"]
        pods = demo.serving_pods(demo.DIGITS)
        assert len(pods) == 2  # autoscaling.minReplicas: the HPA raised the Deployment before Ready
        assert all([c["imageID"].split("@")[-1] for c in p["status"]["containerStatuses"]] == [digest] for p in pods)
        ip, port = demo.service_address(demo.DIGITS)
        accuracy, n = demo.digits_accuracy(ip, port)
        assert n == 120 and accuracy >= opt["value"] - 0.05  # held-out digits through the Service, int8 model
    finally:
        demo.kc("delete", "modeldeployment", demo.DIGITS, "-n", demo.NS, "--ignore-not-found", "--wait=false")
