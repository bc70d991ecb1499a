"""The platform's admin policy over what a tenant may write into a ModelDeployment, stated once and enforced twice.

A platform team hands ``ModelDeployment`` to tenants who may edit their own namespace and nothing else. Some fields
reach further than the namespace: an image override runs code the platform did not vet, a ServiceAccount carries
cloud identity (IRSA, Workload Identity), a toleration or node selector reaches dedicated nodes, ``allowCode`` lets
the model's (or a custom metric's) Python run in the optimization Job, ``build.repository`` decides where the
platform's push credentials write, and ``build.engine`` decides which builder runs in the build namespace (Kaniko
runs as uid 0 with a writable root filesystem there; rootless BuildKit as uid 1000 without seccomp/AppArmor). The
policy says which of these tenants may set (the chart's ``policy`` values).

Every rule of ``RULES`` is enforced twice from this one table:

- at admission, by the chart's ValidatingAdmissionPolicy: its CEL (``vap_spec``) is generated from the rules into
  ``charts/modelship/templates/_policy.tpl`` by hack/sync-chart-crds, the policy values becoming CEL variables, so
  ``kubectl apply`` of a spec that breaks the policy is refused with a message naming the field;
- by the operator itself (``violations``), because an admin can delete the admission policy: such a spec is
  Stalled with reason ``PolicyViolation`` and the same message, and nothing is created for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from .build import BuildEngine


@dataclass(frozen=True)
class Policy:
    """What tenants may set (the chart's ``policy`` values; ``config.ENV`` reads them)."""

    allowed_image_prefixes: tuple[str, ...] = ()
    """Image overrides (stage images, build base image, serving image) must start with one of these; empty: none
    is allowed, the operator's own images are used."""
    allowed_repository_prefixes: tuple[str, ...] = ()
    """spec.build.repository must start with one of these (``{namespace}`` is replaced by the ModelDeployment's
    namespace); empty: any repository."""
    allow_service_accounts: bool = False
    """Tenants may name ServiceAccounts (fetch identity, serving pods)."""
    allow_code: bool = False
    """Tenants may set spec.model.allowCode (models with Python in them, custom metrics)."""
    allow_tolerations: bool = False
    """Tenants may add tolerations to stage Jobs and serving pods."""
    allow_node_selectors: bool = True
    """Tenants may add node selectors to stage Jobs and serving pods."""
    allow_credential_secrets: bool = True
    """Tenants may reference Secrets of their namespace as source or push credentials."""
    allowed_build_engines: tuple[str, ...] = ("buildkit", "kaniko")
    """spec.build.engine, when set, must be one of these (``api.build.BuildEngine`` values). A spec that leaves it
    out gets the platform's own default (the chart's build.engine), which this does not judge."""
    allow_cross_namespace_gateways: bool = False
    """Tenants may attach their HTTPRoute (Canary trafficRouting.gatewayAPI) to a Gateway in another namespace
    (which must also admit it: its listener's allowedRoutes); false: only to Gateways of their own namespace."""


class Setting(StrEnum):
    """The policy's settings by their chart value / CEL variable name (camelCase of the Policy field)."""

    ALLOWED_IMAGE_PREFIXES = "allowedImagePrefixes"
    ALLOWED_REPOSITORY_PREFIXES = "allowedRepositoryPrefixes"
    ALLOW_SERVICE_ACCOUNTS = "allowServiceAccounts"
    ALLOW_CODE = "allowCode"
    ALLOW_TOLERATIONS = "allowTolerations"
    ALLOW_NODE_SELECTORS = "allowNodeSelectors"
    ALLOW_CREDENTIAL_SECRETS = "allowCredentialSecrets"
    ALLOW_CROSS_NAMESPACE_GATEWAYS = "allowCrossNamespaceGateways"
    ALLOWED_BUILD_ENGINES = "allowedBuildEngines"

    @property
    def attribute(self) -> str:
        """The Policy field."""
        return "".join("_" + c.lower() if c.isupper() else c for c in self.value)

    @property
    def env(self) -> str:
        """The operator's environment variable (set by the chart)."""
        return "MODELSHIP_POLICY_" + self.attribute.upper()

    @property
    def is_list(self) -> bool:
        return self.value.startswith("allowed")

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The values a list setting's items must come from, when they are names rather than free prefixes."""
        if self == Setting.ALLOWED_BUILD_ENGINES:
            return tuple(e.value for e in BuildEngine)
        return None


class Check(StrEnum):
    """How a rule judges its field."""

    IMAGE_PREFIX = "ImagePrefix"
    """A set string must start with one of allowedImagePrefixes."""
    REPOSITORY_PREFIX = "RepositoryPrefix"
    """A set string must start with one of allowedRepositoryPrefixes ({namespace} replaced), if any are listed."""
    ALLOWED_IF = "AllowedIf"
    """The field may be set (a string or object present, a list or map not empty, a bool true) only when the
    rule's boolean setting is true."""
    ONE_OF = "OneOf"
    """A set string must be one of the rule's list setting."""
    OWN_NAMESPACE = "OwnNamespace"
    """Every item of the list names no namespace, or the ModelDeployment's own, unless the rule's boolean setting
    is true."""


@dataclass(frozen=True)
class PolicyRule:
    """One field of the spec under the policy."""

    path: tuple[str, ...]
    """Wire path below ``spec`` (camelCase)."""
    check: Check
    setting: Setting
    what: str
    """What setting the field does, for the message."""

    @property
    def field(self) -> str:
        return "spec." + ".".join(self.path)

    @property
    def message(self) -> str:
        """What the API server (and the operator) says when the rule is broken: the field first."""
        if self.check == Check.IMAGE_PREFIX:
            return (f"{self.field}: {self.what} must start with one of the platform's allowed image prefixes "
                    f"(policy.{self.setting.value})")  # fmt: skip
        if self.check == Check.REPOSITORY_PREFIX:
            return (f"{self.field}: {self.what} must start with one of the platform's allowed repository prefixes "
                    f"(policy.{self.setting.value})")  # fmt: skip
        if self.check == Check.ONE_OF:
            return f"{self.field}: {self.what} must be one of the platform's policy.{self.setting.value}"
        if self.check == Check.OWN_NAMESPACE:
            return (f"{self.field}: {self.what} in another namespace is not allowed by the platform's policy "
                    f"(policy.{self.setting.value}); leave namespace unset or name the ModelDeployment's")  # fmt: skip
        return f"{self.field}: {self.what} is not allowed by the platform's policy (policy.{self.setting.value})"

    # -- CEL (admission) ---------------------------------------------------------------------------------------------

    def cel(self) -> str:
        """The rule over ``object`` as a ValidatingAdmissionPolicy expression: true when the object complies."""
        ref = "object.spec"
        guards = []
        for part in self.path:
            guards.append(f"has({ref}.{part})")
            ref = f"{ref}.{part}"
        var = f"variables.{self.setting.value}"
        if self.check == Check.IMAGE_PREFIX:
            ok = f"{var}.exists(p, {ref}.startsWith(p))"
        elif self.check == Check.REPOSITORY_PREFIX:
            ok = f"size({var}) == 0 || {var}.exists(p, {ref}.startsWith(p.replace('{{namespace}}', request.namespace)))"
        elif self.check == Check.ONE_OF:
            ok = f"{ref} in {var}"
        elif self.check == Check.OWN_NAMESPACE:
            ok = f"{var} || {ref}.all(r, !has(r.namespace) || r.namespace == request.namespace)"
        else:
            ok = f"{var} || !{_cel_set(ref, self.path)}"
        return f"!({' && '.join(guards)}) || {ok}"

    # -- Python (the operator) -----------------------------------------------------------------------------------

    def complies(self, spec: Mapping[str, Any], namespace: str, policy: Policy) -> bool:
        """The same rule over the spec as written (wire form)."""
        value: Any = spec
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value:
                return True
            value = value[part]
        allowed = getattr(policy, self.setting.attribute)
        if self.check == Check.IMAGE_PREFIX:
            return any(str(value).startswith(p) for p in allowed)
        if self.check == Check.REPOSITORY_PREFIX:
            return not allowed or any(str(value).startswith(p.replace("{namespace}", namespace)) for p in allowed)
        if self.check == Check.ONE_OF:
            return str(value) in allowed
        if self.check == Check.OWN_NAMESPACE:
            items = value if isinstance(value, list) else []
            return bool(allowed) or all(
                not isinstance(r, Mapping) or r.get("namespace") in (None, namespace) for r in items
            )
        return bool(allowed) or not _py_set(value)


# How "set" reads per field shape (the last path component says which): lists and maps are set when not empty,
# allowCode when true, anything else when present.
_LISTS = ("tolerations",)
_MAPS = ("nodeSelector",)
_BOOLS = ("allowCode",)


def _cel_set(ref: str, path: tuple[str, ...]) -> str:
    last = path[-1]
    if last in _LISTS or last in _MAPS:
        return f"(size({ref}) > 0)"
    if last in _BOOLS:
        return ref
    return "true"


def _py_set(value: Any) -> bool:
    if isinstance(value, (list, dict, bool)):
        return bool(value)
    return value is not None


def _rule(path: str, check: Check, setting: Setting, what: str) -> PolicyRule:
    return PolicyRule(tuple(path.split(".")), check, setting, what)


_IMG, _REPO, _IF = Check.IMAGE_PREFIX, Check.REPOSITORY_PREFIX, Check.ALLOWED_IF
_SECRETS = Setting.ALLOW_CREDENTIAL_SECRETS
_DATA = ("calibration", "evaluation", "fineTune")

RULES: tuple[PolicyRule, ...] = (
    _rule("optimization.job.image", _IMG, Setting.ALLOWED_IMAGE_PREFIXES, "the optimization Job's image"),
    _rule("build.job.image", _IMG, Setting.ALLOWED_IMAGE_PREFIXES, "the build Job's image"),
    _rule("build.baseImage", _IMG, Setting.ALLOWED_IMAGE_PREFIXES, "the base image of the build"),
    _rule("serving.image", _IMG, Setting.ALLOWED_IMAGE_PREFIXES, "the serving image"),
    _rule("build.repository", _REPO, Setting.ALLOWED_REPOSITORY_PREFIXES, "the repository the build pushes to"),
    _rule("build.engine", Check.ONE_OF, Setting.ALLOWED_BUILD_ENGINES, "the build engine"),
    _rule("model.allowCode", _IF, Setting.ALLOW_CODE, "running the model's or a custom metric's Python code"),
    _rule("model.credentials.serviceAccountName", _IF, Setting.ALLOW_SERVICE_ACCOUNTS, "a ServiceAccount"),
    _rule("serving.serviceAccountName", _IF, Setting.ALLOW_SERVICE_ACCOUNTS, "a ServiceAccount"),
    _rule("optimization.job.tolerations", _IF, Setting.ALLOW_TOLERATIONS, "a toleration"),
    _rule("build.job.tolerations", _IF, Setting.ALLOW_TOLERATIONS, "a toleration"),
    _rule("serving.hardware.tolerations", _IF, Setting.ALLOW_TOLERATIONS, "a toleration"),
    _rule("optimization.job.nodeSelector", _IF, Setting.ALLOW_NODE_SELECTORS, "a node selector"),
    _rule("build.job.nodeSelector", _IF, Setting.ALLOW_NODE_SELECTORS, "a node selector"),
    _rule("serving.hardware.nodeSelector", _IF, Setting.ALLOW_NODE_SELECTORS, "a node selector"),
    _rule("model.credentials.secretRef", _IF, Setting.ALLOW_CREDENTIAL_SECRETS, "a credentials Secret"),
    *(
        _rule(f"optimization.data.{role}.credentials.secretRef", _IF, _SECRETS, "a credentials Secret")
        for role in _DATA
    ),
    _rule("build.pushSecretRef", _IF, Setting.ALLOW_CREDENTIAL_SECRETS, "a credentials Secret"),
    _rule(
        "serving.rollout.canary.trafficRouting.gatewayAPI.parentRefs",
        Check.OWN_NAMESPACE,
        Setting.ALLOW_CROSS_NAMESPACE_GATEWAYS,
        "a Gateway",
    ),
)
"""Every field under the policy. Order: the order of the admission policy's validations."""


def violations(spec: Mapping[str, Any], namespace: str, policy: Policy) -> list[str]:
    """The messages of the rules ``spec`` (wire form, as written) breaks under ``policy``, in table order."""
    return [r.message for r in RULES if not r.complies(spec, namespace, policy)]


def parse_setting(setting: Setting, raw: str) -> Any:
    """A setting from its environment variable: a JSON list of strings, or true/false. ValueError says why."""
    if setting.is_list:
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValueError("not a JSON list of strings") from None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError("not a JSON list of non-empty strings")
        choices = setting.choices
        if choices is not None and not set(value) <= set(choices):
            raise ValueError(f"not a JSON list of {', '.join(choices)}")
        return tuple(value)
    text = raw.strip().lower()
    if text not in ("true", "false"):
        raise ValueError("not true or false")
    return text == "true"


def _default(setting: Setting) -> Any:
    return {f.name: f.default for f in fields(Policy)}[setting.attribute]


def chart_defaults() -> dict[str, Any]:
    """The chart's ``policy`` values: the Policy defaults by setting name."""
    return {s.value: (list(_default(s)) if s.is_list else _default(s)) for s in Setting}


# -- the chart's ValidatingAdmissionPolicy ---------------------------------------------------------------------------


def vap_validations() -> list[dict[str, str]]:
    return [{"expression": r.cel(), "message": r.message, "reason": "Forbidden"} for r in RULES]


def _yaml_str(text: str) -> str:
    return json.dumps(text)


def helm_policy_template(settings: Sequence[Setting] = tuple(Setting)) -> str:
    """The chart's ``templates/_policy.tpl``: the admission policy's variables (from the chart's ``policy``
    values) and validations (from RULES)."""
    lines = [
        "{{/*",
        "GENERATED from modelship.api.policy by hack/sync-chart-crds (python -m modelship.api.policy --helm):",
        "do not edit. tests/chart/test_policy.py fails when this file and the table differ.",
        "*/}}",
        '{{- define "modelship.policy.variables" -}}',
    ]
    for s in settings:
        lines += [f"- name: {s.value}", f"  expression: {{{{ .Values.policy.{s.value} | toJson | quote }}}}"]
    lines += ["{{- end }}", "", '{{- define "modelship.policy.validations" -}}']
    for v in vap_validations():
        lines += [
            f"- expression: {_yaml_str(v['expression'])}",
            f"  message: {_yaml_str(v['message'])}",
            f"  reason: {v['reason']}",
        ]
    lines.append("{{- end }}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--helm"]:
        sys.stdout.write(helm_policy_template())
        return 0
    if not args:
        for r in RULES:
            print(f"{r.field}\t{r.check.value}\t{r.setting.value}")
        return 0
    print("usage: python -m modelship.api.policy [--helm]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
