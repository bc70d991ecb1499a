"""The API models: wire format, defaults, and the invalid-spec table through pydantic and the CRD (schema + CEL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from modelship.api import ModelDeployment, Summary
from modelship.api.errors import describe_validation_error
from tests.support import schema
from tests.support.specs import INVALID, InvalidCase, invalid_doc, valid_doc

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_valid_doc_parses_with_defaults() -> None:
    md = ModelDeployment.from_body(valid_doc())
    assert md.spec.serving.port == 8080
    assert md.spec.optimization.gate.on_fail.value == "Block"
    assert md.spec.build.platforms[0].value == "linux/amd64"
    assert schema.validate(valid_doc()) == []


def test_wire_is_camel_case_and_round_trips() -> None:
    md = ModelDeployment.from_body(valid_doc())
    wire = md.spec.wire()
    assert "maxDrop" in wire["optimization"]["gate"]
    assert "targetCPUUtilizationPercentage" in wire["serving"]["autoscaling"]
    again = ModelDeployment.from_body({**valid_doc(), "spec": wire})
    assert again.spec == md.spec


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        ModelDeployment.from_body(doc)
        assert schema.validate(doc) == [], path.name


def test_there_are_enough_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"linear-regression", "digits-int8", "gpu-classifier", "arm64-edge"} <= names


def test_invalid_table_is_large() -> None:
    assert len(INVALID) >= 25
    assert len({c.id for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_rejected_by_pydantic(case: InvalidCase) -> None:
    with pytest.raises(ValidationError) as info:
        ModelDeployment.from_body(invalid_doc(case))
    message = describe_validation_error(info.value)
    assert case.field.lower() in message.lower(), message


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_rejected_by_crd_schema_and_cel(case: InvalidCase) -> None:
    errors = schema.validate(invalid_doc(case))
    assert errors, f"{case.id} passed the CRD schema and its CEL rules"
    assert any(case.field.lower() in e.lower() for e in errors), errors


def test_summary_round_trip_and_limit() -> None:
    s = Summary(ok=True, baseline=0.97, value=0.965, drop=0.005, message="x" * 1000, compression_ratio=9.1)
    line = s.to_line()
    assert "\n" not in line
    assert Summary.from_line(line) == s
    with pytest.raises(ValueError, match="no summary"):
        Summary.from_line("")
    with pytest.raises(ValueError, match="not valid"):
        Summary.from_line("Traceback (most recent call last):")


def test_status_condition_finds_by_type_and_is_not_a_schema_field() -> None:
    from modelship.api.status import ConditionType, ModelDeploymentStatus

    at = "2026-01-01T00:00:00Z"
    status = ModelDeploymentStatus.model_validate(
        {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": at},
                {"type": "Capacity", "status": "False", "reason": "ScalingUp", "lastTransitionTime": at},
            ]
        }
    )
    capacity = status.condition(ConditionType.CAPACITY)
    assert capacity is not None and capacity.reason == "ScalingUp"
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert status.condition(ConditionType.DEPLOYED) is None
    assert "condition" not in ModelDeploymentStatus.model_json_schema()["properties"]
