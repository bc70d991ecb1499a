"""The operator's permissions, generated from the kinds table (``modelship.resources.kinds``): one rule per kind
and per subresource, with exactly the verbs the table grants. One source for the Helm chart's ClusterRole/Role
(``charts/modelship/templates/_rules.tpl`` is written from ``helm_rules_template()`` by hack/sync-chart-crds)
and for the integration tests, which run the operator under exactly these rules.

    python -m modelship.rbac            print the rules (YAML), cluster-wide
    python -m modelship.rbac --helm     print the chart's generated template
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from .resources.kinds import KINDS, Kind, Verb


def operator_rules(cluster_scope: bool = True) -> list[dict[str, Any]]:
    """PolicyRules (rbac.authorization.k8s.io/v1) of the operator.

    cluster_scope adds what kopf needs to discover namespaces and CRDs when it watches the whole cluster.
    """
    kinds = (k for k in KINDS if cluster_scope or not k.cluster_scope_only)
    # an own_namespace kind is granted here only the verbs it needs everywhere (``Kind.everywhere``)
    return _rules(replace(k, grants=k.everywhere, subresources={}) if k.own_namespace else k for k in kinds
                  if not k.own_namespace or k.everywhere)  # fmt: skip


def own_namespace_rules() -> list[dict[str, Any]]:
    """PolicyRules of the Role in the operator's own namespace (the revision caches): never granted to it in a
    tenant namespace."""
    return _rules(k for k in KINDS if k.own_namespace)


def _rules(kinds: Iterable[Kind]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for k in kinds:
        rules.append({"apiGroups": [k.group], "resources": [k.plural], "verbs": [v.value for v in k.verbs]})
        for sub, grants in k.subresources.items():
            verbs = [v.value for v in dict.fromkeys(g.verb for g in grants)]
            rules.append({"apiGroups": [k.group], "resources": [f"{k.plural}/{sub}"], "verbs": verbs})
    return rules


def build_namespace_rules() -> list[dict[str, Any]]:
    """PolicyRules of the operator in its build namespace: list and watch of every watched kind (the operator
    watches that namespace too), plus what the build Jobs need there (``Kind.in_build_namespace``, also of kinds
    not watched: the Events of a build Job without a pod)."""
    rules: list[dict[str, Any]] = []
    for k in KINDS:
        if (k.watch is None and not k.in_build_namespace) or not k.namespaced:
            continue
        watched = [Verb.LIST, Verb.WATCH] if k.watch is not None else []
        verbs = [*watched, *(g.verb for g in k.in_build_namespace)]
        unique = [v.value for v in dict.fromkeys(verbs)]
        rules.append({"apiGroups": [k.group], "resources": [k.plural], "verbs": unique})
    return rules


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _rules_yaml(rules: list[dict[str, Any]]) -> str:
    return "".join(
        f"- apiGroups: {_flow(r['apiGroups'])}\n  resources: {_flow(r['resources'])}\n  verbs: {_flow(r['verbs'])}\n"
        for r in rules
    )


def helm_rules_template() -> str:
    """The chart's ``templates/_rules.tpl``: operator_rules() in both modes as named templates."""
    cluster_only = operator_rules(cluster_scope=True)[len(operator_rules(cluster_scope=False)) :]
    return (
        "{{/*\n"
        "GENERATED from modelship.resources.kinds by hack/sync-chart-crds (python -m modelship.rbac --helm):\n"
        "do not edit. tests/chart/test_rbac.py fails when this file and the table differ.\n"
        '"modelship.rules.namespaced" is operator_rules(cluster_scope=False); "modelship.rules.cluster" adds what\n'
        "kopf needs to discover namespaces and CRDs when it watches the whole cluster; \"modelship.rules.own\" is\n"
        "own_namespace_rules(), the Role in the operator's own namespace (the revision caches);\n"
        "\"modelship.rules.build\" is build_namespace_rules(), the operator's Role in its build namespace.\n"
        "*/}}\n"
        '{{- define "modelship.rules.namespaced" -}}\n'
        f"{_rules_yaml(operator_rules(cluster_scope=False))}"
        "{{- end }}\n"
        "\n"
        '{{- define "modelship.rules.cluster" -}}\n'
        '{{ include "modelship.rules.namespaced" . }}\n'
        f"{_rules_yaml(cluster_only)}"
        "{{- end }}\n"
        "\n"
        '{{- define "modelship.rules.own" -}}\n'
        f"{_rules_yaml(own_namespace_rules())}"
        "{{- end }}\n"
        "\n"
        '{{- define "modelship.rules.build" -}}\n'
        f"{_rules_yaml(build_namespace_rules())}"
        "{{- end }}\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--helm"]:
        sys.stdout.write(helm_rules_template())
    elif not args:
        sys.stdout.write(_rules_yaml(operator_rules()))
    else:
        print("usage: python -m modelship.rbac [--helm]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
