"""Trust boundaries on the real node (issue 14, items 5 and 6), with the chart-installed operator and the tenant's
namespace at Pod Security "restricted": the API server enforces it; a model that would run its author's code when
loaded is refused by the real optimizer in its Pod before any of it runs; a base image with ONBUILD triggers is
refused by the real build Job before BuildKit builds; nothing is pushed for either."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelship_dev import node_demo as demo
from tests.e2e.conftest import RealNode, prepare_pipeline

pytestmark = pytest.mark.e2e

MARK = "pwned-by-the-model"
"""What the hostile model writes into /artifacts (the artifact claim, a hostPath this test can see) when loaded."""


@pytest.fixture(scope="module")
def operator(real_node: RealNode) -> Iterator[ModuleType]:
    prepare_pipeline(real_node)
    demo.prepare_storage()
    op = demo.ChartOperator(log_name="operator-test_trust.log")
    op.start()
    try:
        yield demo
    finally:
        op.stop()


def _artifact_volume(name: str) -> None:
    pv_name = f"demo-artifacts-{name}"
    old = demo.kjson("get", "pv", pv_name) or {}
    if (old.get("status") or {}).get("phase") in ("Released", "Failed"):
        demo.kc("delete", "pv", pv_name, "--wait=true")
    demo.kc("apply", "-f", "-", input_text=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": demo.NS, "name": f"{name}-artifacts"},
            "hostPath": {"path": str(demo.DEMO / "artifacts"), "type": "Directory"},
        },
    }))  # fmt: skip


def _md(name: str, model: str, **build: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"pvc://models/{model}", "format": "h5"},
            "optimization": {"enabled": False},
            "build": {"repository": f"{demo.ENV['REGISTRY']}/attacks/{name}", "insecureRegistry": True,
                      "baseImage": f"{demo.ENV['REGISTRY']}/modelship/serving:0.1.0", **build},
            "serving": {"replicas": 1},
        },
    }  # fmt: skip


def _stalled(name: str, timeout: float = 300) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        md = demo.kjson("get", "modeldeployment", name, "-n", demo.NS) or {}
        conds = {c["type"]: c for c in (md.get("status") or {}).get("conditions", [])}
        stalled = conds.get("Stalled")
        return md if stalled and stalled["status"] == "True" else None

    deadline = time.monotonic() + timeout
    while (md := probe()) is None:
        last = demo.kjson("get", "modeldeployment", name, "-n", demo.NS)
        assert time.monotonic() < deadline, (f"{name} never Stalled: {json.dumps(last.get('status'))}\n"
                                             f"{demo.diagnose((name,))}")  # fmt: skip
        time.sleep(1)
    return md


def _nothing_pushed(repository: str) -> bool:
    host, path = repository.split("/", 1)
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{path}/tags/list", timeout=10) as resp:
            return not json.load(resp).get("tags")
    except urllib.error.HTTPError as exc:
        return exc.code == 404


def test_the_tenant_namespace_enforces_restricted(operator: ModuleType) -> None:
    labels = demo.kjson("get", "namespace", demo.NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-probe", "namespace": demo.NS},
           "spec": {"containers": [{"name": "c", "image": "modelship/serving:0.1.0",
                                    "securityContext": {"runAsUser": 0}}]}}  # fmt: skip
    proc = subprocess.run([*demo.KUBECTL, "apply", "--dry-run=server", "-f", "-"], input=json.dumps(pod),
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0 and 'violates PodSecurity "restricted' in proc.stderr, proc.stderr


def test_a_lambda_layer_that_writes_a_file_never_runs(operator: ModuleType, tmp_path: Path) -> None:
    """The real optimizer in its Pod (restricted) refuses the model before loading it: the file its Lambda layer
    would write into the artifact claim never appears; the ModelDeployment is Stalled with the reason."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    evil = demo.DEMO / "models" / "evil"
    evil.mkdir(exist_ok=True)
    evil.chmod(0o777)
    mark = demo.DEMO / "artifacts" / MARK
    # the Lambda runs when tf-keras rebuilds the model: it writes into the claim, mounted at /artifacts in the Pod
    # (only where /artifacts exists: in the Pod, not on this host where the model is built)
    hostile = eval(
        "lambda t: (__import__('pathlib').Path('/artifacts').is_dir() and "
        f"__import__('pathlib').Path('/artifacts/{MARK}').write_text('x'), t)[1]"
    )
    inp = keras.Input((1,))
    model = keras.Model(inp, keras.layers.Lambda(hostile)(keras.layers.Dense(1)(inp)))
    model.save(evil / "model.h5")
    mark.unlink(missing_ok=True)
    name = "evil-lambda"
    _artifact_volume(name)
    demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(_md(name, "evil/model.h5")))
    try:
        md = _stalled(name)
        failure = md["status"]["lastFailure"]
        assert failure["reason"] == "OptimizationFailed", failure
        assert "Lambda layer (Python bytecode)" in failure["message"] and "allowCode" in failure["message"]
        assert not mark.exists(), "the model's code ran"
        assert _nothing_pushed(md["spec"]["build"]["repository"])
        opt_pod = demo.kjson("get", "pods", "-n", demo.NS, "-l", f"job-name={md['status']['optimization']['job']}")
        assert opt_pod["items"] and opt_pod["items"][0]["status"]["phase"] == "Failed"  # it really ran, and refused
    finally:
        demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False)


