"""The admin policy on the real API server, with the chart installed (helm install, the policy values at their
defaults, cluster-wide): the chart's ValidatingAdmissionPolicy refuses every rule of modelship.api.policy at
`kubectl apply` with a message naming the field, and admits the same specs once the chart's policy values allow
them (the CEL and the operator's Python twin agree both ways); with the admission policy deleted, the operator
refuses the spec itself (Stalled, PolicyViolation, no Job created)."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from modelship.api.policy import RULES, Policy, PolicyRule, chart_defaults, violations
from tests.chart.helm import CHART, Helm
from tests.integration.cluster import ClusterInfo, condition, wait_for
from tests.integration.test_chart_install import ChartOperator, Release, helm_bin, installed  # noqa: F401
from tests.integration.test_operator import Cluster, md_doc
from tests.unit.test_policy import value_for

# values that allow every rule's violating value (tests/unit/test_policy.py value_for)
OPEN_VALUES: dict[str, Any] = {
    "policy.allowedImagePrefixes": ["evil.example.com/"],
    "policy.allowedRepositoryPrefixes": ["registry.example.com/team-b/", "registry.local:5000/"],
    "policy.allowServiceAccounts": True,
    "policy.allowCode": True,
    "policy.allowTolerations": True,
    "policy.allowNodeSelectors": True,
    "policy.allowCredentialSecrets": True,
    "policy.allowCrossNamespaceGateways": True,
    "policy.allowedBuildEngines": ["buildkit", "kaniko"],
}
OPEN = Policy(
    allowed_image_prefixes=("evil.example.com/",),
    allowed_repository_prefixes=("registry.example.com/team-b/", "registry.local:5000/"),
    allow_service_accounts=True, allow_code=True, allow_tolerations=True, allow_cross_namespace_gateways=True,
)  # fmt: skip


@dataclass
class Installed:
    release: Release
    op: ChartOperator
    cluster: ClusterInfo


@pytest.fixture(scope="module")
def chart(helm_bin: Helm, cluster: ClusterInfo, api_client: client.ApiClient) -> Iterator[Installed]:  # noqa: F811
    # cluster-wide: the tests use a fresh namespace each (the namespaced mode binds the policy to the watched ones)
    with installed(helm_bin, cluster, api_client, "msp", {"operator.clusterWide": True}) as (release, op):
        yield Installed(release, op, cluster)


def kubectl_apply(
    cluster: ClusterInfo, doc: dict[str, Any], namespace: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_path, f"--kubeconfig={cluster.kubeconfig}", "apply", "-n", namespace, "-f", "-", *extra],
        input=json.dumps(doc), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def md_with(rule: PolicyRule, name: str) -> dict[str, Any]:
    """md_doc (a spec the kwok Stages complete) with the rule's field set to a value the defaults forbid."""
    doc = copy.deepcopy(md_doc(name))
    spec = doc["spec"]
    if rule.path[:2] == ("optimization", "data"):  # a data set that exists, with credentials
        spec["optimization"]["data"].setdefault(rule.path[2], {"uri": "https://models.example.com/x.npz",
                                                              "format": "npz"})  # fmt: skip
    if rule.path[:2] == ("serving", "rollout"):  # the canary settings are read with strategy Canary only
        spec["serving"].setdefault("rollout", {})["strategy"] = "Canary"
    node = spec
    for part in rule.path[:-1]:
        node = node.setdefault(part, {})
    node[rule.path[-1]] = value_for(rule)
    return doc


def _set_values(release: Release, values: dict[str, Any]) -> None:
    args = ["upgrade", release.name, str(CHART), "--namespace", release.namespace, "--kubeconfig",
            str(release.cluster.kubeconfig), "--skip-crds", "--reuse-values", "--wait", "--timeout",
            "120s"]  # fmt: skip
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    release.helm.run(*args, timeout=180)


STRICT_VALUES: dict[str, Any] = {
    **OPEN_VALUES,
    "policy.allowedImagePrefixes": [],
    "policy.allowedRepositoryPrefixes": ["registry.example.com/{namespace}/", "registry.local:5000/models/"],
    "policy.allowServiceAccounts": False,
    "policy.allowCode": False,
    "policy.allowTolerations": False,
    "policy.allowNodeSelectors": False,
    "policy.allowCredentialSecrets": False,
    "policy.allowCrossNamespaceGateways": False,
    "policy.allowedBuildEngines": ["buildkit"],
}
STRICT = Policy(allowed_repository_prefixes=("registry.example.com/{namespace}/", "registry.local:5000/models/"),
                allow_node_selectors=False, allow_credential_secrets=False,
                allowed_build_engines=("buildkit",))  # fmt: skip


