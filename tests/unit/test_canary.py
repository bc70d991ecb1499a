"""The Canary strategy's decisions (controller.canary): pure, phase by phase."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from modelship.api.rollout_status import (
    Criterion,
    CriterionStatus,
    Decision,
    RollbackCause,
    RolloutPhase,
    RolloutStatus,
    Verdict,
)
from modelship.api.serving import Analysis, Canary, CanaryStep, Shadow
from modelship.controller.canary import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Histogram,
    Look,
    Manual,
    Samples,
    canary_replicas,
    decide,
    effective_weight,
    judge,
    latency_requests_needed,
    manual_action,
    quantile_name,
    shadow_replicas,
    start,
)
from modelship.controller.canary_trouble import (
    FINAL,
    RESTART_MARK_MAX,
    RETRY,
    RETRY_BEFORE,
    RETRY_BY_SPEC,
    UNTOLD,
    CandidateTrouble,
    judge_trouble,
    rearmed,
    recorded,
    restart_mark,
    retold,
    retry_told,
    trouble_message,
    troubled_for,
    unjudged,
)
from modelship.controller.conditions import rfc3339
from modelship.controller.phasewindow import PodFigures, PodReading, Readings, advance, samples
from modelship.controller.podmetrics import lifetime

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
BOUNDS = (0.001, 0.0025, 0.005, 0.01, float("inf"))
CANARY = Canary(
    shadow=Shadow(percent=20, duration_seconds=60),
    steps=[CanaryStep(weight=25, pause_seconds=30), CanaryStep(weight=50, pause_seconds=30)],
    analysis=Analysis(
        min_requests=100, max_error_rate=0.01, max_latency_ratio=2.0, min_agreement=0.99, latency_quantile=0.95
    ),
)


def hist(*per_bucket: float) -> Histogram:
    """A histogram from per-bucket (not cumulative) counts."""
    cumulative, total = [], 0.0
    for n in per_bucket:
        total += n
        cumulative.append(total)
    return Histogram(BOUNDS, tuple(cumulative))


def good(n: int = 200) -> Samples:
    return Samples(
        mirrored=n,
        rows_agreed=n,
        rows_compared=n,
        candidate_requests=n,
        candidate_latency=hist(0, n, 0, 0, 0),
        stable_latency=hist(0, 5 * n, 0, 0, 0),
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started() -> RolloutStatus:
    return start(CANARY, "cand", None, "stable", T0)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    h = hist(50, 50, 0, 0, 0)  # 50 at <= 1 ms, 50 in (1, 2.5] ms
    assert h.quantile(0.5) == pytest.approx(0.001)
    assert h.quantile(0.99) == pytest.approx(0.001 + 0.0015 * 49 / 50)
    assert hist(0, 0, 0, 0, 10).quantile(0.99) == 0.01  # in +Inf: the highest finite bound
    assert Histogram((), ()).quantile(0.99) is None
    assert (hist(1, 0, 0, 0, 0) + hist(0, 1, 0, 0, 0)).counts == (1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="different buckets"):
        _ = hist(1, 0, 0, 0, 0) + Histogram((1.0, float("inf")), (1, 1))


def test_criteria_are_pending_below_min_requests_then_judged() -> None:
    few = judge(CANARY.analysis, good(99))
    assert [c.verdict for c in few] == [Verdict.PENDING] * 3
    enough = judge(CANARY.analysis, good(100))
    assert [c.verdict for c in enough] == [Verdict.PASSED] * 3
    assert [c.name for c in enough] == [Criterion.ERROR_RATE, Criterion.LATENCY_RATIO, Criterion.AGREEMENT]
    assert enough[0].observed == 0.0 and enough[2].observed == 1.0


def test_each_criterion_fails_on_its_own_numbers() -> None:
    a = CANARY.analysis
    errors = judge(a, Samples(**{**good().__dict__, "candidate_errors": 3}))  # 3/200 = 0.015 > 0.01
    assert errors[0].verdict == Verdict.FAILED and errors[0].observed == 0.015
    timeouts = judge(a, Samples(**{**good().__dict__, "mirror_failures": 10}))  # no answer counts as failed
    assert timeouts[0].verdict == Verdict.FAILED and timeouts[0].requests == 210
    slow = judge(a, Samples(**{**good().__dict__, "candidate_latency": hist(0, 0, 0, 200, 0)}))
    assert slow[1].verdict == Verdict.FAILED and slow[1].observed is not None and slow[1].observed > 2.0
    disagree = judge(a, Samples(**{**good().__dict__, "rows_agreed": 150}))
    assert disagree[2].verdict == Verdict.FAILED and disagree[2].observed == 0.75
    assert [c.verdict for c in disagree[:2]] == [Verdict.PASSED, Verdict.PASSED]


def test_shadow_waits_for_pods_then_holds_its_duration_then_goes_to_step_one() -> None:
    s = started()
    assert s.phase == RolloutPhase.SHADOW and s.step == 0 and s.mirror_percent == 20
    waiting = decide(CANARY, s, Look(at(5), available=False, samples=good()))
    assert waiting.decision == Decision.WAIT and waiting.phase_started_at is None
    clock = decide(CANARY, waiting, Look(at(10), available=True, samples=good()))
    assert clock.phase == RolloutPhase.SHADOW and clock.phase_started_at == "2026-11-28T12:00:10Z"
    held = decide(CANARY, clock, Look(at(69), available=True, samples=good()))
    assert held.decision == Decision.WAIT and "59/60s" in held.message
    nxt = decide(CANARY, held, Look(at(70), available=True, samples=good()))
    assert (nxt.phase, nxt.step, nxt.decision) == (RolloutPhase.CANARY, 1, Decision.NEXT)
    assert nxt.phase_started_at is None  # the step's clock starts when its pods are available


def test_time_passed_but_too_few_requests_holds_and_says_how_many() -> None:
    s = decide(CANARY, started(), Look(at(0), available=True, samples=good(40)))
    held = decide(CANARY, s, Look(at(600), available=True, samples=good(40)))
    assert held.phase == RolloutPhase.SHADOW and held.decision == Decision.WAIT
    assert "Agreement has 40/100 requests" in held.message


def test_steps_in_order_then_promoting_then_promoted() -> None:
    s = started().model_copy(update={"phase": RolloutPhase.CANARY, "step": 1})
    s = decide(CANARY, s, Look(at(0), available=True, samples=good()))
    s = decide(CANARY, s, Look(at(30), available=True, samples=good()))
    assert (s.phase, s.step) == (RolloutPhase.CANARY, 2)
    s = decide(CANARY, s, Look(at(31), available=True, samples=good()))
    s = decide(CANARY, s, Look(at(61), available=True, samples=good()))
    assert (s.phase, s.decision) == (RolloutPhase.PROMOTING, Decision.PROMOTE)
    rolling = decide(CANARY, s, Look(at(62), available=False))
    assert rolling.phase == RolloutPhase.PROMOTING
    done = decide(CANARY, rolling, Look(at(70), available=True))
    assert (done.phase, done.weight, done.mirror_percent) == (RolloutPhase.PROMOTED, 100, 0)
    assert decide(CANARY, done, Look(at(80), available=True, manual=Manual.ABORT)) == done  # terminal


def test_the_first_failed_criterion_rolls_back_at_once_in_any_phase() -> None:
    bad = Samples(**{**good().__dict__, "rows_agreed": 120})
    for phase, step in ((RolloutPhase.SHADOW, 0), (RolloutPhase.CANARY, 2)):
        s = started().model_copy(update={"phase": phase, "step": step, "phase_started_at": "2026-11-28T12:00:00Z"})
        out = decide(CANARY, s, Look(at(1), available=True, samples=bad))  # long before the phase's time
        assert (out.phase, out.decision, out.weight, out.mirror_percent) == (
            RolloutPhase.ROLLED_BACK, Decision.ROLLBACK, 0, 0,
        )  # fmt: skip
        assert "Agreement 0.6 over 200 requests is below the minimum 0.99" in out.message
        assert "revision stable serves all traffic" in out.message
        agreement = next(c for c in out.criteria if c.name == Criterion.AGREEMENT)
        assert agreement.observed == 0.6 and agreement.verdict == Verdict.FAILED
    # a failure is judged even while the candidate's pods are not all available
    out = decide(CANARY, started(), Look(at(1), available=False, samples=bad))
    assert out.phase == RolloutPhase.ROLLED_BACK


def test_without_shadow_the_rollout_starts_at_step_one() -> None:
    s = start(Canary(steps=[CanaryStep(weight=10)]), "c", "img", "s", T0)
    assert (s.phase, s.step, s.mirror_percent, s.candidate_image) == (RolloutPhase.CANARY, 1, 0, "img")


def test_manual_overrides_name_the_candidate() -> None:
    assert manual_action({PROMOTE_ANNOTATION: "cand"}, "cand") == Manual.PROMOTE
    assert manual_action({ABORT_ANNOTATION: "cand", PROMOTE_ANNOTATION: "cand"}, "cand") == Manual.ABORT
    assert manual_action({PROMOTE_ANNOTATION: "older"}, "cand") is None  # stale: another revision
    promoted = decide(CANARY, started(), Look(at(1), available=False, manual=Manual.PROMOTE))
    assert promoted.phase == RolloutPhase.PROMOTING and "annotation" in promoted.message
    aborted = decide(CANARY, started(), Look(at(1), available=True, samples=good(), manual=Manual.ABORT))
    assert aborted.phase == RolloutPhase.ROLLED_BACK and ABORT_ANNOTATION in aborted.message
    assert decide(CANARY, aborted, Look(at(2), available=True, samples=good())) == aborted  # stays rolled back
    overridden = decide(CANARY, aborted, Look(at(3), available=True, manual=Manual.PROMOTE))
    assert overridden.phase == RolloutPhase.PROMOTING  # a human may still ship what the analysis refused


def test_without_mirroring_agreement_is_not_judged() -> None:
    spec = Canary(steps=[CanaryStep(weight=10, pause_seconds=0)], analysis=CANARY.analysis)
    s = start(spec, "c", None, "s", T0)
    no_mirror = Samples(**{**good().__dict__, "mirrored": 0, "rows_agreed": 0, "rows_compared": 0})
    s = decide(spec, s, Look(at(0), available=True, samples=no_mirror))  # the step's clock (and window) starts
    assert s.phase == RolloutPhase.CANARY and s.phase_started_at is not None
    s = decide(spec, s, Look(at(5), available=True, samples=no_mirror))
    assert [c.name for c in s.criteria] == [Criterion.ERROR_RATE, Criterion.LATENCY_RATIO]
    assert s.phase == RolloutPhase.PROMOTING


@pytest.mark.parametrize(
    ("stable", "weight", "replicas", "share"),
    [(1, 50, 1, 50), (2, 25, 1, 33), (3, 25, 1, 25), (2, 50, 2, 50), (4, 20, 1, 20), (1, 90, 9, 90), (2, 10, 1, 33)],
)
def test_replica_weights_are_quantized_and_reported(stable: int, weight: int, replicas: int, share: int) -> None:
    assert canary_replicas(stable, weight) == replicas
    assert effective_weight(stable, replicas) == share


def test_shadow_replicas_cover_the_mirrored_share() -> None:
    assert shadow_replicas(1, 20) == 1
    assert shadow_replicas(10, 20) == 2
    assert shadow_replicas(10, 25) == 3


def test_a_phase_without_enough_requests_is_inconclusive_after_the_bound_and_rolls_back() -> None:
    bound = CANARY.analysis.inconclusive_after_seconds
    assert bound == 600  # the documented default
    s = decide(CANARY, started(), Look(at(0), available=True, samples=good(40)))
    held = decide(CANARY, s, Look(at(60 + bound - 1), available=True, samples=good(40)))
    assert held.phase == RolloutPhase.SHADOW and held.decision == Decision.WAIT
    gone = decide(CANARY, held, Look(at(60 + bound), available=True, samples=good(40)))
    assert (gone.phase, gone.decision, gone.rollback_cause) == (
        RolloutPhase.ROLLED_BACK, Decision.ROLLBACK, RollbackCause.ANALYSIS_INCONCLUSIVE)  # fmt: skip
    assert gone.weight == 0 and gone.mirror_percent == 0
    assert "analysis inconclusive: shadow ran 660s, 600s past its 60s hold" in gone.message
    assert "Agreement has 40/100 requests" in gone.message and "revision stable serves all traffic" in gone.message
    # a human can still promote it, or abort before the bound
    promoted = decide(CANARY, gone, Look(at(700), available=False, manual=Manual.PROMOTE))
    assert promoted.phase == RolloutPhase.PROMOTING and promoted.rollback_cause is None
    aborted = decide(CANARY, held, Look(at(61), available=True, samples=good(40), manual=Manual.ABORT))
    assert aborted.rollback_cause == RollbackCause.ABORTED


def test_a_custom_bound_and_unreadable_figures_hold_then_turn_inconclusive() -> None:
    analysis = CANARY.analysis.model_copy(update={"inconclusive_after_seconds": 30})
    canary = CANARY.model_copy(update={"analysis": analysis})
    s = decide(canary, started(), Look(at(0), available=True, samples=good()))
    s = decide(canary, s, Look(at(1), available=True, samples=good()))
    assert [c.verdict for c in s.criteria] == [Verdict.PASSED] * 3
    down = Samples(error="Prometheus at http://prom:9090: ConnectionRefusedError: [Errno 111] Connection refused")
    held = decide(canary, s, Look(at(61), available=True, samples=down))
    # the last verdicts stay, but nothing is promoted on figures that cannot be read now
    assert held.phase == RolloutPhase.SHADOW and held.decision == Decision.WAIT and held.criteria == s.criteria
    assert "analysis figures unavailable: Prometheus at http://prom:9090: ConnectionRefusedError" in held.message
    back = decide(canary, held, Look(at(62), available=True, samples=good()))
    assert back.phase == RolloutPhase.CANARY  # readable again: the phase held, on to step 1
    gone = decide(canary, held, Look(at(90), available=True, samples=down))
    assert gone.rollback_cause == RollbackCause.ANALYSIS_INCONCLUSIVE and "figures unavailable" in gone.message


# The latency ratio is judged soundly: both sides over the phase's window, a quantile that is not the slowest
# request, and not while the candidate's pods start. (CI once rolled a good revision back on "LatencyRatio 6.9126
# over 48 requests": the p99 of 48 requests is the slowest one, a single cold or preempted request.)
SERVER_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, float("inf"))
"""The serving runtime's latency buckets (serve.metrics.LATENCY_BUCKETS up to 100 ms, then +Inf)."""
P99 = Analysis(min_requests=40, max_latency_ratio=5.0)  # the e2e test's analysis, the default quantile


