"""The Canary strategy's decisions, as pure functions: the phase a rollout is in, the analysis samples read from
the serving pods, the time, and the spec in; the next phase, the candidate's traffic share, each criterion's
observed value against its threshold, and the decision out.

A rollout of a candidate revision goes Shadow (the stable pods mirror a share of their requests to it) -> Canary
step 1..n (it takes a share of live traffic from replica counts) -> Promoting (the stable Deployment rolls to
it) -> Promoted. Each phase's clock starts when the candidate's pods for that phase are available (that look
never ends the phase, even with a hold of 0); the phase ends at a later look, once its time has passed and every
criterion holds over at least ``minRequests`` requests of the phase's own. The latency
ratio compares the two sides' latency quantile over the same window, the phase's own requests once its clock
started (never the pods' start-up, nor requests from before the phase), and only once each side has
``TAIL_SAMPLES`` requests above that quantile. The first criterion that fails, in any phase, rolls the candidate
back (RolledBack: scaled to zero, the stable revision serves everything); so does a candidate whose pods cannot
serve (``canary_trouble``: they crash-loop for progressDeadlineSeconds, or their Deployment's controller gives
up), whose cause the phase's message names while it waits for them. An annotation
``modelship.io/promote=<candidate>`` or ``modelship.io/abort=<candidate>`` overrides the analysis; one naming
another revision is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ..api.rollout_status import (
    Criterion,
    CriterionStatus,
    Decision,
    RollbackCause,
    RolloutPhase,
    RolloutStatus,
    Verdict,
)
from ..api.serving import Analysis, Canary
from .canary_trouble import CandidateTrouble, clock_template, judge_trouble, trouble_message, troubled_for
from .conditions import parse_past, parse_rfc3339, rfc3339

PROMOTE_ANNOTATION = "modelship.io/promote"
ABORT_ANNOTATION = "modelship.io/abort"

ANALYZING = frozenset({RolloutPhase.SHADOW, RolloutPhase.CANARY})
"""Phases whose decisions need samples from the serving pods."""

CANDIDATE_PODS = "the candidate's pods"
"""What a phase waits for by default (``Look.waiting_for``)."""

TAIL_SAMPLES = 5
"""Requests each side needs above its latency quantile before the latency ratio is judged. With fewer, the
quantile of a histogram is its slowest request or next to it (p99 of 48 requests is the slowest one), and one
scheduler hiccup on a shared node, or one cold first request, decides the verdict."""


class Manual(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"


def manual_action(annotations: Mapping[str, str], candidate: str) -> Manual | None:
    """The override the annotations ask for this candidate (an annotation naming another revision is stale)."""
    if annotations.get(ABORT_ANNOTATION) == candidate:
        return Manual.ABORT
    if annotations.get(PROMOTE_ANNOTATION) == candidate:
        return Manual.PROMOTE
    return None


def ignored_overrides(annotations: Mapping[str, str], candidate: str) -> list[str]:
    """The override annotations that name another revision than the candidate (left from an earlier rollout, or a
    mistyped revision), as ``annotation=value`` (the value cut at 200 characters): they are ignored."""
    return [
        f"{key}={annotations[key][:200]}"
        for key in (PROMOTE_ANNOTATION, ABORT_ANNOTATION)
        if key in annotations and annotations[key] != candidate
    ]


@dataclass(frozen=True)
class Histogram:
    """A cumulative Prometheus histogram: upper bounds (the last one +Inf) and the count at or below each."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def __add__(self, other: Histogram) -> Histogram:
        if not self.bounds:
            return other
        if not other.bounds:
            return self
        if self.bounds != other.bounds:
            raise ValueError("histograms with different buckets cannot be added")
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    def quantile(self, q: float) -> float | None:
        """The q-quantile as Prometheus' histogram_quantile computes it (linear within the bucket; the highest
        finite bound when it falls in the +Inf bucket); None without observations."""
        total = self.total
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= rank:
                if math.isinf(bound):
                    return lower_bound
                if count == lower_count:
                    return bound
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return lower_bound


