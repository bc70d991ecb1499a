"""The seed's own example, y = 2x - 1, end to end with real TensorFlow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.optimization import Gate, OnFail, Strategy
from modelship.api.report import GateDecision, Report, ShipDecision
from modelship.fetch import sha256_path

from .conftest import tflite_predict

pytestmark = pytest.mark.slow
Run = Callable[..., tuple[Report, Path]]


def test_example_model_learned_the_line(linear_example: Any) -> None:
    from modelship.optimize import tfenv

    model = tfenv.load().keras.models.load_model(str(linear_example.model), compile=False)
    w, b = (float(v.reshape(-1)[0]) for v in model.get_weights())
    assert abs(w - 2) < 0.01 and abs(b + 1) < 0.01


def test_int8_artifact_predicts_within_the_gate(linear_example: Any, run_optimizer: Run) -> None:
    opt = linear_example.optimization  # quantize int8, calibrated on [-1, 4], MAE gate 0.05
    report, out = run_optimizer(linear_example, opt)
    s = report.summary
    assert s.ok and s.gate == GateDecision.PASSED and s.decision == ShipDecision.OPTIMIZED
    artifact = out / "model.tflite"
    assert s.artifact == "model.tflite" and s.artifact_digest == sha256_path(artifact)
    assert s.source_digest == sha256_path(linear_example.model)
    assert report.calibration_warnings == []
    # judged independently: held-out x from the evaluation file, the artifact on the LiteRT interpreter
    held_out = np.load(linear_example.files["eval"])
    pred = tflite_predict(artifact, held_out["x"])
    mae = float(np.mean(np.abs(pred - (2 * held_out["x"] - 1))))
    assert s.baseline is not None and mae <= s.baseline + opt.gate.max_drop
    assert mae == pytest.approx(s.value, abs=1e-5)
    from ai_edge_litert.interpreter import Interpreter

    kinds = {np.dtype(d["dtype"]).name for d in Interpreter(model_path=str(artifact)).get_tensor_details()}
    assert "int8" in kinds  # really quantized
    m = report.steps[0].measurement
    assert m.params == 2 and m.raw_bytes == artifact.stat().st_size and m.gzip_bytes and m.gzip_bytes > 0
    assert m.latency_p50_ms and m.latency_p95_ms and m.latency_p95_ms >= m.latency_p50_ms
    assert report.baseline.complexity == pytest.approx(
        sum(float(np.sum(np.square(v))) for v in _weights(linear_example))
    )


def _weights(example: Any) -> list[Any]:
    from modelship.optimize import tfenv

    return list(tfenv.load().keras.models.load_model(str(example.model), compile=False).get_weights())


def test_calibration_that_misses_the_evaluation_range_is_flagged(linear_example: Any, run_optimizer: Run) -> None:
    wide = linear_example.data_ref("eval_wide")  # x up to 10, calibration only [-1, 4]
    lenient = linear_example.optimization.model_copy(
        update={
            "data": linear_example.optimization.data.model_copy(update={"evaluation": wide}),
            "gate": Gate(max_drop=1000),
        }
    )
    report, out = run_optimizer(linear_example, lenient)
    assert len(report.calibration_warnings) == 1
    assert (
        "[-1, 4]" in report.calibration_warnings[0]
        and "outside the calibration range" in report.calibration_warnings[0]
    )
    pred10 = float(tflite_predict(out / "model.tflite", np.array([[10.0]], dtype=np.float32))[0, 0])
    assert pred10 < 7.5  # clipped at the calibrated maximum 2*4-1 = 7 (the float model says 19)
    strict = lenient.model_copy(update={"gate": Gate(max_drop=0.05)})
    report, out = run_optimizer(linear_example, strict)
    assert report.summary.gate == GateDecision.FAILED and report.summary.decision == ShipDecision.BLOCKED
    assert not (out / "model.tflite").exists() and report.calibration_warnings


def test_auto_time_budget_stops_the_search(
    linear_example: Any, run_optimizer: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelship.optimize import pipeline

    clock = iter(range(0, 10**9, 1000))  # every reading is 1000 s later
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: float(next(clock)))
    opt = linear_example.optimization.model_copy(update={"strategy": Strategy.AUTO, "time_budget_seconds": 10})
    report, _ = run_optimizer(linear_example, opt)
    ran = [s for s in report.steps if not s.skipped]
    skipped = [s for s in report.steps if s.skipped]
    assert [s.name for s in ran] == ["dynamic"]  # the first candidate always runs
    assert skipped and all("time budget of 10s" in s.notes[0] for s in skipped)
    assert report.summary.candidate == "dynamic"


def test_disabled_optimization_ships_the_float_model(linear_example: Any, run_optimizer: Run) -> None:
    opt = linear_example.optimization.model_copy(update={"enabled": False, "gate": Gate(on_fail=OnFail.BLOCK)})
    report, out = run_optimizer(linear_example, opt)
    s = report.summary
    assert s.gate == GateDecision.SKIPPED and s.decision == ShipDecision.BASELINE and s.artifact == "model.tflite"
    assert report.steps == [] and report.strategy == "Disabled"
    x = np.array([[0.5], [3.0]], dtype=np.float32)
    assert np.allclose(tflite_predict(out / "model.tflite", x), 2 * x - 1, atol=0.02)


def test_feature_shape_mismatch_is_a_clear_error(linear_example: Any, run_optimizer: Run) -> None:
    from modelship.optimize.errors import OptimizeError

    bad = linear_example.root / linear_example.claim / "linear" / "bad_features.npz"
    np.savez(bad, x=np.zeros((5, 3), np.float32), y=np.zeros(5, np.float32))
    ref = linear_example.data_ref("eval").model_copy(update={"uri": linear_example.uri(bad)})
    opt = linear_example.optimization.model_copy(
        update={"data": linear_example.optimization.data.model_copy(update={"evaluation": ref})}
    )
    with pytest.raises(OptimizeError) as exc:
        run_optimizer(linear_example, opt)
    assert str(exc.value) == (
        f"evaluation data {ref.uri}: features have shape (3) per sample but the model expects (1)"
    )
    assert exc.value.context["source_digest"] == sha256_path(linear_example.model)


def test_tflite_input_is_served_as_is(linear_example: Any, run_optimizer: Run) -> None:
    from modelship.optimize.errors import OptimizeError

    disabled = linear_example.optimization.model_copy(update={"enabled": False})
    _, first = run_optimizer(linear_example, disabled)
    tflite = first / "model.tflite"
    report, out = run_optimizer(linear_example, disabled, model=tflite)
    s = report.summary
    assert report.model_format == "tflite" and s.decision == ShipDecision.BASELINE
    assert (out / "model.tflite").read_bytes() == tflite.read_bytes()
    assert s.baseline is not None and s.baseline < 0.01 and s.value == s.baseline and s.drop == 0.0
    with pytest.raises(OptimizeError, match=r"a tflite model is served as is: set optimization\.enabled to false"):
        run_optimizer(linear_example, linear_example.optimization, model=tflite)
