"""The accuracy gate's arithmetic and the ship decision, shared by the optimizer (which applies them) and the
operator (which recomputes them from the reported figures and refuses a report that contradicts them).

Pure Python on the API's own types: the drop of a metric against its baseline in the gate's dropType, whether it
passes maxDrop, what ships under onFail (``decide_steps`` / ``decide_auto``), and ``verify``: the operator's
verdict on a report (baseline, value, drop, gate, decision, candidate) against the spec that asked for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .candidates import auto_candidates
from .optimization import (
    DropType,
    Gate,
    Metric,
    MetricType,
    Objective,
    OnFail,
    Optimization,
    OptimizationStep,
    Strategy,
)
from .report import GateDecision, ShipDecision

TOLERANCE = 1e-9
"""Slack of ``passes``: a drop equal to maxDrop passes whatever the float rounding."""
REPORT_TOLERANCE = 1e-6
"""How far a reported drop may be from the one its baseline and value give (JSON round trips, relative drops)."""


def metric_name(metric: Metric) -> str:
    if metric.type == MetricType.TOP_K:
        return f"top{metric.k}"
    if metric.type == MetricType.CUSTOM:
        return metric.callable or "custom"
    return metric.type.value


def higher_is_better(metric: Metric) -> bool:
    return metric.type not in (MetricType.MSE, MetricType.MAE)


def drop(baseline: float, value: float, metric: Metric, gate: Gate) -> float:
    """How much worse value is than baseline, in the gate's dropType (negative: better)."""
    d = (baseline - value) if higher_is_better(metric) else (value - baseline)
    if gate.drop_type == DropType.RELATIVE:
        d = d / max(abs(baseline), 1e-12)
    return float(d)


def passes(d: float, gate: Gate) -> bool:
    return d <= gate.max_drop + TOLERANCE


def fmt(v: float | None) -> str:
    """Numbers in gate messages: 4 significant digits."""
    return "n/a" if v is None else f"{v:.4g}"


def judgement(name: str, baseline: float, value: float, d: float, gate: Gate) -> str:
    """``accuracy 0.9611 vs baseline 0.975: drop 0.01389 > maxDrop 0.001 (absolute)``."""
    op = "<=" if passes(d, gate) else ">"
    return (
        f"{name} {fmt(value)} vs baseline {fmt(baseline)}: drop {fmt(d)} {op} maxDrop {fmt(gate.max_drop)} "
        f"({gate.drop_type.value})"
    )


def step_short_name(step: OptimizationStep) -> str:
    """A step's part of a result's name (``prune``, ``int8``): a chain is these joined with ``+``."""
    return step.quantize.mode.value if step.quantize is not None else step.type.value


@dataclass(frozen=True)
class Outcome:
    """A result the gate judged: a step of the chain or an auto candidate."""

    name: str
    passed: bool | None
    gzip_bytes: int | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Decision:
    gate: GateDecision
    ship: ShipDecision
    chosen: int | None
    """Index into the outcomes of what ships (None: the baseline ships, or nothing does)."""
    judged: int | None
    """Index of the outcome the gate judged (the last step, or the chosen/best auto candidate)."""


def _best(outcomes: Sequence[Outcome], indices: list[int], objective: Objective) -> int:
    def key(i: int) -> tuple[float, float, int]:
        o = outcomes[i]
        size = float(o.gzip_bytes) if o.gzip_bytes is not None else math.inf
        lat = o.latency_ms if o.latency_ms is not None else math.inf
        return (size, lat, i) if objective == Objective.SIZE else (lat, size, i)

    return min(indices, key=key)


def decide_steps(outcomes: Sequence[Outcome], on_fail: OnFail) -> Decision:
    """Steps: the last step's result ships if it passes; otherwise onFail decides."""
    if not outcomes:
        return Decision(GateDecision.SKIPPED, ShipDecision.BASELINE, None, None)
    last = len(outcomes) - 1
    if outcomes[last].passed is None:
        return Decision(GateDecision.SKIPPED, ShipDecision.OPTIMIZED, last, last)
    if outcomes[last].passed:
        return Decision(GateDecision.PASSED, ShipDecision.OPTIMIZED, last, last)
    return _on_fail(outcomes, last, on_fail, [i for i in range(last) if outcomes[i].passed][-1:])


def decide_auto(outcomes: Sequence[Outcome], objective: Objective, on_fail: OnFail) -> Decision:
    """Auto: the smallest (Size) or fastest (Latency) passing candidate ships; otherwise onFail decides."""
    passing = [i for i, o in enumerate(outcomes) if o.passed]
    if passing:
        best = _best(outcomes, passing, objective)
        return Decision(GateDecision.PASSED, ShipDecision.OPTIMIZED, best, best)
    judged = _best(outcomes, list(range(len(outcomes))), objective) if outcomes else None
    return _on_fail(outcomes, judged, on_fail, [])