EMPTY = Histogram((), ())


@dataclass(frozen=True)
class Samples:
    """What the serving pods' metrics say about the candidate, summed over pods."""

    mirrored: int = 0
    """Mirrored requests whose two answers were compared (stable pods)."""
    rows_agreed: int = 0
    rows_compared: int = 0
    mirror_failures: int = 0
    """Mirrored requests the candidate did not answer (timeout, refused, 5xx) (stable pods)."""
    candidate_requests: int = 0
    """Inference requests the candidate's pods answered (mirrored and live)."""
    candidate_errors: int = 0
    """Of those, answered with a 5xx."""
    candidate_latency: Histogram = EMPTY
    stable_latency: Histogram = EMPTY
    pods: int = 0
    """Pods whose metrics were read."""
    unreadable: tuple[str, ...] = field(default_factory=tuple)
    """Pods whose metrics could not be read, with why."""
    error: str | None = None
    """The figures could not be read at all (the Prometheus server is down or answers garbage): the criteria
    keep their last verdicts and the phase holds."""


def latency_requests_needed(analysis: Analysis) -> int:
    """Requests each side needs in the window before the latency ratio is judged: minRequests, and enough for
    ``TAIL_SAMPLES`` of them to lie above the quantile (500 for p99, 100 for p95)."""
    tail = math.ceil(round(TAIL_SAMPLES / (1.0 - analysis.latency_quantile), 6))
    return max(analysis.min_requests, tail)


def quantile_name(q: float) -> str:
    """0.99 -> p99, 0.999 -> p99.9, 0.5 -> p50."""
    return f"p{round(q * 100, 4):g}"


def judge(analysis: Analysis, s: Samples, mirrored: bool = True, timed: bool = True) -> list[CriterionStatus]:
    """Each criterion's observed value against its threshold; Pending below minRequests (the latency ratio:
    below ``latency_requests_needed`` on either side). Agreement needs mirrored requests: without mirroring (no
    shadow phase) it is not judged. ``timed``: the latency histograms cover the phase's own window (its clock
    started and its pods are available); otherwise the ratio is not computed and stays Pending."""
    need = analysis.min_requests

    def verdict(n: int, ok: bool, required: int = need) -> Verdict:
        return Verdict.PENDING if n < required else (Verdict.PASSED if ok else Verdict.FAILED)

    answered = s.candidate_requests + s.mirror_failures
    errors = s.candidate_errors + s.mirror_failures
    error_rate = errors / answered if answered else None
    out = [
        CriterionStatus(
            name=Criterion.ERROR_RATE,
            observed=_round(error_rate),
            threshold=analysis.max_error_rate,
            requests=answered,
            required=need,
            verdict=verdict(answered, error_rate is not None and error_rate <= analysis.max_error_rate),
        )
    ]
    q = analysis.latency_quantile
    cand_q, stable_q = s.candidate_latency.quantile(q), s.stable_latency.quantile(q)
    ratio = cand_q / stable_q if cand_q is not None and stable_q and timed else None
    each = int(min(s.candidate_latency.total, s.stable_latency.total)) if ratio is not None else 0
    latency_need = latency_requests_needed(analysis)
    out.append(
        CriterionStatus(
            name=Criterion.LATENCY_RATIO,
            observed=_round(ratio),
            threshold=analysis.max_latency_ratio,
            requests=each,
            required=latency_need,
            verdict=verdict(each, ratio is not None and ratio <= analysis.max_latency_ratio, latency_need),
        )
    )
    if not mirrored:
        return out
    agreement = s.rows_agreed / s.rows_compared if s.rows_compared else None
    out.append(
        CriterionStatus(
            name=Criterion.AGREEMENT,
            observed=_round(agreement),
            threshold=analysis.min_agreement,
            requests=s.mirrored,
            required=need,
            verdict=verdict(s.mirrored, agreement is not None and agreement >= analysis.min_agreement),
        )
    )
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def canary_replicas(stable_replicas: int, weight: int) -> int:
    """Candidate replicas that give it ``weight`` percent of the pods behind the Service, the stable Deployment
    keeping its own: round(stable * weight / (100 - weight)), at least 1."""
    return max(1, round(stable_replicas * weight / (100 - weight)))


