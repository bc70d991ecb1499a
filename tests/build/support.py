"""Helpers shared by the build tests: optimization output directories (fake or real) and manifests."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from modelship.api import ModelDeployment
from tests.support.specs import valid_doc

UID = "6f1f2c7e-1111-4222-8333-944445555666"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_output(
    out: Path,
    content: bytes = b"TFL3 not really a model",
    *,
    artifact_name: str = "model.tflite",
    digest: str | None = None,
    revision: str | None = "r0123456789",
    **summary: Any,
) -> Path:
    """An optimizer output directory: the artifact + report.json whose summary names it (and its digest).
    Summary fields can be overridden by keyword (snake_case; None drops the field)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / artifact_name).write_bytes(content)
    s: dict[str, Any] = {
        "ok": True,
        "sourceDigest": "sha256:" + "cd" * 32,
        "sourceBytes": 600000,
        "artifact": artifact_name,
        "artifactDigest": digest if digest is not None else sha256(content),
        "metricName": "accuracy",
        "baseline": 0.98,
        "value": 0.975,
        "drop": 0.005,
        "gate": "Passed",
        "decision": "Optimized",
        "candidate": "int8",
        "originalBytes": 100000,
        "optimizedBytes": len(content),
        "compressionRatio": 3.5,
        "message": 'accuracy 0.975 vs baseline 0.98: drop 0.005 <= 0.01 "ok" $HOME \\ done',
    }
    for key, value in summary.items():  # snake_case overrides; None removes the field
        s[to_camel(key)] = value
    s = {k: v for k, v in s.items() if v is not None}
    report: dict[str, Any] = {"summary": s, "modelFormat": "keras"}
    if revision:
        report["revision"] = revision
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return out


def make_md(build: dict[str, Any] | None = None, name: str = "digits", namespace: str = "ml") -> ModelDeployment:
    doc = copy.deepcopy(valid_doc(name))
    doc["metadata"].update(namespace=namespace, uid=UID, generation=2)
    if build is not None:
        doc["spec"]["build"] = build
    return ModelDeployment.from_body(doc)
