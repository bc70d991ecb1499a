"""The frame holds: the tenant has exactly a namespace editor's rights plus modeldeployments (not their status,
nothing outside its namespace), and the snapshot sees every change a tenant can make."""

from __future__ import annotations

from kubernetes import client

from modelship import GROUP, PLURAL
from tests.integration.attacks.snapshot import Changes, Key, children_only, snapshot
from tests.integration.attacks.tenant import Tenant, can_i
from tests.integration.cluster import OPERATOR_NAMESPACE


def test_the_tenant_is_a_namespace_editor_and_no_more(tenant: Tenant) -> None:
    ns, api = tenant.namespace, tenant.api
    for resource, group in (("services", ""), ("configmaps", ""), ("pods", ""), ("jobs", "batch"),
                            ("deployments", "apps"), ("networkpolicies", "networking.k8s.io"),
                            ("poddisruptionbudgets", "policy"), ("horizontalpodautoscalers", "autoscaling"),
                            ("persistentvolumeclaims", ""), (PLURAL, GROUP)):  # fmt: skip
        assert can_i(api, ns, "create", resource, group), resource
        assert can_i(api, ns, "patch", resource, group), resource
    assert can_i(api, ns, "create", "pods", subresource="exec")  # an editor can exec into the stage pods
    # the operator's words are not the tenant's to write
    assert not can_i(api, ns, "patch", PLURAL, GROUP, subresource="status")
    assert not can_i(api, ns, "update", PLURAL, GROUP, subresource="finalizers")
    assert not can_i(api, ns, "update", "pods", subresource="status")
    assert not can_i(api, ns, "patch", "jobs", "batch", subresource="status")
    assert not can_i(api, ns, "create", "roles", "rbac.authorization.k8s.io")
    # nothing outside its namespace: not the operator's, not kube-system
    for other in (OPERATOR_NAMESPACE, "kube-system", "default"):
        assert not can_i(api, other, "get", "configmaps"), other
        assert not can_i(api, other, "create", PLURAL, GROUP), other


def test_the_snapshot_sees_what_a_tenant_changes(tenant: Tenant, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(tenant.api)
    core.create_namespaced_config_map(
        tenant.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before"), data={"a": "1"})
    )
    before = snapshot(api_client, tenant.namespace)
    core.patch_namespaced_config_map("before", tenant.namespace, {"data": {"a": "2"}})
    core.create_namespaced_config_map(tenant.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="added")))
    after = snapshot(api_client, tenant.namespace)
    changes = Changes.between(before, after)
    assert Key("v1", "ConfigMap", "added") in changes.added
    assert Key("v1", "ConfigMap", "before") in changes.modified
    assert children_only(before, after, ["no-such-owner"]) == {Key("v1", "ConfigMap", "added"),
                                                               Key("v1", "ConfigMap", "before")}  # fmt: skip
    # every namespaced kind is listed, the ServiceAccount and RoleBindings the frame made included
    assert Key("v1", "ServiceAccount", "tenant") in after
    assert Key("rbac.authorization.k8s.io/v1", "RoleBinding", "tenant-edit") in after
