"""The chart's ValidatingAdmissionPolicy is the operator's policy table (modelship.api.policy): its validations are
generated into templates/_policy.tpl, its variables are the chart's policy values, and the binding follows the
operator's mode (whole cluster, or the watched namespaces only). The API server's verdicts on real specs are in
tests/integration/test_admission_policy.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from modelship.api.policy import RULES, Setting, chart_defaults, helm_policy_template, vap_validations
from tests.chart.helm import CHART, Helm, find, one

FULLNAME = "ms-modelship"
POLICY = f"{FULLNAME}-policy"


def test_policy_template_is_generated_from_the_table() -> None:
    assert (CHART / "templates" / "_policy.tpl").read_text() == helm_policy_template(), "run hack/sync-chart-crds"


def test_chart_defaults_are_the_operators_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["policy"]
    assert {k: v for k, v in values.items() if k != "admission"} == chart_defaults()
    assert values["admission"] == {"enabled": True}


def test_defaults_ship_the_policy_bound_to_the_watched_namespace(helm: Helm) -> None:
    """Defaults: the namespaced mode (trust-a) watching `default`, the admission policy bound there."""
    objs = helm.template()
    vap = one(objs, "ValidatingAdmissionPolicy", POLICY)
    spec = vap["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [{
        "apiGroups": ["modelship.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
        "resources": ["modeldeployments"]}]  # fmt: skip
    assert spec["validations"] == vap_validations()
    assert len(spec["validations"]) == len(RULES)
    # every message names its field first
    for rule, validation in zip(RULES, spec["validations"], strict=True):
        assert validation["message"].startswith(rule.field + ": ")
    variables = {v["name"]: json.loads(v["expression"]) for v in spec["variables"]}
    assert variables == chart_defaults()
    binding = one(objs, "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"], "matchResources": {
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["default"]}]}}}  # fmt: skip


def test_cluster_wide_mode_binds_the_policy_everywhere(helm: Helm) -> None:
    binding = one(helm.template({"operator.clusterWide": True}), "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}


def test_values_become_the_policys_variables(helm: Helm) -> None:
    given: dict[str, Any] = {
        "allowedImagePrefixes": ["registry.example.com/approved/", 'quote"d/'],
        "allowedRepositoryPrefixes": ["registry.example.com/{namespace}/"],
        "allowServiceAccounts": True,
        "allowCode": True,
        "allowTolerations": True,
        "allowNodeSelectors": False,
        "allowCredentialSecrets": False,
        "allowCrossNamespaceGateways": True,
        "allowedBuildEngines": ["buildkit"],
    }
    assert set(given) == {s.value for s in Setting}
    vap = one(helm.template({f"policy.{k}": v for k, v in given.items()}), "ValidatingAdmissionPolicy", POLICY)
    assert {v["name"]: json.loads(v["expression"]) for v in vap["spec"]["variables"]} == given


def test_namespaced_mode_binds_the_watched_namespaces_only(helm: Helm) -> None:
    objs = helm.template({"operator.watchNamespaces": ["team-a", "team-b"]})
    binding = one(objs, "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"]["matchResources"] == {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}}  # fmt: skip


def test_admission_policy_can_be_left_out(helm: Helm) -> None:
    objs = helm.template({"policy.admission.enabled": False})
    assert not find(objs, "ValidatingAdmissionPolicy") and not find(objs, "ValidatingAdmissionPolicyBinding")


@pytest.mark.parametrize("bad", [{"policy.allowCode": "yes"}, {"policy.allowedImagePrefixes": "registry/"},
                                 {"policy.allowedImagePrefixes": [""]}, {"policy.allowEverything": True},
                                 {"policy.allowedBuildEngines": ["docker"]}])  # fmt: skip
def test_mistyped_policy_values_fail_helm_template(helm: Helm, bad: dict[str, Any]) -> None:
    proc = helm.run(*helm.template_args(bad), check=False)
    assert proc.returncode != 0
    assert "policy" in proc.stderr
