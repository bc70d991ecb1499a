"""TFLite conversion of recurrent layers. Rolled, the converter refuses an LSTM or GRU with a dynamic batch size,
and a fused LSTM traced with a static one keeps its state between invocations (a served model would answer from
the previous request). The optimizer converts them unrolled: stateless, dynamic batch, names kept. A SavedModel
that tf-keras wrote (keras_metadata.pb) takes the same path; one it cannot load (tf.saved_model.save, model.export)
is converted as a graph (serving_default only): a tf.while_loop converts stateless, a rolled LSTM is refused as
TFLite, never served stateful, and only measured when the SavedModel itself ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelship.api.optimization import QuantizeMode
from modelship.optimize.errors import OptimizeError

pytestmark = pytest.mark.slow


def _recurrent(layer: str, steps: int | None = 16) -> Any:
    from modelship.optimize import tfenv

    keras = tfenv.load().keras
    keras.utils.set_random_seed(0)
    inp = keras.layers.Input((steps, 2), name="sequence")
    rnn = keras.layers.RNN(keras.layers.LSTMCell(8)) if layer == "RNN" else getattr(keras.layers, layer)(8)
    out = keras.layers.Dense(1, name="value")(rnn(inp))
    return keras.Model(inp, out)


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "RNN"])
def test_recurrent_layers_convert_unrolled_and_stateless(layer: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert, recurrent_layers

    model = _recurrent(layer)
    assert recurrent_layers(model) == [model.layers[1].name]
    x = np.random.default_rng(0).normal(size=(20, 16, 2)).astype(np.float32)
    want = model.predict(x[:5], verbose=0)
    for mode in (None, QuantizeMode.INT8):
        blob = convert(tfenv.load(), keras_model=model, mode=mode, calibration={"sequence": x})
        it = Interpreter(model_content=blob)
        assert it.get_signature_list()["serving_default"] == {"inputs": ["sequence"], "outputs": ["value"]}
        runner = it.get_signature_runner()
        assert list(runner.get_input_details()["sequence"]["shape_signature"]) == [-1, 16, 2]  # dynamic batch
        first = runner(sequence=x[:1])["value"]
        again = runner(sequence=x[:1])["value"]
        np.testing.assert_array_equal(first, again)  # no state carried from one invocation to the next
        got = runner(sequence=x[:5])["value"]
        assert np.allclose(got, want, atol=0.05 if mode else 1e-5), (mode, got, want)
    assert recurrent_layers(model) == [model.layers[1].name]  # the input model is untouched


def test_a_recurrent_layer_the_optimizer_does_not_unroll_gets_keras_advice() -> None:
    """A tf-keras model is already loaded as tf-keras: the refusal tells it to unroll, not to save with model.save."""
    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert, recurrent_layers

    keras = tfenv.load().keras

    class Custom(keras.layers.LSTM):  # type: ignore[misc,name-defined]
        pass

    inp = keras.layers.Input((6, 2), name="sequence")
    model = keras.Model(inp, keras.layers.Dense(1, name="value")(Custom(4)(inp)))
    assert recurrent_layers(model) == []
    with pytest.raises(OptimizeError, match=r"refused; build the recurrent layers with unroll=True") as err:
        convert(tfenv.load(), keras_model=model)
    assert "model.save(DIR)" not in str(err.value)


def test_a_sequence_of_unknown_length_is_a_clear_error() -> None:
    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert

    with pytest.raises(OptimizeError, match=r"must be unrolled .* give the model's Input a fixed sequence length"):
        convert(tfenv.load(), keras_model=_recurrent("LSTM", steps=None))


# SavedModel inputs: the same model saved three ways, and a hand-written loop. Each is compared with the
# SavedModel's own answers for two different requests in a row, the first again, and a batch of 2.


def _served_like_the_savedmodel(blob: bytes, directory: Path, x: Any) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from modelship.optimize import tfenv

    fn = tfenv.load().tf.saved_model.load(str(directory)).signatures["serving_default"]
    (name,) = fn.structured_input_signature[1]
    (out,) = fn.structured_outputs
    want = fn(**{name: x[:2]})[out].numpy()
    runner = Interpreter(model_content=blob).get_signature_runner()
    assert list(runner.get_input_details()[name]["shape_signature"]) == [-1, *x.shape[1:]]  # dynamic batch
    first, second, again = (runner(**{name: x[i : i + 1]})[out] for i in (0, 1, 0))
    np.testing.assert_allclose(np.concatenate([first, second]), want, atol=1e-5)
    np.testing.assert_array_equal(first, again)  # no state carried from one request to the next
    np.testing.assert_allclose(runner(**{name: x[:2]})[out], want, atol=1e-5)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_a_keras_savedmodel_is_loaded_as_keras_and_converted_unrolled(layer: str, tmp_path: Path) -> None:
    from modelship.optimize import modelio, tfenv
    from modelship.optimize.variants import State, tflite_of

    directory = tmp_path / "saved"
    _recurrent(layer, steps=6).save(str(directory))  # tf-keras SavedModel format: keras_metadata.pb
    loaded = modelio.load_model(modelio.inspect_model(directory))
    assert loaded.keras is not None and not loaded.ptq_only
    assert (loaded.signature.input_names, loaded.signature.output_names) == (["sequence"], ["value"])
    blob = tflite_of(tfenv.load(), loaded, State(keras=loaded.keras))
    x = np.random.default_rng(1).normal(size=(2, 6, 2)).astype(np.float32)
    _served_like_the_savedmodel(blob, directory, x)


ROLLED = r"rolled recurrent loop over a TensorList, standard_lstm \(in model\S*/lstm\S*\)"


@pytest.mark.parametrize(
    ("how", "batch", "refusal"),
    [
        ("tf.saved_model.save", None, ROLLED),
        ("export", None, ROLLED),
        ("export", 1, r"keeps state between invocations in UNIDIRECTIONAL_SEQUENCE_LSTM"),
    ],
    ids=["saved_model.save", "export", "export-batch-1"],
)
def test_a_rolled_lstm_in_a_savedmodel_without_keras_metadata_is_refused(
    how: str, batch: int | None, refusal: str, tmp_path: Path
) -> None:
    """Without keras_metadata.pb tf-keras cannot load it: the converter either fails on the TensorList loop (a
    dynamic batch) or, with a static batch, fuses the LSTM into an op whose state outlives the request."""
    from modelship.optimize import modelio, tfenv
    from modelship.optimize.variants import State, tflite_of

    t = tfenv.load()
    keras = t.keras
    keras.utils.set_random_seed(0)
    inp = keras.layers.Input((6, 2), batch_size=batch, name="sequence")
    model = keras.Model(inp, keras.layers.Dense(1, name="value")(keras.layers.LSTM(4)(inp)))
    directory = tmp_path / "saved"
    if how == "export":
        model.export(str(directory))
    else:
        t.tf.saved_model.save(model, str(directory))
    loaded = modelio.load_model(modelio.inspect_model(directory))
    assert loaded.ptq_only
    advice = r".*refused; save the tf-keras model with model.save\(DIR\)"
    with pytest.raises(OptimizeError, match=refusal + advice) as e:
        tflite_of(t, loaded, State(keras=None))
    if batch is not None:  # the fused op's cause, not a variable's
        assert "in UNIDIRECTIONAL_SEQUENCE_LSTM (a fused recurrent op traced with a static batch size)" in str(e.value)
        assert "assigns a resource variable" not in str(e.value)


def test_a_while_loop_savedmodel_converts_stateless_with_a_dynamic_batch(tmp_path: Path) -> None:
    """A tf.Module whose signature runs an LSTM cell in a tf.while_loop over time becomes a TFLite WHILE loop:
    stateless, dynamic batch, the SavedModel's answers."""
    from modelship.optimize import modelio, tfenv
    from modelship.optimize.conversion import stateful_ops
    from modelship.optimize.variants import State, tflite_of

    t = tfenv.load()
    tf = t.tf
    t.keras.utils.set_random_seed(0)

    class Recurrent(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.cell = t.keras.layers.LSTMCell(4)
            self.cell.build((None, 2))
            self.head = tf.Variable(tf.random.normal((4, 1)))

        @tf.function(input_signature=[tf.TensorSpec([None, 6, 2], tf.float32, name="sequence")])  # type: ignore[misc]
        def serve(self, sequence: Any) -> dict[str, Any]:
            steps = tf.transpose(sequence, [1, 0, 2])
            zeros = tf.zeros((tf.shape(sequence)[0], 4))

            def step(i: Any, h: Any, c: Any) -> tuple[Any, Any, Any]:
                _, (h, c) = self.cell(steps[i], [h, c])
                return i + 1, h, c

            _, h, _ = tf.while_loop(lambda i, h, c: i < 6, step, (0, zeros, zeros))
            return {"value": h @ self.head}

    module = Recurrent()
    directory = tmp_path / "saved"
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    loaded = modelio.load_model(modelio.inspect_model(directory))
    blob = tflite_of(t, loaded, State(keras=None))
    assert stateful_ops(blob) == []
    x = np.random.default_rng(1).normal(size=(2, 6, 2)).astype(np.float32)
    _served_like_the_savedmodel(blob, directory, x)


def test_a_savedmodel_that_assigns_a_variable_per_call_is_refused(tmp_path: Path) -> None:
    """A signature that changes a variable on each call (a counter) converts to ASSIGN_VARIABLE: every request would
    see the previous ones' changes, so it is refused; a variable it only reads is frozen and converts."""
    from modelship.optimize import modelio, tfenv
    from modelship.optimize.conversion import VARIABLE_ADVICE, stateful_ops
    from modelship.optimize.variants import State, tflite_of

    t = tfenv.load()
    tf = t.tf

    class Counting(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self, assign: bool) -> None:
            super().__init__()
            self.assign = assign
            self.count = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[misc]
        def serve(self, x: Any) -> dict[str, Any]:
            if self.assign:
                self.count.assign_add(1.0)
            return {"y": x * self.count}

    for assign in (True, False):
        module = Counting(assign)
        directory = tmp_path / f"saved-{assign}"
        tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
        loaded = modelio.load_model(modelio.inspect_model(directory))
        if assign:  # refused by its cause (no recurrent layer: unrolling, or model.save, would not help)
            with pytest.raises(OptimizeError) as refused:
                tflite_of(t, loaded, State(keras=None))
            message = str(refused.value)
            assert ("keeps state between invocations in ASSIGN_VARIABLE (the serving function assigns a resource "
                    "variable), so ") in message, message  # fmt: skip
            assert message.endswith(f"refused; {VARIABLE_ADVICE}"), message
            assert "recurrent" not in message and "unroll" not in message, message
        else:
            assert stateful_ops(tflite_of(t, loaded, State(keras=None))) == []


def test_a_second_signature_that_assigns_a_variable_is_not_converted(tmp_path: Path) -> None:
    """Only serving_default is served and converted: a reset signature that assigns the variable serving_default
    reads does not refuse the model, and the variable is frozen at its saved value."""
    from ai_edge_litert.interpreter import Interpreter

    from modelship.optimize import modelio, tfenv
    from modelship.optimize.conversion import stateful_ops
    from modelship.optimize.variants import State, tflite_of

    t = tfenv.load()
    tf = t.tf

    class Resettable(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[misc]
        def predict(self, x: Any) -> dict[str, Any]:  # not `serve`: TF would take it for a model.export artifact
            return {"y": x * self.scale}

        @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="value")])  # type: ignore[misc]
        def reset(self, value: Any) -> dict[str, Any]:
            self.scale.assign(value)
            return {"scale": self.scale.read_value()}

    module = Resettable()
    directory = tmp_path / "saved"
    signatures = {"serving_default": module.predict, "reset_state": module.reset}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    loaded = modelio.load_model(modelio.inspect_model(directory))
    blob = tflite_of(t, loaded, State(keras=None))
    assert stateful_ops(blob) == []
    it = Interpreter(model_content=blob)
    assert it.get_signature_list() == {"serving_default": {"inputs": ["x"], "outputs": ["y"]}}
    x = np.array([[1.0, 2.0]], np.float32)
    np.testing.assert_allclose(it.get_signature_runner()(x=x)["y"], x * 3.0)


