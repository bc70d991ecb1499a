"""The invalid-spec table (tests/support/specs.py) against the real API server: every case is refused by the
generated CRD's schema and CEL rules, with a message naming the field. tests/unit/test_api.py runs the same table
through pydantic (the Python twin of each rule) and through the schema with cel-python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.cluster import create_namespace, delete_namespace
from tests.support.specs import INVALID, InvalidCase, invalid_doc, valid_doc

GROUP, VERSION, PLURAL = "modelship.io", "v1alpha1", "modeldeployments"


@pytest.fixture(scope="module")
def ns(api_client: client.ApiClient) -> Iterator[str]:
    name = create_namespace(api_client, "invalid-specs")
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


def create(api_client: client.ApiClient, ns: str, doc: dict[str, object]) -> None:
    """A dry-run create with strict field validation, as kubectl sends it (an unknown field is an error, not
    silently pruned)."""
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, doc, dry_run="All", field_validation="Strict"
    )


def test_the_valid_spec_is_accepted(api_client: client.ApiClient, ns: str) -> None:
    create(api_client, ns, valid_doc())


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_is_refused_by_the_api_server(api_client: client.ApiClient, ns: str, case: InvalidCase) -> None:
    with pytest.raises(ApiException) as info:
        create(api_client, ns, invalid_doc(case))
    assert info.value.status in (400, 422), info.value.body  # 400: strict decoding (an unknown field)
    assert case.field.lower() in (info.value.body or "").lower(), info.value.body


def test_multi_input_data_and_metric_output_are_accepted(api_client: client.ApiClient, ns: str) -> None:
    doc = valid_doc("two-inputs")
    data = doc["spec"]["optimization"]["data"]
    for role in ("calibration", "evaluation"):
        data[role]["inputs"] = {"first": "x1", "second": "x2"}
    doc["spec"]["optimization"]["metric"] = {"type": "accuracy", "output": "score"}
    created = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, doc, dry_run="All", field_validation="Strict"
    )
    stored = created["spec"]["optimization"]
    assert stored["data"]["evaluation"]["inputs"] == {"first": "x1", "second": "x2"}
    assert "features" not in stored["data"]["evaluation"]  # no server-side default beside inputs
    assert stored["metric"]["output"] == "score"
