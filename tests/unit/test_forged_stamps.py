"""Times read from objects (a condition's lastTransitionTime, status.rollout.phaseStartedAt, a Job's finish, the
analysis window's start) go through one parser, controller.conditions.parse_rfc3339. Anybody who may write a
status can forge them; a stamp that does not parse must never stop a reconcile pass. Each reader below raised on
such a stamp (or read a zoneless one as a time) before; each test says what it does now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from modelship.api.rollout_status import RolloutPhase, RolloutStatus
from modelship.api.status import ConditionType, Reason
from modelship.config import OperatorConfig, PrometheusConfig
from modelship.controller.canary import Decision, Look, decide
from modelship.controller.conditions import ConditionSet, parse_rfc3339, rfc3339, seconds_since
from modelship.controller.kstatus import events
from modelship.controller.observe import JobState, Observed
from modelship.controller.phasewindow import advance, samples
from modelship.controller.plan import plan
from modelship.controller.podhealth import crashed_since
from modelship.controller.podmetrics import NOBODY
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages.jobs import POD_STATUS_GRACE_SECONDS, Step
from modelship.controller.stages.jobs import decide as decide_job
from modelship.controller.stages.mounts import RECHECK_MAX_SECONDS, RECHECK_MIN_SECONDS
from modelship.controller.stages.serving_clocks import seconds_since_stamps
from modelship.controller.store import Store
from modelship.resources.revision import revision
from tests.unit.test_canary import CANARY, at, good
from tests.unit.test_canary import started as canary_started
from tests.unit.test_jobstage import classify, probe, run
from tests.unit.test_mount_check import sourced, written
from tests.unit.test_phasewindow import KEY, T0, cand, look
from tests.unit.test_plan import CONFIG, NOW, cond, make_md
from tests.unit.test_prometheus import fake as fake_prometheus
from tests.unit.test_prometheus import figures
from tests.unit.test_serving_pod_health import REV, health, pod, running

FORGED = ("yesterday", "2026-13-40T25:00:00Z", "2026-11-29T12:00:00", "0001-01-01T00:00:00+01:00", "")
FAR_FUTURE = "9999-12-31T23:59:59Z"
"""Parses, but a clock counted from it never runs."""


def test_a_stamp_parses_to_utc_and_anything_else_to_none() -> None:
    assert parse_rfc3339("2026-11-29T22:53:50Z") == datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC)
    offset = parse_rfc3339("2026-11-29T23:53:50+01:00")
    assert offset == datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC) and offset is not None and offset.tzinfo is UTC
    assert parse_rfc3339(rfc3339(NOW)) == NOW.replace(microsecond=0)
    for text in (*FORGED, None, 1764456830, "2026-11-29", "9999-12-31T23:59:59-14:00"):
        assert parse_rfc3339(text) is None, text
    assert seconds_since("2026-11-29T22:53:00Z", datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC)) == 50.0
    ahead = datetime(2026, 11, 29, 23, 53, 0, tzinfo=timezone(timedelta(hours=1)))  # 22:53 UTC
    assert seconds_since("2026-11-29T22:53:50Z", ahead) == -50.0
    assert seconds_since("yesterday", NOW) is None and seconds_since(None, NOW) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-29T22:53:50Z", datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC)),
    ("2026-11-29T22:53:50+00:00", datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC)),
    ("2026-11-29T20:23:50-02:30", datetime(2026, 11, 29, 22, 53, 50, tzinfo=UTC)),
    ("2026-11-29T22:53:50.123456Z", datetime(2026, 11, 29, 22, 53, 50, 123456, tzinfo=UTC)),  # a MicroTime
    ("2026-11-29T22:53:50.5+00:00", datetime(2026, 11, 29, 22, 53, 50, 500000, tzinfo=UTC)),
    ("2026-11-29T22:53:50", None),  # no zone: Kubernetes always writes one; not trusted as UTC
    ("2026-11-29T22:53:50.123456", None),
    ("garbage", None),
    ("2026-11-29T22:53:50Q", None),
    ("0001-01-01T00:00:00+01:00", None),  # before the first UTC moment
    (b"2026-11-29T22:53:50Z", None),
    ({}, None),
])  # fmt: skip
def test_the_one_stamp_parser_reads_each_form(text: object, expected: datetime | None) -> None:
    """controller.conditions.parse_rfc3339 is the one parser (modelship_dev.diagnosis reads kubectl's JSON with
    it): an aware time in UTC, or None."""
    when = parse_rfc3339(text)
    assert when == expected
    assert when is None or when.tzinfo is UTC


@pytest.mark.parametrize("forged", FORGED)
def test_a_missing_objects_stall_with_a_forged_transition_time_looks_again_as_at_first(forged: str) -> None:
    """stages.mounts.recheck_after raised ValueError: the pass stopped."""
    md = sourced()
    missing = Observed(missing_mounts=frozenset({("Secret", "ml", "model-creds")}))
    first = plan(md, missing, CONFIG, NOW)
    cond(first.status, "Optimized")["lastTransitionTime"] = forged
    again = plan(written(md, first.status), missing, CONFIG, NOW + timedelta(seconds=600))
    assert again.requeue_after == RECHECK_MIN_SECONDS
    assert cond(again.status, "Optimized")["reason"] == cond(first.status, "Optimized")["reason"]


@pytest.mark.parametrize("forged", (*FORGED, FAR_FUTURE))
def test_a_forged_transition_time_is_stamped_anew_once_without_an_event(forged: str) -> None:
    """ConditionSet.set kept the previous lastTransitionTime whenever the status was unchanged, so a stamp that
    does not parse, or lies in the future, stayed for ever and every clock read from it stood still. Now it is
    stamped anew (one status write: the next pass keeps the new stamp), and no Event says anything changed."""
    first = ConditionSet([], 4, NOW)
    first.set(ConditionType.DEPLOYED, False, Reason.SERVING_CRASH_LOOP, "crashing")
    forged_list = [c.model_copy(update={"last_transition_time": forged}) for c in first.as_list()]
    later = NOW + timedelta(seconds=90)
    again = ConditionSet(forged_list, 4, later)
    again.set(ConditionType.DEPLOYED, False, Reason.SERVING_CRASH_LOOP, "crashing")
    assert again.as_list()[0].last_transition_time == rfc3339(later)
    assert again.changes() == [] and events(again) == []
    third = ConditionSet(again.as_list(), 4, later + timedelta(seconds=30))
    third.set(ConditionType.DEPLOYED, False, Reason.SERVING_CRASH_LOOP, "crashing")
    assert third.as_list() == again.as_list()  # nothing to write on the pass after


def test_a_transition_time_a_little_ahead_is_kept() -> None:
    """Another writer's clock may run a little ahead: a stamp up to a minute ahead is kept as it is."""
    ahead = rfc3339(NOW + timedelta(seconds=50))
    prev = ConditionSet([], 4, NOW)
    prev.set(ConditionType.DEPLOYED, False, Reason.SERVING_CRASH_LOOP, "crashing")
    stamped = [c.model_copy(update={"last_transition_time": ahead}) for c in prev.as_list()]
    kept = ConditionSet(stamped, 4, NOW)
    kept.set(ConditionType.DEPLOYED, False, Reason.SERVING_CRASH_LOOP, "crashing")
    assert kept.as_list()[0].last_transition_time == ahead


