"""Which revision's pods a Service routes to: EndpointSlices reduced to ready endpoints by revision (pure), and the
pods' revisions read by label only when a slice lists a pod not seen before."""

from __future__ import annotations

from typing import Any

from modelship.controller.endpoints import FOREIGN_PODS_KEPT, PodRevisions, observe_endpoints
from modelship.controller.observe import endpoints_observation, ready_pods, service_slices
from modelship.controller.replicasets import UNSETTLED_SECONDS, ReplicaSetOwners
from modelship.controller.store import Store

SVC_UID = "svc-uid"


def endpoint(pod: str, uid: str, ready: bool | None = True, kind: str = "Pod") -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": ["10.0.0.1"], "targetRef": {"kind": kind, "name": pod, "uid": uid,
                                                                     "namespace": "ml"}}  # fmt: skip
    if ready is not None:
        ep["conditions"] = {"ready": ready, "serving": ready, "terminating": not ready}
    return ep


def eps(name: str, *endpoints: dict[str, Any], service: str = "digits", owner: str = SVC_UID,
        **meta: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"kubernetes.io/service-name": service, "modelship.io/modeldeployment": "digits",
                       "app.kubernetes.io/managed-by": "modelship"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": owner,
                                 "controller": True}],
            **meta,
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
    }


def test_only_the_services_own_slices_count() -> None:
    mine = eps("digits-abc", endpoint("a", "1"))
    other_service = eps("digits-canary-x", endpoint("b", "2"), service="digits-canary")
    forged = eps("digits-forged", endpoint("c", "3"), owner="someone-else")
    going = eps("digits-old", endpoint("d", "4"), deletionTimestamp="2026-11-29T00:00:00Z")
    assert service_slices([mine, other_service, forged, going], "digits", SVC_UID) == [mine]
    assert service_slices([mine], "digits", None) == []  # no Service of ours: nothing is its


def test_ready_pods_counts_each_ready_pod_once() -> None:
    ipv4 = eps("digits-v4", endpoint("a", "1"), endpoint("b", "2", ready=False), endpoint("c", "3", ready=None),
               endpoint("n", "9", kind="Node"))  # fmt: skip
    ipv6 = {**eps("digits-v6", endpoint("a", "1")), "addressType": "IPv6"}  # the same pod in the other family
    assert ready_pods([ipv4, ipv6]) == {("a", "1"), ("c", "3")}  # unset ready reads as true (the API's rule)
    assert ready_pods([eps("digits-empty")]) == frozenset()


def test_endpoints_are_counted_by_their_pods_revision() -> None:
    pods = frozenset({("a", "1"), ("b", "2"), ("c", "3")})
    obs = endpoints_observation("digits", pods, {"1": "r1", "2": "r2"})
    assert (obs.ready_of("r1"), obs.ready_of("r2"), obs.ready_of(""), obs.total_ready) == (1, 1, 1, 3)
    assert obs.ready_of("r3") == 0


class ListingKube:
    """Answers pod lists from a fixed set of pods and counts the lists; answers a GET of the ReplicaSet
    ``<owner>-<hash>`` with uid ``rs-<owner>``, controlled by the Deployment of uid ``d-<owner>`` (``controllers``
    says otherwise), and counts the GETs."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.lists: list[tuple[str, str]] = []
        self.gets: list[str] = []
        self.controllers: dict[str, str] = {}

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert (api_version, kind) == ("v1", "Pod")
        self.lists.append((namespace, selector))
        return [p for p in self.pods if p["metadata"]["namespace"] == namespace]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (api_version, kind, namespace) == ("apps/v1", "ReplicaSet", "ml")
        self.gets.append(name)
        owner = name.rpartition("-")[0]
        controller = self.controllers.get(owner, f"d-{owner}")  # "": none (orphaned, not adopted yet)
        ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "controller": True, "uid": controller}
        return {"metadata": {"name": name, "namespace": namespace, "uid": f"rs-{owner}",
                             "ownerReferences": [ref] if controller else []}}  # fmt: skip


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OURS = (("digits", "d-digits"), ("digits-canary", "d-digits-canary"))
"""The ModelDeployment's Deployments (name, uid): the serving one and the Canary's candidate."""


def revisions_of(kube: ListingKube, clock: Clock | None = None) -> PodRevisions:
    return PodRevisions(kube, ReplicaSetOwners(kube, clock=clock or Clock()))  # type: ignore[arg-type]


def pod(name: str, uid: str, rev: str, owner: str | None = "digits", hash_: str = "5f7") -> dict[str, Any]:
    """A serving pod of revision ``rev`` made by the Deployment ``owner``'s ReplicaSet (None: by nothing)."""
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-{hash_}", "uid": f"rs-{owner}",
             "controller": True}] if owner else []  # fmt: skip
    labels = {"modelship.io/revision": rev, "pod-template-hash": hash_}
    return {"metadata": {"name": name, "namespace": "ml", "uid": uid, "labels": labels, "ownerReferences": refs}}