def assert_twins(chart: Installed, namespace: str, policy: Policy) -> int:
    """Every rule's spec: the API server's verdict (a server-side dry run) is the operator's Python verdict, and a
    refusal carries the rule's message. Returns how many were refused."""
    refused = 0
    for i, rule in enumerate(RULES):
        doc = md_with(rule, f"p{i}")
        python = violations(doc["spec"], namespace, policy)
        assert python in ([], [rule.message]), (rule.field, python)
        last: list[subprocess.CompletedProcess[str]] = []

        def agrees(
            doc: dict[str, Any] = doc, python: list[str] = python, last: list[subprocess.CompletedProcess[str]] = last
        ) -> bool:
            # a changed policy reaches the admission plugin through its informer: allow it a moment
            proc = kubectl_apply(chart.cluster, doc, namespace, "--dry-run=server")
            last[:] = [proc]
            return (proc.returncode == 0) == (not python)

        try:
            wait_for(agrees, timeout=30, description=f"{rule.field}: API server agrees with the operator")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: python {python}, kubectl: {last[0].stderr}") from None
        if python:
            refused += 1
            assert rule.message in last[0].stderr and "ValidatingAdmissionPolicy" in last[0].stderr, last[0].stderr
    return refused


def test_every_rule_is_refused_at_admission_as_the_operator_refuses_it(chart: Installed, namespace: str) -> None:
    # chart defaults: images, ServiceAccounts, allowCode, tolerations and another namespace's Gateway refused; node
    # selectors, Secrets, either build engine and any repository allowed
    assert assert_twins(chart, namespace, Policy()) == 4 + 1 + 2 + 3 + 1
    try:
        _set_values(chart.release, STRICT_VALUES)
        assert assert_twins(chart, namespace, STRICT) == len(RULES)
        _set_values(chart.release, OPEN_VALUES)
        assert assert_twins(chart, namespace, OPEN) == 0
    finally:
        _set_values(chart.release, {f"policy.{k}": v for k, v in chart_defaults().items()})


def test_without_the_admission_policy_the_operator_refuses(
    chart: Installed, namespace: str, api_client: client.ApiClient
) -> None:
    k = Cluster(api_client, namespace)
    rule = next(r for r in RULES if r.field == "spec.serving.serviceAccountName")
    doc = md_with(rule, "digits")
    # the admission policy says no: a freshly installed (or just upgraded) policy reaches the admission plugin
    # through its informer, so allow it a moment to take effect before the real apply
    wait_for(lambda: kubectl_apply(chart.cluster, doc, namespace, "--dry-run=server").returncode != 0, timeout=30,
             description="the admission policy refuses the spec")  # fmt: skip
    refused = kubectl_apply(chart.cluster, doc, namespace)
    assert refused.returncode != 0 and rule.message in refused.stderr, refused.stderr
    binding = f"{chart.release.fullname}-policy"
    chart.cluster.kubectl("delete", "validatingadmissionpolicybinding", binding)
    try:
        wait_for(lambda: kubectl_apply(chart.cluster, doc, namespace).returncode == 0, timeout=30,
                 description="the spec admitted once the binding is gone")  # fmt: skip
        s = k.wait_condition("Stalled", "True", reason="PolicyViolation")
        stalled = condition(s, "Stalled")
        assert stalled["message"] == rule.message
        assert s["status"]["lastFailure"]["reason"] == "PolicyViolation"
        assert k.jobs() == [], "nothing may run for a spec the policy forbids"
        assert not client.CoreV1Api(api_client).list_namespaced_persistent_volume_claim(namespace).items
        # fixed spec: the operator goes on
        doc["spec"]["serving"].pop("serviceAccountName")
        assert kubectl_apply(chart.cluster, doc, namespace).returncode == 0
        k.wait_condition("Ready", "True", timeout=120)
    finally:
        _set_values(chart.release, {})  # helm puts the binding back
