"""A build Job the platform's admission refuses in the build namespace, on the real control plane with the chart
installed (its build namespace: the release's; no other operator running, as the one of test_apply_refused.py
would reconcile the same ModelDeployment without a build namespace): Stalled ApplyRefused naming the Job and the
cause, not the words; the operator's log has them, redacted; the optimization Job's results are recorded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from kubernetes import client

from modelship.resources.meta import MODELDEPLOYMENT_NAMESPACE_LABEL
from tests.chart.helm import Helm
from tests.integration.cluster import ClusterInfo, condition, wait_for
from tests.integration.test_apply_refused import frozen, unfreeze
from tests.integration.test_build_namespace import Installed, build_jobs
from tests.integration.test_chart_install import helm_bin, installed  # noqa: F401 (the helm_bin fixture)
from tests.integration.test_operator import Cluster, md_doc

PLATFORM_WORDS = "builds are paused on registry.platform.internal (token=hunter2222)"


@pytest.fixture(scope="module")
def chart(helm_bin: Helm, cluster: ClusterInfo, api_client: client.ApiClient) -> Iterator[Installed]:  # noqa: F811
    # cluster-wide with the release's build namespace (the build Jobs run there)
    with installed(helm_bin, cluster, api_client, "msr", {"operator.clusterWide": True}) as (release, op):
        yield Installed(release, op)


def test_a_build_job_the_platforms_admission_refuses_is_told_without_its_words(
    chart: Installed, api_client: client.ApiClient, namespace: str
) -> None:
    """A policy of the platform refuses this tenant's build Jobs in the build namespace: Stalled ApplyRefused naming
    the Job and the cause, not the words (they name the platform), which the operator's log has, redacted; what
    the optimization Job that ran found is recorded all the same."""
    builds_ns = chart.release.namespace
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"builds-paused-{namespace}"[:63]
    in_builds = {"kubernetes.io/metadata.name": builds_ns}
    tenants = {MODELDEPLOYMENT_NAMESPACE_LABEL: namespace}  # this tenant's build Jobs only
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                               "operations": ["CREATE"], "resources": ["jobs"]}]},
                       "validations": [{"expression": "false", "message": PLATFORM_WORDS}]}}  # fmt: skip
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": in_builds},
                                           "objectSelector": {"matchLabels": tenants}}}}  # fmt: skip
    handle = {"name": name, "admission": admission, "policy": policy, "binding": binding}
    frozen(handle)
    try:
        k = Cluster(api_client, namespace)
        k.apply(md_doc())
        s = k.wait_condition("Stalled", "True", reason="ApplyRefused", timeout=180)
        message = condition(s, "Stalled")["message"]
        assert re.fullmatch(r"Job \S+ refused by the API server \(admission\); it runs in the platform's "
                            r"build namespace: the operator's log says more", message), message  # fmt: skip
        assert build_jobs(api_client, builds_ns, namespace) == []
        told = json.dumps(s) + json.dumps([e.message for e in k.core.list_namespaced_event(namespace).items])
        assert "platform.internal" not in told and "hunter2222" not in told
        # the optimization Job ran: its results are recorded, though the pass's build Job was refused
        assert condition(s, "Optimized")["status"] == "True" and s["status"]["optimization"]["decision"]
        assert condition(s, "ImageBuilt") is None or condition(s, "ImageBuilt")["reason"] != "BuildJobCreated"
        wait_for(lambda: "registry.platform.internal (token=[redacted])" in chart.op.log(), timeout=30,
                 description="the operator's log with the platform's words, redacted")  # fmt: skip
        assert "hunter2222" not in chart.op.log()
    finally:
        unfreeze(handle)