def server_hist(**per_bucket: float) -> Histogram:
    """Per-bucket counts by upper bound in ms (b5 = (2.5, 5] ms), cumulative over SERVER_BOUNDS."""
    names = ("b0_1", "b0_25", "b0_5", "b1", "b2_5", "b5", "b10", "b25", "b50", "b100", "inf")
    unknown = set(per_bucket) - set(names)
    assert not unknown, unknown
    cumulative, total = [], 0.0
    for name in names:
        total += per_bucket.get(name, 0.0)
        cumulative.append(total)
    return Histogram(SERVER_BOUNDS, tuple(cumulative))


def latency(analysis: Analysis, candidate: Histogram, stable: Histogram, timed: bool = True) -> CriterionStatus:
    n = int(candidate.total)
    s = Samples(mirrored=n, rows_agreed=n, rows_compared=n, candidate_requests=n, candidate_latency=candidate,
                stable_latency=stable)  # fmt: skip
    return next(c for c in judge(analysis, s, timed=timed) if c.name == Criterion.LATENCY_RATIO)


def test_a_p99_of_too_few_requests_is_the_slowest_one_and_stays_pending() -> None:
    # CI's case: 47 warm answers and one that waited on the shared CPUs; the stable side warm throughout
    cand = server_hist(b5=47, b50=1)
    stable = server_hist(b2_5=200, b5=2000)
    c = latency(P99, cand, stable)
    assert c.verdict == Verdict.PENDING and c.requests == 48 and c.required == 500
    # with five requests above the p99 on each side, one slow request does not decide it
    c = latency(P99, server_hist(b5=499, b50=1), stable)
    assert c.verdict == Verdict.PASSED and c.observed is not None and c.observed < 2.0
    # a candidate that is slow in its tail (10 of 500 requests at 25-50 ms) still fails
    c = latency(P99, server_hist(b5=490, b50=10), stable)
    assert c.verdict == Verdict.FAILED and c.observed is not None and c.observed > 5.0


