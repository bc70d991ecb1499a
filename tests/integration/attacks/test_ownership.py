"""Item 1: a ModelDeployment named like an object it did not create never takes it over. The operator writes only
objects the ModelDeployment controls; anything else is left untouched and the ModelDeployment is Stalled,
reason NameConflict, naming the object, with an Event; deleting the ModelDeployment deletes only what it made."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.integration.attacks.snapshot import Key, assert_only_children_changed, snapshot
from tests.integration.attacks.specs import GROUP, PLURAL, VERSION, md_doc
from tests.integration.attacks.tenant import Tenant, md_uid
from tests.integration.cluster import apply_manifest, uid_token, wait_for

APP = {"app": "users-own"}
MD_LABEL = "modelship.io/modeldeployment"
COMPONENT = "app.kubernetes.io/component"


def foreign(kind: str, name: str) -> dict[str, Any]:
    """An object the tenant (or the platform) made itself, under the name a ModelDeployment would use."""
    meta = {"name": name, "labels": APP}
    pod = {"metadata": {"labels": APP}, "spec": {"containers": [{"name": "app", "image": "users/app:1"}]}}
    return {
        "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                       "spec": {"replicas": 1, "selector": {"matchLabels": APP}, "template": pod}},
        "Service": {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                    "spec": {"selector": APP, "ports": [{"name": "http", "port": 80}]}},
        "HorizontalPodAutoscaler": {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "users-own"},
                     "minReplicas": 1, "maxReplicas": 2}},
        "PodDisruptionBudget": {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
                                "spec": {"minAvailable": 1, "selector": {"matchLabels": APP}}},
        "NetworkPolicy": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
                          "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},  # deny all ingress
        "PersistentVolumeClaim": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                                  "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "no-such-class",
                                           "resources": {"requests": {"storage": "1Gi"}}}},
    }[kind]  # fmt: skip


def every_child(name: str) -> dict[str, Any]:
    """A ModelDeployment whose plan has every applied kind: Deployment, Service, HPA, PDB, NetworkPolicy, claim."""
    return md_doc(name, replicas=2, autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 3},
                  networkPolicy={"enabled": True})  # fmt: skip


def assert_stalled_untouched(tenant: Tenant, api_client: client.ApiClient, name: str, kind: str, obj_name: str,
                             before: dict[Key, Any], holder: str = "") -> dict[str, Any]:  # fmt: skip
    md = tenant.wait_stalled(name, "NameConflict", timeout=90)
    message = next(c for c in md["status"]["conditions"] if c["type"] == "Stalled")["message"]
    assert f"{kind}/{obj_name}" in message and holder in message, message
    assert md["status"]["lastFailure"]["reason"] == "NameConflict"
    after = snapshot(api_client, tenant.namespace)
    changes = assert_only_children_changed(before, after, md["metadata"]["uid"])
    assert not [k for k in changes.added if k.kind == "Deployment"], "nothing is deployed"
    warning = tenant.wait_event(name, "ReadyNameConflict")
    assert warning.type == "Warning" and f"{kind}/{obj_name}" in warning.message
    return md


@pytest.mark.parametrize(
    "kind",
    ["Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
     "PersistentVolumeClaim"],
)  # fmt: skip
def test_a_users_object_under_the_name_is_never_taken_over(
    tenant: Tenant, api_client: client.ApiClient, kind: str
) -> None:
    """The issue's reproduction (`kubectl create service clusterip victim`, then a ModelDeployment `victim`),
    for every kind the operator applies; then deleting the ModelDeployment leaves the user's object alone."""
    name = "victim"
    obj_name = f"{name}-artifacts" if kind == "PersistentVolumeClaim" else name
    mine = tenant.apply(foreign(kind, obj_name))
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(every_child(name))
    md = assert_stalled_untouched(tenant, api_client, name, kind, obj_name, before, holder="no owner")
    tenant.delete_md(name)
    after = snapshot(api_client, tenant.namespace)
    key = Key(mine["apiVersion"], kind, obj_name)
    assert after[key].uid == mine["metadata"]["uid"], "deleting the ModelDeployment deleted the user's object"
    # and wrote nothing to it (the control plane may: the volume binder binds the user's claim to the volume
    # create_md pre-bound to that name, at its next resync)
    assert_only_children_changed(before, after, md["metadata"]["uid"])


def test_default_deny_is_not_narrowed(tenant: Tenant, api_client: client.ApiClient) -> None:
    """The platform's deny-all NetworkPolicy `default-deny`; a ModelDeployment named `default-deny` with a
    NetworkPolicy would have rewritten it to admit traffic to its port."""
    policy = foreign("NetworkPolicy", "default-deny")
    apply_manifest(api_client, policy, namespace=tenant.namespace, field_manager="platform")
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(every_child("default-deny"))
    assert_stalled_untouched(tenant, api_client, "default-deny", "NetworkPolicy", "default-deny", before)
    live = client.NetworkingV1Api(api_client).read_namespaced_network_policy("default-deny", tenant.namespace)
    assert live.spec.ingress is None and live.metadata.owner_references is None


def test_an_object_controlled_by_another_modeldeployment_is_not_taken(
    tenant: Tenant, api_client: client.ApiClient
) -> None:
    """A Service whose controller is another ModelDeployment (uid) is that one's, whatever its name says."""
    tenant.create_md(md_doc("decoy"))
    decoy_uid = md_uid(tenant, "decoy")
    tenant.wait_ready("decoy")
    service = foreign("Service", "twin")
    ref = {"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "name": "decoy", "uid": decoy_uid,
           "controller": True}  # fmt: skip
    service["metadata"]["ownerReferences"] = [ref]
    tenant.apply(service)
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(md_doc("twin"))
    md = tenant.wait_stalled("twin", "NameConflict", timeout=90)
    message = next(c for c in md["status"]["conditions"] if c["type"] == "Stalled")["message"]
    assert f"Service/twin (controlled by ModelDeployment decoy (uid {decoy_uid}))" in message
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"], decoy_uid)