@pytest.mark.parametrize("forged", (*FORGED, FAR_FUTURE))
def test_the_missing_objects_recheck_backs_off_again_after_a_forged_transition_time(forged: str) -> None:
    """The recheck counted from a forged lastTransitionTime that was kept for ever: 5 s between looks for good.
    The pass that meets it stamps it anew, and from there the looks back off to RECHECK_MAX_SECONDS."""
    md = sourced()
    missing = Observed(missing_mounts=frozenset({("Secret", "ml", "model-creds")}))
    first = plan(md, missing, CONFIG, NOW)
    cond(first.status, "Optimized")["lastTransitionTime"] = forged
    healed = NOW + timedelta(seconds=600)
    again = plan(written(md, first.status), missing, CONFIG, healed)
    assert cond(again.status, "Optimized")["lastTransitionTime"] == rfc3339(healed)
    later = plan(written(md, again.status), missing, CONFIG, healed + timedelta(seconds=1000))
    assert later.requeue_after == RECHECK_MAX_SECONDS


@pytest.mark.parametrize("forged", FORGED)
def test_a_failed_job_with_a_forged_finish_is_retried_without_a_back_off(forged: str) -> None:
    """stages.jobs.decide raised ValueError on the back-off's clock; the back-off counts from the finish, and
    without a readable one the retry is not held."""
    failed = probe(JobState.FAILED, msg="flaky", reason="BackoffLimitExceeded", finished_at=forged or None)
    assert decide_job([failed], 1, CONFIG, NOW, classify).step == Step.CREATE
    out = run([failed])
    assert [j["metadata"]["name"] for j in out.effects.create] == [f"probe-{revision(make_md().spec)}-2"]