def test_pods_are_listed_only_when_a_slice_names_one_not_seen_before() -> None:
    kube = ListingKube([pod("a", "1", "r1"), pod("b", "2", "r1")])
    revisions = revisions_of(kube)
    store = Store()
    service = {"metadata": {"name": "digits", "namespace": "ml", "uid": SVC_UID}}
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("b", "2", ready=False)))
    first = observe_endpoints(store, revisions, "ml", "digits", service, OURS)
    assert first is not None and first.ready_of("r1") == 1
    assert kube.lists == [("ml", "modelship.io/modeldeployment=digits,app.kubernetes.io/component=server")]
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("b", "2")))
    assert observe_endpoints(store, revisions, "ml", "digits", service, OURS) == first.__class__("digits", (("r1", 2),))
    assert len(kube.lists) == 1  # both pods known: no new list
    kube.pods.append(pod("c", "3", "r2"))  # a new pod of the next rollout appears in the slice
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("c", "3")))
    third = observe_endpoints(store, revisions, "ml", "digits", service, OURS)
    assert third is not None and (third.ready_of("r1"), third.ready_of("r2")) == (1, 1) and len(kube.lists) == 2
    # a pod someone else labelled so the Service selects it: no revision of ours, and asked about once
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("c", "3"), endpoint("x", "99")))
    for _ in range(2):
        foreign = observe_endpoints(store, revisions, "ml", "digits", service, OURS)
        assert foreign is not None and (foreign.ready_of("r1"), foreign.ready_of(""), foreign.total_ready) == (1, 1, 3)
    assert len(kube.lists) == 3
    # no Service yet, or a slice listing no ready pod: nothing to ask
    assert observe_endpoints(store, revisions, "ml", "digits", None, OURS) is None
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1", ready=False)))
    assert observe_endpoints(store, revisions, "ml", "digits", service, OURS) == first.__class__("digits", ())
    assert len(kube.lists) == 3


def test_two_foreign_pods_one_per_service_are_asked_about_once_each_not_every_reconcile() -> None:
    """A Canary: the stable and the candidate Service each list a pod someone else labelled so it selects it. The
    two Services' looks share the ModelDeployment's memory: the second look's list must not forget the first
    Service's foreign pod (else every reconcile lists the pods twice, for ever)."""
    kube = ListingKube([pod("a", "1", "r1"), pod("c", "3", "r2")])
    revisions = revisions_of(kube)
    store = Store()
    stable = {"metadata": {"name": "digits", "namespace": "ml", "uid": SVC_UID}}
    canary = {"metadata": {"name": "digits-canary", "namespace": "ml", "uid": "canary-uid"}}
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("x", "98")))
    store.put("EndpointSlice", eps("digits-canary-abc", endpoint("c", "3"), endpoint("y", "99"),
                                   service="digits-canary", owner="canary-uid"))  # fmt: skip
    for _ in range(5):  # five reconciles, each looking at both Services
        seen = observe_endpoints(store, revisions, "ml", "digits", stable, OURS)
        assert seen is not None and (seen.ready_of("r1"), seen.ready_of(""), seen.total_ready) == (1, 1, 2)
        candidate = observe_endpoints(store, revisions, "ml", "digits", canary, OURS)
        assert candidate is not None and (candidate.ready_of("r2"), candidate.ready_of("")) == (1, 1)
    assert len(kube.lists) == 2  # one per foreign pod, when each was first seen
    # a serving pod a later list finds (the foreign uids kept do not hide it): its revision is read
    kube.pods.append(pod("d", "4", "r2"))
    store.put("EndpointSlice", eps("digits-canary-abc", endpoint("c", "3"), endpoint("y", "99"), endpoint("d", "4"),
                                   service="digits-canary", owner="canary-uid"))  # fmt: skip
    candidate = observe_endpoints(store, revisions, "ml", "digits", canary, OURS)
    assert candidate is not None and candidate.ready_of("r2") == 2 and len(kube.lists) == 3
    seen = observe_endpoints(store, revisions, "ml", "digits", stable, OURS)
    assert seen is not None and seen.ready_of("") == 1 and len(kube.lists) == 3  # x still known as foreign


