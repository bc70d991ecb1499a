"""Attacks, item 7 (overrides a platform can forbid) and item 5's opt-in: a tenant (namespace editor plus
modeldeployments) tries the fields that reach beyond its namespace under the chart's default policy: an image from
anywhere, a ServiceAccount with cloud identity, a toleration onto dedicated nodes, a model with code, a custom
metric without opting in. Each is refused by `kubectl apply` (the chart's ValidatingAdmissionPolicy, or the CRD's own
rule) with a message naming the field; with the admission policy deleted, the operator refuses the same spec itself
(Stalled, PolicyViolation) and creates nothing for it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.integration.attacks.admission import admission_policy, refused
from tests.integration.attacks.snapshot import assert_only_children_changed, controlled_by, snapshot
from tests.integration.attacks.tenant import Tenant, md_uid
from tests.integration.cluster import ClusterInfo, wait_for
from tests.integration.test_operator import md_doc


@pytest.fixture
def policy(cluster: ClusterInfo, namespace: str) -> Iterator[list[dict[str, Any]]]:
    with admission_policy(cluster, namespace) as objs:
        yield objs


def with_field(name: str, path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(md_doc(name))
    node = doc["spec"]
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


ATTACKS = [
    ("miner-image", "serving.image", "evil.example.com/miner:latest",
     "spec.serving.image: the serving image must start with one of the platform's allowed image prefixes"),
    ("own-builder", "build.job.image", "evil.example.com/builder:1",
     "spec.build.job.image: the build Job's image must start with one of the platform's allowed image prefixes"),
    ("cloud-identity", "serving.serviceAccountName", "cloud-admin",
     "spec.serving.serviceAccountName: a ServiceAccount is not allowed by the platform's policy"),
    ("dedicated-nodes", "serving.hardware.tolerations",
     [{"key": "dedicated", "operator": "Equal", "value": "finance", "effect": "NoSchedule"}],
     "spec.serving.hardware.tolerations: a toleration is not allowed by the platform's policy"),
    ("code-model", "model.allowCode", True,
     "spec.model.allowCode: running the model's or a custom metric's Python code is not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "value", "message"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_a_forbidden_override_is_refused_at_admission_naming_the_field(
    tenant: Tenant, policy: list[dict[str, Any]], name: str, path: str, value: Any, message: str
) -> None:
    def refused_now() -> bool:  # the policy reaches the admission plugin through its informer: allow it a moment
        try:
            tenant.apply(with_field(name, path, value))
        except Exception as exc:
            return message in str(getattr(exc, "body", exc))
        client.CustomObjectsApi(tenant.admin).delete_namespaced_custom_object(
            "modelship.io", "v1alpha1", tenant.namespace, "modeldeployments", name
        )
        return False

    wait_for(refused_now, timeout=30, description=f"{name} refused at admission")
    before = snapshot(tenant.admin, tenant.namespace)
    assert message in refused(tenant, with_field(name, path, value))
    assert_only_children_changed(before, snapshot(tenant.admin, tenant.namespace))  # nothing at all


def test_a_custom_metric_without_allow_code_is_refused_by_the_crd(tenant: Tenant) -> None:
    """No admission policy needed: the CRD's own rule (and its Python twin) says a custom metric is code."""
    doc = with_field("code-metric", "optimization.metric", {"type": "custom", "callable": "mymetric:score",
                                                           "codeRef": {"name": "metric-code"}})  # fmt: skip
    message = refused(tenant, doc)
    assert "spec.model.allowCode" in message and "a custom metric is Python code" in message


def _admitted(tenant: Tenant, doc: dict[str, Any]) -> bool:
    try:
        tenant.create_md(doc)
    except client.ApiException as exc:
        if exc.status != 403:
            raise
        return False
    return True


def test_without_the_admission_policy_the_operator_refuses_it(
    tenant: Tenant, cluster: ClusterInfo, api_client: client.ApiClient
) -> None:
    """An admin deleted the admission policy (or the spec was stored before it): the operator enforces the same
    table, so the tenant's spec is Stalled with the field named, and nothing runs for it."""
    doc = with_field("sneaky", "serving.serviceAccountName", "cloud-admin")
    doc["spec"]["build"]["job"]["tolerations"] = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    # no admission policy in this test (one deleted by a test before reaches the admission plugin in a moment)
    before = snapshot(tenant.admin, tenant.namespace)
    wait_for(lambda: _admitted(tenant, doc), timeout=30, description="admitted without the admission policy")
    md = tenant.wait_stalled("sneaky", "PolicyViolation")
    message = next(c for c in md["status"]["conditions"] if c["type"] == "Stalled")["message"]
    assert "spec.build.job.tolerations" in message and "spec.serving.serviceAccountName" in message
    assert md["status"]["lastFailure"]["reason"] == "PolicyViolation"
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    assert not batch.list_namespaced_job(tenant.namespace).items, "nothing may run for a forbidden spec"
    assert not core.list_namespaced_persistent_volume_claim(tenant.namespace).items
    assert not client.AppsV1Api(api_client).list_namespaced_deployment(tenant.namespace).items
    assert tenant.wait_event("sneaky", "ReadyPolicyViolation").type == "Warning"
    uid = md_uid(tenant, "sneaky")
    after = snapshot(tenant.admin, tenant.namespace)
    assert not controlled_by(after, uid), "nothing may be created for a forbidden spec"
    assert_only_children_changed(before, after, uid)