def test_the_latency_quantile_is_settable_and_sets_the_requests_it_needs() -> None:
    assert latency_requests_needed(P99) == 500
    assert latency_requests_needed(Analysis(min_requests=40, latency_quantile=0.95)) == 100
    assert latency_requests_needed(Analysis(min_requests=40, latency_quantile=0.9)) == 50
    assert latency_requests_needed(Analysis(min_requests=400, latency_quantile=0.9)) == 400  # minRequests rules
    assert latency_requests_needed(Analysis(latency_quantile=0.999)) == 5000
    p90 = Analysis(min_requests=40, max_latency_ratio=5.0, latency_quantile=0.9)
    # p90 of 60 requests, 4 of them slow: the quantile sits among the warm ones
    c = latency(p90, server_hist(b5=56, b50=4), server_hist(b5=1000))
    assert c.verdict == Verdict.PASSED and c.required == 50
    assert quantile_name(0.99) == "p99" and quantile_name(0.999) == "p99.9" and quantile_name(0.5) == "p50"
    for bad in (0.4, 1.0, 1.5):
        with pytest.raises(ValidationError, match="latencyQuantile"):
            Analysis.model_validate({"latencyQuantile": bad})


def test_latency_is_not_judged_while_the_phase_window_has_not_started() -> None:
    # enough requests, all of them from the candidate's start-up (cold first answers, the mirrored burst)
    cold = Samples(mirrored=600, rows_agreed=600, rows_compared=600, candidate_requests=600,
                   candidate_latency=server_hist(b5=500, b100=100), stable_latency=server_hist(b5=5000))  # fmt: skip
    c = latency(P99, cold.candidate_latency, cold.stable_latency, timed=False)
    assert c.verdict == Verdict.PENDING and c.observed is None and c.requests == 0
    spec = Canary(shadow=Shadow(percent=50, duration_seconds=20), steps=[CanaryStep(weight=50, pause_seconds=30)],
                  analysis=P99)  # fmt: skip
    s = start(spec, "cand", None, "stable", T0)
    waiting = decide(spec, s, Look(at(5), available=False, samples=cold))  # pods still starting: no verdict
    assert waiting.phase == RolloutPhase.SHADOW and waiting.decision == Decision.WAIT
    clock = decide(spec, waiting, Look(at(10), available=True, samples=cold))  # the look that starts the window
    assert clock.phase == RolloutPhase.SHADOW and clock.phase_started_at is not None
    ratio = next(c for c in clock.criteria if c.name == Criterion.LATENCY_RATIO)
    assert ratio.verdict == Verdict.PENDING
    # over the phase's own window the same slow tail fails, and the message names the quantile and the sides
    out = decide(spec, clock, Look(at(15), available=True, samples=cold))
    assert out.phase == RolloutPhase.ROLLED_BACK
    assert "LatencyRatio (p99) " in out.message and "over 600 requests each is above the maximum 5.0" in out.message