def test_the_foreign_pods_kept_are_bounded_the_most_recent_kept() -> None:
    kube = ListingKube([pod("a", "1", "r1")])
    revisions = revisions_of(kube)
    for i in range(FOREIGN_PODS_KEPT + 36):  # foreign pods come and go, one at a time: each is listed for once
        assert revisions.of("ml", "digits", {"1", f"f{i}"}, OURS) == {"1": "r1", f"f{i}": ""}
    assert len(kube.lists) == FOREIGN_PODS_KEPT + 36
    recent = {f"f{i}" for i in range(36, FOREIGN_PODS_KEPT + 36)}
    assert revisions.of("ml", "digits", recent, OURS) == dict.fromkeys(recent, "")
    assert len(kube.lists) == FOREIGN_PODS_KEPT + 36  # the last FOREIGN_PODS_KEPT are kept
    revisions.of("ml", "digits", {"f0"}, OURS)
    assert len(kube.lists) == FOREIGN_PODS_KEPT + 37  # an older one was forgotten: asked again


def test_one_look_listing_more_foreign_pods_than_kept_keeps_only_the_bound() -> None:
    kube = ListingKube([pod("a", "1", "r1")])
    revisions = revisions_of(kube)
    many = {f"f{i:03d}" for i in range(FOREIGN_PODS_KEPT * 3)}  # a slice of someone else's pods, all at once
    assert revisions.of("ml", "digits", {"1", *many}, OURS) == {"1": "r1", **dict.fromkeys(many, "")}
    assert len(revisions._known["ml", "digits"][2]) == FOREIGN_PODS_KEPT


def test_this_pass_s_pod_list_serves_the_endpoints_without_a_second_list() -> None:
    """The reconcile that listed the serving pods (to tell why they do not serve) hands that list over: the
    endpoints' revisions come from it, not from a list of their own."""
    kube = ListingKube([pod("a", "1", "r1")])
    revisions = revisions_of(kube)
    store = Store()
    service = {"metadata": {"name": "digits", "namespace": "ml", "uid": SVC_UID}}
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("c", "3")))
    listed = [pod("a", "1", "r1"), pod("c", "3", "r2")]
    got = observe_endpoints(store, revisions, "ml", "digits", service, OURS, listed)
    assert got is not None and (got.ready_of("r1"), got.ready_of("r2")) == (1, 1)
    assert kube.lists == []


def test_a_pod_made_after_this_pass_s_list_is_asked_of_the_api_server_not_taken_for_another_s() -> None:
    """The pass lists the serving pods before it reads the slices, which the watch keeps moving: a pod made in
    between (a canary step's second pod) is in a slice and not in the list. It is listed afresh, found ours, and
    counted for its revision (taken for a foreign pod it would never be asked about again: a step waiting forever
    for its candidate pods); a pod that is not ours is found so by that list and not asked about again."""
    kube = ListingKube([pod("a", "1", "r1"), pod("c", "3", "r2", owner="digits-canary"), pod("x", "99", "r2", None)])
    revisions = revisions_of(kube)
    store = Store()
    service = {"metadata": {"name": "digits", "namespace": "ml", "uid": SVC_UID}}
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("c", "3")))
    stale = [pod("a", "1", "r1")]
    got = observe_endpoints(store, revisions, "ml", "digits", service, OURS, stale)
    assert got is not None and (got.ready_of("r1"), got.ready_of("r2"), got.ready_of("")) == (1, 1, 0)
    assert len(kube.lists) == 1
    store.put("EndpointSlice", eps("digits-abc", endpoint("a", "1"), endpoint("c", "3"), endpoint("x", "99")))
    for _ in range(2):
        got = observe_endpoints(store, revisions, "ml", "digits", service, OURS, stale)
        assert got is not None and (got.ready_of("r1"), got.ready_of("r2"), got.ready_of("")) == (1, 1, 1)
    assert len(kube.lists) == 2  # the forged pod: one list says it is none of ours, then it is known


