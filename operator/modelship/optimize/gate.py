"""Metrics on the evaluation data (pure numpy; no TensorFlow). The gate's arithmetic and the ship decision are
the API's (``modelship.api.gate``, re-exported here): the operator recomputes them from the optimizer's report."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..api.gate import (
    TOLERANCE,
    Decision,
    Outcome,
    decide_auto,
    decide_steps,
    drop,
    fmt,
    higher_is_better,
    judgement,
    metric_name,
    passes,
)
from ..api.optimization import Metric, MetricType
from .errors import OptimizeError

__all__ = [
    "TOLERANCE",
    "Decision",
    "Outcome",
    "compute",
    "decide_auto",
    "decide_steps",
    "drop",
    "fmt",
    "higher_is_better",
    "judgement",
    "load_callable",
    "metric_name",
    "passes",
]

Array = np.ndarray[Any, Any]


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
