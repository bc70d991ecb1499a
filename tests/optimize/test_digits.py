"""sklearn digits, MLP and CNN: prune / cluster / low-rank / 2:4 + int8, the gate's onFail, Auto, SavedModel export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.optimization import (
    ClusterParams,
    ExportFormat,
    FineTune,
    Gate,
    LowRankParams,
    OnFail,
    Optimization,
    OptimizationStep,
    PruneParams,
    PruningSchedule,
    QuantizeMode,
    QuantizeParams,
    StepType,
    Strategy,
)
from modelship.api.report import GateDecision, Report, ShipDecision
from modelship.optimize import gate as gatemod

from .conftest import gzip9, tflite_predict

pytestmark = pytest.mark.slow
Run = Callable[..., tuple[Report, Path]]

INT8 = OptimizationStep(type=StepType.QUANTIZE, quantize=QuantizeParams(mode=QuantizeMode.INT8))


def keras_accuracy(example: Any) -> float:
    from modelship.optimize import tfenv

    model = tfenv.load().keras.models.load_model(str(example.model), compile=False)
    ev = np.load(example.files["eval"])
    return float(np.mean(np.argmax(model.predict(ev["x"], verbose=0), axis=1) == ev["y"]))


def tflite_accuracy(path: Path, example: Any) -> float:
    ev = np.load(example.files["eval"])
    return float(np.mean(np.argmax(tflite_predict(path, ev["x"]), axis=1) == ev["y"]))


def with_steps(example: Any, *steps: OptimizationStep, **update: Any) -> Optimization:
    opt: Optimization = example.optimization
    return opt.model_copy(update={"steps": list(steps), **update})


@pytest.fixture(params=["mlp", "cnn"])
def digits(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_example")


def test_prune80_int8_is_8x_smaller_than_the_h5_within_a_point(digits: Any, run_optimizer: Run) -> None:
    opt = digits.optimization  # prune 0.8 PolynomialDecay, fine-tune 4 epochs, then int8
    assert [s.type for s in opt.steps] == [StepType.PRUNE, StepType.QUANTIZE]
    report, out = run_optimizer(digits, opt)
    artifact = out / "model.tflite"
    ratio = gzip9(digits.model) / gzip9(artifact)
    drop = keras_accuracy(digits) - tflite_accuracy(artifact, digits)
    print(f"{digits.name} prune80+int8: {ratio:.2f}x smaller than the .h5 (gzip), accuracy drop {drop:+.4f}")
    assert report.summary.decision == ShipDecision.OPTIMIZED and report.summary.candidate == "prune+int8"
    assert ratio >= 8.0
    assert drop < 0.01
    pruned = report.steps[0]
    assert pruned.fine_tuned and pruned.measurement.params and pruned.measurement.nonzero_params
    assert pruned.measurement.nonzero_params / pruned.measurement.params < 0.25  # kernels 80% zero, biases kept


def test_cluster16_int8_is_6x_smaller_within_a_point(digits: Any, run_optimizer: Run) -> None:
    step = OptimizationStep(
        type=StepType.CLUSTER,
        cluster=ClusterParams(number_of_clusters=16),
        fine_tune=FineTune(epochs=3, learning_rate=1e-4),
    )
    _, out = run_optimizer(digits, with_steps(digits, step, INT8))
    artifact = out / "model.tflite"
    ratio = gzip9(digits.model) / gzip9(artifact)
    drop = keras_accuracy(digits) - tflite_accuracy(artifact, digits)
    print(f"{digits.name} cluster16+int8: {ratio:.2f}x smaller than the .h5 (gzip), accuracy drop {drop:+.4f}")
    assert ratio >= 6.0
    assert drop < 0.01
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(artifact))
    it.allocate_tensors()
    kernels = {}
    for d in it.get_tensor_details():
        if np.dtype(d["dtype"]) == np.int8 and np.prod(d["shape"]) >= 1024:
            try:
                kernels[d["name"]] = it.get_tensor(d["index"])  # constants only: activations are not readable
            except ValueError:
                continue
    assert kernels
    for name, values in kernels.items():
        assert len(np.unique(values)) <= 16, name


def test_gate_decisions_with_measured_drops(mlp_example: Any, run_optimizer: Run) -> None:
    """One-shot 50% then 99% pruning: measure both drops, then set gates between them."""
    steps = [
        OptimizationStep(
            type=StepType.PRUNE, prune=PruneParams(target_sparsity=0.5, schedule=PruningSchedule.CONSTANT)
        ),
        OptimizationStep(
            type=StepType.PRUNE, prune=PruneParams(target_sparsity=0.99, schedule=PruningSchedule.CONSTANT)
        ),
    ]
    lenient, _ = run_optimizer(mlp_example, with_steps(mlp_example, *steps, gate=Gate(max_drop=1.0)))
    assert all("one-shot" in " ".join(s.notes) and not s.fine_tuned for s in lenient.steps)
    d1, d2 = (s.measurement.drop for s in lenient.steps)
    assert d1 is not None and d2 is not None and d2 > d1 + 0.05
    threshold = round((max(d1, 0.0) + d2) / 2, 4)

    blocked, out = run_optimizer(mlp_example, with_steps(mlp_example, *steps, gate=Gate(max_drop=threshold)))
    s = blocked.summary
    assert s.gate == GateDecision.FAILED and s.decision == ShipDecision.BLOCKED and s.artifact is None
    assert not (out / "model.tflite").exists() and (out / "report.json").exists()
    judged = blocked.steps[-1].measurement
    assert judged.drop is not None and judged.metric is not None and judged.drop > threshold
    assert s.message is not None and "> maxDrop" in s.message
    for number in (judged.metric, s.baseline, judged.drop, threshold):
        assert gatemod.fmt(number) in s.message

    best, out = run_optimizer(
        mlp_example, with_steps(mlp_example, *steps, gate=Gate(max_drop=threshold, on_fail=OnFail.DEPLOY_BEST_PASSING))
    )
    s = best.summary
    assert s.decision == ShipDecision.BEST_PASSING and s.candidate == "prune" and best.steps[0].shipped
    assert s.baseline is not None and s.baseline - tflite_accuracy(out / "model.tflite", mlp_example) <= threshold

    base, out = run_optimizer(
        mlp_example, with_steps(mlp_example, *steps, gate=Gate(max_drop=threshold, on_fail=OnFail.DEPLOY_BASELINE))
    )
    s = base.summary
    assert s.decision == ShipDecision.BASELINE and s.candidate == "baseline"
    assert tflite_accuracy(out / "model.tflite", mlp_example) == pytest.approx(keras_accuracy(mlp_example))


def test_low_rank_mlp(mlp_example: Any, run_optimizer: Run) -> None:
    step = OptimizationStep(
        type=StepType.LOW_RANK, low_rank=LowRankParams(energy=0.9), fine_tune=FineTune(epochs=4, learning_rate=5e-4)
    )
    report, out = run_optimizer(mlp_example, with_steps(mlp_example, step, INT8))
    lr = report.steps[0]
    assert lr.measurement.params is not None and report.baseline.params is not None
    assert lr.measurement.params < report.baseline.params
    assert any("-> rank" in n for n in lr.notes)
    assert report.steps[1].measurement.raw_bytes is not None and report.baseline.raw_bytes is not None
    assert report.steps[1].measurement.raw_bytes < report.baseline.raw_bytes / 3
    assert keras_accuracy(mlp_example) - tflite_accuracy(out / "model.tflite", mlp_example) < 0.02


def test_two_four_structured_sparsity(mlp_example: Any) -> None:
    from modelship.optimize import tfenv
    from modelship.optimize.techniques import prune

    t = tfenv.load()
    model = t.keras.models.load_model(str(mlp_example.model), compile=False)
    sample = {"x": np.load(mlp_example.files["eval"])["x"][:1]}  # input name -> rows
    res = prune(t, model, PruneParams(pattern="2:4"), None, None, sample)
    for layer in res.model.layers:
        kernel = layer.get_weights()[0]  # (in, out): groups of 4 along the input dimension
        groups = (kernel != 0).T.reshape(kernel.shape[1], -1, 4).sum(axis=2)
        assert groups.max() <= 2, layer.name
    assert np.count_nonzero(model.get_weights()[0]) == model.get_weights()[0].size  # the input model is untouched


def test_low_rank_functional_model_factorizes_by_truncated_svd() -> None:
    from modelship.optimize import tfenv
    from modelship.optimize.techniques import low_rank

    t = tfenv.load()
    k = t.keras
    inp = k.Input((20,))
    h = k.layers.Dense(30, activation="relu", name="hidden")(inp)
    model = k.Model(inp, k.layers.Dense(5, name="out")(h))
    res = low_rank(t, model, LowRankParams(rank=4, layer_regex="hidden"), None, None)
    names = [layer.name for layer in res.model.layers]
    assert "hidden_lowrank" in names and "out" in names
    a = res.model.get_layer("hidden_lowrank").get_weights()[0]
    b, bias = res.model.get_layer("hidden").get_weights()
    u, s, vt = np.linalg.svd(model.get_layer("hidden").get_weights()[0], full_matrices=False)
    assert np.allclose(a @ b, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-5)
    assert np.allclose(bias, model.get_layer("hidden").get_weights()[1])
    x = np.random.default_rng(0).normal(size=(3, 20)).astype(np.float32)
    assert res.model.predict(x, verbose=0).shape == (3, 5)


def test_auto_picks_the_smallest_passing_candidate(mlp_example: Any, run_optimizer: Run) -> None:
    opt = mlp_example.optimization.model_copy(update={"strategy": Strategy.AUTO, "steps": []})
    report, out = run_optimizer(mlp_example, opt)
    names = [s.name for s in report.steps]
    for want in ("dynamic", "float16", "int8", "prune80+int8", "cluster16+int8", "lowRank90+int8", "qat"):
        assert want in names
    measured = [s for s in report.steps if s.measurement.gzip_bytes is not None]
    passing = [s for s in measured if s.passed]
    assert passing
    best = min(passing, key=lambda s: s.measurement.gzip_bytes or 0)
    s = report.summary
    assert s.decision == ShipDecision.OPTIMIZED and s.candidate == best.name and best.shipped
    assert s.optimized_gzip_bytes == gzip9(out / "model.tflite") == best.measurement.gzip_bytes
    chained = next(x for x in report.steps if x.name == "prune80+cluster16+int8")
    assert any("reused" in n for n in chained.notes)  # the prune prefix is not trained twice


def test_savedmodel_export(mlp_example: Any, run_optimizer: Run) -> None:
    step = OptimizationStep(
        type=StepType.PRUNE, prune=PruneParams(target_sparsity=0.3, schedule=PruningSchedule.CONSTANT)
    )
    opt = with_steps(mlp_example, step, gate=Gate(max_drop=0.05))
    opt = opt.model_copy(update={"export": opt.export.model_copy(update={"format": ExportFormat.SAVEDMODEL})})
    report, out = run_optimizer(mlp_example, opt)
    s = report.summary
    assert s.artifact == "saved_model" and (out / "saved_model" / "saved_model.pb").is_file()
    from modelship.fetch import sha256_path
    from modelship.optimize import tfenv

    assert s.artifact_digest == sha256_path(out / "saved_model")
    loaded = tfenv.load().tf.saved_model.load(str(out / "saved_model"))
    ev = np.load(mlp_example.files["eval"])
    fn = loaded.signatures["serving_default"]
    y = next(iter(fn(**{next(iter(fn.structured_input_signature[1])): ev["x"]}).values())).numpy()
    assert s.value == pytest.approx(float(np.mean(np.argmax(y, axis=1) == ev["y"])))