def shadow_replicas(stable_replicas: int, percent: int) -> int:
    """Candidate replicas for the mirrored share of the stable pods' load."""
    return max(1, math.ceil(stable_replicas * percent / 100))


def effective_weight(stable_replicas: int, candidate_replicas: int) -> int:
    """The candidate's share of the pods behind the Service, in percent (what kube-proxy's random choice
    gives it on average)."""
    total = stable_replicas + candidate_replicas
    return round(100 * candidate_replicas / total) if total else 0


def start(
    canary: Canary,
    candidate: str,
    candidate_image: str | None,
    stable: str,
    now: datetime,
    candidate_artifact: str | None = None,
) -> RolloutStatus:
    """A new rollout of ``candidate``: the shadow phase, or the first canary step without one."""
    first = RolloutPhase.SHADOW if canary.shadow is not None else RolloutPhase.CANARY
    return RolloutStatus(
        candidate=candidate,
        candidate_image=candidate_image,
        candidate_artifact=candidate_artifact,
        stable=stable,
        phase=first,
        step=0 if first == RolloutPhase.SHADOW else 1,
        mirror_percent=canary.shadow.percent if canary.shadow else 0,
        started_at=rfc3339(now),
        message=f"waiting for {CANDIDATE_PODS}",
    )


@dataclass(frozen=True)
class Look:
    """One look at a rollout in progress: what is observed now."""

    now: datetime
    available: bool
    """The candidate's pods for the current phase are all available (and, Promoting, the stable Deployment
    finished rolling to the candidate)."""
    samples: Samples | None = None
    manual: Manual | None = None
    waiting_for: str = CANDIDATE_PODS
    """Which pods a look that is not ``available`` waits for (the message names them): the candidate's, the stable
    ones (under an HPA: fewer than minReplicas available and routed, or a rollout of their template), or both."""
    trouble: CandidateTrouble | None = None
    """Why the candidate's pods do not serve, when they say it (also at a moment they are all available: a crash
    loop's ready moment keeps its clock). Judged only while ``waiting_for`` names the candidate's pods."""
    deadline_seconds: int = 600
    """progressDeadlineSeconds: how long the candidate's pods may crash-loop before it is rolled back."""
    retry: bool = True
    """A rollback for the candidate's pods can be tried again by a spec change (its record is kept: not pruned by
    an older CRD): its message says how, or that it is final."""


def phase_begun(state: RolloutStatus, now: datetime) -> datetime | None:
    """When the phase's clock started (``phaseStartedAt``); None while it has not, and for a stamp that does not
    parse or lies ahead of ``now`` by more than the clock skew allowed (forged, or a broken clock: a phase counted
    from 9999-12-31 would hold for ever, never reaching its inconclusive bound). ``decide`` starts the clock anew
    at such a look and writes the new stamp back."""
    return parse_past(state.phase_started_at, now)


def clock_runs(state: RolloutStatus) -> bool:
    """The phase's clock runs: ``phaseStartedAt`` is set and parses. For a state ``decide`` wrote (it writes back
    a stamp that does not parse, or lies ahead, as the look's); before it, ``phase_begun`` says it with the time."""
    return parse_rfc3339(state.phase_started_at) is not None