def test_a_labelled_pod_not_made_by_our_deployments_gives_no_revision() -> None:
    """Labels say whose a pod claims to be; only its controller reference is the operator's word. A pod the
    selector finds, labelled as revision r2, counts as foreign ("") unless one of our Deployments' ReplicaSets made
    it: no controller reference, one to another Deployment's ReplicaSet, one to a ReplicaSet not named after its
    template hash, or an owner that is not the controller."""
    not_controller = pod("nc", "14", "r2")
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    other_hash = pod("hash", "13", "r2")
    other_hash["metadata"]["labels"]["pod-template-hash"] = "666"  # its ReplicaSet is not digits-666
    forged = [pod("bare", "11", "r2", owner=None), pod("other", "12", "r2", owner="someone-elses"), other_hash,
              not_controller]  # fmt: skip
    ours = [pod("a", "1", "r1"), pod("c", "3", "r2", owner="digits-canary")]
    kube = ListingKube([*ours, *forged])
    revisions = revisions_of(kube)
    store = Store()
    service = {"metadata": {"name": "digits", "namespace": "ml", "uid": SVC_UID}}
    uids = ("1", "3", "11", "12", "13", "14")
    store.put("EndpointSlice", eps("digits-abc", *(endpoint(f"p{u}", u) for u in uids)))
    got = observe_endpoints(store, revisions, "ml", "digits", service, OURS)
    assert got is not None and (got.ready_of("r1"), got.ready_of("r2"), got.ready_of("")) == (1, 1, 4)
    # from this pass's own list alike (the forged pods are not ours in it: a list made now says so), and a
    # Deployment that is not ours (not in OURS) makes no pod ours
    fresh = revisions_of(ListingKube([*ours, *forged]))
    got = observe_endpoints(store, fresh, "ml", "digits", service, OURS[:1], [*ours, *forged])
    assert got is not None and (got.ready_of("r1"), got.ready_of("r2"), got.ready_of("")) == (1, 0, 5)


def test_the_pods_are_listed_again_when_our_deployments_change() -> None:
    """A candidate Deployment the store did not hold yet when its pod was first listed: once it does, the pod is
    read again (not left foreign for as long as no new pod comes)."""
    kube = ListingKube([pod("a", "1", "r1"), pod("c", "3", "r2", owner="digits-canary")])
    revisions = revisions_of(kube)
    assert revisions.of("ml", "digits", {"1", "3"}, OURS[:1]) == {"1": "r1", "3": ""}
    assert revisions.of("ml", "digits", {"1", "3"}, OURS[:1]) == {"1": "r1", "3": ""} and len(kube.lists) == 1
    assert revisions.of("ml", "digits", {"1", "3"}, OURS) == {"1": "r1", "3": "r2"} and len(kube.lists) == 2


def test_a_pod_naming_our_replicaset_with_another_uid_gives_no_revision() -> None:
    """A controller reference is the pod creator's to write: one naming the candidate's ReplicaSet with a uid of
    its own passes the name check. The ReplicaSet of that name is asked for: its uid is not the reference's, so
    the pod is foreign. Each ReplicaSet uid is asked about once, not at every list."""
    forged = pod("forged", "11", "r2", owner="digits-canary")
    forged["metadata"]["ownerReferences"][0]["uid"] = "made-up"
    kube = ListingKube([pod("a", "1", "r1"), pod("c", "3", "r2", owner="digits-canary"), forged])
    revisions = revisions_of(kube)
    assert revisions.of("ml", "digits", {"1", "3", "11"}, OURS) == {"1": "r1", "3": "r2", "11": ""}
    assert sorted(kube.gets) == ["digits-5f7", "digits-canary-5f7", "digits-canary-5f7"]
    kube.pods.append(pod("d", "4", "r2", owner="digits-canary"))  # a new pod: a new list, no new GET
    assert revisions.of("ml", "digits", {"1", "3", "4", "11"}, OURS) == {"1": "r1", "3": "r2", "4": "r2", "11": ""}
    assert len(kube.lists) == 2 and len(kube.gets) == 3


