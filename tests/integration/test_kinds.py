"""The kinds table (modelship.resources.kinds) against a real API server's discovery: every row exists with the
table's kind, scope and plural, serves the verbs the operator is granted on it, and every subresource the rules
name exists. A typo in the table would otherwise only show as a rule that silently matches nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship import PLURAL
from modelship.rbac import operator_rules
from modelship.resources.kinds import KINDS, Kind
from tests.integration.cluster import (
    GATEWAY_API_GROUP,
    apply_manifest,
    close_client,
    install_gateway_api_crds,
    service_account_client,
)
from tests.support.specs import valid_doc


def _discovery(api_client: client.ApiClient, row: Kind) -> list[dict[str, Any]]:
    path = f"/apis/{row.group}/{row.version}" if row.group else f"/api/{row.version}"
    data = api_client.call_api(*api_client.param_serialize("GET", path, auth_settings=["BearerToken"]))
    data.read()
    assert data.status == 200, f"{path}: HTTP {data.status}"
    return list(json.loads(data.data)["resources"])


@pytest.mark.parametrize("row", KINDS, ids=lambda k: k.kind)
def test_row_matches_the_api_server(api_client: client.ApiClient, row: Kind) -> None:
    if row.group == GATEWAY_API_GROUP:  # a CRD kind: the Gateway API's standard-channel CRDs, installed
        install_gateway_api_crds(api_client)
    resources = {r["name"]: r for r in _discovery(api_client, row)}
    assert row.plural in resources, f"{row.api_version} serves no {row.plural}"
    served = resources[row.plural]
    assert served["kind"] == row.kind
    assert served["namespaced"] is row.namespaced
    assert set(row.verbs) <= set(served["verbs"]), f"{row.kind}: the server does not serve {row.verbs}"
    for sub, grants in row.subresources.items():
        name = f"{row.plural}/{sub}"
        if sub == "finalizers":
            # not a served endpoint: an authorization-only subresource that owner-reference admission checks
            assert all(g.verb.value == "update" for g in grants)
            continue
        assert name in resources, f"{row.api_version} has no subresource {name}"
        assert {g.verb.value for g in grants} <= set(resources[name]["verbs"]), name


def _probe_client(api_client: client.ApiClient, namespace: str, name: str, rules: list[dict[str, Any]]) -> Any:
    rbac = "rbac.authorization.k8s.io/v1"
    for manifest in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {"apiVersion": rbac, "kind": "Role", "metadata": {"name": name}, "rules": rules},
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ):
        apply_manifest(api_client, manifest, namespace=namespace, force=True)
    return service_account_client(api_client, namespace, name)


def test_blocking_owner_references_need_the_finalizers_verb(api_client: client.ApiClient, namespace: str) -> None:
    """The test control plane enforces owner-reference permissions as OpenShift does: a child whose owner
    reference blocks deletion is refused without update on modeldeployments/finalizers, and accepted with the
    operator's rules. (Without the plugin this test fails: the first create would succeed.)"""
    md = apply_manifest(api_client, valid_doc("owner"), namespace=namespace)
    owner = {"apiVersion": md["apiVersion"], "kind": md["kind"], "name": "owner", "uid": md["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip

    def service(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "ownerReferences": [owner]}, "spec": {"ports": [{"port": 80}]}}

    full = operator_rules(cluster_scope=False)
    without = [r for r in full if r["resources"] != [f"{PLURAL}/finalizers"]]
    assert len(without) == len(full) - 1
    probes = {}
    try:
        probes["without"] = _probe_client(api_client, namespace, "without-finalizers", without)
        probes["full"] = _probe_client(api_client, namespace, "operator-rules", full)
        core = client.CoreV1Api(probes["without"])
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_service(namespace, service("refused"))
        assert refused.value.status == 403 and "blockOwnerDeletion" in (refused.value.body or ""), refused.value
        created = client.CoreV1Api(probes["full"]).create_namespaced_service(namespace, service("accepted"))
        assert created.metadata.owner_references[0].block_owner_deletion is True
    finally:
        for api in probes.values():
            close_client(api)