def _push_onbuild_base(tmp_path: Path) -> str:
    """The serving runtime with ONBUILD triggers added, built by the Docker engine, pushed to the run's registry."""
    ref = f"{demo.ENV['REGISTRY']}/attacks/onbuild-base:1"
    (tmp_path / "Dockerfile").write_text("FROM modelship/serving:0.1.0\nONBUILD RUN touch /tmp/pwned\n")
    subprocess.run(["docker", "build", "-q", "-t", "modelship-test/onbuild-base:1", str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    ctr = demo.ENV["CTR"].split()
    save = subprocess.Popen(["docker", "save", "modelship-test/onbuild-base:1"], stdout=subprocess.PIPE)
    subprocess.run([*ctr, "images", "import", "-"], stdin=save.stdout, check=True, capture_output=True)
    save.wait()
    subprocess.run([*ctr, "images", "tag", "--force", "docker.io/modelship-test/onbuild-base:1", ref], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*ctr, "images", "push", "--plain-http", ref], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", "modelship-test/onbuild-base:1"], capture_output=True)
    return ref


def test_a_base_image_with_onbuild_triggers_is_refused_before_the_build(operator: ModuleType, tmp_path: Path) -> None:
    base = _push_onbuild_base(tmp_path)
    name = "evil-onbuild"
    _artifact_volume(name)
    demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(_md(name, f"{demo.NAME}/model.h5",
                                                                       baseImage=base)))  # fmt: skip
    try:
        md = _stalled(name)
        failure = md["status"]["lastFailure"]
        assert failure["stage"] == "Build" and "ONBUILD triggers (RUN touch /tmp/pwned)" in failure["message"], failure
        assert _nothing_pushed(md["spec"]["build"]["repository"])
        # the build pod ran in the operator's namespace, the export handed the artifact over (the receive step
        # accepted it), and the context step refused the base image
        pods = demo.kjson("get", "pods", "-n", demo.ChartOperator.NAMESPACE, "-l",
                          f"job-name={md['status']['image']['job']}")["items"]  # fmt: skip
        (pod,) = pods
        steps = {s["name"]: s["state"] for s in pod["status"]["initContainerStatuses"]}
        assert steps["receive"]["terminated"]["exitCode"] == 0
        assert steps["context"]["terminated"]["exitCode"] == 1
    finally:
        demo.kc("delete", "modeldeployment", name, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False)