def test_a_pod_of_a_replicaset_another_deployment_controls_gives_no_revision() -> None:
    """The ReplicaSet the reference names, with its uid, but controlled by another Deployment than ours (an
    earlier one of the name, orphaning its ReplicaSets): not ours. Once ours adopts it, its pods are: seen when
    the answer kept is ``UNSETTLED_SECONDS`` old (not at every pass: a ReplicaSet that is never adopted would cost a
    GET per pod per pass)."""
    kube = ListingKube([pod("a", "1", "r1")])
    kube.controllers["digits"] = "d-earlier"
    assert revisions_of(kube).of("ml", "digits", {"1"}, OURS) == {"1": ""}
    clock = Clock()
    owners = ReplicaSetOwners(kube, clock=clock)  # type: ignore[arg-type]
    assert owners.controller("ml", "digits-5f7", "rs-digits") == "d-earlier"
    kube.controllers.clear()  # adopted by our Deployment
    assert not owners.made_by(pod("a", "1", "r1"), "digits", "d-digits") and len(kube.gets) == 2
    clock.now += UNSETTLED_SECONDS
    assert owners.made_by(pod("a", "1", "r1"), "digits", "d-digits") and len(kube.gets) == 3  # asked again


def test_pods_of_a_replicaset_orphaned_and_adopted_count_again_once_adopted() -> None:
    """``kubectl delete deployment digits --cascade=orphan``; the operator makes the Deployment again (a new uid),
    so the pods are listed again; that pass runs before the Deployment controller adopts the orphaned ReplicaSet
    (no controller yet), so its live pods are refused. Not for good: once it is adopted, the Service's endpoints
    count for their revision again (remembered as foreign, they would count for none until each pod is replaced).
    Not listed nor asked about at every pass meanwhile."""
    kube = ListingKube([pod("a", "1", "r1"), pod("b", "2", "r1")])
    clock = Clock()
    revisions = revisions_of(kube, clock)
    before = (("digits", "d-digits"),)
    assert revisions.of("ml", "digits", {"1", "2"}, before) == {"1": "r1", "2": "r1"}
    kube.controllers["digits"] = ""  # orphaned
    again = (("digits", "d-again"),)  # the Deployment made again
    assert revisions.of("ml", "digits", {"1", "2"}, again) == {"1": "", "2": ""}
    kube.controllers["digits"] = "d-again"  # adopted, milliseconds later
    lists, gets = len(kube.lists), len(kube.gets)
    for _ in range(3):  # passes within UNSETTLED_SECONDS: what was said stands, nothing asked
        clock.now += UNSETTLED_SECONDS / 4
        assert revisions.of("ml", "digits", {"1", "2"}, again) == {"1": "", "2": ""}
    assert (len(kube.lists), len(kube.gets)) == (lists, gets)
    clock.now += UNSETTLED_SECONDS / 4
    assert revisions.of("ml", "digits", {"1", "2"}, again) == {"1": "r1", "2": "r1"}
    assert (len(kube.lists), len(kube.gets)) == (lists + 1, gets + 1)  # one list, one GET for the ReplicaSet
    assert revisions.of("ml", "digits", {"1", "2"}, again) == {"1": "r1", "2": "r1"} and len(kube.lists) == lists + 1


def test_pods_of_a_replicaset_never_adopted_cost_a_list_and_a_get_per_unsettled_period_not_per_pass() -> None:
    """An editor's ReplicaSet digits-5f7 of no controller (its labels not matched by our Deployment's selector),
    whose pods carry our labels and a reference with its real uid: refused, and asked about again only once the
    answer is ``UNSETTLED_SECONDS`` old, whatever the number of pods and passes."""
    kube = ListingKube([pod(f"p{i}", str(i), "r1") for i in range(5)])
    kube.controllers["digits"] = ""
    clock = Clock()
    revisions = revisions_of(kube, clock)
    uids = {str(i) for i in range(5)}
    for _ in range(10):  # passes every 5 s
        assert revisions.of("ml", "digits", uids, OURS) == dict.fromkeys(uids, "")
        clock.now += 5
    assert len(kube.gets) == len(kube.lists) == 2  # at 0 s and at 30 s: not 10, nor 50
