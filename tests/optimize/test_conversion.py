"""TFLite conversion of recurrent layers: the converter needs a static batch size for LSTM and GRU (converted with
batch size 1, names kept), and calibrating a GRU crashes it natively (refused with a clear error instead)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelship.api.optimization import QuantizeMode
from modelship.optimize.errors import OptimizeError

pytestmark = pytest.mark.slow


def _recurrent(layer: str) -> Any:
    from modelship.optimize import tfenv

    keras = tfenv.load().keras
    keras.utils.set_random_seed(0)
    inp = keras.layers.Input((16, 2), name="sequence")
    out = keras.layers.Dense(1, name="value")(getattr(keras.layers, layer)(8)(inp))
    return keras.Model(inp, out)


def test_lstm_is_converted_with_batch_size_one() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert

    model = _recurrent("LSTM")
    x = np.random.default_rng(0).normal(size=(20, 16, 2)).astype(np.float32)
    for mode in (None, QuantizeMode.INT8):
        blob = convert(tfenv.load(), keras_model=model, mode=mode, calibration={"sequence": x})
        it = Interpreter(model_content=blob)
        sig = it.get_signature_list()["serving_default"]
        assert sig == {"inputs": ["sequence"], "outputs": ["value"]}
        runner = it.get_signature_runner()
        assert list(runner.get_input_details()["sequence"]["shape"]) == [1, 16, 2]
        got = runner(sequence=x[:1])["value"]
        want = model.predict(x[:1], verbose=0)
        assert np.allclose(got, want, atol=0.05 if mode else 1e-5), (mode, got, want)


def test_gru_int8_is_refused_dynamic_converts() -> None:
    from modelship.optimize import tfenv
    from modelship.optimize.conversion import convert

    model = _recurrent("GRU")
    x = np.zeros((4, 16, 2), dtype=np.float32)
    with pytest.raises(OptimizeError, match=r"int8\) refused: calibrating GRU layers crashes the TFLite converter"):
        convert(tfenv.load(), keras_model=model, mode=QuantizeMode.INT8, calibration={"sequence": x})
    assert convert(tfenv.load(), keras_model=model, mode=QuantizeMode.DYNAMIC)[4:8] == b"TFL3"
