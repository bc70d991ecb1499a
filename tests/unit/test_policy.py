"""The admin policy's rules in Python (modelship.api.policy), as the operator enforces them: one violating spec per
rule names its field; the setting that allows it lets it through; the operator Stalls a violating spec without
creating anything, and reads the policy from the variables the chart sets. The same rules' CEL is judged by the
real API server in tests/integration/test_admission_policy.py."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelship.api import ModelDeployment
from modelship.api.policy import RULES, Check, Policy, PolicyRule, Setting, parse_setting, violations
from modelship.config import OperatorConfig
from modelship.resources.policy import PolicyViolation, enforce_policy
from tests.support.specs import valid_doc

NS = "team-a"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def value_for(rule: PolicyRule) -> Any:
    """A value that sets the rule's field (and, for prefixes, is outside any prefix in OPEN below)."""
    last = rule.path[-1]
    if rule.check == Check.IMAGE_PREFIX:
        return "evil.example.com/miner:latest"
    if rule.check == Check.REPOSITORY_PREFIX:
        return "registry.example.com/team-b/stolen"
    if rule.check == Check.ONE_OF:
        return "kaniko"
    return {
        "allowCode": True,
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "gpu"},
        "serviceAccountName": "cloud-admin",
        "secretRef": {"name": "other-creds"},
        "pushSecretRef": {"name": "other-creds"},
        "parentRefs": [{"name": "shared"}, {"name": "public", "namespace": "infra", "sectionName": "https"}],
    }[last]


def spec_with(rule: PolicyRule, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(valid_doc("digits"))
    spec = doc["spec"]
    if rule.path[:2] == ("optimization", "data"):  # a data set that exists, with credentials
        spec["optimization"]["data"].setdefault(rule.path[2], {"uri": "s3://bucket/x.npz", "format": "npz"})
    if rule.path[:2] == ("serving", "rollout"):  # the canary settings are read with strategy Canary only
        spec["serving"].setdefault("rollout", {})["strategy"] = "Canary"
    node = spec
    for part in rule.path[:-1]:
        node = node.setdefault(part, {})
    node[rule.path[-1]] = value
    return dict(spec)


STRICT = Policy(allowed_repository_prefixes=("registry.example.com/{namespace}/", "registry.local:5000/models/"),
                allow_node_selectors=False, allow_credential_secrets=False,
                allowed_build_engines=("buildkit",))  # fmt: skip
OPEN = Policy(
    allowed_image_prefixes=("evil.example.com/",),
    allowed_repository_prefixes=("registry.example.com/team-b/", "registry.local:5000/"),
    allow_service_accounts=True,
    allow_code=True,
    allow_tolerations=True,
    allow_node_selectors=True,
    allow_credential_secrets=True,
    allow_cross_namespace_gateways=True,
)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.field)
def test_each_rule_names_its_field_and_its_setting_allows_it(rule: PolicyRule) -> None:
    spec = spec_with(rule, value_for(rule))
    ModelDeployment.from_body({"metadata": {"name": "digits", "namespace": NS}, "spec": spec})  # a valid spec
    assert violations(spec, NS, STRICT) == [rule.message]
    assert rule.message.startswith(f"{rule.field}: ") and f"policy.{rule.setting.value}" in rule.message
    assert violations(spec, NS, OPEN) == []


def test_the_valid_example_breaks_nothing_even_under_the_strictest_policy() -> None:
    assert violations(valid_doc("digits")["spec"], NS, STRICT) == []


def test_empty_lists_and_maps_and_false_are_not_set() -> None:
    spec = copy.deepcopy(valid_doc("digits")["spec"])
    spec["serving"]["hardware"] = {"tolerations": [], "nodeSelector": {}}
    spec["model"]["allowCode"] = False
    assert violations(spec, NS, STRICT) == []


def test_repository_prefixes_are_per_namespace() -> None:
    rule = next(r for r in RULES if r.check == Check.REPOSITORY_PREFIX)
    own = spec_with(rule, "registry.example.com/team-a/digits")
    assert violations(own, "team-a", STRICT) == []
    assert violations(own, "team-b", STRICT) == [rule.message]
    assert violations(own, "team-b", Policy()) == []  # no prefixes listed: any repository


def test_gateways_of_the_own_namespace_need_no_setting() -> None:
    rule = next(r for r in RULES if r.check == Check.OWN_NAMESPACE)
    own = spec_with(rule, [{"name": "shared"}, {"name": "public", "namespace": NS}])
    assert violations(own, NS, STRICT) == []
    assert violations(own, "team-b", STRICT) == [rule.message]  # the same spec applied elsewhere names team-a
    assert violations(own, "team-b", Policy(allow_cross_namespace_gateways=True)) == []


