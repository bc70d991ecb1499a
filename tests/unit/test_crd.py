"""The committed CRD is exactly what the API models generate, and it has what kubectl and the API server need."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from modelship.api.crd import _check_descriptions, crd, crd_yaml, openapi_schema
from tests.support.schema import CRD_PATH


def test_committed_crd_matches_generated() -> None:
    assert CRD_PATH.read_text() == crd_yaml(), (
        "crds/ is stale: run `modelship crd > crds/modelship.io_modeldeployments.yaml`"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for name, prop in (node.get("properties") or {}).items():
            out += _walk(prop, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
    return out


def test_schema_is_structural_and_described() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        if path.count(".") >= 2 and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def test_subresources_columns_and_names() -> None:
    spec = crd()["spec"]
    version = spec["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.serving.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Phase", "Revision", "Size", "Acc-Drop", "Replicas", "Age", "Reason", "Message"]
    wide = {c["name"]: c for c in version["additionalPrinterColumns"] if c.get("priority", 0) > 0}
    assert sorted(wide) == ["Message", "Reason"]  # `-o wide` only: the default view stays narrow
    assert wide["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert wide["Message"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    assert spec["names"]["shortNames"] == ["md"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_cel_rules_present_where_cross_field_rules_live() -> None:
    text = crd_yaml()
    for fragment in ("self.maxReplicas >= self.minReplicas", "self.gpu.count >= 1", "data.calibration"):
        assert fragment in text


def test_missing_description_is_caught() -> None:
    class Undocumented(BaseModel):
        field_without_docs: int = 1

    schema = openapi_schema(Undocumented)
    with pytest.raises(ValueError, match=r"fieldWithoutDocs|field_without_docs"):
        _check_descriptions(schema, "spec")


def test_every_default_satisfies_its_own_schema_and_rules() -> None:
    """The API server rejects a CRD whose defaults break their own CEL rules (it does not default inside them)."""
    from tests.support.schema import _cel_errors, _typed

    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checked = 0
    for path, node in _walk(root):
        if "default" in node:
            errors = _cel_errors(node, _typed(node, node["default"]), path)
            assert errors == [], errors
            checked += 1
    assert checked > 30