@pytest.mark.parametrize("forged", (*FORGED, None))
def test_a_finished_job_with_no_readable_finish_gets_no_grace_for_its_pod_status(forged: str | None) -> None:
    """The grace for a pod status that lags its Job counts from the finish: it raised ValueError on a forged one
    and, without one, waited a second at a time for as long as the pod status stayed missing."""
    finished = probe(JobState.SUCCEEDED, msg=None, finished_at=forged)
    assert decide_job([finished], 1, CONFIG, NOW, classify).step == Step.SUCCEEDED
    late = run([finished])
    assert late.effects.requeue_after != 1.0
    assert late.effects.failure is not None and "no number" in late.effects.failure.message
    just = probe(JobState.SUCCEEDED, msg=None, finished_at=rfc3339(NOW - timedelta(seconds=1)))
    assert POD_STATUS_GRACE_SECONDS > 1 and decide_job([just], 1, CONFIG, NOW, classify).step == Step.RUNNING


def test_a_forged_stamp_among_the_deploy_clocks_is_not_counted() -> None:
    """stages.serving_clocks.seconds_since_stamps (the shortfall, stall and back-off clocks) raised ValueError."""
    set_ = rfc3339(NOW - timedelta(seconds=40))
    for forged in FORGED:
        assert seconds_since_stamps(NOW, forged, set_) == 40.0
        assert seconds_since_stamps(NOW, set_, forged, latest=True) == 40.0
        assert seconds_since_stamps(NOW, forged, None) == 0.0


@pytest.mark.parametrize("forged", (*FORGED, FAR_FUTURE))
def test_prometheus_is_not_asked_while_the_phase_start_does_not_parse(forged: str) -> None:
    """Reconciler._figures raised ValueError on status.rollout.phaseStartedAt (a status a tenant can write):
    a start that does not parse is a clock not started, as when it is unset."""

    class NoKube:
        def list(self, *args: Any) -> list[Any]:
            raise AssertionError("the pods are not read when Prometheus is configured")

    md = make_md(build=False, serving={"rollout": {"strategy": "Canary"}})
    rollout = RolloutStatus(candidate=revision(md.spec), stable="rold", phase=RolloutPhase.SHADOW,
                            started_at=rfc3339(datetime.now(UTC)), phase_started_at=forged)  # fmt: skip
    md = md.model_copy(update={"status": md.status.model_copy(update={"rollout": rollout})})
    seen: list[tuple[str, dict[str, str]]] = []
    with fake_prometheus(figures, seen) as url:
        r = Reconciler(NoKube(), Store(), OperatorConfig(prometheus=PrometheusConfig(url=url)))  # type: ignore[arg-type]
        assert r._figures(md, makers=NOBODY) == (None, None) and seen == []