def test_build_engines_are_named_not_prefixed() -> None:
    """Kaniko (uid 0, writable root) can be kept out of the build namespace; left out, the engine is the platform's
    default and not judged; the setting takes BuildEngine names only."""
    rule = next(r for r in RULES if r.check == Check.ONE_OF)
    buildkit_only = Policy(allowed_build_engines=("buildkit",))
    assert violations(spec_with(rule, "kaniko"), NS, buildkit_only) == [rule.message]
    assert violations(spec_with(rule, "buildkit"), NS, buildkit_only) == []
    assert violations(valid_doc("digits")["spec"], NS, Policy(allowed_build_engines=())) == []
    assert violations(spec_with(rule, "kaniko"), NS, Policy()) == []  # both engines by default
    assert rule.cel().endswith("object.spec.build.engine in variables.allowedBuildEngines")
    assert parse_setting(Setting.ALLOWED_BUILD_ENGINES, '["buildkit"]') == ("buildkit",)
    with pytest.raises(ValueError, match="buildkit, kaniko"):
        parse_setting(Setting.ALLOWED_BUILD_ENGINES, '["docker"]')


def test_image_prefix_is_a_prefix_not_a_substring() -> None:
    rule = next(r for r in RULES if r.field == "spec.serving.image")
    policy = Policy(allowed_image_prefixes=("registry.example.com/approved/",))
    assert violations(spec_with(rule, "registry.example.com/approved/server:1"), NS, policy) == []
    assert violations(spec_with(rule, "evil.com/registry.example.com/approved/x"), NS, policy) == [rule.message]


def test_settings_parse_from_the_charts_variables() -> None:
    assert parse_setting(Setting.ALLOWED_IMAGE_PREFIXES, '["a/", "b/"]') == ("a/", "b/")
    assert parse_setting(Setting.ALLOW_CODE, "true") is True
    assert parse_setting(Setting.ALLOW_CODE, "False") is False
    prefixes = Setting.ALLOWED_IMAGE_PREFIXES
    for setting, raw in [(Setting.ALLOW_CODE, "yes"), (prefixes, "a/"), (prefixes, '[""]'), (prefixes, '{"a": 1}')]:
        with pytest.raises(ValueError):
            parse_setting(setting, raw)
    env = {s.env: raw for s, raw in [(Setting.ALLOW_CODE, "true"), (Setting.ALLOWED_IMAGE_PREFIXES, '["r/"]')]}
    assert OperatorConfig.from_env(env).policy == Policy(allow_code=True, allowed_image_prefixes=("r/",))
    with pytest.raises(ValueError, match="MODELSHIP_POLICY_ALLOW_CODE"):
        OperatorConfig.from_env({Setting.ALLOW_CODE.env: "maybe"})


def test_the_operator_refuses_with_every_field_named() -> None:
    doc = copy.deepcopy(valid_doc("digits"))
    doc["metadata"]["namespace"] = NS
    doc["spec"]["serving"]["serviceAccountName"] = "cloud-admin"
    doc["spec"]["build"]["baseImage"] = "evil.example.com/base:1"
    md = ModelDeployment.from_body(doc)
    with pytest.raises(PolicyViolation) as err:
        enforce_policy(md, OperatorConfig())
    assert "spec.build.baseImage" in str(err.value) and "spec.serving.serviceAccountName" in str(err.value)
    enforce_policy(md, replace(OperatorConfig(), policy=OPEN))


_NEEDS = re.compile(r"^\s*#.*\bneeds the platform's policy\.(\w+): true\b", re.MULTILINE)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_an_example_passes_the_charts_default_policy_or_says_which_setting_it_needs(path: Path) -> None:
    """A tenant copies an example into a namespace of a default install: it is admitted, or its comments say
    which setting the platform must turn on (otherwise the admission policy refuses it and nothing says why)."""
    text = path.read_text()
    needed = {Setting(name).attribute: True for name in _NEEDS.findall(text)}
    for doc in yaml.safe_load_all(text):
        assert violations(doc["spec"], NS, replace(Policy(), **needed)) == [], path.name
        for attribute in needed:  # each declared need is real: without it, the example is refused
            others = {a: True for a in needed if a != attribute}
            assert violations(doc["spec"], NS, replace(Policy(), **others)), f"{path.name}: {attribute} not needed"
