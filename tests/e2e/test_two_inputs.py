"""A two-input, two-output functional model (.keras) through the whole pipeline on the real node, driven by the
chart-installed operator: examples/two-inputs.yaml -> optimization Job (int8, calibrated on both inputs mapped by
name, gated on the `digit` output) -> BuildKit build Job -> serving Pod -> predictions through the Service with
both inputs over the Open Inference Protocol v2.

The model and its data are made by modelship.optimize.examples.two_inputs and put on the node's `models` volume
the way `make demo` puts its examples there (modelship_dev/node_demo.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelship_dev import node_demo as demo
from tests.e2e.conftest import REPO_ROOT, RealNode, prepare_pipeline

pytestmark = pytest.mark.e2e

NAME = "two-inputs"
FILES = ("model.keras", "calibration.npz", "eval.npz")


@dataclass(frozen=True)
class Deployed:
    md: dict[str, Any]
    models: Path
    report: dict[str, Any]


def _prepare_models(real_node: RealNode) -> Path:
    """Train the example (once per node cache) into the `models` volume's two-inputs/ directory."""
    models = demo.DEMO / "models" / NAME
    models.mkdir(parents=True, exist_ok=True)
    models.chmod(0o777)
    if not all((models / f).exists() for f in FILES):
        from modelship.optimize import examples

        ex = examples.two_inputs(real_node.workdir / "example", claim="c")
        for f in FILES:
            shutil.copy(ex.root / "c" / "two-inputs" / f, models / f)
    return models


def _artifact_volume() -> None:
    """A PV pre-bound to the claim the operator makes for this ModelDeployment (the node has no provisioner)."""
    pv_name = f"demo-artifacts-{NAME}"
    old = demo.kjson("get", "pv", pv_name) or {}
    if (old.get("status") or {}).get("phase") in ("Released", "Failed"):
        demo.kc("delete", "pv", pv_name, "--wait=true")
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": demo.NS, "name": f"{NAME}-artifacts"},
            "hostPath": {"path": str(demo.DEMO / "artifacts"), "type": "Directory"},
        },
    }  # fmt: skip
    demo.kc("apply", "-f", "-", input_text=json.dumps(pv))


def _manifest() -> dict[str, Any]:
    """examples/two-inputs.yaml with the registry rewritten to the run's own (as the demo does)."""
    md: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "two-inputs.yaml").read_text())
    repo = md["spec"]["build"]["repository"]
    md["spec"]["build"]["repository"] = f"{demo.ENV['REGISTRY']}/" + repo.split("/", 1)[1]
    md["spec"]["build"]["baseImage"] = f"{demo.ENV['REGISTRY']}/modelship/serving:0.1.0"
    return md


@pytest.fixture(scope="module")
def deployed(real_node: RealNode) -> Iterator[Deployed]:
    prepare_pipeline(real_node)
    demo.prepare_storage()  # the `models` PV and claim (and a clean artifacts directory)
    models = _prepare_models(real_node)
    _artifact_volume()
    op = demo.ChartOperator(log_name="operator-test_two_inputs.log")
    demo.kc("delete", "modeldeployment", NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    demo.forget_revisions()  # before the operator starts: a running operator keeps the cache it read in memory
    op.start()
    try:
        demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(_manifest()))
        md = demo.watch(900, name=NAME)
        opt = md["status"]["optimization"]
        report = json.loads((demo.DEMO / "artifacts" / opt["revision"] / "report.json").read_text())
        yield Deployed(md, models, report)
    finally:
        op.stop()
        demo.kc("delete", "modeldeployment", NAME, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False)


def _sha(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def test_optimized_with_int8_behind_the_gate(deployed: Deployed) -> None:
    st = deployed.md["status"]
    opt = st["optimization"]
    assert st["source"]["digest"] == _sha(deployed.models / "model.keras")
    assert opt["gate"] == "Passed" and opt["decision"] == "Optimized"
    s = deployed.report["summary"]
    assert s["candidate"] == "int8" and s["metricName"] == "accuracy"
    artifact = demo.DEMO / "artifacts" / opt["revision"] / opt["artifact"]
    assert opt["artifactDigest"] == _sha(artifact) == s["artifactDigest"]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(artifact))
    assert "int8" in {np.dtype(d["dtype"]).name for d in it.get_tensor_details()}
    sig = it.get_signature_list()["serving_default"]
    assert sorted(sig["inputs"]) == ["first", "second"] and sorted(sig["outputs"]) == ["digit", "parity"]


def test_predict_through_the_service_with_both_inputs(deployed: Deployed) -> None:
    """The Service (kube-proxy) answers v2 infer requests carrying both inputs; the accuracy of the `digit`
    output over the whole evaluation set equals the figure the gate passed."""
    ip, port = demo.service_address(NAME)
    base = f"http://{ip}:{port}/v2/models/{NAME}"
    meta = demo.http_json(base)
    assert sorted(i["name"] for i in meta["inputs"]) == ["first", "second"]
    ev = np.load(deployed.models / "eval.npz")
    body = {
        "inputs": [
            {"name": name, "shape": list(ev[array].shape), "datatype": "FP32",
             "data": ev[array].astype(np.float32).ravel().tolist()}
            for name, array in (("second", "bottom"), ("first", "top"))  # in neither the Keras nor the TFLite order
        ]
    }  # fmt: skip
    out = {o["name"]: o for o in demo.http_json(f"{base}/infer", body)["outputs"]}
    assert set(out) == {"digit", "parity"}
    digit = np.asarray(out["digit"]["data"], dtype=np.float32).reshape(len(ev["y"]), 10)
    accuracy = float(np.mean(digit.argmax(axis=1) == ev["y"]))
    s = deployed.report["summary"]
    print(f"two-inputs through the Service: accuracy {accuracy:.4f} on {len(ev['y'])} digits "
          f"(gate: baseline {s['baseline']:.4f}, int8 {s['value']:.4f})")  # fmt: skip
    assert accuracy == pytest.approx(s["value"], abs=1e-9)
    assert s["baseline"] - accuracy <= 0.02