def _stateful_export(directory: Path) -> None:
    """A rolled LSTM with a static batch, saved with model.export: tf-keras cannot load it."""
    from modelship.optimize import tfenv

    keras = tfenv.load().keras
    keras.utils.set_random_seed(0)
    inp = keras.layers.Input((6, 2), batch_size=1, name="sequence")
    keras.Model(inp, keras.layers.Dense(1, name="value")(keras.layers.LSTM(4)(inp))).export(str(directory))


@pytest.mark.parametrize("export", ["savedmodel", "tflite"])
def test_a_stateful_conversion_is_refused_only_when_the_tflite_ships(export: str, tmp_path: Path) -> None:
    """The SavedModel ships as a SavedModel (the TF runtime serves it, stateless): its stateful TFLite conversion is
    only measured, with a note; exported as TFLite, the same model is refused."""
    import json

    from modelship.api.report import Report

    from .conftest import error_line, run_cli

    _stateful_export(tmp_path / "saved")
    opt = json.dumps({"enabled": False, "export": {"format": export}})
    out = tmp_path / "o"
    proc = run_cli("--model", str(tmp_path / "saved"), "--optimization-json", opt, "--out", str(out),
                   "--termination-log", str(tmp_path / "t"), "--latency-seconds", "0.1")  # fmt: skip
    if export == "tflite":
        assert "keeps state between invocations in UNIDIRECTIONAL_SEQUENCE_LSTM" in error_line(proc)
        assert not (out / "model.tflite").exists()
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Report.model_validate_json((out / "report.json").read_text())
    assert (out / "saved_model" / "saved_model.pb").is_file() and not (out / "model.tflite").exists()
    assert any("keeps state between invocations (measured only: the SavedModel ships)" in n for n in report.notes)
    assert report.baseline.raw_bytes