def test_a_pending_latency_ratio_says_what_it_has_and_needs_on_each_side() -> None:
    spec = Canary(steps=[CanaryStep(weight=50, pause_seconds=10)], analysis=P99)
    few = Samples(candidate_requests=48, candidate_latency=server_hist(b5=47, b50=1),
                  stable_latency=server_hist(b5=3000))  # fmt: skip
    s = decide(spec, start(spec, "cand", None, "stable", T0), Look(at(0), available=True, samples=few))
    held = decide(spec, s, Look(at(11), available=True, samples=few))
    assert held.phase == RolloutPhase.CANARY and held.decision == Decision.WAIT
    assert "ErrorRate has 48/40" not in held.message  # judged: 48 >= minRequests
    assert "LatencyRatio has 48/500 requests on each side (p99 is judged once 5 requests of each side lie above it)" \
        in held.message  # fmt: skip


def test_both_sides_are_judged_over_the_phase_window_not_the_pods_lifetime() -> None:
    # the stable pods served 100000 fast requests before the phase; in the phase both sides are equally slow
    # (the node is busier): over the window the ratio is 1, over the pods' lifetime it would look ~10x worse
    before = PodFigures(requests=100000, latency=server_hist(b1=100000))
    stable0 = PodReading("stable-a", False, T0 - timedelta(hours=1), before)
    cand0 = PodReading("cand-a", True, T0 - timedelta(seconds=30),
                       PodFigures(requests=10, latency=server_hist(b10=10)))  # fmt: skip
    window = advance(None, Readings((stable0, cand0)), "Shadow/0/x", T0)
    in_phase = server_hist(b1=100000, b10=600)
    stable1 = PodReading("stable-a", False, stable0.created, PodFigures(requests=100600, latency=in_phase))
    cand1 = PodReading("cand-a", True, cand0.created, PodFigures(requests=610, latency=server_hist(b10=610)))
    readings = Readings((stable1, cand1))
    window = advance(window, readings, "Shadow/0/x", T0 + timedelta(seconds=20))
    windowed = samples(window, readings)
    assert windowed.candidate_latency.total == 600 and windowed.stable_latency.total == 600
    c = latency(P99, windowed.candidate_latency, windowed.stable_latency)
    assert c.verdict == Verdict.PASSED and c.observed == 1.0 and c.requests == 600
    whole = lifetime(readings)
    assert latency(P99, whole.candidate_latency, whole.stable_latency).verdict == Verdict.FAILED


def test_a_step_without_a_pause_is_judged_on_its_own_figures_before_it_ends() -> None:
    """Prometheus is asked for a phase's figures once its clock runs, so the look that starts it has none; with
    pauseSeconds 0 nothing held that look, and the criteria it went on were the step before's (or none): two
    steps went by, then Promoting, without one request judged. Now that look only starts the clock, the step
    before's verdicts are not this one's, and each step ends at a later look on figures of its own."""
    spec = Canary(
        steps=[CanaryStep(weight=10, pause_seconds=0), CanaryStep(weight=50, pause_seconds=0)],
        analysis=CANARY.analysis,
    )
    s = start(spec, "c", None, "s", T0)
    first = decide(spec, s, Look(at(0), available=True))  # Prometheus not asked: the clock had not started
    assert (first.phase, first.step, first.decision) == (RolloutPhase.CANARY, 1, Decision.WAIT)
    assert first.phase_started_at == "2026-11-28T12:00:00Z" and first.criteria == []
    few = decide(spec, first, Look(at(5), available=True, samples=good(20)))
    assert (few.step, few.decision) == (1, Decision.WAIT) and "has 20/100 requests" in few.message
    passed = decide(spec, few, Look(at(10), available=True, samples=good()))
    assert (passed.step, passed.decision, passed.phase_started_at) == (2, Decision.NEXT, None)
    assert [c.verdict for c in passed.criteria] == [Verdict.PASSED] * 2
    second = decide(spec, passed, Look(at(11), available=True))  # step 2's first look: no figures of its own yet
    assert (second.phase, second.step, second.decision) == (RolloutPhase.CANARY, 2, Decision.WAIT)
    assert second.criteria == []  # step 1's passed verdicts are not step 2's
    down = Samples(error="connection refused")  # Prometheus down at the look after: still nothing judged
    held = decide(spec, second, Look(at(12), available=True, samples=down))
    assert (held.step, held.decision, held.criteria) == (2, Decision.WAIT, [])
    done = decide(spec, held, Look(at(13), available=True, samples=good()))
    assert (done.phase, done.decision) == (RolloutPhase.PROMOTING, Decision.PROMOTE)


def test_the_shadow_phases_verdicts_are_not_the_first_steps() -> None:
    spec = CANARY.model_copy(update={"steps": [CanaryStep(weight=25, pause_seconds=0)]})
    s = decide(spec, started(), Look(at(0), available=True))
    s = decide(spec, s, Look(at(60), available=True, samples=good()))
    assert (s.phase, s.step, s.decision) == (RolloutPhase.CANARY, 1, Decision.NEXT)
    step = decide(spec, s, Look(at(61), available=True))
    assert (step.phase, step.decision, step.criteria) == (RolloutPhase.CANARY, Decision.WAIT, [])


def test_a_look_without_figures_never_ends_a_phase_and_turns_inconclusive() -> None:
    """A phase whose clock runs but whose looks bring no figures at all is not passed for want of a criterion:
    it holds, then is inconclusive after the bound, as one whose figures stay short."""
    spec = Canary(steps=[CanaryStep(weight=10, pause_seconds=0)], analysis=CANARY.analysis)
    s = decide(spec, start(spec, "c", None, "s", T0), Look(at(0), available=True, samples=good(10)))
    s = s.model_copy(update={"criteria": []})
    held = decide(spec, s, Look(at(30), available=True))
    assert (held.phase, held.decision) == (RolloutPhase.CANARY, Decision.WAIT) and "no figures yet" in held.message
    late = decide(spec, held, Look(at(601), available=True))
    assert late.phase == RolloutPhase.ROLLED_BACK and late.rollback_cause == RollbackCause.ANALYSIS_INCONCLUSIVE


OOM = CandidateTrouble("pod cand-0: container server crash-looping (CrashLoopBackOff), last terminated OOMKilled",
                       crash_loop=True)  # fmt: skip
PULL = CandidateTrouble("pod cand-0: container server image registry/x not pulled (ImagePullBackOff)")


