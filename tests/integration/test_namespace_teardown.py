"""Deleting a namespace full of ModelDeployments does not set off a storm of refused creates.

The real namespace controller (kube-controller-manager) deletes the namespace's content in no set order: a
ModelDeployment that outlives its Deployment sees it go and would create it again, which the API server refuses
(NamespaceTerminating). A ValidatingAdmissionPolicy that refuses the deletion of the ModelDeployments there for a
while makes the race's worst case certain: every serving Deployment and Service goes first. The operator may be
refused once per reconcile worker, then holds the namespace (one INFO line) and creates nothing more there; once
the ModelDeployments are let go the namespace is finalized, and one created again under the same name is served.
The ModelDeployments are bench/reconcile.py's, their revision already in the cache: each goes straight to serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.reconcile import GROUP, PLURAL, VERSION, cached_entry, md_doc
from modelship.controller import revcache
from modelship.rbac import operator_rules
from tests.integration.cluster import OPERATOR_NAMESPACE, apply_manifest, ensure_operator_identity, wait_for
from tests.integration.operator_harness import OperatorProcess

N = 16
WORKERS = 4


def cache_configmap(ns: str) -> dict[str, Any]:
    """The namespace's revision cache with the bench's revision already optimized and built: each ModelDeployment
    goes straight to its Deployment and Service."""
    rev, entry = cached_entry()
    return {"metadata": {"name": revcache.configmap_name(ns), "labels": revcache.labels(ns)}, "data": {rev: entry}}


def hold_modeldeployments(ns: str) -> list[dict[str, Any]]:
    """A policy and its binding that refuse every deletion of a ModelDeployment in ``ns``."""
    name = f"hold-{ns}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["DELETE"], "resources": [PLURAL]}
                ]
            },
            "validations": [{"expression": "false", "message": "held by the test", "reason": "Forbidden"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }
    return [policy, binding]


def counter(op: OperatorProcess, result: str) -> float:
    return op.metric("modelship_reconciles_total", f'result="{result}"')


def create_namespace_named(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": ns, "labels": {"modelship.io/test": "true"}}})
    core.create_namespaced_config_map(OPERATOR_NAMESPACE, cache_configmap(ns))


def gone(api: client.ApiClient, ns: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespace(ns)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@pytest.fixture
def teardown_ns(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    ns = f"teardown-{request.node.callspec.id}-{id(request) % 100000}"
    yield ns
    admission = client.AdmissionregistrationV1Api(api_client)
    policy, binding = (doc["metadata"]["name"] for doc in hold_modeldeployments(ns))
    for delete, name in ((admission.delete_validating_admission_policy_binding, binding),
                         (admission.delete_validating_admission_policy, policy)):  # fmt: skip
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    try:
        client.CoreV1Api(api_client).delete_namespace(ns)
    except ApiException as exc:
        if exc.status != 404:
            raise
    try:
        client.CoreV1Api(api_client).delete_namespaced_config_map(revcache.configmap_name(ns), OPERATOR_NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.mark.parametrize("mode", ["clusterwide", "namespaced"])
def test_a_deleted_namespace_gets_no_storm_of_refused_creates(
    api_client: client.ApiClient, teardown_ns: str, mode: str
) -> None:
    ns = teardown_ns
    apps, custom = client.AppsV1Api(api_client), client.CustomObjectsApi(api_client)
    ensure_operator_identity(api_client, operator_rules())  # and the operator's namespace, with the caches
    create_namespace_named(api_client, ns)
    op = OperatorProcess(api_client, {"MODELSHIP_RESYNC_SECONDS": "300"})
    op.extra_args = ["--workers", str(WORKERS), *(["--namespace", ns] if mode == "namespaced" else [])]
    op.start()
    try:
        names = [f"m{i}" for i in range(N)]
        for name in names:
            apply_manifest(api_client, md_doc(name), namespace=ns, field_manager="test")

        def serving() -> bool:
            have = {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
            return have >= set(names)

        wait_for(serving, timeout=120, description=f"{N} serving Deployments")
        for doc in hold_modeldeployments(ns):
            apply_manifest(api_client, doc, field_manager="test")

        def held() -> bool:  # the policy is in force: a deletion is refused
            try:
                custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, names[0], dry_run="All")
            except ApiException as exc:
                return exc.status == 403 and "held by the test" in (exc.body or "")
            return False

        wait_for(held, timeout=30, description="the deletion policy in force")
        refused0, skipped0 = counter(op, "namespace-terminating"), counter(op, "namespace-terminating-held")
        client.CoreV1Api(api_client).delete_namespace(ns)

        # the namespace controller takes every Deployment and Service; the ModelDeployments stay (the policy)
        wait_for(lambda: not apps.list_namespaced_deployment(ns).items, timeout=120,
                 description="the namespace controller deleting the Deployments")  # fmt: skip
        assert len(custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]) == N

        def each_woken() -> bool:  # every ModelDeployment reconciled after its Deployment went: refused or held
            refused = counter(op, "namespace-terminating") - refused0
            return refused + counter(op, "namespace-terminating-held") - skipped0 >= N

        wait_for(each_woken, timeout=120, description="every ModelDeployment reconciled in the terminating namespace")
        refused = counter(op, "namespace-terminating") - refused0
        print(f"{mode}: {refused:.0f} refused reconciles, "
              f"{counter(op, 'namespace-terminating-held') - skipped0:.0f} held")  # fmt: skip
        assert refused <= WORKERS, f"{refused:.0f} reconciles refused in the terminating namespace"
        assert counter(op, "error") == 0  # none retried with backoff for it
        assert not apps.list_namespaced_deployment(ns).items  # nothing came back
        # the hold is logged just after the refusal is counted: waited for, not read at once
        wait_for(lambda: f"namespace {ns} is being terminated" in op.log(), timeout=30, description="the hold's line")
        lines = [ln for ln in op.log().splitlines() if f"namespace {ns} is being terminated" in ln]
        assert len(lines) == 1 and "INFO" in lines[0], lines  # once per namespace, not per object

        # let the ModelDeployments go: the namespace is finalized (nothing of the operator's holds it)
        binding = hold_modeldeployments(ns)[1]["metadata"]["name"]
        client.AdmissionregistrationV1Api(api_client).delete_validating_admission_policy_binding(binding)
        wait_for(lambda: gone(api_client, ns), timeout=180, description=f"namespace {ns} gone")

        # the same name again, with a ModelDeployment: served at once (the hold ended with the last one)
        client.CoreV1Api(api_client).delete_namespaced_config_map(revcache.configmap_name(ns), OPERATOR_NAMESPACE)
        create_namespace_named(api_client, ns)
        apply_manifest(api_client, md_doc("again"), namespace=ns, field_manager="test")
        wait_for(lambda: any(d.metadata.name == "again" for d in apps.list_namespaced_deployment(ns).items),
                 timeout=60, description="the re-created namespace's Deployment")  # fmt: skip
        # no warning per refused Event: read once an Event of "again" is listed (one poster thread posts them in
        # order, so every Event queued during the teardown was posted or dropped, and a refusal logged, by then)
        wait_for(lambda: client.CoreV1Api(api_client).list_namespaced_event(
                     ns, field_selector="involvedObject.kind=ModelDeployment,involvedObject.name=again").items or None,
                 timeout=30, description="an Event of the re-created ModelDeployment")  # fmt: skip
        assert "could not post event" not in op.log()
    finally:
        op.stop()
        print(op.log()[-4000:])
