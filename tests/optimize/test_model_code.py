"""A model is code: models that would run their author's Python (or touch files) when the optimizer loads them are
refused before anything of them runs, with a message naming what they carry; the same models load (and their code
runs) only with allowCode. A custom metric is code too. Real tf-keras models, real SavedModels, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.source import ModelFormat
from modelship.optimize import modelcode, modelio
from modelship.optimize.errors import OptimizeError
from tests.optimize.conftest import cli_env, error_line, read_summary, run_cli

pytestmark = pytest.mark.slow


def _keras() -> Any:
    import tf_keras

    return tf_keras


def hostile_lambda(mark: Path) -> Any:
    """A lambda whose body writes ``mark`` when it runs (tf-keras marshals its bytecode into the model file)."""
    return eval(f"lambda t: (__import__('pathlib').Path({str(mark)!r}).write_text('pwned'), t)[1]")


def functional(layer: Any | None = None, tf_op: Any | None = None) -> Any:
    keras = _keras()
    inp = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inp)
    if tf_op is not None:
        x = tf_op(x)
    if layer is not None:
        x = layer(x)
    return keras.Model(inp, keras.layers.Dense(1)(x))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_lambda_layer_that_writes_a_file_is_refused_and_never_runs(tmp_path: Path, suffix: str) -> None:
    keras = _keras()
    mark = tmp_path / "pwned"
    model_path = tmp_path / f"model{suffix}"
    functional(keras.layers.Lambda(hostile_lambda(mark))).save(model_path)
    mark.unlink()  # building the model ran the lambda once: start clean
    info = modelio.inspect_model(model_path)
    with pytest.raises(OptimizeError) as err:
        modelio.load_model(info)
    message = str(err.value)
    assert "Lambda layer (Python bytecode)" in message and "spec.model.allowCode: true (--allow-code)" in message
    assert not mark.exists(), "the model's code ran although it was refused"
    # the same file with allowCode: loading it runs the author's code (which is why it is refused by default)
    loaded = modelio.load_model(modelio.inspect_model(model_path), allow_code=True)
    assert loaded.keras is not None and mark.read_text() == "pwned"
    assert any("allowCode is true" in n for n in loaded.notes)


@pytest.mark.parametrize("suffix", [".h5", ".keras", ""])
def test_a_compiled_model_carries_no_code(tmp_path: Path, suffix: str) -> None:
    """How a model was compiled (Adam, a built-in loss and metrics: .keras compile_config, .h5 training_config, the
    metric nodes of a SavedModel's metadata) is not code: the optimizer loads with compile=False. Found by the e2e
    tier (two-inputs example, a compiled .keras)."""
    keras = _keras()
    model = functional()
    model.compile(optimizer="adam", loss="mse", metrics=["mae", keras.metrics.RootMeanSquaredError()])
    model.fit(np.zeros((8, 4)), np.zeros((8, 1)), epochs=1, verbose=0)
    path = tmp_path / f"model{suffix}"
    model.save(path, **({} if suffix else {"save_format": "tf"}))
    fmt = {".h5": ModelFormat.H5, ".keras": ModelFormat.KERAS, "": ModelFormat.SAVEDMODEL}[suffix]
    assert modelcode.scan(path, fmt) == []
    assert modelio.load_model(modelio.inspect_model(path)).keras is not None


def test_safe_mode_is_the_second_line_even_without_the_scan(tmp_path: Path) -> None:
    """tf-keras's own safe mode covers .h5 too (its loader applies safe_mode to .keras files only): with the scan
    bypassed, the bytecode is still never unmarshalled."""
    from modelship.optimize import tfenv

    keras = _keras()
    mark = tmp_path / "pwned"
    path = tmp_path / "model.h5"
    functional(keras.layers.Lambda(hostile_lambda(mark))).save(path)
    mark.unlink()
    with pytest.raises(OptimizeError, match="Lambda"):
        modelio._load_keras(tfenv.load(), modelio.inspect_model(path), allow_code=False)
    assert not mark.exists()


def test_custom_objects_are_code(tmp_path: Path) -> None:
    keras = _keras()

    @keras.utils.register_keras_serializable(package="evil")
    class Exfiltrate(keras.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            return x

    for suffix in (".h5", ".keras"):
        path = tmp_path / f"custom{suffix}"
        functional(Exfiltrate()).save(path)
        findings = modelcode.scan(path, ModelFormat.H5 if suffix == ".h5" else ModelFormat.KERAS)
        assert [f.what for f in findings] and all("custom object" in f.what for f in findings), findings
        assert "Exfiltrate" in modelcode.describe(findings)


def test_tf_op_layers_pass_for_tensor_math_and_are_code_for_anything_else(tmp_path: Path) -> None:
    import tensorflow as tf

    math_model = tmp_path / "math.h5"
    functional(tf_op=lambda x: tf.nn.relu(tf.reshape(x * 2.0, (-1, 8))[:, :8])).save(math_model)
    assert modelcode.scan(math_model, ModelFormat.H5) == []
    writer = tmp_path / "writer.h5"
    functional(tf_op=lambda x: tf.strings.as_string(x)).save(writer)
    findings = modelcode.scan(writer, ModelFormat.H5)
    assert findings and "tf.strings.as_string" in findings[0].what


def _saved_model(path: Path, body: Any) -> Path:
    import tensorflow as tf

    class Module(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.v = tf.Variable(tf.ones([4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])  # type: ignore[misc]
        def serve(self, x: Any) -> Any:
            return {"y": body(x * self.v)}

    m = Module()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


def test_savedmodels_run_graph_ops_and_the_python_and_file_ops_are_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    plain = _saved_model(tmp_path / "plain", lambda x: x * 2.0)
    assert modelcode.scan(plain, ModelFormat.SAVEDMODEL) == []  # variables are saved and restored: allowed
    mark = tmp_path / "written"

    def writes(x: Any) -> Any:
        tf.io.write_file(str(mark), tf.strings.as_string(tf.reduce_sum(x)))
        return x

    writer = _saved_model(tmp_path / "writer", writes)
    findings = modelcode.scan(writer, ModelFormat.SAVEDMODEL)
    assert [f.what for f in findings] == ["WriteFile op reachable from the 'serving_default' signature (touches files)"]
    py = _saved_model(tmp_path / "py", lambda x: tf.py_function(lambda t: t * 2, [x], tf.float32))
    assert any("EagerPyFunc op (calls Python)" in f.what for f in modelcode.scan(py, ModelFormat.SAVEDMODEL))
    with pytest.raises(OptimizeError, match="WriteFile"):
        modelio.load_model(modelio.inspect_model(writer))
    assert not mark.exists()


def test_a_keras_savedmodel_is_scanned_through_its_metadata(tmp_path: Path) -> None:
    keras = _keras()
    mark = tmp_path / "pwned"
    path = tmp_path / "sm"
    functional(keras.layers.Lambda(hostile_lambda(mark))).save(path, save_format="tf")
    mark.unlink(missing_ok=True)
    findings = modelcode.scan(path, ModelFormat.SAVEDMODEL)
    assert findings and findings[0].what == "Lambda layer (Python bytecode)" and findings[0].where.startswith("lambda")
    clean = tmp_path / "clean"
    functional().save(clean, save_format="tf")
    assert modelcode.scan(clean, ModelFormat.SAVEDMODEL) == []


def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.h5"
    functional().save(path)
    monkeypatch.setattr(modelcode, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(modelcode.ModelCodeError, match="larger than 100 bytes"):
        modelcode.scan(path, ModelFormat.H5)


def test_cli_refuses_a_hostile_model_permanently_and_runs_it_only_with_allow_code(tmp_path: Path) -> None:
    keras = _keras()
    mark = tmp_path / "pwned"
    model = tmp_path / "model.h5"
    functional(keras.layers.Lambda(hostile_lambda(mark))).save(model)
    mark.unlink()
    term = tmp_path / "termination-log"
    opt = json.dumps({"enabled": False})
    proc = run_cli("--model", str(model), "--optimization-json", opt, "--out", str(tmp_path / "out"),
                   "--termination-log", str(term), env=cli_env())  # fmt: skip
    line = error_line(proc)
    assert "the model carries code" in line and "Lambda layer (Python bytecode)" in line
    summary = read_summary(term)
    assert summary["ok"] is False and summary["failure"] == "Permanent"
    assert "spec.model.allowCode" in summary["error"]
    assert not mark.exists()
    proc = run_cli("--model", str(model), "--optimization-json", opt, "--out", str(tmp_path / "out2"),
                   "--termination-log", str(term), "--allow-code", env=cli_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert mark.read_text() == "pwned"


def test_a_custom_metric_is_refused_without_allow_code(tmp_path: Path, linear_example: Any) -> None:
    (tmp_path / "mymetrics.py").write_text("def score(y_true, y_pred):\n    return 1.0\n")
    opt = linear_example.optimization.wire()
    opt["metric"] = {"type": "custom", "callable": "mymetrics:score"}
    term = tmp_path / "termination-log"
    proc = run_cli("--model", str(linear_example.model), "--optimization-json", json.dumps(opt), "--out",
                   str(tmp_path / "out"), "--termination-log", str(term), "--pvc-root", str(linear_example.root),
                   env=cli_env(PYTHONPATH=f"{tmp_path}:{cli_env()['PYTHONPATH']}"))  # fmt: skip
    line = error_line(proc)
    assert "custom metric mymetrics:score: a custom metric is Python code" in line
    assert read_summary(term)["failure"] == "Permanent"
