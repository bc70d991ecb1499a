"""Whose pods the Canary analysis reads (Reconciler.observe's ``Makers``): the candidate's Deployment counts as
its maker only when the ModelDeployment controls it (owner reference with its uid), not for its name. One of the
same name that another owns (an earlier ModelDeployment of the name, or a Deployment a tenant made) makes no pod
the analysis reads: its pods are refused, as forged ones."""

from __future__ import annotations

from typing import Any

import pytest

from modelship.controller.podmetrics import NOBODY, Makers
from modelship.controller.reconcile import Reconciler
from modelship.controller.store import Store
from modelship.resources.meta import REVISION_LABEL
from modelship.resources.revision import revision
from tests.unit.test_plan import CONFIG, IMAGE, make_md
from tests.unit.test_serving_pod_health import REV, CountingKube, ago, status


def _deployment(name: str, rev: str, owner_uid: str, ready: int) -> dict[str, Any]:
    owner = [{"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "name": "digits", "uid": owner_uid,
              "controller": True}]  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"d-{name}", "generation": 1, "ownerReferences": owner,
                     "labels": {"modelship.io/modeldeployment": "digits"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {REVISION_LABEL: rev}},
                                             "spec": {"containers": [{"name": "server", "image": IMAGE}]}}},
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": ready, "availableReplicas": ready,
                   "updatedReplicas": 2},
    }  # fmt: skip


@pytest.mark.parametrize(("canary_owner", "expected"), [("u-1", "digits-canary"), ("u-other", None)])
def test_the_candidate_s_maker_is_the_canary_deployment_only_when_ours(canary_owner: str, expected: str | None) -> None:
    serving = {"replicas": 2, "rollout": {"strategy": "Canary"}}
    cand = revision(make_md(serving=serving).spec)
    rollout = {"candidate": cand, "stable": REV, "phase": "Shadow", "step": 0, "startedAt": ago(30),
               "phaseStartedAt": ago(20)}  # fmt: skip
    md = make_md(serving=serving, status={**status(serving=REV), "rollout": rollout})
    assert md.metadata.uid == "u-1"
    store = Store()
    store.put("Deployment", _deployment("digits", REV, "u-1", ready=1))  # short: the serving pods are listed
    store.put("Deployment", _deployment("digits-canary", cand, canary_owner, ready=2))
    kube = CountingKube(store, cand)  # lists a crash-looping stable pod and a ready pod of digits-canary's
    fetched: list[str] = []

    def fetch(p: dict[str, Any], port: int) -> str:
        fetched.append(p["metadata"]["name"])
        return ""

    r = Reconciler(kube, store, CONFIG, fetch_metrics=fetch)  # type: ignore[arg-type]
    asked: list[Makers] = []
    figures = r._figures

    def spy(md_: Any, listed: Any = None, *, makers: Makers) -> Any:
        asked.append(makers)
        return figures(md_, listed, makers=makers)

    r._figures = spy  # type: ignore[method-assign]
    observed = r.observe(md)
    assert asked == [Makers(candidate=expected, stable="digits")]
    assert observed.readings is not None and kube.pod_lists == 1
    if expected is None:  # not ours: its pod is refused, never asked for its figures
        assert fetched == [] and observed.readings.refused == ("digits-canary-9c9-a",)
        assert observed.canary is None
    else:
        assert fetched == ["digits-canary-9c9-a"] and observed.readings.refused == ()
    assert NOBODY not in asked  # the stable Deployment is ours either way
