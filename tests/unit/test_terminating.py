"""A namespace being deleted: the API server's first refusal holds it, its other ModelDeployments are not even
tried, nothing is retried, the hold is logged once, and it ends when the namespace has no ModelDeployment left (here
against an in-memory API; tests/integration/test_namespace_teardown.py does it against the real one)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from modelship.controller import metrics
from modelship.controller.reconcile import Reconciler
from modelship.controller.store import Store
from modelship.controller.terminating import TerminatingNamespaces, refused_as_terminating
from tests.unit.test_loud_failures import MemoryKube
from tests.unit.test_plan import CONFIG


def refusal(namespace: str, *, causes: bool = True) -> ApiException:
    """The API server's answer to a create in a terminating namespace (NamespaceLifecycle admission)."""
    status: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": f'deployments.apps "digits" is forbidden: unable to create new content in namespace {namespace} '
                   "because it is being terminated",
        "details": {"name": "digits", "group": "apps", "kind": "deployments"},
    }  # fmt: skip
    if causes:
        status["details"]["causes"] = [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                        "message": f"namespace {namespace} is being terminated"}]  # fmt: skip
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(status)
    return exc


class TerminatingKube(MemoryKube):
    """Refuses every create in the namespaces in ``terminating``; counts the requests a reconcile makes."""

    def __init__(self, store: Store, terminating: set[str]) -> None:
        super().__init__(store)
        self.terminating = terminating
        self.creates: list[str] = []
        self.refused = 0
        self.gets = 0

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        ns = obj["metadata"]["namespace"]
        if ns in self.terminating:
            self.refused += 1
            raise refusal(ns)
        self.creates.append(f"{ns}/{obj['kind']}/{obj['metadata']['name']}")
        return obj


def md(name: str, namespace: str = "ml") -> dict[str, Any]:
    from tests.support.specs import valid_doc

    doc = valid_doc()
    doc["metadata"].update(name=name, namespace=namespace, uid=f"u-{namespace}-{name}", generation=1,
                           resourceVersion="10")  # fmt: skip
    return doc


def counter(result: str) -> float:
    return metrics.RECONCILES.labels(result)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_the_refusal_is_recognised_by_its_cause_or_its_words_and_nothing_else() -> None:
    assert refused_as_terminating(refusal("ml"))
    assert refused_as_terminating(refusal("ml", causes=False))  # a server that gives no causes
    rbac = ApiException(status=403, reason="Forbidden")
    rbac.body = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message":
                            'deployments.apps is forbidden: User "system:serviceaccount:x:y" cannot create resource '
                            '"deployments" in API group "apps" in the namespace "ml"'})  # fmt: skip
    assert not refused_as_terminating(rbac)  # a missing right is the operator's problem, not a teardown
    other = refusal("ml")
    other.status = 422
    assert not refused_as_terminating(other)
    garbage = ApiException(status=403, reason="Forbidden")
    garbage.body = "<html>"
    assert not refused_as_terminating(garbage)


def test_one_refusal_holds_the_namespace_and_its_other_modeldeployments_are_not_tried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    names = [f"m{i}" for i in range(20)]
    for n in names:
        store.put("ModelDeployment", md(n))
    store.put("ModelDeployment", md("live", "other"))
    kube = TerminatingKube(store, {"ml"})
    reconciler = Reconciler(kube, store, CONFIG)  # type: ignore[arg-type]
    refused, held = counter("namespace-terminating"), counter("namespace-terminating-held")
    caplog.set_level(logging.DEBUG, logger="modelship")
    for _ in range(3):  # the children's deletions wake each ModelDeployment again and again
        for n in names:
            assert reconciler.reconcile("ml", n) is None  # never a retry
    assert kube.refused == 1  # the first create, and no other
    assert counter("namespace-terminating") - refused == 1
    assert counter("namespace-terminating-held") - held == 3 * len(names) - 1
    gets, writes = kube.gets, kube.status_writes
    reconciler.reconcile("ml", "m3")
    assert (kube.gets, kube.status_writes, kube.events) == (gets, writes, [])  # a held reconcile asks nothing
    infos = [r for r in caplog.records if "is being terminated" in r.getMessage() and r.levelno == logging.INFO]
    assert len(infos) == 1 and "ml" in infos[0].getMessage()  # once per namespace, not per object
    # another namespace is not held
    assert reconciler.reconcile("other", "live") is None
    assert any(c.startswith("other/") for c in kube.creates)


