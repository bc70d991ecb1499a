"""The one table of kinds (modelship.resources.kinds) against what the builders really produce and what the
operator really needs. The table's facts about the API (scope, verbs) are checked against a real API server in
tests/integration/test_kinds.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig
from modelship.resources import kinds
from modelship.resources.kinds import KINDS, Verb
from modelship.resources.plan import render_all, serving_plan
from tests.support.specs import valid_doc

REPO = Path(__file__).resolve().parents[2]
UID = "6f1f2c7e-1111-4222-8333-944445555666"


def _md(doc: dict[str, Any]) -> ModelDeployment:
    doc = copy.deepcopy(doc)
    doc["metadata"].update(namespace="ml", uid=UID, generation=1)
    return ModelDeployment.from_body(doc)


def _examples() -> list[ModelDeployment]:
    docs = [valid_doc()]
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelDeployment"]
    everything_on = valid_doc("all-on")
    everything_on["spec"]["serving"].update(
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 4},
        disruptionBudget={"minAvailable": "1"},
        networkPolicy={"enabled": True},
        rollout={
            "strategy": "Canary",
            "canary": {"trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}},
        },
    )
    docs.append(everything_on)
    return [_md(d) for d in docs]


def test_kinds_are_unique_and_rows_well_formed() -> None:
    assert len({k.kind for k in KINDS}) == len(KINDS)
    assert len({(k.group, k.plural) for k in KINDS}) == len(KINDS)
    for k in KINDS:
        assert k.grants, k.kind
        assert all(g.why.strip() for g in k.grants), k.kind
        assert len(k.verbs) == len(k.grants), f"{k.kind}: a verb granted twice"
        assert k.plural == k.plural.lower() and "/" not in k.group, k.kind
        # verbs granted everywhere besides the own namespace: only for an own-namespace row, each with its reason
        assert not k.everywhere or k.own_namespace, k.kind
        assert all(g.why.strip() for g in k.everywhere), k.kind
        assert {g.verb for g in k.everywhere} <= set(k.verbs), k.kind  # so the API server check covers them


def test_roles_imply_their_verbs() -> None:
    for k in KINDS:
        verbs = set(k.verbs)
        if k.watch is not None:
            assert {Verb.LIST, Verb.WATCH} <= verbs, f"{k.kind} is watched"
        if k.applied:
            assert {Verb.CREATE, Verb.PATCH} <= verbs, f"{k.kind} is applied (apply creates it when missing)"
            assert k.watch is not None, f"{k.kind}: an applied child must be watched to be kept as desired"
        if k.pruned:
            assert k.applied and Verb.DELETE in verbs, k.kind
        if Verb.DELETE in verbs:
            assert k.pruned, f"{k.kind}: delete granted but nothing prunes it"
        assert Verb.UPDATE not in verbs, f"{k.kind}: the operator applies or patches, it never replaces"


def test_every_object_the_builders_produce_has_a_row() -> None:
    """Each object the spec leads to (`modelship render`, every example plus every optional object turned on)
    is a kind the table lets the operator write, with the table's apiVersion."""
    produced: set[tuple[str, str]] = set()
    for md in _examples():
        for obj in render_all(md, OperatorConfig()):
            produced.add((obj["apiVersion"], obj["kind"]))
    for api_version, name in produced:
        row = kinds.kind(name)
        assert row.api_version == api_version, name
        assert row.applied or Verb.CREATE in row.verbs, name
    applied_or_jobs = {(k.api_version, k.kind) for k in KINDS if k.applied} | {(kinds.JOB.api_version, "Job")}
    assert produced == applied_or_jobs


def test_pruned_kinds_are_the_serving_plans_optional_objects() -> None:
    """What the spec can turn off is what the plan deletes: with everything on, each optional object is
    produced; with the defaults, exactly the pruned kinds are absent."""
    on = next(md for md in _examples() if md.metadata.name == "all-on")
    full = serving_plan(on, "r1", OperatorConfig(), "registry.local/x@sha256:" + "0" * 64)
    optional = {kind for kind, obj in full.optional().items() if obj is not None}
    # the HTTPRoute is pruned by the verify stage (its weights are the rollout's), not the serving plan
    serving_pruned = {k.kind for k in kinds.PRUNED} - {kinds.HTTP_ROUTE.kind}
    assert optional == serving_pruned
    off = _md({**valid_doc(), "spec": {**valid_doc()["spec"], "serving": {"replicas": 1}}})
    plain = serving_plan(off, "r1", OperatorConfig(), None)
    assert {kind for kind, obj in plain.optional().items() if obj is None} == serving_pruned


@pytest.mark.parametrize("row", KINDS, ids=lambda k: k.kind)
def test_paths(row: kinds.Kind) -> None:
    prefix = f"/apis/{row.group}/{row.version}" if row.group else f"/api/{row.version}"
    if row.namespaced:
        assert row.path("ns", "x") == f"{prefix}/namespaces/ns/{row.plural}/x"
        assert row.path("ns") == f"{prefix}/namespaces/ns/{row.plural}"
        with pytest.raises(ValueError, match="namespaced"):
            row.path()
    else:
        assert row.path(name="x") == f"{prefix}/{row.plural}/x"


def test_unknown_kind_is_named() -> None:
    with pytest.raises(KeyError, match="StatefulSet is not in the operator's kinds table"):
        kinds.kind("StatefulSet")


def test_the_operator_watches_exactly_the_watched_rows() -> None:
    """controller.handlers registers one kopf watch per watched row, with the row's label selector."""
    import kopf

    import modelship.controller.handlers  # noqa: F401  (registers the handlers)

    registered = set()
    for handler in kopf.get_default_registry()._watching.get_all_handlers():
        sel = handler.selector
        labels = tuple(sorted((k, None if v is kopf.PRESENT else v) for k, v in (handler.labels or {}).items()))
        registered.add((sel.group, sel.version, sel.any_name, labels))
    expected = {
        (k.group, k.version, k.plural, tuple(sorted(k.watch.items()))) for k in KINDS if k.watch is not None
    }
    assert registered == expected


def test_kube_paths_come_from_the_table() -> None:
    from modelship.controller.kube import resource_path

    for k in KINDS:
        if k.namespaced:
            assert resource_path(k.api_version, k.kind, "ns", "x") == k.path("ns", "x")
    with pytest.raises(ValueError, match="autoscaling/v2 in the kinds table, not autoscaling/v1"):
        resource_path("autoscaling/v1", "HorizontalPodAutoscaler", "ns")


def test_no_kind_is_listed_outside_the_table() -> None:
    """No module of the operator spells a row's plural or group/version again (the API package describes our
    own CRD and is exempt): everything goes through modelship.resources.kinds."""
    import ast

    needles = {k.plural for k in KINDS} | {k.api_version for k in KINDS if "/" in k.api_version}
    package = REPO / "operator" / "modelship"
    hits = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] == "api" or rel == Path("__init__.py") or rel == Path("resources", "kinds.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in needles:
                hits.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert hits == []
