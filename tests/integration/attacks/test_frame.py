"""The frame holds: the tenant has exactly a namespace editor's rights plus modeldeployments (not their status,
nothing outside its namespace), and the snapshot sees every change a tenant can make."""

from __future__ import annotations

from kubernetes import client

from modelship import FIELD_MANAGER, GROUP, HANDOVER_FIELD_MANAGER, PLURAL
from tests.integration.attacks.snapshot import Changes, Key, Snapshot, children_only, snapshot
from tests.integration.attacks.tenant import Tenant, can_i
from tests.integration.cluster import OPERATOR_NAMESPACE, wait_for


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


def test_the_snapshot_tells_the_control_planes_writes_from_anyone_elses(
    tenant: Tenant, api_client: client.ApiClient
) -> None:
    """The control plane writes a user's objects after they are made (a claim's binding, a Deployment's status):
    a change under a control-plane controller's field manager passes, even one that takes a field the user set.
    One under the operator's field managers, a deletion, or stripped managedFields fail, the writer named."""
    core = client.CoreV1Api(tenant.api)
    names = ("control-plane", "operator", "handover", "held", "stripped")
    for name in names:
        meta = client.V1ObjectMeta(name=name, finalizers=["example.com/hold"] if name == "held" else None)
        core.create_namespaced_config_map(tenant.namespace, client.V1ConfigMap(metadata=meta, data={"a": "1"}))
    before = snapshot(api_client, tenant.namespace)
    writes = {"control-plane": "kube-controller-manager", "operator": FIELD_MANAGER, "handover": HANDOVER_FIELD_MANAGER}
    for name, manager in writes.items():
        core.patch_namespaced_config_map(name, tenant.namespace, {"data": {"a": "2"}}, field_manager=manager)
    core.delete_namespaced_config_map("held", tenant.namespace)
    core.patch_namespaced_config_map("stripped", tenant.namespace, {"metadata": {"managedFields": [{}]}},
                                     field_manager="kube-controller-manager")  # fmt: skip
    try:
        after = snapshot(api_client, tenant.namespace)
    finally:
        core.patch_namespaced_config_map("held", tenant.namespace, {"metadata": {"finalizers": None}})
    changes = Changes.between(before, after)
    assert {k.name for k in changes.modified} == set(names)
    bad = children_only(before, after, [])
    verdict = changes.describe(bad)
    assert {k.name for k in bad} == set(names) - {"control-plane"}, verdict
    assert f"~ ConfigMap/operator (v1): by {FIELD_MANAGER} (Update)\n" in verdict, verdict
    assert f"~ ConfigMap/handover (v1): by {HANDOVER_FIELD_MANAGER} (Update)\n" in verdict, verdict
    assert "~ ConfigMap/held (v1): " in verdict and "; marked for deletion\n" in verdict, verdict
    assert "~ ConfigMap/stripped (v1): " in verdict and verdict.endswith("; managedFields stripped"), verdict


def test_a_scale_write_is_never_taken_for_the_control_planes_own(tenant: Tenant, api_client: client.ApiClient) -> None:
    """The HPA controller writes its target's /scale under kube-controller-manager's name for whoever made the HPA:
    an operator's HPA aimed at a user's Deployment would scale it. Such a write fails the check, the writer named,
    while the deployment controller's own writes of the same Deployment (its status, its ReplicaSet) pass."""
    apps = client.AppsV1Api(tenant.api)
    labels = {"app": "scaled"}
    container = client.V1Container(name="c", image="example.invalid/none:1")
    template = client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels),
                                        spec=client.V1PodSpec(containers=[container]))  # fmt: skip
    spec = client.V1DeploymentSpec(replicas=0, selector=client.V1LabelSelector(match_labels=labels), template=template)
    apps.create_namespaced_deployment(tenant.namespace, client.V1Deployment(metadata=client.V1ObjectMeta(name="scaled"),
                                                                            spec=spec))  # fmt: skip
    wait_for(lambda: (apps.read_namespaced_deployment_status("scaled", tenant.namespace).status.observed_generation
                      or 0) >= 1, timeout=60, description="the deployment controller saw the Deployment")  # fmt: skip
    before = snapshot(api_client, tenant.namespace)
    apps.patch_namespaced_deployment_scale("scaled", tenant.namespace, {"spec": {"replicas": 1}},
                                           field_manager="kube-controller-manager")  # fmt: skip
    key = Key("apps/v1", "Deployment", "scaled")

    def scaled() -> Snapshot | None:
        now = snapshot(api_client, tenant.namespace)
        return now if key in Changes.between(before, now).modified else None

    after = wait_for(scaled, timeout=60, description="the scaled Deployment changed")
    bad = children_only(before, after, [])
    verdict = Changes.between(before, after).describe(bad)
    assert key in bad, verdict
    assert "~ Deployment/scaled (apps/v1): by " in verdict, verdict
    assert "kube-controller-manager (Update /scale)" in verdict, verdict