def test_the_hold_ends_when_the_namespace_has_no_modeldeployment_left() -> None:
    store = Store()
    for n in ("a", "b"):
        store.put("ModelDeployment", md(n))
    kube = TerminatingKube(store, {"ml"})
    reconciler = Reconciler(kube, store, CONFIG)  # type: ignore[arg-type]
    reconciler.reconcile("ml", "a")
    assert reconciler.terminating.held("ml")
    store.remove("ModelDeployment", "ml", "a")
    reconciler.reconcile("ml", "a")  # its deletion: b is still there, the namespace still going
    assert reconciler.terminating.held("ml")
    store.remove("ModelDeployment", "ml", "b")
    reconciler.reconcile("ml", "b")
    assert not reconciler.terminating.held("ml") and len(reconciler.terminating) == 0
    # a namespace of that name created again: its ModelDeployments get their children at once
    kube.terminating.clear()
    store.put("ModelDeployment", md("c"))
    reconciler.reconcile("ml", "c")
    assert any(c.startswith("ml/") for c in kube.creates)


def test_holds_lapse_and_are_bounded() -> None:
    now = [0.0]
    there = {"a", "b", "c", "d"}
    held = TerminatingNamespaces(lambda ns: ns in there, hold_seconds=10, max_held=3, clock=lambda: now[0])
    assert held.hold("a") and not held.hold("a")  # new once
    now[0] = 9.9
    assert held.held("a")
    now[0] = 10.0
    assert not held.held("a") and len(held) == 0  # a missed deletion does not hold it forever
    for ns in ("a", "b", "c", "d"):
        held.hold(ns)
    assert len(held) == 3 and not held.held("a") and held.held("d")  # the oldest forgotten
    assert not held.release_if_empty("d")  # it still has a ModelDeployment
    there.discard("d")
    assert held.release_if_empty("d") and not held.held("d")
    # a refusal that comes after the last ModelDeployment went (a queued Event) holds nothing
    assert not held.hold("d") and not held.held("d")


def test_a_refused_event_holds_the_namespace_and_its_later_events_are_not_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from modelship.controller.kube import EventPoster

    posted: list[str] = []
    gone = {"ml"}
    done = threading.Event()

    class Poster:
        def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
            ns = involved["metadata"]["namespace"]
            posted.append(f"{ns}/{reason}")
            if reason == "Last":
                done.set()
            if ns in gone:
                raise refusal(ns)

    held = TerminatingNamespaces(lambda ns: ns == "ml")
    poster = EventPoster(Poster(), terminating=held)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="modelship")
    before = dropped_events("namespace-terminating")
    for i in range(5):
        poster.post(md(f"m{i}"), "Normal", f"Step{i}", "")
    poster.post(md("x", "other"), "Normal", "Last", "")
    assert done.wait(10)
    assert posted == ["ml/Step0", "other/Last"]  # one refusal, the rest not even tried
    assert held.held("ml")
    assert dropped_events("namespace-terminating") - before == 5  # the refused one and the four not tried
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no warning per Event


def dropped_events(reason: str) -> float:
    return REGISTRY.get_sample_value("modelship_events_dropped_total", {"reason": reason}) or 0.0


def test_events_dropped_for_a_full_queue_or_a_failed_post_are_counted_by_reason() -> None:
    """``modelship_events_dropped_total{reason}``: an Event a full queue turns away (queue-full), one the API server
    refuses (api-error) or does not answer (unreachable), or a post that fails otherwise (error). Posted ones count
    nothing."""
    from modelship.controller.kube import EventPoster, Unreachable

    reasons = ("queue-full", "api-error", "unreachable", "error", "namespace-terminating")
    before = {r: dropped_events(r) for r in reasons}
    started, release = threading.Event(), threading.Event()
    done = {"Queued": threading.Event(), "Last": threading.Event()}
    failures: dict[str, BaseException] = {
        "Refused": ApiException(status=422, reason="Unprocessable Entity"),
        "NoAnswer": Unreachable("POST /api/v1/namespaces/ml/events: timed out"),
        "Broken": RuntimeError("a bug"),
    }
    posted: list[str] = []

    class Poster:
        def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
            if reason == "First":
                started.set()
                release.wait(10)
            if reason in failures:
                raise failures[reason]
            posted.append(reason)
            if reason in done:
                done[reason].set()

    full = EventPoster(Poster(), capacity=1)  # type: ignore[arg-type]
    full.post(md("a"), "Normal", "First", "")
    assert started.wait(10)  # the poster holds "First": its queue (of one) is empty
    full.post(md("a"), "Normal", "Queued", "")
    full.post(md("a"), "Normal", "TurnedAway", "")  # the queue is full
    assert dropped_events("queue-full") - before["queue-full"] == 1
    release.set()

    failing = EventPoster(Poster())  # type: ignore[arg-type]
    for reason in (*failures, "Last"):
        failing.post(md("a"), "Warning", reason, "")
    assert all(e.wait(10) for e in done.values())  # each poster takes its queue in order: the failures came first
    assert sorted(posted) == ["First", "Last", "Queued"]
    counted = {r: dropped_events(r) - before[r] for r in reasons}
    assert counted == {"queue-full": 1, "api-error": 1, "unreachable": 1, "error": 1, "namespace-terminating": 0}
