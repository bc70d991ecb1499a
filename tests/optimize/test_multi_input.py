"""A functional model with two inputs (first, second) and two outputs (digit, parity), saved as .keras: data
mapped to the inputs by name, the metric reading one named output, through calibration, fine-tuning, QAT, the
evaluation of the baseline and of the .tflite candidates, and latency. TFLite orders inputs and outputs its own
way (not the Keras order): the artifact is checked here by name, with the LiteRT signature runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.optimization import (
    FineTune,
    Metric,
    MetricType,
    OptimizationStep,
    QuantizeMode,
    QuantizeParams,
    StepType,
    Strategy,
)
from modelship.api.report import GateDecision, Report, ShipDecision

pytestmark = pytest.mark.slow
Run = Callable[..., tuple[Report, Path]]


def signature_predict(path: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """Every output of a .tflite by name, one row at a time through the signature runner (independent of the
    optimizer's runner, which batches and binds tensors by index)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    n = len(next(iter(inputs.values())))
    rows = [runner(**{k: v[i : i + 1].astype(np.float32) for k, v in inputs.items()}) for i in range(n)]
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


def held_out(example: Any) -> tuple[dict[str, Any], Any, Any]:
    ev = np.load(example.files["eval"])
    return {"first": ev["top"], "second": ev["bottom"]}, ev["y"], ev["odd"]


def keras_accuracy(example: Any) -> float:
    from modelship.optimize import tfenv

    model = tfenv.load().keras.models.load_model(str(example.model), compile=False)
    inputs, y, _ = held_out(example)
    digit, _ = model.predict([inputs["first"], inputs["second"]], verbose=0)
    return float(np.mean(np.argmax(digit, axis=1) == y))


def test_prune_int8_by_input_name_matches_an_independent_evaluation(
    two_inputs_example: Any, run_optimizer: Run
) -> None:
    ex = two_inputs_example
    report, out = run_optimizer(ex, ex.optimization)  # prune 50% fine-tuned on the digit output, then int8
    s = report.summary
    assert s.ok and s.gate == GateDecision.PASSED and s.decision == ShipDecision.OPTIMIZED
    assert s.candidate == "prune+int8" and s.metric_name == "accuracy"
    assert s.baseline == pytest.approx(keras_accuracy(ex))
    artifact = out / "model.tflite"
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(artifact))
    sig = it.get_signature_list()["serving_default"]
    assert sorted(sig["inputs"]) == ["first", "second"] and sorted(sig["outputs"]) == ["digit", "parity"]
    assert "int8" in {np.dtype(d["dtype"]).name for d in it.get_tensor_details()}
    inputs, y, odd = held_out(ex)
    outputs = signature_predict(artifact, inputs)
    accuracy = float(np.mean(np.argmax(outputs["digit"], axis=1) == y))
    assert accuracy == pytest.approx(s.value, abs=1e-9)
    assert s.baseline - accuracy <= ex.optimization.gate.max_drop
    swapped = signature_predict(artifact, {"first": inputs["second"], "second": inputs["first"]})
    assert float(np.mean(np.argmax(swapped["digit"], axis=1) == y)) < 0.5  # the inputs really are told apart
    parity = float(np.mean((outputs["parity"][:, 0] > 0.5) == odd))
    print(f"two-inputs prune+int8: digit accuracy {accuracy:.4f} (gated), parity accuracy {parity:.4f} (not gated)")
    assert any("fine-tuning loss: sparse_categorical_crossentropy" in n for n in report.notes)
    assert "fine-tuning trains the digit output against the labels; parity is neither trained nor gated" in (
        report.notes
    )
    assert report.inputs == ["first", "second"] and report.outputs == ["digit", "parity"]
    assert report.metric_output == "digit"
    assert report.steps[0].fine_tuned and report.steps[1].measurement.latency_p50_ms


def test_qat_keeps_the_models_input_and_output_names(two_inputs_example: Any, run_optimizer: Run) -> None:
    ex = two_inputs_example
    qat = OptimizationStep(
        type=StepType.QUANTIZE,
        quantize=QuantizeParams(mode=QuantizeMode.QAT),
        fine_tune=FineTune(epochs=2, learning_rate=1e-4),
    )
    report, out = run_optimizer(ex, ex.optimization.model_copy(update={"steps": [qat]}))
    step = report.steps[0]
    assert step.fine_tuned and not any("post-training" in n for n in step.notes), step.notes
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(out / "model.tflite")).get_signature_list()["serving_default"]
    assert sorted(sig["outputs"]) == ["digit", "parity"]  # not quant_digit, quant_parity
    inputs, y, _ = held_out(ex)
    accuracy = float(np.mean(np.argmax(signature_predict(out / "model.tflite", inputs)["digit"], axis=1) == y))
    assert accuracy == pytest.approx(report.summary.value, abs=1e-9)
    assert report.summary.gate == GateDecision.PASSED


def test_auto_search_runs_every_candidate_on_two_inputs(two_inputs_example: Any, run_optimizer: Run) -> None:
    ex = two_inputs_example
    report, out = run_optimizer(ex, ex.optimization.model_copy(update={"strategy": Strategy.AUTO, "steps": []}))
    names = [s.name for s in report.steps]
    for want in ("dynamic", "float16", "int8", "prune80+int8", "cluster16+int8", "lowRank90+int8", "qat"):
        assert want in names
    failed = {s.name: s.error for s in report.steps if s.error}
    assert failed == {}
    s = report.summary
    assert s.decision == ShipDecision.OPTIMIZED
    inputs, y, _ = held_out(ex)
    accuracy = float(np.mean(np.argmax(signature_predict(out / "model.tflite", inputs)["digit"], axis=1) == y))
    assert accuracy == pytest.approx(s.value, abs=1e-9)


def test_mapping_errors_name_the_field(two_inputs_example: Any, run_optimizer: Run) -> None:
    from modelship.optimize.errors import OptimizeError

    ex = two_inputs_example
    opt = ex.optimization

    def data(role: str, **change: Any) -> dict[str, Any]:
        ref = getattr(opt.data, role)
        return {"data": opt.data.model_copy(update={role: ref.model_copy(update=change)})}

    cases = [
        (
            data("evaluation", inputs=None, features="top"),
            "the model has 2 inputs (first, second); map each to its data with data.evaluation.inputs",
        ),
        (
            data("evaluation", inputs={"first": "top", "third": "bottom"}),
            "data.evaluation.inputs names third, not an input of the model (the model's inputs: first, second)",
        ),
        (data("fine_tune", inputs={"first": "top"}), "data.fineTune.inputs has no entry for the model input second"),
        (
            {"metric": Metric(type=MetricType.ACCURACY)},
            "the model has 2 outputs (digit, parity): name the one the metric reads with metric.output",
        ),
        (
            {"metric": Metric(type=MetricType.ACCURACY, output="score")},
            "metric.output: the model has no output named 'score' (its outputs: digit, parity)",
        ),
    ]
    for update, message in cases:
        with pytest.raises(OptimizeError) as info:
            run_optimizer(ex, opt.model_copy(update=update))
        assert message in str(info.value), str(info.value)
