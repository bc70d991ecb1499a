"""Metrics, the accuracy gate and the ship decision (pure numpy; no TensorFlow)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..api.optimization import DropType, Gate, Metric, MetricType, Objective, OnFail
from ..api.report import GateDecision, ShipDecision
from .errors import OptimizeError

Array = np.ndarray[Any, Any]

TOLERANCE = 1e-9


def metric_name(metric: Metric) -> str:
    if metric.type == MetricType.TOP_K:
        return f"top{metric.k}"
    if metric.type == MetricType.CUSTOM:
        return metric.callable or "custom"
    return metric.type.value


def higher_is_better(metric: Metric) -> bool:
    return metric.type not in (MetricType.MSE, MetricType.MAE)


def load_callable(spec: str) -> Callable[[Array, Array], Any]:
    """Import ``module:function``."""
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise OptimizeError(f"custom metric {spec}: cannot import {module_name} ({exc})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise OptimizeError(f"custom metric {spec}: {module_name} has no function {func_name}")
    return fn  # type: ignore[no-any-return]


def _classes(y_pred: Array) -> Array:
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1:
        return np.asarray(np.argmax(y_pred, axis=-1))
    p = y_pred.reshape(len(y_pred))
    threshold = 0.5 if p.size and p.min() >= 0.0 and p.max() <= 1.0 else 0.0
    return (p > threshold).astype(np.int64)


def _true_classes(y_true: Array) -> Array:
    if y_true.ndim >= 2 and y_true.shape[-1] > 1:
        return np.asarray(np.argmax(y_true, axis=-1))
    return y_true.reshape(len(y_true)).astype(np.int64)


def compute(metric: Metric, y_true: Array, y_pred: Array, custom: Callable[[Array, Array], Any] | None = None) -> float:
    """The metric of predictions against labels."""
    if len(y_true) != len(y_pred):
        raise OptimizeError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if metric.type == MetricType.ACCURACY:
        return float(np.mean(_classes(y_pred) == _true_classes(y_true)))
    if metric.type == MetricType.TOP_K:
        scores = y_pred.reshape(len(y_pred), -1)
        k = min(metric.k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return float(np.mean(np.any(top == _true_classes(y_true)[:, None], axis=1)))
    if metric.type in (MetricType.MSE, MetricType.MAE):
        diff = y_pred.astype(np.float64).reshape(y_true.shape) - y_true.astype(np.float64)
        return float(np.mean(diff**2) if metric.type == MetricType.MSE else np.mean(np.abs(diff)))
    fn = custom or load_callable(metric.callable or "")
    try:
        value = float(fn(y_true, y_pred))
    except Exception as exc:
        raise OptimizeError(f"custom metric {metric.callable} failed: {exc}") from None
    if not math.isfinite(value):
        raise OptimizeError(f"custom metric {metric.callable} returned {value}")
    return value


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
