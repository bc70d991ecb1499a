"""Item 3: the revision cache is not the tenant's to write. It lives in the operator's namespace, keyed by tenant
namespace and revision; the old cache in the tenant's namespace (modelship-revisions) is never read."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship.api import Summary
from tests.integration.attacks.snapshot import assert_only_children_changed, snapshot
from tests.integration.attacks.specs import IMAGE, TERMINATION_MESSAGE, md_doc, opt_summary, revision_of
from tests.integration.attacks.tenant import Tenant, can_i
from tests.integration.cluster import OPERATOR_NAMESPACE, condition, temporary_namespace, uid_token


def jobs(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    selector = f"modelship.io/modeldeployment={name}"
    listed = client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=selector)
    return sorted(j.metadata.name for j in listed.items)


def test_a_patched_cache_in_the_tenants_namespace_is_never_read(tenant: Tenant, api_client: client.ApiClient) -> None:
    """The issue's reproduction: `kubectl patch configmap modelship-revisions` adding the revision of a spec whose
    model file was never uploaded, with a Passed summary and an image; then that spec applied. The optimization
    Job runs (and fails: the model is not there); nothing is deployed."""
    missing = opt_summary(ok=False, error="model file not found: https://models.example.com/never/cnn.h5",
                          failure="Permanent")  # fmt: skip
    doc = md_doc("never", opt_msg=missing, uri="https://models.example.com/never/cnn.h5")
    doc["spec"]["optimization"]["job"]["podAnnotations"].update({"modelship.io/test-fail": "Error"})
    rev = revision_of(doc, tenant.namespace)
    forged = {"summary": Summary.from_line(opt_summary()).to_line(), "image": IMAGE}
    client.CoreV1Api(tenant.api).create_namespaced_config_map(tenant.namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="modelship-revisions", labels={
            "app.kubernetes.io/managed-by": "modelship", "modelship.io/cache": "revisions"}),
        data={rev: json.dumps(forged)}))  # fmt: skip
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(doc)
    md = tenant.wait_stalled("never", "OptimizationFailed", timeout=90)
    assert "model file not found" in condition(md, "Stalled")["message"]
    assert md["status"]["optimization"].get("cached") is not True
    assert jobs(api_client, tenant.namespace, "never") == [f"never-opt-{rev}-{uid_token(md)}"]  # nothing skipped
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])
    assert not client.AppsV1Api(api_client).list_namespaced_deployment(tenant.namespace).items


def test_the_tenant_cannot_touch_the_operators_cache(tenant: Tenant, api_client: client.ApiClient) -> None:
    """Where the cache lives now, the tenant can neither read nor write."""
    name = f"modelship-revisions-{tenant.namespace}"
    for verb in ("get", "list", "create", "patch", "update", "delete"):
        assert not can_i(tenant.api, OPERATOR_NAMESPACE, verb, "configmaps"), verb
    core = client.CoreV1Api(tenant.api)
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map(OPERATOR_NAMESPACE, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name), data={"r": "{}"}))  # fmt: skip
    assert refused.value.status == 403


@pytest.fixture
def other_tenant(api_client: client.ApiClient, tenant: Tenant) -> Iterator[Tenant]:
    with temporary_namespace(api_client, "other-tenant") as ns:
        t = Tenant(api_client, ns)
        try:
            yield t
        finally:
            t.close()


def test_the_cache_skips_work_done_in_the_namespace_and_only_there(
    tenant: Tenant, other_tenant: Tenant, api_client: client.ApiClient
) -> None:
    """A second ModelDeployment with the same revision in the namespace skips both Jobs (the cache works); the
    same spec in another tenant's namespace runs its own (a tenant never reuses another tenant's image)."""
    tenant.create_md(md_doc("first"))
    first = tenant.wait_ready("first")
    rev = first["status"]["revision"]
    cache = client.CoreV1Api(api_client).read_namespaced_config_map(
        f"modelship-revisions-{tenant.namespace}", OPERATOR_NAMESPACE
    )
    assert rev in (cache.data or {}) and cache.metadata.labels["modelship.io/revision-cache-of"] == tenant.namespace
    second_doc = md_doc("second")
    second_doc["spec"]["model"]["uri"] = md_doc("first")["spec"]["model"]["uri"]  # same revision as first
    tenant.create_md(second_doc)
    second = tenant.wait_ready("second")
    assert second["status"]["revision"] == rev and second["status"]["optimization"]["cached"] is True
    assert jobs(api_client, tenant.namespace, "second") == []
    other_tenant.create_md(second_doc)
    other = other_tenant.wait_ready("second")
    assert other["status"]["optimization"].get("cached") is not True
    token = uid_token(other)
    assert jobs(api_client, other_tenant.namespace, "second") == [f"second-build-{rev}-{token}",
                                                                  f"second-opt-{rev}-{token}"]  # fmt: skip


def test_honest_pods_message_annotation_is_in_the_spec() -> None:
    """The attacks' MDs carry kwok's termination-message annotation on the Job pods (sanity of the frame)."""
    doc = md_doc("x")
    assert TERMINATION_MESSAGE in doc["spec"]["optimization"]["job"]["podAnnotations"]
