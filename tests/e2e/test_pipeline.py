"""The whole pipeline on the real node, driven by the real operator (python -m modelship operator):
examples/linear-regression.yaml -> optimize Job (a real Pod) -> BuildKit build Job (a real Pod) pushing
to the run's own registry -> 3 serving Pods running exactly the pushed digest -> predict y = 2x - 1.

Same steps as `make demo` (hack/demo/demo.py, imported here)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import REPO_ROOT, RealNode

pytestmark = pytest.mark.e2e


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modelship_demo", REPO_ROOT / "hack" / "demo" / "demo.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def deployed(real_node: RealNode) -> Iterator[tuple[ModuleType, dict[str, Any], Path]]:
    if subprocess.run(["docker", "image", "inspect", "modelship/buildkit:0.1.0"], capture_output=True).returncode:
        pytest.skip("docker image modelship/buildkit:0.1.0 missing: run hack/node/buildkit-image")
    demo = _load_demo()
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
    op = demo.Operator()
    op.start()
    try:
        demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
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