def test_a_namesake_recreated_after_delete_does_not_adopt_the_old_children(
    tenant: Tenant, api_client: client.ApiClient
) -> None:
    """Deleted with --cascade=orphan, the ModelDeployment's children stay (their owner references removed); a new
    ModelDeployment of the same name has another uid and does not take them."""
    tenant.create_md(md_doc("reborn"))
    first_uid = md_uid(tenant, "reborn")
    tenant.wait_ready("reborn")
    client.CustomObjectsApi(tenant.api).delete_namespaced_custom_object(
        "modelship.io", "v1alpha1", tenant.namespace, "modeldeployments", "reborn", propagation_policy="Orphan"
    )
    apps = client.AppsV1Api(api_client)
    wait_for(lambda: not apps.read_namespaced_deployment("reborn", tenant.namespace).metadata.owner_references,
             timeout=60, description="the garbage collector orphans the Deployment")  # fmt: skip
    wait_for(lambda: not _exists(lambda: tenant.md("reborn")), timeout=60, description="reborn deleted")
    before = snapshot(api_client, tenant.namespace)
    tenant.apply(md_doc("reborn"))
    md = tenant.wait_stalled("reborn", "NameConflict", timeout=90)
    assert md["metadata"]["uid"] != first_uid
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])


def test_a_namesake_gets_its_own_jobs_beside_its_predecessors(tenant: Tenant, api_client: client.ApiClient) -> None:
    """A ModelDeployment deleted with --cascade=orphan while its optimization Job exists, then applied again under its
    name with the same revision: the stage Jobs' names carry the ModelDeployment's uid, so the new one creates its
    own Job (not a NameConflict on its predecessor's, nor a Job recreated under a name the Job controller may still
    hold expectations for: kubernetes/kubernetes#131917) and goes on to Ready, never touching the old Job."""
    name = "again"
    doc = md_doc(name)
    stuck = copy.deepcopy(doc)  # its Job's pod is never scheduled: the Job runs on, its pod holds no claim
    stuck["spec"]["optimization"]["job"]["nodeSelector"] = {"modelship.io/test": "no-such-node"}
    tenant.create_md(stuck)
    batch, custom = client.BatchV1Api(api_client), client.CustomObjectsApi(tenant.api)
    selector = f"{MD_LABEL}={name},{COMPONENT}=optimizer"
    (old,) = wait_for(lambda: batch.list_namespaced_job(tenant.namespace, label_selector=selector).items,
                      timeout=60, description="the first optimization Job")  # fmt: skip
    first, rev = tenant.md(name), old.metadata.labels["modelship.io/revision"]
    assert old.metadata.name == f"{name}-opt-{rev}-{uid_token(first)}"
    custom.delete_namespaced_custom_object(GROUP, VERSION, tenant.namespace, PLURAL, name, propagation_policy="Orphan")
    wait_for(lambda: not _exists(lambda: tenant.md(name)), timeout=60, description=f"{name} deleted")

    def orphaned() -> Any:
        job = batch.read_namespaced_job(old.metadata.name, tenant.namespace)
        return job if not job.metadata.owner_references else None

    old = wait_for(orphaned, timeout=60, description="the garbage collector orphans the Job")
    # the orphaned claim would be a NameConflict of its own (test above): the tenant deletes it, not the Job
    core, claim = client.CoreV1Api(tenant.api), f"{name}-artifacts"
    core.delete_namespaced_persistent_volume_claim(claim, tenant.namespace)
    wait_for(lambda: not _exists(lambda: core.read_namespaced_persistent_volume_claim(claim, tenant.namespace)),
             timeout=60, description="the orphaned claim deleted")  # fmt: skip
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(doc)

    def settled() -> dict[str, Any] | None:  # Ready, or Stalled (a name clash): fail at once, not at a deadline
        md = tenant.md(name)
        done = [c for c in md.get("status", {}).get("conditions", []) if c["type"] in ("Ready", "Stalled")]
        return md if any(c["status"] == "True" for c in done) else None

    md = wait_for(settled, timeout=120, description=f"{name} Ready or Stalled")
    assert next(c for c in md["status"]["conditions"] if c["type"] == "Ready")["status"] == "True", md["status"]
    assert md["metadata"]["uid"] != first["metadata"]["uid"] and md["status"]["revision"] == rev
    (new,) = [j for j in batch.list_namespaced_job(tenant.namespace, label_selector=selector).items
              if j.metadata.uid != old.metadata.uid]  # fmt: skip
    assert new.metadata.name == f"{name}-opt-{rev}-{uid_token(md)}" != old.metadata.name
    assert [(r.uid, r.controller) for r in new.metadata.owner_references] == [(md["metadata"]["uid"], True)]
    assert md["status"]["optimization"]["job"] == new.metadata.name
    untouched = batch.read_namespaced_job(old.metadata.name, tenant.namespace)
    assert untouched.metadata.uid == old.metadata.uid
    assert untouched.metadata.resource_version == old.metadata.resource_version
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])


def _exists(read: Callable[[], Any]) -> bool:
    """Whether ``read()`` finds its object (a 404 says it is gone)."""
    try:
        read()
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