def decide(canary: Canary, state: RolloutStatus, look: Look) -> RolloutStatus:
    """The rollout's next state. Promoted is final; RolledBack too, unless the promote annotation overrides it."""
    if state.phase == RolloutPhase.PROMOTED:
        return state
    if state.phase == RolloutPhase.ROLLED_BACK and look.manual != Manual.PROMOTE:
        return state
    overridden = _manual_override(state, look)
    if overridden is not None:
        return overridden
    if state.phase == RolloutPhase.PROMOTING:
        return _promoting(state, look.available)
    since, lasted = troubled_for(state, look.trouble, look.now)
    template = clock_template(state, look.trouble, since)
    state = state.model_copy(update={"candidate_failing_since": since, "candidate_failing_template": template})
    # the candidate's own pods are down (not only the stable ones waited for)
    down = not look.available and CANDIDATE_PODS in look.waiting_for
    judged = judge_trouble(look.trouble, lasted, look.deadline_seconds, not down)
    if judged is not None and look.trouble is not None:
        return _rollback(
            state, judged, trouble_message(judged, look.trouble, look.deadline_seconds, look.retry), "keeps serving"
        )
    unavailable = look.samples.error if look.samples is not None else None
    begun = phase_begun(state, look.now)
    if look.samples is not None and unavailable is None:
        # latency is compared over the phase's window only: not while the candidate's pods start and warm up
        timed = look.available and begun is not None
        criteria = judge(canary.analysis, look.samples, mirrored=state.mirror_percent > 0, timed=timed)
    else:
        # no figures at this look (Prometheus is asked once the phase's clock runs; or they could not be read): the
        # verdicts of an earlier look of this phase stand, never another phase's (a step follows the passed
        # criteria of the one before: they say nothing of this one)
        criteria = list(state.criteria) if begun is not None else []
    failed = [c for c in criteria if c.verdict == Verdict.FAILED]
    if failed:
        state = state.model_copy(update={"criteria": criteria})
        return _rollback(state, RollbackCause.ANALYSIS_FAILED, _failure_message(failed[0], canary.analysis))
    if not look.available:
        return state.model_copy(
            update={
                "criteria": criteria,
                "decision": Decision.WAIT,
                "phase_started_at": None,
                "message": f"waiting for {look.waiting_for} of {_where(state)}"
                + (f": {look.trouble.text}" if look.trouble is not None and down else ""),
            }
        )
    started = state.phase_started_at if begun is not None else rfc3339(look.now)  # the clock starts at this look
    hold = _hold_seconds(canary, state)
    elapsed = max(0.0, (look.now - begun).total_seconds()) if begun is not None else 0.0
    pending = [c for c in criteria if c.verdict == Verdict.PENDING]
    # the look that starts the clock never decides, even with a hold of 0: the phase's figures are read over its
    # own window, which starts here; nor does a look without figures (no criterion was judged)
    unjudged = look.samples is None
    if begun is None or unjudged or elapsed < hold or pending or unavailable:
        counts = "; ".join(_pending_text(c, canary.analysis) for c in pending)
        if begun is None or elapsed < hold:
            why = f"{_where(state)} held {int(elapsed)}/{hold}s"
        else:
            why = f"{_where(state)}: {counts or 'no figures yet'}"
        if unavailable:
            why = f"{why}; analysis figures unavailable: {unavailable}"
        limit = hold + canary.analysis.inconclusive_after_seconds
        if (pending or unavailable or unjudged) and elapsed >= limit:
            state = state.model_copy(update={"criteria": criteria})
            message = (
                f"analysis inconclusive: {_where(state)} ran {int(elapsed)}s, {limit - hold}s past its "
                f"{hold}s hold, without a verdict ({counts or 'no figures'}"
                + (f"; figures unavailable: {unavailable}" if unavailable else "")
                + ")"
            )
            return _rollback(state, RollbackCause.ANALYSIS_INCONCLUSIVE, message)
        return state.model_copy(
            update={"criteria": criteria, "decision": Decision.WAIT, "phase_started_at": started, "message": why}
        )
    passed = ", ".join(f"{c.name} {c.observed} (threshold {c.threshold})" for c in criteria)
    if state.phase == RolloutPhase.SHADOW or state.step < len(canary.steps):
        step = state.step + 1
        return state.model_copy(
            update={
                "phase": RolloutPhase.CANARY,
                "step": step,
                "criteria": criteria,
                "decision": Decision.NEXT,
                "phase_started_at": None,
                "message": f"{_where(state)} passed ({passed}); canary step {step} of {len(canary.steps)} "
                f"at {canary.steps[step - 1].weight}%",
            }
        )
    return state.model_copy(
        update={
            "phase": RolloutPhase.PROMOTING,
            "criteria": criteria,
            "decision": Decision.PROMOTE,
            "phase_started_at": rfc3339(look.now),
            "message": f"{_where(state)} passed ({passed}); promoting {state.candidate}",
        }
    )