def test_a_crash_looping_candidate_says_why_while_it_waits_then_is_rolled_back_past_the_deadline() -> None:
    s = started()
    told = decide(CANARY, s, Look(at(5), available=False, trouble=OOM, deadline_seconds=30))
    assert told.phase == RolloutPhase.SHADOW and told.decision == Decision.WAIT
    assert told.message == f"waiting for the candidate's pods of shadow: {OOM.text}"
    assert told.candidate_failing_since == "2026-11-28T12:00:05Z"
    held = decide(CANARY, told, Look(at(34), available=False, trouble=OOM, deadline_seconds=30))
    assert held.phase == RolloutPhase.SHADOW and held.candidate_failing_since == told.candidate_failing_since
    gone = decide(CANARY, held, Look(at(35), available=False, trouble=OOM, deadline_seconds=30))
    assert (gone.phase, gone.decision, gone.rollback_cause) == (
        RolloutPhase.ROLLED_BACK, Decision.ROLLBACK, RollbackCause.CANDIDATE_CRASH_LOOP)  # fmt: skip
    assert gone.message == (
        f"the candidate's pods crash-loop for more than 30s (progressDeadlineSeconds 30): {OOM.text}; "
        f"{RETRY}; revision stable keeps serving all traffic"
    )
    assert "env" not in RETRY and "podAnnotations" in RETRY and "progressDeadlineSeconds" in RETRY
    assert gone.weight == 0 and gone.mirror_percent == 0
    # final for this candidate: the same spec does not retry
    assert decide(CANARY, gone, Look(at(99), available=True, samples=good())) == gone


def test_a_crash_loop_clock_restarts_when_the_pods_say_nothing_and_a_ready_flap_does_not_judge() -> None:
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    # one restart that then runs and serves: the pods are available, not judged, the clock kept
    ran = decide(CANARY, s, Look(at(40), available=True, samples=good(), trouble=OOM, deadline_seconds=30))
    assert ran.phase == RolloutPhase.SHADOW and ran.candidate_failing_since == s.candidate_failing_since
    # ... down again after the deadline: judged at once (a flap's ready moment does not reset the clock)
    flap = decide(CANARY, ran, Look(at(41), available=False, trouble=OOM, deadline_seconds=30))
    assert flap.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP
    # the pods say nothing (they start anew): the clock is cleared, a later crash loop starts its own
    quiet = decide(CANARY, s, Look(at(20), available=False, deadline_seconds=30))
    assert quiet.candidate_failing_since is None and quiet.message == "waiting for the candidate's pods of shadow"
    again = decide(CANARY, quiet, Look(at(40), available=False, trouble=OOM, deadline_seconds=30))
    assert again.phase == RolloutPhase.SHADOW and again.candidate_failing_since == "2026-11-28T12:00:40Z"
    # a forged stamp from the future starts anew, never holds the judgement off
    forged = s.model_copy(update={"candidate_failing_since": "9999-12-31T00:00:00Z"})
    assert decide(CANARY, forged, Look(at(40), available=False, trouble=OOM)).candidate_failing_since == rfc3339(at(40))


def test_a_candidate_slow_to_pull_or_schedule_waits_for_its_deployments_deadline() -> None:
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=PULL, deadline_seconds=30))
    held = decide(CANARY, s, Look(at(3600), available=False, trouble=PULL, deadline_seconds=30))
    assert held.phase == RolloutPhase.SHADOW and held.message.endswith(PULL.text)
    exceeded = replace(PULL, deadline_exceeded=True)
    gone = decide(CANARY, held, Look(at(3601), available=False, trouble=exceeded, deadline_seconds=30))
    assert gone.rollback_cause == RollbackCause.CANDIDATE_NOT_STARTING
    assert gone.message.startswith("the candidate's pods do not start: its Deployment made no progress for 30s: ")
    crash = decide(CANARY, s, Look(at(5), available=False, trouble=replace(OOM, deadline_exceeded=True)))
    assert crash.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP


def test_judge_trouble_is_pure_and_needs_the_pods_down() -> None:
    assert judge_trouble(None, 999, 30, available=False) is None
    assert judge_trouble(OOM, 999, 30, available=True) is None
    assert judge_trouble(OOM, 29.9, 30, available=False) is None
    assert judge_trouble(OOM, 30, 30, available=False) == RollbackCause.CANDIDATE_CRASH_LOOP
    assert judge_trouble(PULL, 999, 30, available=False) is None


def test_overrides_still_work_on_a_crash_looping_candidate() -> None:
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    aborted = decide(CANARY, s, Look(at(1), available=False, manual=Manual.ABORT, trouble=OOM))
    assert aborted.rollback_cause == RollbackCause.ABORTED
    gone = decide(CANARY, s, Look(at(31), available=False, trouble=OOM, deadline_seconds=30))
    promoted = decide(CANARY, gone, Look(at(32), available=False, manual=Manual.PROMOTE, trouble=OOM))
    assert promoted.phase == RolloutPhase.PROMOTING and promoted.rollback_cause is None


def test_a_candidate_whose_pods_serve_is_not_judged_while_only_the_stable_pods_are_waited_for() -> None:
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    stable = Look(at(60), available=False, waiting_for="the stable pods", trouble=OOM, deadline_seconds=30)
    held = decide(CANARY, s, stable)
    assert held.phase == RolloutPhase.SHADOW and held.message == "waiting for the stable pods of shadow"
    assert held.candidate_failing_since == s.candidate_failing_since  # the clock goes on
    both = replace(stable, waiting_for="the candidate's pods and the stable pods")
    assert decide(CANARY, held, both).rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP


SCHED = CandidateTrouble("pod cand-0 unschedulable: 0/3 nodes are available: 3 Insufficient memory")
RAN_AGAIN = CandidateTrouble("pod cand-0: container server running again after a crash, last terminated OOMKilled",
                             recovering=True)  # fmt: skip


