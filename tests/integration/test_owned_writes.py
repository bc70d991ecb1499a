"""Objects the operator creates by POST (so that a name someone else took is a 409, never a takeover) behave as
server-side applied ones afterwards: their fields are the apply's, so a field the spec drops is removed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from modelship import FIELD_MANAGER
from tests.integration.cluster import wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import Cluster, md_doc


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client) as op:
        yield op


def test_a_field_the_spec_drops_is_removed_from_an_object_created_by_post(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client, namespace)
    doc = md_doc(service={"annotations": {"example.com/keep": "1", "example.com/drop": "2"}})
    k.apply(doc)
    k.wait_condition("Ready", "True", timeout=120)
    svc = k.core.read_namespaced_service("digits", k.ns)
    assert svc.metadata.annotations["example.com/drop"] == "2"
    managers = {(m.manager, m.operation) for m in svc.metadata.managed_fields}
    assert (FIELD_MANAGER, "Apply") in managers and (FIELD_MANAGER, "Update") not in managers
    doc["spec"]["serving"]["service"]["annotations"] = {"example.com/keep": "1"}
    k.apply(doc)

    def dropped() -> bool:
        annotations = k.core.read_namespaced_service("digits", k.ns).metadata.annotations or {}
        return "example.com/drop" not in annotations and annotations.get("example.com/keep") == "1"

    wait_for(dropped, timeout=60, description="the dropped annotation removed from the Service")