def _manual_override(state: RolloutStatus, look: Look) -> RolloutStatus | None:
    """What an annotation naming the candidate makes of the rollout: abort rolls it back from any phase but a
    final one; promote goes to Promoting at once (from a rollback too); None when none applies."""
    if look.manual == Manual.ABORT:
        message = f"aborted by the annotation {ABORT_ANNOTATION}={state.candidate}"
        return _rollback(state, RollbackCause.ABORTED, message)
    if look.manual == Manual.PROMOTE and state.phase != RolloutPhase.PROMOTING:
        return state.model_copy(
            update={
                "phase": RolloutPhase.PROMOTING,
                "decision": Decision.PROMOTE,
                "rollback_cause": None,
                "candidate_failing_since": None,
                "candidate_failing_template": None,
                "phase_started_at": rfc3339(look.now),
                "message": f"promoted by the annotation {PROMOTE_ANNOTATION}={state.candidate}",
            }
        )
    return None


def _promoting(state: RolloutStatus, available: bool) -> RolloutStatus:
    """Promoting: Promoted once the stable Deployment has rolled to the candidate (``available``)."""
    if not available:
        return state.model_copy(
            update={
                "candidate_failing_since": None,
                "candidate_failing_template": None,
                "message": f"the stable Deployment is rolling to {state.candidate}",
            }
        )
    return state.model_copy(
        update={
            "phase": RolloutPhase.PROMOTED,
            "candidate_failing_since": None,
            "candidate_failing_template": None,
            "decision": Decision.PROMOTE,
            "weight": 100,
            "mirror_percent": 0,
            "message": f"revision {state.candidate} serves all traffic",
        }
    )


def _rollback(state: RolloutStatus, cause: RollbackCause, message: str, serves: str = "serves") -> RolloutStatus:
    return state.model_copy(
        update={
            "phase": RolloutPhase.ROLLED_BACK,
            "decision": Decision.ROLLBACK,
            "rollback_cause": cause,
            "candidate_failing_since": None,
            "candidate_failing_template": None,
            "weight": 0,
            "mirror_percent": 0,
            "message": f"{message}; revision {state.stable} {serves} all traffic",
        }
    )


def _failure_message(c: CriterionStatus, analysis: Analysis) -> str:
    relation = "below the minimum" if c.name == Criterion.AGREEMENT else "above the maximum"
    what = f"{c.name} ({quantile_name(analysis.latency_quantile)})" if c.name == Criterion.LATENCY_RATIO else c.name
    each = " each" if c.name == Criterion.LATENCY_RATIO else ""
    return f"{what} {c.observed} over {c.requests} requests{each} is {relation} {c.threshold}"


def _pending_text(c: CriterionStatus, analysis: Analysis) -> str:
    need = c.required if c.required is not None else analysis.min_requests
    if c.name != Criterion.LATENCY_RATIO:
        return f"{c.name} has {c.requests}/{need} requests"
    q = quantile_name(analysis.latency_quantile)
    return (
        f"{c.name} has {c.requests}/{need} requests on each side ({q} is judged once {TAIL_SAMPLES} requests "
        f"of each side lie above it)"
    )


def _where(state: RolloutStatus) -> str:
    return "shadow" if state.phase == RolloutPhase.SHADOW else f"canary step {state.step}"


def _hold_seconds(canary: Canary, state: RolloutStatus) -> int:
    if state.phase == RolloutPhase.SHADOW:
        return canary.shadow.duration_seconds if canary.shadow else 0
    return canary.steps[state.step - 1].pause_seconds
