"""Status fields an older CRD prunes (controller.pruning): found in a write's answer, left out of later writes,
tried again after a while, reported once."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.api.crd import crd
from modelship.config import OperatorConfig
from modelship.controller import metrics
from modelship.controller.mergepatch import apply_merge_patch
from modelship.controller.pruning import (
    PROBE_MAX_BYTES,
    PROBE_MAX_VALUES,
    PrunedStatus,
    describe,
    missing_fields,
    probe_patch,
    pruned_paths,
    sent_paths,
    without_paths,
)
from modelship.controller.reconcile import Reconciler
from modelship.controller.skew import ServedCrd, own_root_schema
from modelship.controller.statuswrite import CRD_OLDER_REASON
from modelship.controller.store import Store
from tests.support.skew import newer_crd, older_crd


def test_pruned_paths_are_the_sent_fields_the_answer_lacks() -> None:
    sent = {
        "phase": "Ready",
        "updatedReplicas": 2,
        "optimization": {"compressionRatio": 3.7, "value": 0.98, "gone": None},
        "conditions": [{"type": "Ready", "severity": "info"}, {"type": "Stalled", "severity": "info"}],
        "image": {"new": {"deep": 1}},
    }
    served = {
        "phase": "Ready",
        "optimization": {"value": 0.97},  # a different value is not pruning; a null (a delete) is not looked at
        "conditions": [{"type": "Ready"}, {"type": "Stalled"}],
        "image": {},
    }
    assert pruned_paths(sent, served) == {
        ("updatedReplicas",),
        ("optimization", "compressionRatio"),
        ("conditions", "[]", "severity"),
        ("image", "new"),
    }
    assert pruned_paths(sent, None) == {(k,) for k in sent}
    assert pruned_paths({"phase": "Ready"}, {"phase": "Ready", "other": 1}) == set()
    # lists of a different length (someone else's write meanwhile) say nothing about their items
    assert pruned_paths({"conditions": [{"type": "Ready", "x": 1}]}, {"conditions": []}) == set()


def test_sent_paths_are_those_the_patch_sets_to_a_value() -> None:
    sent = {"a": 1, "b": None, "c": {"d": 2}, "conditions": [{"type": "Ready"}, {"type": "X", "severity": "Info"}]}
    listed = {("conditions", "[]", "severity"), ("conditions", "[]", "z")}
    paths = {("a",), ("b",), ("c", "d"), ("c", "e"), ("q",), *listed}
    assert sent_paths(sent, paths) == {("a",), ("c", "d"), ("conditions", "[]", "severity")}


def test_without_paths_leaves_out_fields_at_every_depth_and_in_list_items() -> None:
    status = {
        "updatedReplicas": 2,
        "replicas": 2,
        "optimization": {"compressionRatio": 3.7, "value": 0.98},
        "conditions": [{"type": "Ready", "severity": "info"}, {"type": "Stalled"}],
    }
    out = without_paths(
        status, [("updatedReplicas",), ("optimization", "compressionRatio"), ("conditions", "[]", "severity")]
    )
    assert out == {
        "replicas": 2,
        "optimization": {"value": 0.98},
        "conditions": [{"type": "Ready"}, {"type": "Stalled"}],
    }
    assert status["updatedReplicas"] == 2 and status["optimization"]["compressionRatio"] == 3.7  # not changed
    assert without_paths(status, []) is status
    assert without_paths(status, [("absent",), ("absent", "deeper")]) is status
    # a path and a longer one under it: the whole field goes
    assert without_paths(status, [("optimization", "value"), ("optimization",)]) == without_paths(
        status, [("optimization",)]
    )
    assert describe(("conditions", "[]", "severity")) == "status.conditions[].severity"


def test_pruned_status_remembers_retries_after_a_while_and_reports_each_path_once() -> None:
    now = [100.0]
    pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    assert pruned.found([("a",), ("b", "c")]) == {("a",), ("b", "c")}
    assert pruned.current() == {("a",), ("b", "c")}
    now[0] += 300
    assert pruned.found([("a",)]) == set()  # already known: not reported again
    now[0] += 300
    assert pruned.current() == {("a",)}  # found again 300 s ago: still left out; ("b", "c") is tried again
    pruned.clear([("b", "c")])  # that write kept it: the CRD was upgraded
    assert pruned.all() == {("a",)}


class PruningKube:
    """An API server whose CRD lacks ``status.updatedReplicas``: status writes are merged, then pruned."""

    def __init__(self, body: dict[str, Any], prunes: tuple[str, ...] = ("updatedReplicas",)) -> None:
        self.body = body
        self.prunes = prunes
        self.patches: list[dict[str, Any]] = []
        self.dry_runs: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        (self.dry_runs if dry_run else self.patches).append(status)
        merged = apply_merge_patch(self.body.get("status") or {}, status)
        for field in self.prunes:
            merged.pop(field, None)
        if dry_run:  # what would be stored: nothing is
            return {**self.body, "status": merged}
        self.body = {**self.body, "status": merged}
        return self.body

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def test_a_status_field_the_crd_prunes_is_sent_once_reported_once_then_left_out() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits", "resourceVersion": "7"}}
    kube = PruningKube(body)
    now = [0.0]
    reconciler = Reconciler(kube, Store(), OperatorConfig())  # type: ignore[arg-type]
    reconciler.status_writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    desired = {"phase": "Ready", "replicas": 2, "updatedReplicas": 2}

    reconciler.status_writer.write(kube.body, dict(desired))
    assert kube.patches == [desired]
    ((type_, reason, message),) = kube.events
    assert (type_, reason) == ("Warning", CRD_OLDER_REASON)
    assert "status.updatedReplicas" in message and "older than this operator" in message
    assert "reads" not in message  # a figure, not the operator's memory of what serves
    assert metrics.CRD_SKEW.labels("older")._value.get() == 1

    for _ in range(3):  # further reconciles: nothing to write, nothing said
        reconciler.status_writer.write(kube.body, dict(desired))
    assert len(kube.patches) == 1 and len(kube.events) == 1

    reconciler.status_writer.write(kube.body, {**desired, "replicas": 3})  # a real change is still written, without it
    assert kube.patches[-1] == {"replicas": 3}

    now[0] += 600  # tried again once: still pruned, left out again, not reported again
    reconciler.status_writer.write(kube.body, {**desired, "replicas": 3})
    assert kube.patches[-1] == {"updatedReplicas": 2} and len(kube.events) == 1
    reconciler.status_writer.write(kube.body, {**desired, "replicas": 3})
    assert len(kube.patches) == 3


def test_a_retried_field_the_upgraded_crd_keeps_is_written_from_then_on() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}, "status": {"phase": "Ready"}}
    kube = PruningKube(body)
    now = [0.0]
    reconciler = Reconciler(kube, Store(), OperatorConfig())  # type: ignore[arg-type]
    reconciler.status_writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    reconciler.status_writer.write(kube.body, {"phase": "Ready", "updatedReplicas": 2})
    assert reconciler.status_writer.pruned.all() == {("updatedReplicas",)}

    kube.patch_status = lambda ns, name, status: {  # type: ignore[method-assign]  # the CRD is upgraded
        **kube.body,
        "status": apply_merge_patch(kube.body["status"], status),
    }
    now[0] += 600
    reconciler.status_writer.write(kube.body, {"phase": "Ready", "updatedReplicas": 2})
    assert reconciler.status_writer.pruned.all() == set()
    assert metrics.CRD_SKEW.labels("older")._value.get() == 0


def test_a_retried_field_the_write_did_not_send_is_probed_by_a_dry_run_and_stays_known_while_pruned() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}, "status": {"phase": "Ready"}}
    kube = PruningKube(body)
    now = [0.0]
    writer = Reconciler(kube, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    writer.write(kube.body, {"phase": "Ready", "updatedReplicas": 2})
    assert writer.pruned.all() == {("updatedReplicas",)} and len(kube.events) == 1

    now[0] += 600  # due for a retry, but the next status has no updatedReplicas (a field set now and then)
    writer.write(kube.body, {"phase": "Progressing"})
    assert kube.patches[-1] == {"phase": "Progressing"}
    assert kube.dry_runs == [{"updatedReplicas": 2}]  # probed with the value last found pruned: pruned again
    assert writer.pruned.current() == {("updatedReplicas",)}  # left out for another 600 s
    writer.write(kube.body, {"phase": "Ready", "updatedReplicas": 3})
    assert kube.patches[-1] == {"phase": "Ready"} and len(kube.dry_runs) == 1
    assert len(kube.events) == 1  # known: no second Warning
    now[0] += 600  # due again, and this status sends it: the write itself is the retry, no probe
    writer.write(kube.body, {"phase": "Progressing", "updatedReplicas": 3})
    assert kube.patches[-1] == {"phase": "Progressing", "updatedReplicas": 3} and len(kube.dry_runs) == 1
    assert len(kube.events) == 1


def test_a_pruned_path_no_status_sends_again_is_found_kept_by_a_dry_run_probe() -> None:
    """A held Canary sends no ``rollout``: once the CRD keeps it (applied; a namespaced operator cannot read the
    CRD), the dry-run probe at the retry finds it kept and forgets it, so the hold lifts."""
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}, "status": {"phase": "Ready"}}
    kube = PruningKube(body, prunes=("rollout", "updatedReplicas"))
    now = [0.0]
    writer = Reconciler(kube, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    record = {"phase": "Shadow", "step": 0, "candidateRevision": "r2"}
    writer.write(kube.body, {"phase": "Ready", "rollout": record, "conditions": [{"type": "Ready", "x": 1}]})
    assert writer.known_pruned() == {"status.rollout"}
    for _ in range(3):  # held: no status sends rollout; before the retry, nothing is probed
        now[0] += 100
        writer.write(kube.body, {"phase": "Stalled"})
    assert kube.dry_runs == [] and writer.known_pruned() == {"status.rollout"}
    now[0] += 300  # due: probed, still pruned (the CRD was not applied yet)
    writer.write(kube.body, {"phase": "Stalled"})
    assert kube.dry_runs == [{"rollout": record}] and writer.known_pruned() == {"status.rollout"}
    assert kube.body["status"] == {"phase": "Stalled", "conditions": [{"type": "Ready", "x": 1}]}  # stored nothing

    kube.prunes = ("updatedReplicas",)  # the admin applies the CRD
    now[0] += 599
    writer.write(kube.body, {"phase": "Stalled"})
    assert len(kube.dry_runs) == 1  # not due yet
    now[0] += 1
    writer.write(kube.body, {"phase": "Stalled"})
    assert kube.dry_runs[-1] == {"rollout": record} and writer.known_pruned() == frozenset()
    assert "rollout" not in kube.body["status"]  # a dry run: the next reconcile writes the record
    assert metrics.CRD_SKEW.labels("older")._value.get() == 0


def test_a_dry_run_probe_without_an_answer_keeps_the_path_known_until_the_next_retry() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}, "status": {}}
    kube = PruningKube(body, prunes=("servingArtifact",))
    now = [0.0]
    writer = Reconciler(kube, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    writer.write(kube.body, {"servingRevision": "r1", "servingArtifact": "oci://reg/ml/d@sha256:" + "a" * 64})

    def refused(namespace: str, name: str, status: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        raise ApiException(status=422, reason="Invalid")

    kube.patch_status = refused  # type: ignore[method-assign]
    now[0] += 600
    writer.write(kube.body, {"servingRevision": "r1"})
    assert writer.pruned.current() == {("servingArtifact",)}


def test_a_dry_run_probe_the_api_server_refuses_is_said_at_warning_once_per_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook with sideEffects Unknown/Some fails every dry-run request (400): the held object would stay held
    in silence; the operator says why, once per path, not at every retry."""
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits", "uid": "u1"}, "status": {}}
    kube = PruningKube(body, prunes=("rollout", "servingArtifact"))
    now = [0.0]
    writer = Reconciler(kube, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    writer.write(kube.body, {"rollout": {"phase": "Shadow"}, "servingArtifact": "oci://reg/ml/d@sha256:" + "a" * 64})
    write = kube.patch_status

    def webhook(namespace: str, name: str, status: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        if dry_run:
            raise ApiException(status=400, reason="BadRequest")
        return write(namespace, name, status, dry_run)

    kube.patch_status = webhook  # type: ignore[method-assign]
    caplog.set_level("DEBUG", logger="modelship.reconcile")
    for _ in range(3):
        now[0] += 600
        writer.write(kube.body, {"phase": "Stalled"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "dry-run" in r.getMessage()]
    assert len(warnings) == 2  # once per path, not once per retry
    assert {w.split(":")[0] for w in warnings} == {"status.rollout", "status.servingArtifact"}
    assert all("400" in w and "sideEffects" in w for w in warnings)
    assert writer.known_pruned() == {"status.rollout", "status.servingArtifact"}


def test_a_dry_run_probe_of_an_object_sends_only_its_own_pruned_value_never_another_tenants() -> None:
    """Tenant A's write finds ``rollout`` pruned; at the retry, tenant B is written first: B is not probed with A's
    record (it would reach webhooks and the audit log as B's), and the path stays due until A's own reconcile
    probes A with A's record, once (the retry timer is one per path)."""
    a = PruningKube({"metadata": {"namespace": "a", "name": "one", "uid": "ua"}}, prunes=("rollout",))
    b = PruningKube({"metadata": {"namespace": "b", "name": "two", "uid": "ub"}}, prunes=("rollout",))
    now = [0.0]
    writer = Reconciler(a, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    secret = {"phase": "Shadow", "candidateImage": "reg.a.internal/team-a/model@sha256:" + "a" * 64}
    writer.write(a.body, {"phase": "Ready", "rollout": secret})
    assert writer.known_pruned() == {"status.rollout"}
    now[0] += 600
    writer.kube = b  # type: ignore[assignment]
    writer.write(b.body, {"phase": "Ready"})
    assert b.dry_runs == []  # B never carries A's value
    writer.kube = a  # type: ignore[assignment]
    writer.write(a.body, {"phase": "Stalled"})
    assert a.dry_runs == [{"rollout": secret}]  # still due for A: A probes itself
    writer.write(a.body, {"phase": "Stalled"})
    writer.kube = b  # type: ignore[assignment]
    writer.write(b.body, {"phase": "Ready"})
    assert len(a.dry_runs) == 1 and b.dry_runs == []  # one probe per retry


def test_the_values_kept_to_probe_with_are_bounded_over_all_objects() -> None:
    pruned = PrunedStatus(retry=10, clock=lambda: 100.0)
    for i in range(PROBE_MAX_VALUES + 5):
        pruned.found([("rollout",)], {"rollout": {"n": i}}, owner=f"u{i}")
    assert len(pruned._probes) == PROBE_MAX_VALUES
    pruned.clock = lambda: 110.0
    assert pruned.take_due([("rollout",)], owner="u0") == {}  # the oldest forgotten
    last = f"u{PROBE_MAX_VALUES + 4}"
    assert pruned.take_due([("rollout",)], owner=last) == {("rollout",): {"rollout": {"n": PROBE_MAX_VALUES + 4}}}
    big = {"rollout": "x" * (PROBE_MAX_BYTES - 20)}
    for i in range(40):
        pruned.found([("rollout",)], big, owner=f"big{i}")
    assert pruned._probe_bytes <= 1024 * 1024
    assert pruned._probe_bytes == sum(size for _, size in pruned._probes.values())
    pruned.clear([("rollout",)])
    assert not pruned._probes and pruned._probe_bytes == 0


def test_the_probe_patch_sets_only_the_path_and_a_whole_list_for_an_item_path() -> None:
    sent = {"phase": "Ready", "rollout": {"step": 1, "window": {"a": 1}}, "conditions": [{"type": "R", "s": 1}]}
    assert probe_patch(sent, ("rollout", "window")) == {"rollout": {"window": {"a": 1}}}
    assert probe_patch(sent, ("conditions", "[]", "s")) == {"conditions": [{"type": "R", "s": 1}]}
    assert probe_patch(sent, ("rollout", "gone")) is None
    pruned = PrunedStatus(retry=10, clock=lambda: 100.0)
    pruned.found([("rollout", "window")], sent)
    pruned.found([("huge",)], {"huge": "x" * (PROBE_MAX_BYTES + 1)})  # too large to remember: no probe
    pruned.clock = lambda: 110.0
    due = [("rollout", "window"), ("huge",)]
    assert pruned.take_due(due) == {("rollout", "window"): {"rollout": {"window": {"a": 1}}}}
    assert pruned.take_due(due) == {}  # taken: another writer does not probe it too
    assert pruned.current() == {("rollout", "window")}  # left out until its next retry, unless the probe clears it


def test_every_object_whose_status_goes_without_a_pruned_field_is_told_once() -> None:
    """The first object's write finds the field pruned; a second object's writes leave it out from the start (the
    process knows): it is told too, on its own, once (a cluster-wide operator: each tenant learns why)."""
    first = PruningKube({"metadata": {"namespace": "a", "name": "one", "uid": "u1"}})
    writer = Reconciler(first, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.write(first.body, {"phase": "Ready", "updatedReplicas": 2})
    assert len(first.events) == 1
    second = PruningKube({"metadata": {"namespace": "b", "name": "two", "uid": "u2"}})
    writer.kube = second  # type: ignore[assignment]
    for phase in ("Progressing", "Ready", "Ready"):
        writer.write(second.body, {"phase": phase, "updatedReplicas": 2})
    assert all("updatedReplicas" not in p for p in second.patches)  # left out: the process knows
    ((type_, reason, message),) = second.events
    assert (type_, reason) == ("Warning", CRD_OLDER_REASON) and "status.updatedReplicas" in message
    assert len(first.events) == 1


class CrdKube:
    def __init__(self, crd: dict[str, Any] | None = None, status: int | None = None) -> None:
        self.crd, self.status, self.reads = crd, status, 0

    def custom_resource_definition(self, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.status is not None:
            raise ApiException(status=self.status)
        return self.crd


def test_the_served_crd_is_compared_with_this_operators_models_both_ways() -> None:
    kube = CrdKube(older_crd())
    served = ServedCrd(kube)  # type: ignore[arg-type]
    served.check()
    assert served.older == ("spec.serving.batching", "status.optimization.compressionRatio", "status.updatedReplicas")
    assert served.newer == ()
    kube.crd = newer_crd()
    served.check()
    assert served.older == ()
    assert served.newer == (
        "spec.serving.warmup",
        "spec.serving.turbo",
        "status.conditions[].severity",
        "status.optimization.energyJoules",
        "status.upgradeNote",
    )
    kube.crd = crd()
    served.check()
    assert (served.older, served.newer) == ((), ())
    assert missing_fields(own_root_schema(), own_root_schema()) == []


def test_a_namespaced_operator_reads_the_crd_once_and_finds_an_older_one_from_pruning_alone() -> None:
    kube = CrdKube(status=403)
    served = ServedCrd(kube)  # type: ignore[arg-type]
    served.check()
    served.check()
    assert kube.reads == 1 and served.forbidden and served.older == ()
    kube.status = 500  # anything else is an error the caller logs; the next resync tries again
    served.forbidden = False
    with pytest.raises(ApiException):
        served.check()


def test_a_pruned_field_the_operator_reads_back_is_called_harm() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}}
    kube = PruningKube(body)
    reconciler = Reconciler(kube, Store(), OperatorConfig())  # type: ignore[arg-type]
    kube.patch_status = lambda ns, name, status: {**kube.body, "status": {"phase": "Ready"}}  # type: ignore[method-assign]
    status = {"phase": "Ready", "servingArtifact": "oci://r/m@sha256:1", "replicas": 1}
    reconciler.status_writer.write(kube.body, status)
    ((_, _, message),) = kube.events
    assert "drops status.replicas, status.servingArtifact from" in message
    assert "reads status.servingArtifact back to know what serves" in message


def test_the_cluster_wide_operator_writes_a_field_again_as_soon_as_the_served_crd_declares_it() -> None:
    body: dict[str, Any] = {"metadata": {"namespace": "ml", "name": "digits"}}
    kube = PruningKube(body)
    crds = CrdKube(older_crd())
    reconciler = Reconciler(kube, Store(), OperatorConfig())  # type: ignore[arg-type]
    reconciler.status_writer.served_crd = ServedCrd(crds)  # type: ignore[arg-type]
    reconciler.status_writer.check_served_crd()
    reconciler.status_writer.write(kube.body, {"phase": "Ready", "updatedReplicas": 2})
    assert reconciler.status_writer.pruned.all() == {("updatedReplicas",)}
    assert metrics.CRD_SKEW.labels("older")._value.get() == 3  # the CRD's three, the pruned one among them
    reconciler.status_writer.check_served_crd()
    assert reconciler.status_writer.pruned.all() == {("updatedReplicas",)}  # still lacking: still left out
    crds.crd = crd()  # the CRD is upgraded: known at the next resync, not 10 minutes later
    reconciler.status_writer.check_served_crd()
    assert reconciler.status_writer.pruned.all() == set()
    assert metrics.CRD_SKEW.labels("older")._value.get() == 0
