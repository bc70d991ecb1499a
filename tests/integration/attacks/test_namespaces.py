"""Item 9: namespaces the platform excludes. Even an operator with cluster-wide rights (a ClusterRole) refuses
to act in them: a ModelDeployment there is Stalled, reason NamespaceExcluded, and nothing is created."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.attacks.snapshot import Changes, assert_only_children_changed, snapshot
from tests.integration.attacks.specs import md_doc
from tests.integration.attacks.tenant import Tenant
from tests.integration.cluster import (
    OPERATOR_NAMESPACE,
    apply_manifest,
    condition,
    temporary_namespace,
    wait_for,
)
from tests.integration.operator_harness import OperatorProcess, running_operator


@pytest.fixture(scope="module")
def excluded(api_client: client.ApiClient) -> Iterator[str]:
    """A tenant namespace the platform lists in operator.excludeNamespaces."""
    with temporary_namespace(api_client, "excluded") as ns:
        yield ns


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient, excluded: str) -> Iterator[OperatorProcess]:
    env = {"MODELSHIP_EXCLUDE_NAMESPACES": f"kube-system,kube-public,kube-node-lease,{excluded}"}
    with running_operator(api_client, env) as op:  # cluster-wide: the ClusterRole lets it act anywhere
        yield op


def test_a_tenant_in_an_excluded_namespace_gets_nothing(
    api_client: client.ApiClient, excluded: str, operator: OperatorProcess
) -> None:
    tenant = Tenant(api_client, excluded)
    try:
        before = snapshot(api_client, excluded)
        tenant.create_md(md_doc("anything"))
        md = tenant.wait_stalled("anything", "NamespaceExcluded")
        assert f"namespace {excluded} is excluded" in condition(md, "Stalled")["message"]
        changes = assert_only_children_changed(before, snapshot(api_client, excluded), md["metadata"]["uid"])
        assert {k.kind for k in changes.added} <= {"ModelDeployment"}, changes.describe()
    finally:
        tenant.close()


@pytest.mark.parametrize("namespace", [OPERATOR_NAMESPACE, "kube-system"])
def test_the_operators_own_namespace_and_kube_system_are_refused(
    api_client: client.ApiClient, operator: OperatorProcess, namespace: str
) -> None:
    """Even the admin's ModelDeployment: the operator's namespace (its caches) and the system namespaces are
    never where it creates Jobs with a ServiceAccount."""
    name = f"intruder-{namespace.split('-')[0]}"
    doc = md_doc(name)
    before = snapshot(api_client, namespace)
    apply_manifest(api_client, doc, namespace=namespace)
    custom = client.CustomObjectsApi(api_client)
    try:

        def stalled() -> bool:
            md = custom.get_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", name)
            c = condition(md, "Stalled")
            return bool(c and c["status"] == "True" and c["reason"] == "NamespaceExcluded")

        wait_for(stalled, timeout=60, description=f"{name} Stalled NamespaceExcluded")
        # system namespaces change on their own (leader-election leases): what counts is that nothing was created
        changes = Changes.between(before, snapshot(api_client, namespace))
        assert not [k for k in changes.added if k.kind not in ("ModelDeployment",)], changes.describe()
    finally:
        custom.delete_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", name)