def test_a_slow_schedule_then_one_crash_starts_the_crash_loop_s_own_clock() -> None:
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=SCHED, deadline_seconds=30))
    # a pod not scheduled (or not pulled) is judged by its Deployment's deadline alone: no stamp
    assert s.candidate_failing_since is None and s.message.endswith(SCHED.text)
    held = decide(CANARY, s, Look(at(29), available=False, trouble=SCHED, deadline_seconds=30))
    assert held.candidate_failing_since is None
    # scheduled at last, its first crash: the crash loop's clock starts now, not with the scheduling trouble
    crashed = decide(CANARY, held, Look(at(35), available=False, trouble=OOM, deadline_seconds=30))
    assert crashed.phase == RolloutPhase.SHADOW and crashed.candidate_failing_since == rfc3339(at(35))
    # ... and a crash that turns into other trouble, then crashes again, starts anew
    pull = decide(CANARY, crashed, Look(at(50), available=False, trouble=PULL, deadline_seconds=30))
    assert pull.candidate_failing_since is None
    again = decide(CANARY, pull, Look(at(70), available=False, trouble=OOM, deadline_seconds=30))
    assert again.phase == RolloutPhase.SHADOW and again.candidate_failing_since == rfc3339(at(70))
    gone = decide(CANARY, again, Look(at(100), available=False, trouble=OOM, deadline_seconds=30))
    assert gone.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP


def test_a_ready_pod_that_ran_again_after_one_crash_is_no_loop_beside_a_pod_still_starting() -> None:
    # no crash loop seen before: its Ready pod starts no clock and is never judged, however long the other starts
    s = decide(CANARY, started(), Look(at(0), available=False, trouble=RAN_AGAIN, deadline_seconds=30))
    assert s.candidate_failing_since is None and s.phase == RolloutPhase.SHADOW
    late = decide(CANARY, s, Look(at(3600), available=False, trouble=RAN_AGAIN, deadline_seconds=30))
    assert late.phase == RolloutPhase.SHADOW and late.candidate_failing_since is None
    # a clock already running (its crash was seen) is kept through the Ready moment, but the Ready pod is not
    # judged on it; a pod down in a crash loop again is
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    ready = decide(CANARY, looping, Look(at(60), available=False, trouble=RAN_AGAIN, deadline_seconds=30))
    assert ready.phase == RolloutPhase.SHADOW and ready.candidate_failing_since == looping.candidate_failing_since
    down = decide(CANARY, ready, Look(at(61), available=False, trouble=OOM, deadline_seconds=30))
    assert down.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP


def test_the_crash_loop_clock_is_cleared_by_an_override_promotion_and_rollback() -> None:
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    assert looping.candidate_failing_since is not None
    promoted = decide(CANARY, looping, Look(at(1), available=False, manual=Manual.PROMOTE, trouble=OOM))
    assert promoted.phase == RolloutPhase.PROMOTING and promoted.candidate_failing_since is None
    aborted = decide(CANARY, looping, Look(at(1), available=False, manual=Manual.ABORT, trouble=OOM))
    assert aborted.phase == RolloutPhase.ROLLED_BACK and aborted.candidate_failing_since is None
    gone = decide(CANARY, looping, Look(at(30), available=False, trouble=OOM, deadline_seconds=30))
    assert gone.phase == RolloutPhase.ROLLED_BACK and gone.candidate_failing_since is None
    promoting = looping.model_copy(update={"phase": RolloutPhase.PROMOTING})
    assert decide(CANARY, promoting, Look(at(2), available=False)).candidate_failing_since is None
    assert decide(CANARY, promoting, Look(at(2), available=True)).candidate_failing_since is None


def test_a_rollback_for_the_candidate_s_pods_is_rearmed_by_another_pod_template_only() -> None:
    gone = decide(CANARY, started(), Look(at(0), available=False, trouble=replace(OOM, deadline_exceeded=True)))
    judged = gone.model_copy(update={"rolled_back_template": "aaaa", "rolled_back_generation": 4})
    assert rearmed(judged, "cand", "bbbb")
    assert not rearmed(judged, "cand", "aaaa")  # the template its pods ran, whatever the generation now
    assert not rearmed(judged, "other", "bbbb") and not rearmed(None, "cand", "bbbb")
    assert not rearmed(judged, "cand", None)
    # the template not recorded (pruned by an older CRD; or a record of the generation only): final
    assert not rearmed(gone, "cand", "bbbb")
    assert not rearmed(judged.model_copy(update={"rolled_back_template": None}), "cand", "bbbb")
    not_starting = judged.model_copy(update={"rollback_cause": RollbackCause.CANDIDATE_NOT_STARTING})
    assert rearmed(not_starting, "cand", "bbbb")
    for final in (RollbackCause.ANALYSIS_FAILED, RollbackCause.ANALYSIS_INCONCLUSIVE, RollbackCause.ABORTED):
        assert not rearmed(judged.model_copy(update={"rollback_cause": final}), "cand", "bbbb")
    assert not rearmed(judged.model_copy(update={"phase": RolloutPhase.SHADOW}), "cand", "bbbb")


def test_a_rollback_for_the_candidate_s_pods_is_rearmed_by_another_restart_only_when_its_record_has_one() -> None:
    """rolledBackRestartedAt: the candidate Deployment's restartedAt at the rollback ("" for none). A record without
    it (written before the field, or pruned) is not compared on the restart: an earlier restart is not a new one."""
    gone = decide(CANARY, started(), Look(at(0), available=False, trouble=replace(OOM, deadline_exceeded=True)))
    judged = gone.model_copy(update={"rolled_back_template": "aaaa", "rolled_back_restarted_at": ""})
    assert not rearmed(judged, "cand", "aaaa", None)
    assert rearmed(judged, "cand", "aaaa", "2026-11-28T13:00:00Z")
    restarted = judged.model_copy(update={"rolled_back_restarted_at": "2026-11-28T13:00:00Z"})
    assert not rearmed(restarted, "cand", "aaaa", "2026-11-28T13:00:00Z")
    assert rearmed(restarted, "cand", "aaaa", "2026-11-28T14:00:00Z") and rearmed(restarted, "cand", "aaaa", None)
    assert rearmed(restarted, "cand", "bbbb", "2026-11-28T13:00:00Z")  # another template, the same restart
    before = judged.model_copy(update={"rolled_back_restarted_at": None})
    assert not rearmed(before, "cand", "aaaa", "2026-11-28T13:00:00Z") and rearmed(before, "cand", "bbbb", None)
    assert not rearmed(judged.model_copy(update={"rolled_back_template": None}), "cand", "aaaa", "x")
    # a value longer than the field allows is recorded as a digest, the same for the same value
    long = "x" * 300
    assert len(restart_mark(long)) == RESTART_MARK_MAX and restart_mark(long) == restart_mark(long)
    assert restart_mark(long) != restart_mark("y" * 300) and restart_mark(None) == restart_mark("") == ""
    marked = judged.model_copy(update={"rolled_back_restarted_at": restart_mark(long)})
    assert not rearmed(marked, "cand", "aaaa", long) and rearmed(marked, "cand", "aaaa", "y" * 300)


