"""A tenant's hand edit of the Service the ModelDeployment owns, on the real API server: ``kubectl patch`` (a JSON
merge patch, field manager ``kubectl-patch``) replaces its ports with one of its own, named http. Server-side apply
keeps another manager's list entry beside the operator's, so the operator's next apply made two ports named http,
which the API server refuses (422 Duplicate value): the ModelDeployment stayed Stalled for good while clients of
port 8080 failed. Now the operator replaces the Service's spec with its own and applies again: the Service is the
operator's as rendered, with its cluster IP, and the ModelDeployment Ready."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_operator import Cluster, md_doc, operator  # noqa: F401 (the operator fixture)


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


def ports(tenant: Cluster) -> list[tuple[Any, ...]]:
    svc = tenant.core.read_namespaced_service("digits", tenant.ns)
    return sorted((p.name, p.port, str(p.target_port)) for p in svc.spec.ports)


def test_a_service_edited_into_an_invalid_apply_is_the_operators_again(
    tenant: Cluster,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    tenant.apply(md_doc())
    tenant.wait_condition("Ready", "True", timeout=120)
    rendered = ports(tenant)
    cluster_ip = tenant.core.read_namespaced_service("digits", tenant.ns).spec.cluster_ip
    assert [name for name, _, _ in rendered].count("http") == 1, rendered
    http = next(p for p in rendered if p[0] == "http")
    edited = {"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": http[2]}]}}
    # what kubectl patch --type=merge sends, under its field manager
    tenant.core.patch_namespaced_service("digits", tenant.ns, edited, field_manager="kubectl-patch",
                                         _content_type="application/merge-patch+json")  # fmt: skip
    assert ports(tenant) != rendered
    wait_for(
        lambda: ports(tenant) == rendered, timeout=90, description="the Service's ports as the operator renders them"
    )
    svc = tenant.core.read_namespaced_service("digits", tenant.ns)
    assert svc.spec.cluster_ip == cluster_ip  # the same Service, not one made anew
    s = tenant.wait_condition("Ready", "True", timeout=60)
    assert condition(s, "Stalled")["status"] == "False", condition(s, "Stalled")
    assert "was edited into one the operator's apply makes invalid" in operator.log()
