"""A write the real API server's admission refuses: a ValidatingAdmissionPolicy (a platform's, not the chart's)
freezes the serving Deployment's pod template in the test namespace, and the spec then changes it. The
ModelDeployment is Stalled (ApplyRefused) naming the Deployment and the policy's words, Ready False; the status
stays as it is across resyncs (same resourceVersion: no rewrite, no retry storm, one WARNING line, no traceback);
once the policy is removed the next resync rolls the change out and it is Ready again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_operator import Cluster, md_doc, operator  # noqa: F401 (the operator fixture)

WORDS = "the serving pod template is frozen by the platform"
REFUSED = 'result="apply-refused"'


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


@pytest.fixture
def freeze(api_client: client.ApiClient, namespace: str) -> Iterator[dict[str, Any]]:
    """Brings a policy that refuses any change of a Deployment's pod template in ``namespace`` (as a 403, the
    measured case) and its binding; removed at the end whatever happened."""
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"freeze-{namespace}"[:63]
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                               "operations": ["UPDATE"],
                                                               "resources": ["deployments"]}]},
                       "validations": [{"expression": "object.spec.template == oldObject.spec.template",
                                        "message": WORDS, "reason": "Forbidden"}]}}  # fmt: skip
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": namespace}}}}}  # fmt: skip
    handle = {"name": name, "admission": admission, "policy": policy, "binding": binding}
    try:
        yield handle
    finally:
        unfreeze(handle)


def frozen(handle: dict[str, Any]) -> None:
    handle["admission"].create_validating_admission_policy(handle["policy"])
    handle["admission"].create_validating_admission_policy_binding(handle["binding"])


def unfreeze(handle: dict[str, Any]) -> None:
    for delete in (handle["admission"].delete_validating_admission_policy_binding,
                   handle["admission"].delete_validating_admission_policy):  # fmt: skip
        try:
            delete(handle["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise


def template_refused(tenant: Cluster) -> bool:
    """A server-side dry run of a pod template change is refused (the policy reached the admission plugin through
    its informer)."""
    patch = {"spec": {"template": {"metadata": {"annotations": {"probe": "1"}}}}}
    try:
        tenant.apps.patch_namespaced_deployment("digits", tenant.ns, patch, dry_run="All")
    except ApiException as exc:
        return exc.status == 403 and WORDS in (exc.body or "")
    return False


def test_a_change_admission_refuses_is_a_steady_stall_until_the_policy_goes(
    tenant: Cluster,
    operator: OperatorProcess,  # noqa: F811
    freeze: dict[str, Any],
) -> None:
    doc = md_doc()
    tenant.apply(doc)
    tenant.wait_condition("Ready", "True", timeout=120)
    frozen(freeze)
    wait_for(lambda: template_refused(tenant), timeout=30, description="the policy refusing a template change")
    # a new pod annotation: a new pod template for the serving Deployment, no new build
    doc["spec"]["serving"]["podAnnotations"] = {"team": "b"}
    tenant.apply(doc)
    s = tenant.wait_condition("Stalled", "True", reason="ApplyRefused", timeout=60)
    stalled = condition(s, "Stalled")
    assert stalled["message"].startswith(f'Deployment digits refused by the API server: deployments.apps "digits" '
                                         f"is forbidden: ValidatingAdmissionPolicy '{freeze['name']}' with binding "
                                         f"'{freeze['name']}' denied request: {WORDS}"), stalled["message"]  # fmt: skip
    ready = condition(s, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyRefused")
    assert s["status"]["phase"] == "Failed" and s["status"]["lastFailure"]["reason"] == "ApplyRefused"
    dep = tenant.apps.read_namespaced_deployment("digits", tenant.ns)
    assert "team" not in (dep.spec.template.metadata.annotations or {})  # what serves keeps serving
    # steady: two more refused passes (the resync, every 5 s here) write nothing
    version = tenant.md()["metadata"]["resourceVersion"]
    passes = operator.metric("modelship_reconciles_total", REFUSED)
    wait_for(lambda: operator.metric("modelship_reconciles_total", REFUSED) >= passes + 2, timeout=60,
             description="two more refused passes")  # fmt: skip
    assert tenant.md()["metadata"]["resourceVersion"] == version
    said = f"{tenant.ns}/digits: Deployment digits refused by the API server"
    assert operator.log().count(said) == 1, operator.log()
    assert f"reconcile of {tenant.ns}/digits failed" not in operator.log()  # no error, no traceback
    assert operator.metric("modelship_reconcile_give_ups_total") == 0
    # the policy goes: the next resync rolls the change out
    unfreeze(freeze)
    s = tenant.wait_condition("Ready", "True", timeout=90)
    assert condition(s, "Stalled")["status"] == "False" and "lastFailure" not in s["status"]

    def rolled_out() -> bool:
        dep = tenant.apps.read_namespaced_deployment("digits", tenant.ns)
        return (dep.spec.template.metadata.annotations or {}).get("team") == "b"

    wait_for(rolled_out, timeout=10, description="the serving Deployment with the new annotation")
