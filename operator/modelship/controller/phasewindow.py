"""The analysis window of a Canary phase, as pure functions: the criteria are judged over the requests of the
current phase, not over the pods' lifetime (a candidate that failed early would keep failing, a good shadow phase
would carry a bad canary step).

The pods' counters are cumulative since each server started. Each look adds every pod's increase since the
previous look to the window's totals; a counter that went down belongs to a restarted server and counts from zero
(Prometheus' rate() does the same). A pod first seen after the window started counts from zero (it was created
in the window) or from its first reading (it existed before, its earlier requests are not the window's). A pod
that could not be read keeps its baseline; a pod that is gone leaves its increase in the totals. The window lives
in ``status.rollout.window`` (bounded: at most ``MAX_PODS`` pods followed), so an operator restart loses nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ..api.rollout_status import AnalysisWindow, PodBaseline, RolloutStatus, WindowCounters
from .canary import EMPTY, Histogram, Samples
from .conditions import parse_past, parse_rfc3339, rfc3339

MAX_PODS = 64
"""Pods one window follows (AnalysisWindow.pods' maxItems); the figures of further pods are not counted."""

_SCALARS = ("mirrored", "mirror_failures", "rows_agreed", "rows_disagreed", "requests", "errors")


@dataclass
class PodFigures:
    """What one pod's /metrics says, for one candidate revision (cumulative since the server started)."""

    mirrored: float = 0.0
    mirror_failures: float = 0.0
    rows_agreed: float = 0.0
    rows_disagreed: float = 0.0
    requests: float = 0.0
    errors: float = 0.0
    latency: Histogram = EMPTY


@dataclass(frozen=True)
class PodReading:
    """One ready serving pod, read at one look."""

    pod: str
    candidate: bool
    """It serves the candidate (else the stable revision)."""
    created: datetime | None
    figures: PodFigures


@dataclass(frozen=True)
class Readings:
    """One look at the serving pods' metrics endpoints."""

    pods: tuple[PodReading, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()
    """(pod, why) of the pods whose metrics could not be read."""
    refused: tuple[str, ...] = ()
    """The pods labelled as a revision under analysis that the Deployment running it did not make: not read (the
    operator's log names them, ``podmetrics.RefusedPods``)."""


def phase_key(state: RolloutStatus) -> str:
    """What identifies a phase: another key starts a new window."""
    return f"{state.phase.value}/{state.step}/{state.phase_started_at or '-'}"


def format_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def advance(window: AnalysisWindow | None, readings: Readings, key: str, now: datetime) -> AnalysisWindow:
    """The window after one more look: ``window`` when it is the phase's (``key``), else a new one that starts
    now with the current readings as every pod's baseline."""
    since = parse_past(window.since, now) if window is not None and window.phase == key else None
    if window is None or since is None:  # none yet, another phase's, or a forged start (no time, or ahead of now)
        window = AnalysisWindow(phase=key, since=rfc3339(now))
        since = parse_rfc3339(window.since) or now  # the stamp as it reads back (UTC, whole seconds); it parses
    bounds = list(window.latency_bounds) or _first_bounds(readings)
    last = {b.pod: b for b in window.pods}
    totals = {False: window.stable, True: window.candidate}
    followed: list[PodBaseline] = []
    for r in sorted(readings.pods, key=lambda r: r.pod)[:MAX_PODS]:
        cur = _counters(r.figures, bounds)
        prev = last.get(r.pod)
        if prev is not None and prev.candidate == r.candidate:
            base = prev.counters
        elif r.created is not None and r.created >= since:
            base = WindowCounters()  # created in the window: all its requests are the window's
        else:
            base = cur  # existed before the window: from now on
        totals[r.candidate] = _add(totals[r.candidate], _increase(base, cur))
        followed.append(PodBaseline(pod=r.pod, candidate=r.candidate, counters=cur))
    unread = {pod for pod, _ in readings.unreadable}
    kept = [b for b in window.pods if b.pod in unread]  # not read this time: its baseline waits for it
    pods = sorted(followed + kept, key=lambda b: b.pod)[:MAX_PODS]
    return AnalysisWindow(phase=window.phase, since=window.since, latency_bounds=bounds, stable=totals[False],
                          candidate=totals[True], pods=pods)  # fmt: skip


def samples(window: AnalysisWindow, readings: Readings) -> Samples:
    """The window's figures as the analysis reads them."""
    st, ca = window.stable, window.candidate
    bounds = tuple(float(b) for b in window.latency_bounds)
    untracked = sorted(r.pod for r in readings.pods)[MAX_PODS:]
    return Samples(
        mirrored=int(st.mirrored),
        rows_agreed=int(st.rows_agreed),
        rows_compared=int(st.rows_agreed + st.rows_disagreed),
        mirror_failures=int(st.mirror_failures),
        candidate_requests=int(ca.requests),
        candidate_errors=int(ca.errors),
        candidate_latency=_histogram(bounds, ca.latency),
        stable_latency=_histogram(bounds, st.latency),
        pods=len(readings.pods) - len(untracked),
        unreadable=(
            *(f"{pod}: {why}" for pod, why in readings.unreadable),
            *(f"{pod}: not followed (more than {MAX_PODS} pods)" for pod in untracked),
        ),
    )


def _first_bounds(readings: Readings) -> list[str]:
    for r in sorted(readings.pods, key=lambda r: r.pod):
        if r.figures.latency.bounds:
            return [format_bound(b) for b in r.figures.latency.bounds]
    return []


def _counters(f: PodFigures, bounds: list[str]) -> WindowCounters:
    same = [format_bound(b) for b in f.latency.bounds] == bounds
    return WindowCounters(
        mirrored=f.mirrored,
        mirror_failures=f.mirror_failures,
        rows_agreed=f.rows_agreed,
        rows_disagreed=f.rows_disagreed,
        requests=f.requests,
        errors=f.errors,
        latency=list(f.latency.counts) if same else [],  # another server version's buckets: not comparable
    )


def _increase(base: WindowCounters, cur: WindowCounters) -> WindowCounters:
    """cur - base per counter; a counter that went down was reset (the server restarted): all of cur."""
    bl, cl = base.latency, cur.latency
    same = len(bl) == len(cl) and all(c >= b for b, c in zip(bl, cl, strict=True))
    return WindowCounters(
        **{n: _delta(getattr(base, n), getattr(cur, n)) for n in _SCALARS},
        latency=[c - b for b, c in zip(bl, cl, strict=True)] if same else list(cl),
    )


def _delta(base: float, cur: float) -> float:
    return cur - base if cur >= base else cur


def _add(total: WindowCounters, d: WindowCounters) -> WindowCounters:
    if not total.latency:
        latency = list(d.latency)
    elif len(total.latency) == len(d.latency):
        latency = [a + b for a, b in zip(total.latency, d.latency, strict=True)]
    else:
        latency = list(total.latency)
    return WindowCounters(**{n: getattr(total, n) + getattr(d, n) for n in _SCALARS}, latency=latency)


def _histogram(bounds: tuple[float, ...], counts: list[float]) -> Histogram:
    return Histogram(bounds, tuple(counts)) if bounds and len(counts) == len(bounds) else EMPTY