def test_a_rollback_that_cannot_be_tried_again_says_it_is_final() -> None:
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    gone = decide(CANARY, looping, Look(at(30), available=False, trouble=OOM, deadline_seconds=30, retry=False))
    assert gone.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP
    assert "try the revision again" not in gone.message and "final" in gone.message
    assert "status.rollout.rolledBackTemplate" in gone.message
    assert "to try the revision again" in trouble_message(RollbackCause.CANDIDATE_CRASH_LOOP, OOM, 30)


def test_a_rollback_record_without_its_template_is_told_from_the_record() -> None:
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    gone = decide(CANARY, looping, Look(at(30), available=False, trouble=OOM, deadline_seconds=30))
    assert gone.rolled_back_template is None and RETRY in gone.message  # the rollback's write adds the template
    # known pruned: final, whatever the generation
    final = recorded(gone.model_copy(update={"rolled_back_generation": 4}), "t1", 4, pruned=True)
    assert final.rolled_back_template is None and FINAL in final.message and RETRY not in final.message
    assert final.message.endswith("; revision stable keeps serving all traffic")
    # kept now, the spec the judged one: filled in, retryable
    filled = recorded(gone.model_copy(update={"rolled_back_generation": 4, "message": final.message}), "t1", 4, False)
    assert filled.rolled_back_template == "t1" and RETRY in filled.message and FINAL not in filled.message
    assert recorded(filled, "t2", 5, pruned=True) == filled  # a record with its template is as it is
    # another generation, or none recorded: cannot be told, final
    for generation in (5, None):
        untold = recorded(gone.model_copy(update={"rolled_back_generation": 4}), "t1", generation, False)
        assert untold.rolled_back_template is None and UNTOLD in untold.message and RETRY not in untold.message
    assert UNTOLD in recorded(gone, "t1", 4, False).message
    # other rollbacks are untouched
    failed = gone.model_copy(update={"rollback_cause": RollbackCause.ANALYSIS_FAILED, "rolled_back_generation": 4})
    assert recorded(failed, "t1", 4, False) == failed
    # an ending of an earlier operator is replaced; a message without one gets it before the serving words
    assert retold("x; a; revision s keeps serving all traffic", FINAL) == (
        f"x; a; {FINAL}; revision s keeps serving all traffic"
    )
    assert retold(retold("x", UNTOLD), UNTOLD) == f"x; {UNTOLD}"


RESTART_CLAUSE = "kubectl rollout restart deployment/<name>-canary"


def _advice_matches_rearmed(state: RolloutStatus) -> bool:
    """The message offers ``kubectl rollout restart`` exactly when a new restart (same template) tries it again."""
    assert state.rolled_back_template is not None
    later = rfc3339(at(3 * 86400))
    return (RESTART_CLAUSE in state.message) == rearmed(state, "cand", state.rolled_back_template, later)


def test_the_retry_advice_offers_a_restart_only_when_the_record_is_compared_on_one() -> None:
    """review 8e44b77: a record filled in after a restart later than startedAt (rolledBackRestartedAt None), or one
    whose CRD prunes that field, said "run kubectl rollout restart", which then tried nothing again."""
    gone = _rolled_back_for(OOM)
    assert RESTART_CLAUSE in RETRY and RESTART_CLAUSE not in RETRY_BY_SPEC and RETRY_BEFORE == RETRY_BY_SPEC
    # filled in: no restart now ("": a later one is compared), one from before startedAt (compared), one after
    # (may have come after the rollback: not compared)
    cases = {None: RETRY, rfc3339(at(-60)): RETRY, rfc3339(at(60)): RETRY_BY_SPEC}
    for restarted, ending in cases.items():
        filled = recorded(gone, "t1", 4, False, restarted)
        assert filled.rolled_back_template == "t1" and _ending_of(filled.message) == ending, restarted
        assert _advice_matches_rearmed(filled), restarted
        assert recorded(filled, "t1", 4, False, restarted) == filled  # told once, then as it is
        assert rearmed(filled, "cand", "t2", restarted)  # a spec change tries it again either way
    # the rollback's own write kept the template but the CRD pruned rolledBackRestartedAt: retold without it, and
    # back once the record has one
    kept = gone.model_copy(update={"rolled_back_template": "t1", "rolled_back_restarted_at": ""})
    assert _ending_of(kept.message) == RETRY and _advice_matches_rearmed(kept)
    pruned = kept.model_copy(update={"rolled_back_restarted_at": None})
    assert not _advice_matches_rearmed(pruned)  # what the previous code left
    told = recorded(pruned, "t1", 4, pruned=False)
    assert _ending_of(told.message) == RETRY_BY_SPEC and _advice_matches_rearmed(told)
    assert told.message.endswith("; revision stable keeps serving all traffic")
    assert recorded(told, "t1", 4, pruned=False) == told and retry_told(told) == told
    assert _ending_of(retry_told(told.model_copy(update={"rolled_back_restarted_at": ""})).message) == RETRY
    # other endings are left as they are
    for ending in (FINAL, UNTOLD):
        other = pruned.model_copy(update={"message": retold(pruned.message, ending)})
        assert retry_told(other) == other


def _ending_of(message: str) -> str | None:
    for ending in (RETRY, RETRY_BY_SPEC, FINAL, UNTOLD):
        if f"; {ending}; revision " in message or message.endswith(f"; {ending}"):
            return ending
    return None


def _rolled_back_for(trouble: CandidateTrouble) -> RolloutStatus:
    """A rollback for ``trouble``'s crash loop, its record on generation 4, without its template."""
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=trouble, deadline_seconds=30))
    gone = decide(CANARY, looping, Look(at(30), available=False, trouble=trouble, deadline_seconds=30))
    assert gone.phase == RolloutPhase.ROLLED_BACK and gone.rolled_back_template is None
    return gone.model_copy(update={"rolled_back_generation": 4})


def test_a_final_rollback_record_keeps_its_ending_whatever_this_process_knows_of_pruning() -> None:
    gone = _rolled_back_for(OOM)
    final = recorded(gone, "t1", 4, pruned=True)
    untold = recorded(gone, "t1", 5, pruned=False)
    assert FINAL in final.message and UNTOLD in untold.message
    # an operator restarted, not knowing yet that its CRD prunes the field, on a spec changed since: as it is
    assert recorded(final, "t2", 5, pruned=False) == final
    assert recorded(final, None, 4, pruned=False) == final
    # an operator that knows the pruning: an UNTOLD record is as it is too, on any generation
    assert recorded(untold, "t2", 5, pruned=True) == untold
    assert recorded(untold, "t1", 4, pruned=True) == untold
    # only filling the record in rewrites a final ending
    filled = recorded(final, "t1", 4, pruned=False)
    assert filled.rolled_back_template == "t1" and filled.message == retold(final.message, RETRY)
    assert RETRY in filled.message and FINAL not in filled.message


