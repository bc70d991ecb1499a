"""A serving pod's claim to be ours, checked by uid (controller.replicasets): a pod whose controller reference
names one of our Deployments' ReplicaSets with a uid of its own (anyone who can create a pod can write one) is not
read by the Canary analysis, not taken for a revision's pod by the health look, whatever its labels; and a pass asks
the API server about a ReplicaSet once, not at every look."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.controller.reconcile import Reconciler
from modelship.controller.replicasets import FORGED, ReplicaSetOwners
from modelship.controller.store import Store
from modelship.resources.revision import revision
from tests.unit.test_analysis_makers import _deployment
from tests.unit.test_plan import CONFIG, make_md
from tests.unit.test_serving_pod_health import REV, CountingKube, ago, crashing, pod, running, status


class ForgingKube(CountingKube):
    """CountingKube's pods and, beside them, two pods someone made naming our ReplicaSets with another uid: one
    labelled as the candidate (ready, its /metrics would decide the rollout), one as the stable revision
    (crash-looping, its words would explain the stable revision's health). Counts the ReplicaSet GETs."""

    def __init__(self, store: Store, candidate: str) -> None:
        super().__init__(store, candidate)
        self.rs_gets: list[str] = []

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        pods = super().list(api_version, kind, namespace, label_selector)
        if kind != "Pod":
            return pods
        ready = [{"type": "Ready", "status": "True"}]
        forged = [pod("forged-candidate", running(60), rev=self.candidate, owner="digits-canary-9c9", hash_="9c9",
                      conditions_=ready),
                  pod("forged-stable", crashing(reason="OOMKilled", code=137))]  # fmt: skip
        for p in forged:
            p["metadata"]["ownerReferences"][0]["uid"] = "made-up"
        return [*pods, *forged]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "ReplicaSet":
            self.rs_gets.append(name)
        return super().get(api_version, kind, namespace, name)


def test_a_pod_naming_our_replicaset_with_another_uid_is_refused_by_the_analysis_and_the_health_look() -> None:
    serving = {"replicas": 2, "rollout": {"strategy": "Canary"}}
    cand = revision(make_md(serving=serving).spec)
    rollout = {"candidate": cand, "stable": REV, "phase": "Shadow", "step": 0, "startedAt": ago(30),
               "phaseStartedAt": ago(20)}  # fmt: skip
    md = make_md(serving=serving, status={**status(serving=REV), "rollout": rollout})
    store = Store()
    store.put("Deployment", _deployment("digits", REV, "u-1", ready=1))  # short: the serving pods are listed
    store.put("Deployment", _deployment("digits-canary", cand, "u-1", ready=2))
    kube = ForgingKube(store, cand)
    fetched: list[str] = []

    def fetch(p: dict[str, Any], port: int) -> str:
        fetched.append(p["metadata"]["name"])
        return ""

    r = Reconciler(kube, store, CONFIG, fetch_metrics=fetch)  # type: ignore[arg-type]
    for look in range(3):
        observed = r.observe(md)
        assert observed.readings is not None and observed.readings.refused == ("forged-candidate",)
        assert fetched == ["digits-canary-9c9-a"] * (look + 1)  # the forged pod's /metrics never asked
        assert observed.serving_pods is not None and [p.name for p in observed.serving_pods] == ["digits-5f7-a"]
    # each ReplicaSet asked about once for each uid a pod gives it: ours, and the forged uid for each name
    assert sorted(kube.rs_gets) == ["digits-5f7", "digits-5f7", "digits-canary-9c9", "digits-canary-9c9"]


class OneReplicaSet:
    """The API server's ReplicaSet digits-5f7 (uid rs-1, controlled by the Deployment uid d-1), GETs counted."""

    def __init__(self) -> None:
        self.gets = 0

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        if name != "digits-5f7":
            return None
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits", "uid": "d-1", "controller": True}
        return {"metadata": {"name": name, "namespace": namespace, "uid": "rs-1", "ownerReferences": [ref]}}


@pytest.mark.parametrize(
    ("name", "uid", "answer"),
    [("digits-5f7", "rs-1", "d-1"), ("digits-5f7", "rs-forged", FORGED), ("digits-666", "rs-1", FORGED)],
)
def test_a_replicaset_is_asked_about_once_per_uid(name: str, uid: str, answer: str) -> None:
    kube = OneReplicaSet()
    owners = ReplicaSetOwners(kube)  # type: ignore[arg-type]
    assert [owners.controller("ml", name, uid) for _ in range(3)] == [answer] * 3 and kube.gets == 1


def test_what_is_kept_is_bounded() -> None:
    kube = OneReplicaSet()
    owners = ReplicaSetOwners(kube, kept=4)  # type: ignore[arg-type]
    for i in range(10):
        owners.controller("ml", "digits-5f7", f"forged-{i}")
    assert len(owners._controllers) == 4 and kube.gets == 10
    owners.controller("ml", "digits-5f7", "forged-9")  # among the last kept
    owners.controller("ml", "digits-5f7", "forged-0")  # forgotten: asked again
    assert kube.gets == 11


def test_a_uid_forged_for_one_name_says_nothing_of_another_replicaset() -> None:
    """A pod naming another ReplicaSet with the real uid of ours (rs-1, readable by whoever reads ReplicaSets) is
    found forged; the pods of ours, giving the same uid with their own ReplicaSet's name, are still ours."""
    kube = OneReplicaSet()
    owners = ReplicaSetOwners(kube)  # type: ignore[arg-type]
    assert owners.controller("ml", "digits-666", "rs-1") == FORGED
    assert owners.controller("ml", "digits-5f7", "rs-1") == "d-1"


def test_a_reference_without_a_uid_is_not_ours() -> None:
    p = pod("digits-5f7-a", running(60))
    del p["metadata"]["ownerReferences"][0]["uid"]
    kube = OneReplicaSet()
    assert not ReplicaSetOwners(kube).made_by(p, "digits", "d-1") and kube.gets == 0  # type: ignore[arg-type]
    vouched = ReplicaSetOwners(kube).vouched([p], {"digits": "d-1"})  # type: ignore[arg-type]
    assert vouched[0]["metadata"]["ownerReferences"] == [] and p["metadata"]["ownerReferences"]  # a copy


def test_a_replicaset_that_cannot_be_read_concludes_nothing() -> None:
    """A GET refused (a Role without get on ReplicaSets) or failed fails the caller's pass: the pod is neither
    taken for ours nor remembered as forged, and is asked about again."""

    class Refusing(OneReplicaSet):
        def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            self.gets += 1
            raise ApiException(status=403, reason="Forbidden")

    kube = Refusing()
    owners = ReplicaSetOwners(kube)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(ApiException):
            owners.vouched([pod("digits-5f7-a", running(60))], {"digits": "d-1"})
    assert kube.gets == 2 and not owners._controllers
