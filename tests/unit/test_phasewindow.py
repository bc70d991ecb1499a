"""The phase's analysis window (controller.phasewindow): criteria are judged over the requests of the current
phase, a restarted pod's counters count from zero, the window survives an operator restart in status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from modelship.api.rollout_status import AnalysisWindow, Criterion, RolloutStatus, Verdict
from modelship.api.serving import Analysis
from modelship.controller.canary import Histogram, judge
from modelship.controller.phasewindow import MAX_PODS, PodFigures, PodReading, Readings, advance, samples

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
BOUNDS = (0.01, 0.1, float("inf"))
KEY = "Shadow/0/2026-11-28T12:00:00Z"


def stable(pod: str, compared: float, agreed: float, created: datetime | None = None) -> PodReading:
    figs = PodFigures(mirrored=compared, rows_agreed=agreed, rows_disagreed=compared - agreed,
                      latency=Histogram(BOUNDS, (compared / 2, compared, compared)))  # fmt: skip
    return PodReading(pod, False, created or T0 - timedelta(hours=1), figs)


def cand(pod: str, requests: float, errors: float = 0, created: datetime | None = None) -> PodReading:
    figs = PodFigures(requests=requests, errors=errors, latency=Histogram(BOUNDS, (requests / 2, requests, requests)))
    return PodReading(pod, True, created or T0 - timedelta(minutes=5), figs)


def look(*pods: PodReading, unreadable: tuple[tuple[str, str], ...] = ()) -> Readings:
    return Readings(pods, unreadable)


def test_a_new_window_starts_from_the_current_readings_and_counts_only_the_increase() -> None:
    w = advance(None, look(stable("s1", 500, 100), cand("c1", 400, 40)), KEY, T0)
    s = samples(w, look())
    assert (s.mirrored, s.rows_agreed, s.candidate_requests, s.candidate_errors) == (0, 0, 0, 0)
    # the earlier phase's 400 disagreeing rows and 40 errors are not this phase's
    w = advance(w, look(stable("s1", 700, 300), cand("c1", 600, 40)), KEY, T0 + timedelta(seconds=5))
    s = samples(w, look(stable("s1", 700, 300), cand("c1", 600, 40)))
    assert (s.mirrored, s.rows_agreed, s.rows_compared) == (200, 200, 200)
    assert (s.candidate_requests, s.candidate_errors) == (200, 0)
    assert s.candidate_latency.counts == (100, 200, 200) and s.stable_latency.counts == (100, 200, 200)
    verdicts = {c.name: c.verdict for c in judge(Analysis(min_requests=100, latency_quantile=0.95), s)}
    assert verdicts == {c: Verdict.PASSED for c in (Criterion.ERROR_RATE, Criterion.LATENCY_RATIO,
                                                    Criterion.AGREEMENT)}  # fmt: skip
    # lifetime figures would have failed agreement (300/700) and error rate (40/600 > 1%)
    assert judge(Analysis(min_requests=100), samples(advance(None, look(), KEY, T0), look()))[0].requests == 0


def test_a_counter_that_went_down_is_a_restarted_pod_and_counts_from_zero() -> None:
    w = advance(None, look(cand("c1", 1000, 5)), KEY, T0)
    w = advance(w, look(cand("c1", 1100, 5)), KEY, T0 + timedelta(seconds=5))
    w = advance(w, look(cand("c1", 30, 2)), KEY, T0 + timedelta(seconds=10))  # the server restarted
    s = samples(w, look())
    assert s.candidate_requests == 130 and s.candidate_errors == 2  # never negative, never the old total
    assert s.candidate_latency.counts == (65, 130, 130)
    assert all(v >= 0 for v in (*w.candidate.latency, w.candidate.requests, w.candidate.errors))


def test_new_pods_count_from_creation_in_the_window_and_from_first_reading_before_it() -> None:
    w = advance(None, look(cand("c1", 10)), KEY, T0)
    later = T0 + timedelta(seconds=20)
    # c2 was created in the window (a canary step's new pod): all its requests are the phase's;
    # c3 existed before (missed by an earlier look): only its increase from now on
    w = advance(w, look(cand("c1", 10), cand("c2", 40, created=T0 + timedelta(seconds=3)), cand("c3", 500)), KEY,
                later)  # fmt: skip
    assert samples(w, look()).candidate_requests == 40
    w = advance(w, look(cand("c1", 11), cand("c2", 41), cand("c3", 510)), KEY, later + timedelta(seconds=5))
    assert samples(w, look()).candidate_requests == 52


def test_an_unreadable_pod_keeps_its_baseline_and_a_gone_pod_keeps_its_increase() -> None:
    w = advance(None, look(cand("c1", 10), cand("c2", 10)), KEY, T0)
    w = advance(w, look(cand("c1", 20), cand("c2", 30)), KEY, T0 + timedelta(seconds=5))
    assert samples(w, look()).candidate_requests == 30
    w = advance(w, look(cand("c1", 25), unreadable=(("c2", "timed out"),)), KEY, T0 + timedelta(seconds=10))
    assert [b.pod for b in w.pods] == ["c1", "c2"] and samples(w, look()).candidate_requests == 35
    w = advance(w, look(cand("c1", 25), cand("c2", 50)), KEY, T0 + timedelta(seconds=15))
    assert samples(w, look()).candidate_requests == 55  # c2's 20 during the gap are counted
    w = advance(w, look(cand("c1", 26)), KEY, T0 + timedelta(seconds=20))  # c2 is gone (scaled down)
    assert [b.pod for b in w.pods] == ["c1"] and samples(w, look()).candidate_requests == 56


def test_another_phase_starts_another_window_and_the_window_survives_a_status_round_trip() -> None:
    w = advance(None, look(stable("s1", 10, 10)), KEY, T0)
    w = advance(w, look(stable("s1", 20, 15)), KEY, T0 + timedelta(seconds=5))
    wire = w.wire()  # what the operator writes into status.rollout.window
    back = AnalysisWindow.model_validate(wire)
    w2 = advance(back, look(stable("s1", 30, 25)), KEY, T0 + timedelta(seconds=10))
    s = samples(w2, look())
    assert (s.mirrored, s.rows_agreed) == (20, 15)
    w3 = advance(w2, look(stable("s1", 40, 35)), "Canary/1/2026-11-28T12:01:00Z", T0 + timedelta(seconds=60))
    assert w3.phase.startswith("Canary/1/") and samples(w3, look()).mirrored == 0
    st = RolloutStatus(candidate="c", stable="s", phase="Shadow", started_at="2026-11-28T12:00:00Z", window=w2)
    assert RolloutStatus.model_validate(st.wire()).window == w2


def test_the_window_follows_at_most_max_pods_and_names_the_others() -> None:
    pods = tuple(cand(f"c{i:03d}", 1) for i in range(MAX_PODS + 3))
    w = advance(None, look(*pods), KEY, T0)
    assert len(w.pods) == MAX_PODS
    s = samples(w, look(*pods))
    assert s.pods == MAX_PODS and len(s.unreadable) == 3 and "not followed" in s.unreadable[0]


def test_a_new_windows_start_is_its_stamp_as_it_reads_back() -> None:
    """The start a new window compares pods' creation with is its stamp parsed (aware, UTC), not ``now`` cut to
    the second in whatever zone it came: a clock without a zone compared with a pod's creation raised TypeError."""
    zoneless = datetime(2026, 11, 28, 12, 0, 0, 500000)
    born_in_window = cand("c2", 30, created=T0 + timedelta(days=1))  # after the start in any local zone
    w = advance(None, look(born_in_window), KEY, zoneless)
    assert w.candidate.requests == 30  # created in the window: every request of it is the window's
    assert advance(None, look(born_in_window), KEY, T0).since == "2026-11-28T12:00:00Z"
