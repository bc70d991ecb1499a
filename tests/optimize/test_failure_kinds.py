"""Permanent vs temporary optimizer failures, as the optimization Job reports them: a failure of the input (model
missing, digest mismatch) exits 1, which the Job's podFailurePolicy turns into a failed Job at once; a failure of
the environment (the model's server unreachable) exits 75 (EX_TEMPFAIL) and is retried."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from modelship.api import ModelDeployment
from modelship.api.report import EXIT_CODES, FailureKind
from modelship.config import OperatorConfig
from modelship.resources.optimize_job import optimize_job
from tests.support.specs import valid_doc

from .conftest import read_summary, run_cli

OPT = json.dumps({"steps": [{"type": "quantize", "quantize": {"mode": "dynamic"}}],
                  "data": {"evaluation": {"uri": "pvc://d/eval.npz", "format": "npz"}}})  # fmt: skip


def test_missing_model_file_is_permanent(tmp_path: Path) -> None:
    term = tmp_path / "term.log"
    proc = run_cli("--model", str(tmp_path / "nowhere" / "model.h5"), "--optimization-json", OPT,
                   "--out", str(tmp_path / "o"), "--termination-log", str(term))  # fmt: skip
    assert proc.returncode == EXIT_CODES[FailureKind.PERMANENT] == 1, proc.stderr
    summary = read_summary(term)
    assert summary["ok"] is False and summary["failure"] == "Permanent" and "does not exist" in summary["error"]


def test_unreachable_model_server_is_temporary(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    term = tmp_path / "term.log"
    proc = run_cli("--model", f"http://127.0.0.1:{port}/models/model.h5", "--format", "h5", "--optimization-json",
                   OPT, "--out", str(tmp_path / "o"), "--termination-log", str(term))  # fmt: skip
    assert proc.returncode == EXIT_CODES[FailureKind.TEMPORARY] == 75, proc.stderr
    summary = read_summary(term)
    assert summary["ok"] is False and summary["failure"] == "Temporary" and "unreachable" in summary["error"]


def test_the_optimization_job_fails_at_once_on_the_permanent_exit_code() -> None:
    doc = valid_doc()
    doc["metadata"]["namespace"] = "ml"
    job = optimize_job(ModelDeployment.from_body(doc), "r1", OperatorConfig())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "optimizer", "operator": "In", "values": [EXIT_CODES[FailureKind.PERMANENT]]},
    }
    assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "optimizer"
    assert EXIT_CODES[FailureKind.TEMPORARY] not in rules[0]["onExitCodes"]["values"]