def test_a_rollback_s_ending_is_replaced_at_its_place_only() -> None:
    # the pods' own text says an ending (a log line, say): it is the cause, never reworded nor taken as the ending
    said = f"pod cand-0: last log line {FINAL!r}; {UNTOLD}; {RETRY}"
    gone = _rolled_back_for(CandidateTrouble(said, crash_loop=True))
    cause = f"the candidate's pods crash-loop for more than 30s (progressDeadlineSeconds 30): {said}"
    serving = "; revision stable keeps serving all traffic"
    assert gone.message == f"{cause}; {RETRY}{serving}"
    for ending in (FINAL, UNTOLD, RETRY):
        assert retold(gone.message, ending) == f"{cause}; {ending}{serving}"
    assert retold(retold(gone.message, FINAL), UNTOLD) == f"{cause}; {UNTOLD}{serving}"
    # the ending is RETRY: not final because the text says FINAL and UNTOLD; told so once, then as it is
    untold = recorded(gone, "t1", 5, pruned=False)
    assert untold.message == f"{cause}; {UNTOLD}{serving}"
    assert recorded(untold, "t1", 5, pruned=True) == untold
    assert recorded(gone, "t1", 5, pruned=True).message == f"{cause}; {FINAL}{serving}"
    # without the serving revision's words the ending is the message's end
    assert retold(f"{said}; {RETRY}", FINAL) == f"{said}; {FINAL}"


def test_a_crash_loop_stamp_from_before_the_rollout_began_is_not_its_clock() -> None:
    old = started().model_copy(update={"candidate_failing_since": rfc3339(at(-3600))})
    s = decide(CANARY, old, Look(at(5), available=False, trouble=OOM, deadline_seconds=30))
    assert s.phase == RolloutPhase.SHADOW and s.candidate_failing_since == rfc3339(at(5))
    assert troubled_for(old, OOM, at(5)) == (rfc3339(at(5)), 0.0)
    # one from the rollout's start on is kept
    kept = started().model_copy(update={"candidate_failing_since": rfc3339(at(0))})
    assert troubled_for(kept, OOM, at(5)) == (rfc3339(at(0)), 5.0)


def test_trouble_not_yet_judged_is_told_keeps_a_running_clock_and_starts_none() -> None:
    told = unjudged(replace(OOM, deadline_exceeded=True))
    assert told is not None and told.text == OOM.text and not told.crash_loop and not told.deadline_exceeded
    assert unjudged(None) is None
    fresh = decide(CANARY, started(), Look(at(0), available=False, trouble=told, deadline_seconds=30))
    assert fresh.candidate_failing_since is None and fresh.message.endswith(OOM.text)
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=OOM, deadline_seconds=30))
    held = decide(CANARY, looping, Look(at(99), available=False, trouble=told, deadline_seconds=30))
    assert held.phase == RolloutPhase.SHADOW and held.candidate_failing_since == looping.candidate_failing_since


def test_the_pods_of_a_new_replicaset_of_the_candidate_start_a_crash_loop_clock_of_their_own() -> None:
    """`kubectl rollout restart deployment/<name>-canary` after a fix outside the spec (a Secret's content, a
    quota): the Deployment makes a new ReplicaSet, whose pods are judged anew, not on the clock of the ones before."""
    first, second = replace(OOM, template_hash="aaa11"), replace(OOM, template_hash="bbb22")
    looping = decide(CANARY, started(), Look(at(0), available=False, trouble=first, deadline_seconds=30))
    assert (looping.candidate_failing_since, looping.candidate_failing_template) == (rfc3339(at(0)), "aaa11")
    # told but not judged while the controller lags (the ReplicaSet named is still the old one): the clock goes on
    lagging = decide(CANARY, looping, Look(at(20), available=False, trouble=unjudged(first), deadline_seconds=30))
    assert (lagging.candidate_failing_since, lagging.candidate_failing_template) == (rfc3339(at(0)), "aaa11")
    # the new ReplicaSet's pods crash too: their own clock, from this look
    restarted = decide(CANARY, lagging, Look(at(29), available=False, trouble=second, deadline_seconds=30))
    assert restarted.phase == RolloutPhase.SHADOW
    assert (restarted.candidate_failing_since, restarted.candidate_failing_template) == (rfc3339(at(29)), "bbb22")
    # past the first clock's deadline, not their own: not judged; past their own: rolled back for them
    held = decide(CANARY, restarted, Look(at(35), available=False, trouble=second, deadline_seconds=30))
    assert held.phase == RolloutPhase.SHADOW and held.candidate_failing_since == rfc3339(at(29))
    gone = decide(CANARY, held, Look(at(59), available=False, trouble=second, deadline_seconds=30))
    assert gone.rollback_cause == RollbackCause.CANDIDATE_CRASH_LOOP and gone.candidate_failing_template is None
    # a look whose Deployment names no ReplicaSet keeps the clock and its record; a clock recorded without one (an
    # older operator, a CRD that prunes the field) is kept and takes the ReplicaSet it is now told
    unnamed = decide(CANARY, restarted, Look(at(40), available=False, trouble=OOM, deadline_seconds=30))
    assert (unnamed.candidate_failing_since, unnamed.candidate_failing_template) == (rfc3339(at(29)), "bbb22")
    older = restarted.model_copy(update={"candidate_failing_template": None})
    adopted = decide(CANARY, older, Look(at(40), available=False, trouble=first, deadline_seconds=30))
    assert (adopted.candidate_failing_since, adopted.candidate_failing_template) == (rfc3339(at(29)), "aaa11")
    # no clock, no record
    quiet = decide(CANARY, restarted, Look(at(41), available=False, deadline_seconds=30))
    assert (quiet.candidate_failing_since, quiet.candidate_failing_template) == (None, None)


def test_a_rollback_message_with_the_retry_wording_before_kubectl_rollout_restart_is_recognised() -> None:
    cause = f"the candidate's pods crash-loop for more than 30s (progressDeadlineSeconds 30): {OOM.text}"
    before = f"{cause}; {RETRY_BEFORE}; revision stable keeps serving all traffic"
    assert retold(before, FINAL) == f"{cause}; {FINAL}; revision stable keeps serving all traffic"
    assert "kubectl rollout restart deployment/<name>-canary" in RETRY and "kubectl" not in RETRY_BEFORE
