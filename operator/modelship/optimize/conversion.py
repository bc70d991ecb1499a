"""TFLite conversion with tf.lite.TFLiteConverter: float32, post-training quantization (dynamic, float16, int8,
int16x8, calibrated on representative rows) and the QAT export; the TFLite signature keeps the original model's
input and output names."""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..api.optimization import QuantizeMode, QuantizeParams
from .errors import OptimizeError, first_line
from .signature import Features, count, rows
from .tfenv import TF, quiet_native_stderr

RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN")
"""Keras recurrent layers the TFLite converter cannot take as they are (RNN: the generic layer over a cell, such
as RNN(LSTMCell(n)))."""

SERVING_SIGNATURE = "serving_default"
"""The SavedModel signature that is served and converted (modelio requires it)."""

RESOURCE_OPS = frozenset({"ASSIGN_VARIABLE"})
"""TFLite ops that change a resource variable, which the next invocation reads (a variable only read, as a table
initialized once by CALL_ONCE, carries nothing from one request to the next)."""

RECURRENT_ADVICE = (
    "save the tf-keras model with model.save(DIR) (its keras_metadata.pb lets the optimizer load it as tf-keras "
    "and convert the recurrent layers unrolled), or export it with unroll=True over a fixed sequence length"
)
"""What to do about a SavedModel tf-keras cannot load (tf.saved_model.save, model.export)."""

KERAS_RECURRENT_ADVICE = (
    "build the recurrent layers with unroll=True and give the model's Input a fixed sequence length (the optimizer "
    "unrolls only the Keras LSTM, GRU, SimpleRNN and RNN layers by itself)"
)
"""What to do about a tf-keras model (already loaded as tf-keras: saving it again would not help)."""

VARIABLE_ADVICE = (
    "keep the state out of the serving_default signature (take it as an input and return it as an output), or "
    "assign the variable in another signature (only serving_default is converted and served)"
)
"""What to do about a serving function that assigns a resource variable (a counter, a running statistic): not a
recurrent layer's doing, so unrolling would not help."""

KERAS_VARIABLE_ADVICE = (
    "a layer assigns a variable in call() (a stateful=True recurrent layer, a counter, a running statistic): build "
    "it with stateful=False, or take the state as an input and return it as an output"
)
"""The same about a tf-keras model: converted from the model's call() (it has no signatures), so the advice about
serving_default would not apply."""


class StatefulModel(OptimizeError):
    """The converted model keeps state between invocations; ``tflite`` is the conversion. It must not ship, but a
    run that ships the SavedModel (served by the TF runtime, stateless) may still measure it."""

    def __init__(self, message: str, tflite: bytes) -> None:
        super().__init__(message)
        self.tflite = tflite


def representative(x: Features, n: int) -> Features:
    """Evenly spaced samples over the whole set (sorted data keeps its ends), the same rows of every input."""
    n = max(1, min(n, count(x)))
    idx = np.unique(np.linspace(0, count(x) - 1, n).round().astype(np.int64))
    return rows(x, idx)


def _calibration_samples(calibration: Features) -> Callable[[], Any]:
    """The converter's representative_dataset: one row at a time, a list for one input, by name for several."""
    arrays = {name: a.astype(np.float32, copy=False) if a.dtype.kind == "f" else a for name, a in calibration.items()}
    n = count(arrays)
    if len(arrays) == 1:
        only = next(iter(arrays.values()))
        return lambda: ([only[i : i + 1]] for i in range(n))
    return lambda: (rows(arrays, slice(i, i + 1)) for i in range(n))


def _keras_converter(tf: Any, model: Any, output_names: Sequence[str] | None) -> Any:
    """A converter for a tf-keras model whose TFLite signature names the outputs ``output_names``.

    from_keras_model names them after the output layers, and wrappers rename those (quant_score for score), so a
    renamed model is traced with its inputs and outputs named as the original's.
    """
    if output_names is None or list(model.output_names) == list(output_names):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    names = list(output_names)
    specs = {
        name: tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=name)
        for name, tensor in zip(model.input_names, model.inputs, strict=True)
    }

    @tf.function(input_signature=[specs])  # type: ignore[untyped-decorator]
    def serving(inputs: dict[str, Any]) -> dict[str, Any]:
        args = [inputs[name] for name in model.input_names]
        outs = model(args if len(args) > 1 else args[0], training=False)
        return dict(zip(names, outs if isinstance(outs, list | tuple) else [outs], strict=True))

    return tf.lite.TFLiteConverter.from_concrete_functions([serving.get_concrete_function()], model)