@pytest.mark.parametrize("forged", (*FORGED[:-1], FAR_FUTURE))
def test_a_canary_phase_whose_start_does_not_parse_starts_its_clock_anew(forged: str) -> None:
    """canary.decide raised ValueError on phaseStartedAt; now the clock starts at this look, written back as a
    stamp that parses, and the latency is not judged over the forged window."""
    clock = decide(CANARY, canary_started(), Look(at(10), available=True, samples=good()))
    forged_state = clock.model_copy(update={"phase_started_at": forged})
    anew = decide(CANARY, forged_state, Look(at(500), available=True, samples=good()))
    assert anew.decision == Decision.WAIT and anew.phase == RolloutPhase.SHADOW
    assert anew.phase_started_at == rfc3339(at(500)) and "held 0/60s" in anew.message
    on = decide(CANARY, anew, Look(at(560), available=True, samples=good()))
    assert on.decision == Decision.NEXT  # from the fresh stamp, the hold runs as for any phase


def test_a_phase_start_in_the_future_restarts_the_clock_and_the_bound_is_reached() -> None:
    """A far-future phaseStartedAt parsed: the phase held at "-251606433099/60s" for ever, the inconclusive bound
    never reached. It is now a clock not started (the stamp written back is this look's); a stamp within the
    allowed skew (another writer's clock a little ahead) is kept, and counts as 0 s until now passes it."""
    clock = decide(CANARY, canary_started(), Look(at(10), available=True, samples=good(10)))
    future = clock.model_copy(update={"phase_started_at": FAR_FUTURE})
    anew = decide(CANARY, future, Look(at(100), available=True, samples=good(10)))
    assert anew.phase_started_at == rfc3339(at(100)) and "held 0/60s" in anew.message
    late = decide(CANARY, anew, Look(at(100 + 60 + 600), available=True, samples=good(10)))
    assert late.phase == RolloutPhase.ROLLED_BACK and "inconclusive" in late.message
    skewed = clock.model_copy(update={"phase_started_at": rfc3339(at(130))})
    kept = decide(CANARY, skewed, Look(at(100), available=True, samples=good(10)))
    assert kept.phase_started_at == rfc3339(at(130)) and "held 0/60s" in kept.message


@pytest.mark.parametrize("forged", (*FORGED, FAR_FUTURE))
def test_an_analysis_window_whose_start_does_not_parse_starts_anew(forged: str) -> None:
    """phasewindow.advance raised ValueError on status.rollout.analysisWindow.since; now such a window is
    started anew from the current readings (what it had counted came with a forged start)."""
    w = advance(None, look(cand("c1", 100)), KEY, T0)
    w = advance(w, look(cand("c1", 300)), KEY, T0 + timedelta(seconds=5))
    assert samples(w, look()).candidate_requests == 200
    forged_window = w.model_copy(update={"since": forged})
    later = T0 + timedelta(seconds=10)
    anew = advance(forged_window, look(cand("c1", 400)), KEY, later)
    assert anew.since == rfc3339(later) and anew.phase == KEY
    assert anew.candidate.requests == 0 and samples(anew, look()).candidate_requests == 0


def test_a_zoneless_stall_start_does_not_end_the_stall() -> None:
    """podhealth.crashed_since: a start that does not parse keeps the judgement before (the stall holds); a
    zoneless one parsed, failed every comparison, and so ended the stall."""
    crashed_30s_ago = health(pod("digits-5f7-a", running(30, restarts=2)))
    assert crashed_since(crashed_30s_ago, REV, rfc3339(NOW - timedelta(seconds=120)))
    assert not crashed_since(crashed_30s_ago, REV, rfc3339(NOW - timedelta(seconds=10)))
    zoneless = (NOW - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")
    for forged in (zoneless, "yesterday"):
        assert crashed_since(crashed_30s_ago, REV, forged)
