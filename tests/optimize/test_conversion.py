"""TFLite conversion of recurrent layers. Rolled, the converter refuses an LSTM or GRU with a dynamic batch size,
and a fused LSTM traced with a static one keeps its state between invocations (a served model would answer from
the previous request). The optimizer converts them unrolled: stateless, dynamic batch, names kept."""

from __future__ import annotations

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
    out = keras.layers.Dense(1, name="value")(getattr(keras.layers, layer)(8)(inp))
    return keras.Model(inp, out)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
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


def test_a_sequence_of_unknown_length_is_a_clear_error() -> None:
    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert

    with pytest.raises(OptimizeError, match=r"must be unrolled .* give the model's Input a fixed sequence length"):
        convert(tfenv.load(), keras_model=_recurrent("LSTM", steps=None))