def recurrent_layers(model: Any) -> list[str]:
    """Names of the recurrent layers (also inside wrappers such as Bidirectional) that are not unrolled."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "cell"):  # a nested model
            found += recurrent_layers(layer)
            continue
        config = layer.get_config()
        inner = [config, *(config.get(k, {}).get("config", {}) for k in ("layer", "backward_layer"))]
        kinds = [type(layer).__name__, *(config.get(k, {}).get("class_name") for k in ("layer", "backward_layer"))]
        if any(kind in RECURRENT for kind in kinds) and any(c.get("unroll") is False for c in inner):
            found.append(layer.name)
    return found


def unrolled(t: TF, model: Any) -> Any:
    """A copy of the model with its recurrent layers unrolled over their time steps, same weights and names.

    The TFLite converter turns a rolled LSTM or GRU into a TensorList loop that needs a static batch size, and a
    fused LSTM traced with one keeps its state between invocations (a served model would answer from the
    previous request's state). Unrolled, they become plain stateless ops with a dynamic batch.
    """

    def unroll(config: Any) -> Any:
        if isinstance(config, dict):
            return {k: True if k == "unroll" else unroll(v) for k, v in config.items()}
        return config

    def clone(layer: Any) -> Any:
        if layer.name not in names:
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config(unroll(layer.get_config()))

    names = set(recurrent_layers(model))
    try:
        copy = t.keras.models.clone_model(model, clone_function=clone)
        copy.set_weights(model.get_weights())
    except Exception as exc:  # e.g. a time dimension of unknown length cannot be unrolled
        raise OptimizeError(
            f"TFLite conversion: recurrent layers {', '.join(sorted(names))} must be unrolled for the TFLite "
            f"converter, which failed ({first_line(exc)}); give the model's Input a fixed sequence length"
        ) from None
    return copy


def convert(
    t: TF,
    *,
    keras_model: Any | None = None,
    saved_model_dir: Path | None = None,
    mode: QuantizeMode | None = None,
    params: QuantizeParams | None = None,
    calibration: Features | None = None,
    per_tensor: str | None = None,
    output_names: Sequence[str] | None = None,
) -> bytes:
    """Convert with tf.lite.TFLiteConverter: float32 (mode None) or post-training quantization / QAT export.

    ``per_tensor``: "dense" quantizes Dense kernels per tensor, "all" every kernel (by default kernels are
    quantized per output channel, which maps one shared cluster value to a different integer in every row).
    ``output_names``: the original model's output names, which the TFLite signature keeps (QAT renames outputs).
    A tf-keras model's recurrent layers are converted unrolled (see :func:`unrolled`). A SavedModel is converted as
    a graph, its serving_default signature only (the one served; another may assign variables, as a reset_state).
    A rolled recurrent loop the converter cannot lower is refused with what to do instead, the advice by path; a
    result that keeps state between invocations (:func:`stateful_ops`) raises :class:`StatefulModel`, which the
    baseline measurement of a run that ships the SavedModel accepts.
    """
    tf = t.tf
    what = mode.value if mode is not None else "float32"
    if mode in (QuantizeMode.INT8, QuantizeMode.INT16X8) and (calibration is None or count(calibration) == 0):
        raise OptimizeError(f"{mode.value} quantization needs calibration data (data.calibration)")
    if keras_model is not None:
        if recurrent_layers(keras_model):
            output_names = output_names or list(keras_model.output_names)
            keras_model = unrolled(t, keras_model)
        c = _keras_converter(tf, keras_model, output_names)
        advice, variable_advice = KERAS_RECURRENT_ADVICE, KERAS_VARIABLE_ADVICE
    elif saved_model_dir is not None:
        # only the signature that is served: another one (a train or reset_state function) may assign variables
        c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SERVING_SIGNATURE])
        advice, variable_advice = RECURRENT_ADVICE, VARIABLE_ADVICE
    else:
        raise ValueError("convert needs a model")
    try:
        blob = _run(tf, c, mode, params, calibration, per_tensor)
    except Exception as exc:
        reason = _tensor_list_loop(str(exc), advice) or first_line(exc)
        raise OptimizeError(f"TFLite conversion ({what}) failed: {reason}") from None
    if stateful := stateful_ops(blob):
        raise StatefulModel(stateful_refusal(what, stateful, advice, variable_advice), blob)
    return blob


def stateful_refusal(
    what: str, ops: Sequence[str], recurrent_advice: str, variable_advice: str = VARIABLE_ADVICE
) -> str:
    """Why a converted model that keeps state between invocations (``ops``: :func:`stateful_ops`) is refused and
    what to do, by cause: a fused recurrent op (its state in variable tensors: ``recurrent_advice``, by path) or a
    serving function that assigns a resource variable (``variable_advice``, by path: ``VARIABLE_ADVICE`` for a
    SavedModel's serving_default, ``KERAS_VARIABLE_ADVICE`` for a tf-keras model's call()); both when both are
    there."""
    fused = [op for op in ops if op not in RESOURCE_OPS]
    assigned = [op for op in ops if op in RESOURCE_OPS]
    causes, advice = [], []
    if fused:
        causes.append(f"{', '.join(fused)} (a fused recurrent op traced with a static batch size)")
        advice.append(recurrent_advice)
    if assigned:
        causes.append(f"{', '.join(assigned)} (the serving function assigns a resource variable)")
        advice.append(variable_advice)
    return (
        f"TFLite conversion ({what}): the converted model keeps state between invocations in {' and '.join(causes)}, "
        f"so a served model would answer each request from the previous one's state: refused; {'; '.join(advice)}"
    )


def _tensor_list_loop(message: str, advice: str) -> str | None:
    """A readable account of the converter's failure on a rolled recurrent loop (a TensorList the converter can
    lower only with a static batch size), naming the function and layer; None for any other failure."""
    if "TensorList" not in message:
        return None
    function = re.search(r"__inference_(\w+?)_\d+", message)
    layer = re.search(r'"([\w./-]+)/PartitionedCall@', message)
    where = function.group(1) if function else "a while loop"
    if layer:
        where += f" (in {layer.group(1)})"
    return (
        f"the serving function runs a rolled recurrent loop over a TensorList, {where}, which the TFLite converter "
        "takes only with a static batch size, and then as a fused op that keeps its state between requests: "
        f"refused; {advice}"
    )


def stateful_ops(blob: bytes) -> list[str]:
    """The ops of a TFLite flatbuffer that carry state from one invocation to the next: those that read or write a
    variable tensor (the state inputs of a fused UNIDIRECTIONAL_SEQUENCE_LSTM) and those that assign a resource
    variable."""
    schema: Any = importlib.import_module("tensorflow.lite.python.schema_py_generated")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(blob, 0)  # read in place: the weight buffers are never copied
    found: set[str] = set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        variable = {i for i in range(graph.TensorsLength()) if graph.Tensors(i).IsVariable()}
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            inputs = {int(op.Inputs(i)) for i in range(op.InputsLength())}
            if name in RESOURCE_OPS or inputs & variable:
                found.add(name)
    return sorted(found)


def _run(
    tf: Any,
    c: Any,
    mode: QuantizeMode | None,
    params: QuantizeParams | None,
    calibration: Features | None,
    per_tensor: str | None,
) -> bytes:
    """Set the converter up for the mode and convert."""
    if mode is not None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == QuantizeMode.FLOAT16:
        c.target_spec.supported_types = [tf.float16]
    elif mode in (QuantizeMode.INT8, QuantizeMode.INT16X8) and calibration is not None:
        c.representative_dataset = _calibration_samples(calibration)
        if mode == QuantizeMode.INT16X8:
            c.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        elif params is not None and params.integer_only:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
    if per_tensor is not None and mode in (QuantizeMode.DYNAMIC, QuantizeMode.INT8, QuantizeMode.INT16X8):
        if per_tensor == "all":
            c._experimental_disable_per_channel = True
        c._experimental_disable_per_channel_quantization_for_dense_layers = True
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(c.convert())
