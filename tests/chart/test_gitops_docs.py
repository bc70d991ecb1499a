"""The GitOps docs shipped with the chart: Argo CD's Lua health check run in lupa over real statuses captured from
the operator (tests/chart/samples, written by tests/integration/test_gitops.py) and over edge cases; the argocd-cm
snippet carries that script verbatim; the Flux example is well-formed and kstatus' rules, which Flux applies to
our CRD, give the expected verdict on the same samples."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from modelship import GROUP, KIND, VERSION
from tests.chart.gitops import EXPECTED, LUA_CHECK, argocd_health, kstatus, load_samples
from tests.chart.helm import CHART

DOCS = CHART / "docs"
SAMPLES = load_samples()


def test_every_expected_state_has_a_committed_sample() -> None:
    assert sorted(SAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_argocd_health_of_real_statuses(name: str) -> None:
    health = argocd_health(SAMPLES[name])
    assert health["status"] == EXPECTED[name][0], health
    assert health["message"], health


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kstatus_of_real_statuses(name: str) -> None:
    assert kstatus(SAMPLES[name]) == EXPECTED[name][1]


def test_samples_are_real_operator_statuses() -> None:
    """Guard against hand-edited samples: the kstatus trio with the operator's observedGeneration."""
    for name, obj in SAMPLES.items():
        if name == "new-no-status":
            assert "status" not in obj
            continue
        types = {c["type"] for c in obj["status"]["conditions"]}
        assert {"Ready", "Reconciling", "Stalled"} <= types, name
        assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_messages_come_from_the_operator() -> None:
    ready, stalled = SAMPLES["ready"], SAMPLES["stalled-gate"]
    assert argocd_health(ready)["message"] == _cond(ready, "Ready")["message"]
    assert argocd_health(stalled)["message"] == _cond(stalled, "Stalled")["message"]
    assert "generation 2, observed 1" in argocd_health(SAMPLES["spec-not-observed"])["message"]


# ---------------------------------------------------------------------------- edge cases, derived from samples
def test_suspend_requested_but_not_yet_observed_is_progressing() -> None:
    obj = copy.deepcopy(SAMPLES["ready"])
    obj["spec"]["suspend"] = True  # same generation on purpose: the operator's pass has not happened
    health = argocd_health(obj)
    assert health == {"status": "Progressing", "message": "Suspending"}


def test_resume_not_yet_observed_is_progressing() -> None:
    obj = copy.deepcopy(SAMPLES["suspended"])
    obj["spec"]["suspend"] = False
    obj["metadata"]["generation"] += 1
    assert argocd_health(obj)["status"] == "Progressing"


def test_ready_while_a_new_revision_rolls_out_is_progressing() -> None:
    obj = copy.deepcopy(SAMPLES["ready"])
    _cond(obj, "Reconciling").update(status="True", reason="RollingOut", message="rolling out revision r2")
    assert argocd_health(obj) == {"status": "Progressing", "message": "rolling out revision r2"}


def test_stalled_wins_over_ready() -> None:
    obj = copy.deepcopy(SAMPLES["ready"])
    _cond(obj, "Stalled").update(status="True", reason="JobFailed", message="")
    assert argocd_health(obj) == {"status": "Degraded", "message": "JobFailed"}


def test_status_without_observed_generation_or_conditions() -> None:
    obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"generation": 1}, "status": {}}
    assert argocd_health(obj)["status"] == "Progressing"
    obj["status"] = {"observedGeneration": 1}
    assert argocd_health(obj)["status"] == "Progressing"


def test_the_check_itself_can_fail() -> None:
    """The harness is not vacuous: a check that always says Healthy is caught."""
    assert argocd_health(SAMPLES["stalled-gate"], 'return {status = "Healthy", message = ""}')["status"] == "Healthy"
    assert argocd_health(SAMPLES["stalled-gate"])["status"] != "Healthy"


# ---------------------------------------------------------------------------- the shipped snippets
def test_argocd_cm_snippet_carries_the_script_verbatim() -> None:
    cm = yaml.safe_load((DOCS / "argocd-cm.yaml").read_text())
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    key = f"resource.customizations.health.{GROUP}_{KIND}"
    assert list(cm["data"]) == [key]
    assert cm["data"][key] == LUA_CHECK.read_text()


def test_flux_example_is_well_formed() -> None:
    docs = [d for d in yaml.safe_load_all((DOCS / "flux-kustomization.yaml").read_text()) if d]
    kinds = [(d["apiVersion"], d["kind"]) for d in docs]
    assert ("kustomize.toolkit.fluxcd.io/v1", "Kustomization") in kinds
    assert ("helm.toolkit.fluxcd.io/v2", "HelmRelease") in kinds
    kustomizations = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Kustomization"}
    for k in kustomizations.values():
        for dep in k["spec"].get("dependsOn", []):
            assert dep["name"] in kustomizations, dep
    models = kustomizations["models"]["spec"]
    assert models["wait"] is False  # healthChecks are ignored when wait is true
    (check,) = models["healthChecks"]
    assert (check["apiVersion"], check["kind"]) == (f"{GROUP}/{VERSION}", KIND)
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/modelship"
    assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == "CreateReplace"
    assert set(release["spec"]["values"]) <= set(yaml.safe_load((CHART / "values.yaml").read_text()))