def _on_fail(outcomes: Sequence[Outcome], judged: int | None, on_fail: OnFail, earlier_passing: list[int]) -> Decision:
    if on_fail == OnFail.DEPLOY_BASELINE:
        return Decision(GateDecision.FAILED, ShipDecision.BASELINE, None, judged)
    if on_fail == OnFail.DEPLOY_BEST_PASSING and earlier_passing:
        return Decision(GateDecision.FAILED, ShipDecision.BEST_PASSING, earlier_passing[-1], judged)
    return Decision(GateDecision.FAILED, ShipDecision.BLOCKED, None, judged)


# ---------------------------------------------------------------------------------------------- the operator's
@dataclass(frozen=True)
class Reported:
    """What an optimization report claims (the summary line, or the status recorded from it)."""

    metric: str | None
    baseline: float | None
    value: float | None
    drop: float | None
    gate: str | None
    decision: str | None
    candidate: str | None


def _is_subsequence(parts: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(any(p == q for q in it) for p in parts)


def candidate_names(opt: Optimization) -> set[str]:
    """Every name an auto search for this spec can report (whatever the model turns out to allow)."""
    calibration = opt.data.calibration is not None
    fine_tune = opt.data.fine_tune is not None
    names = {"baseline"}
    for trainable in (True, False):
        for tune in {fine_tune, False}:
            for cal in {calibration, False}:
                cands = auto_candidates(trainable=trainable, calibration=cal, fine_tune=tune, export=opt.export.format)
                names |= {c.name for c in cands}
    return names


def _candidate_problem(opt: Optimization, r: Reported) -> str | None:
    if r.candidate is None or r.candidate == "baseline":
        return None
    if opt.strategy == Strategy.AUTO:
        if r.candidate not in candidate_names(opt):
            return f"candidate {r.candidate!r} is not one the automatic search tries for this spec"
        return None
    chain = [step_short_name(s) for s in opt.steps]
    parts = r.candidate.split("+")
    if not _is_subsequence(parts, chain):
        return f"candidate {r.candidate!r} is not a chain of spec.optimization.steps ({'+'.join(chain)})"
    if r.decision == ShipDecision.BEST_PASSING and parts == chain:
        return f"candidate {r.candidate!r} is the whole chain, not an earlier passing step (DeployBestPassing)"
    return None


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def verify(opt: Optimization, r: Reported) -> str | None:
    """The operator's verdict on a report for ``opt``: None when its figures, gate and decision agree with the
    spec and with each other; else why not (for status and the Event)."""
    gate = opt.gate
    if not opt.enabled:
        if r.gate not in (None, GateDecision.SKIPPED) or r.decision not in (None, ShipDecision.BASELINE):
            return f"optimization is disabled, yet the report says gate {r.gate}, decision {r.decision}"
        return None
    if r.gate not in (GateDecision.PASSED, GateDecision.FAILED):
        return f"the gate is on (spec.optimization.gate), yet the report says gate {r.gate or 'nothing'}"
    if r.decision not in {d.value for d in ShipDecision}:
        return f"unknown decision {r.decision!r}"
    expected_name = metric_name(opt.metric)
    if r.metric is not None and r.metric != expected_name:
        return f"the report measures {r.metric!r}, the spec's metric is {expected_name!r}"
    problem = _candidate_problem(opt, r)
    if problem is not None:
        return problem
    if r.gate == GateDecision.PASSED and r.decision != ShipDecision.OPTIMIZED:
        return f"gate Passed ships the optimized result, yet the report's decision is {r.decision}"
    if r.gate == GateDecision.FAILED and r.decision == ShipDecision.OPTIMIZED:
        return "gate Failed never ships the optimized result, yet the report's decision is Optimized"
    if r.decision == ShipDecision.BASELINE and gate.on_fail != OnFail.DEPLOY_BASELINE:
        return f"the report ships the baseline, which onFail {gate.on_fail.value} does not allow"
    if r.decision == ShipDecision.BEST_PASSING and (
        gate.on_fail != OnFail.DEPLOY_BEST_PASSING or opt.strategy == Strategy.AUTO
    ):
        return f"the report ships the best passing step, which onFail {gate.on_fail.value} does not allow"
    if r.decision not in (ShipDecision.OPTIMIZED, ShipDecision.BEST_PASSING, ShipDecision.BLOCKED):
        return None  # the baseline ships: the figures are the baseline's own
    if not _finite(r.baseline, r.value, r.drop):
        if r.decision == ShipDecision.BLOCKED:
            return None  # nothing ships
        return "the report ships an optimized result without finite baseline, value and drop"
    assert r.baseline is not None and r.value is not None and r.drop is not None
    d = drop(r.baseline, r.value, opt.metric, gate)
    if abs(d - r.drop) > REPORT_TOLERANCE * max(1.0, abs(d)):
        return (
            f"the report says drop {fmt(r.drop)}, but baseline {fmt(r.baseline)} and value {fmt(r.value)} give {fmt(d)}"
        )
    verdict = judgement(expected_name, r.baseline, r.value, d, gate)
    if r.decision in (ShipDecision.OPTIMIZED, ShipDecision.BEST_PASSING) and not passes(d, gate):
        return f"the report ships {r.candidate or 'a result'} ({r.decision}) but {verdict}"
    if r.decision == ShipDecision.BLOCKED and passes(d, gate):
        return f"the report blocks {r.candidate or 'the result'} but {verdict}"
    return None