def test_a_refusal_for_both_causes_names_each_with_its_advice() -> None:
    """A model with a fused recurrent op and a variable its serving function assigns: each cause with its advice."""
    from modelship.optimize.conversion import KERAS_RECURRENT_ADVICE, VARIABLE_ADVICE, stateful_refusal

    message = stateful_refusal("float32", ["ASSIGN_VARIABLE", "UNIDIRECTIONAL_SEQUENCE_LSTM"], KERAS_RECURRENT_ADVICE)
    assert message == (
        "TFLite conversion (float32): the converted model keeps state between invocations in "
        "UNIDIRECTIONAL_SEQUENCE_LSTM (a fused recurrent op traced with a static batch size) and ASSIGN_VARIABLE "
        "(the serving function assigns a resource variable), so a served model would answer each request from the "
        f"previous one's state: refused; {KERAS_RECURRENT_ADVICE}; {VARIABLE_ADVICE}"
    )


def test_a_keras_layer_that_assigns_a_variable_is_refused_with_keras_advice() -> None:
    """A tf-keras model is converted from its call() (no signatures): a layer that assigns a variable there (a
    counter) is refused with advice about the layer (stateful=False, or the state as an input and an output),
    not about a serving_default signature it does not have."""
    from modelship.optimize import tfenv
    from modelship.optimize.conversion import KERAS_VARIABLE_ADVICE, VARIABLE_ADVICE, StatefulModel, convert

    t = tfenv.load()
    keras = t.keras

    class Counting(keras.layers.Layer):  # type: ignore[misc,name-defined]
        def build(self, input_shape: Any) -> None:
            self.count = self.add_weight(name="count", shape=(), initializer="ones", trainable=False)

        def call(self, x: Any) -> Any:
            self.count.assign_add(1.0)
            return x * self.count

    inputs = keras.Input(shape=(2,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1)(Counting()(inputs)))
    with pytest.raises(StatefulModel) as refused:
        convert(t, keras_model=model)
    message = str(refused.value)
    assert "ASSIGN_VARIABLE (the serving function assigns a resource variable)" in message, message
    assert message.endswith(f"refused; {KERAS_VARIABLE_ADVICE}"), message
    assert VARIABLE_ADVICE not in message and "serving_default" not in message, message
