"""Metrics, the gate and the ship decision (pure numpy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelship.api.optimization import DropType, Gate, Metric, MetricType, Objective, OnFail
from modelship.api.report import GateDecision, ShipDecision
from modelship.optimize import gate
from modelship.optimize.errors import OptimizeError


def test_accuracy_topk_mse_mae() -> None:
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    assert gate.compute(Metric(type=MetricType.ACCURACY), y, p) == 0.75
    assert gate.compute(Metric(type=MetricType.ACCURACY), np.eye(3)[y], p) == 0.75  # one-hot labels
    assert gate.compute(Metric(type=MetricType.TOP_K, k=2), y, p) == 0.75  # sample 3 has class 2 third
    assert gate.compute(Metric(type=MetricType.TOP_K, k=3), y, p) == 1.0
    yt = np.array([[1.0], [3.0]])
    yp = np.array([[2.0], [1.0]])
    assert gate.compute(Metric(type=MetricType.MSE), yt, yp) == pytest.approx(2.5)
    assert gate.compute(Metric(type=MetricType.MAE), yt, yp) == pytest.approx(1.5)


def test_binary_accuracy_thresholds_probabilities_and_logits() -> None:
    y = np.array([0, 1, 1])
    assert gate.compute(Metric(), y, np.array([[0.2], [0.6], [0.9]])) == 1.0
    assert gate.compute(Metric(), y, np.array([[-2.0], [0.4], [3.0]])) == 1.0


def test_custom_metric_callable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymetrics.py").write_text("def neg_mae(y, p):\n    return -abs(y - p.reshape(y.shape)).mean()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = Metric(type=MetricType.CUSTOM, callable="mymetrics:neg_mae")
    assert gate.compute(m, np.array([1.0, 2.0]), np.array([[1.5], [2.5]])) == pytest.approx(-0.5)
    assert gate.higher_is_better(m)
    with pytest.raises(OptimizeError, match="cannot import"):
        gate.load_callable("no_such_module_xyz:f")
    with pytest.raises(OptimizeError, match="no function"):
        gate.load_callable("mymetrics:missing")
    sys.modules.pop("mymetrics", None)


def test_drop_direction_and_relative() -> None:
    acc, mse = Metric(type=MetricType.ACCURACY), Metric(type=MetricType.MSE)
    absolute, relative = Gate(max_drop=0.01), Gate(max_drop=0.1, drop_type=DropType.RELATIVE)
    assert gate.drop(0.9, 0.88, acc, absolute) == pytest.approx(0.02)
    assert gate.drop(0.9, 0.92, acc, absolute) == pytest.approx(-0.02)
    assert gate.drop(0.5, 0.6, mse, absolute) == pytest.approx(0.1)  # mse up is worse
    assert gate.drop(0.8, 0.72, acc, relative) == pytest.approx(0.1)
    assert gate.passes(0.01, absolute) and not gate.passes(0.0101, absolute)


@given(
    baseline=st.floats(0.01, 1.0),
    value=st.floats(0.0, 1.0),
    max_drop=st.floats(0.0, 1.0),
)
def test_gate_passes_exactly_when_the_loss_is_within_max_drop(baseline: float, value: float, max_drop: float) -> None:
    g = Gate(max_drop=max_drop)
    d = gate.drop(baseline, value, Metric(), g)
    assert gate.passes(d, g) == (baseline - value <= max_drop + gate.TOLERANCE)


def test_judgement_carries_the_numbers() -> None:
    text = gate.judgement("accuracy", 0.975, 0.9611, 0.0139, Gate(max_drop=0.001))
    assert text == "accuracy 0.9611 vs baseline 0.975: drop 0.0139 > maxDrop 0.001 (absolute)"


def outcome(name: str, passed: bool | None, size: int = 100, latency: float = 1.0) -> gate.Outcome:
    return gate.Outcome(name=name, passed=passed, gzip_bytes=size, latency_ms=latency)


def test_steps_decision() -> None:
    ok = [outcome("prune", True), outcome("prune+int8", True)]
    d = gate.decide_steps(ok, OnFail.BLOCK)
    assert (d.gate, d.ship, d.chosen) == (GateDecision.PASSED, ShipDecision.OPTIMIZED, 1)
    bad = [outcome("prune", True), outcome("prune+cluster", False), outcome("prune+cluster+int8", False)]
    d = gate.decide_steps(bad, OnFail.BLOCK)
    assert (d.gate, d.ship, d.chosen, d.judged) == (GateDecision.FAILED, ShipDecision.BLOCKED, None, 2)
    d = gate.decide_steps(bad, OnFail.DEPLOY_BASELINE)
    assert (d.ship, d.chosen) == (ShipDecision.BASELINE, None)
    d = gate.decide_steps(bad, OnFail.DEPLOY_BEST_PASSING)
    assert (d.ship, d.chosen) == (ShipDecision.BEST_PASSING, 0)
    d = gate.decide_steps([outcome("a", False)], OnFail.DEPLOY_BEST_PASSING)
    assert d.ship == ShipDecision.BLOCKED  # nothing passed


def test_auto_decision_objective() -> None:
    cands = [
        outcome("dynamic", True, 500, 1.0),
        outcome("int8", True, 400, 0.5),
        outcome("prune+int8", True, 200, 0.6),
        outcome("x", False, 10),
    ]
    assert gate.decide_auto(cands, Objective.SIZE, OnFail.BLOCK).chosen == 2
    assert gate.decide_auto(cands, Objective.LATENCY, OnFail.BLOCK).chosen == 1
    none = [outcome("a", False, 300), outcome("b", False, 200)]
    d = gate.decide_auto(none, Objective.SIZE, OnFail.DEPLOY_BEST_PASSING)
    assert (d.gate, d.ship, d.judged) == (GateDecision.FAILED, ShipDecision.BLOCKED, 1)
    assert gate.decide_auto(none, Objective.SIZE, OnFail.DEPLOY_BASELINE).ship == ShipDecision.BASELINE
