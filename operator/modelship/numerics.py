"""TFLite numerics shared by the optimizer and the model server: quantization at the interpreter's edge, and
creating and running LiteRT interpreters.

The optimizer's accuracy gate and the model server both go through this module, so the gate measures with the
arithmetic production serves (``tests/serve/test_numerics.py`` feeds the same tensors through both paths and
requires identical bytes into the interpreter). It imports nothing from modelship: the standard library,
numpy, and LiteRT lazily (the serving image has no TensorFlow).

Rounding, float -> integer (a model with int8/int16 input tensors, quantized by the caller): we do what LiteRT
itself executes for a model's own ``QUANTIZE`` op with its default kernels — multiply by the float32
reciprocal of the scale, round half to even, add the zero point, saturate. Measured on ai-edge-litert 2.3
(x86-64) for int8 (symmetric and asymmetric) and int16, with and without the XNNPACK delegate, on exact ties
of both ``x / scale`` and ``x * (1 / scale)``; XNNPACK's f32 -> qs8 conversion is the same arithmetic. The
*reference* kernel (``tensorflow/lite/kernels/internal/reference/quantize.h``, selected only with
``OpResolverType.BUILTIN_REF``) rounds ``x / scale`` half away from zero instead; it is not what runs.
A test checks :func:`quantize` against LiteRT's own QUANTIZE kernel, so a runtime that changes this fails it.

Integer -> float: ``(q - zero_point) * scale`` in float32, identical to LiteRT's ``DEQUANTIZE`` (the product of a
16-bit integer and a float32 is exact in double, so float32 and double arithmetic round it the same way).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


# ---------------------------------------------------------------------------------------------
# quantization


def quantize(
    x: npt.ArrayLike, scale: float, zero_point: int, dtype: npt.DTypeLike, out: Array | None = None
) -> Array:
    """Real values -> the model's integer type, as LiteRT's QUANTIZE kernel computes it (see the module doc).

    With ``out`` (an array of ``dtype`` and ``x``'s shape, e.g. a view of an interpreter's input tensor), the
    result is written there and ``out`` is returned.

    NaN has no integer: it is quantized as 0.0, i.e. to the zero point, on every platform. (LiteRT leaves it
    undefined: its kernels cast NaN to an integer, whatever that gives on the CPU at hand.) The model server's
    native path (:func:`modelship.serve.nativequant.quantize`, libmsjson's ``msjson_quantize``) computes the same
    values, NaN included; ``tests/serve/test_nativequant.py`` holds the two to it.
    """
    out_dtype = np.dtype(dtype)
    info = np.iinfo(out_dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # a product past float32 saturates; inf * 0 is NaN
        v = np.asarray(x, dtype=np.float32) * (np.float32(1.0) / np.float32(scale))
        nan = np.isnan(v)
        if nan.any():
            v[nan] = 0.0
        np.rint(v, out=v)
        v += np.float32(zero_point)
        np.clip(v, info.min, info.max, out=v)
        if out is None:
            return v.astype(out_dtype)
        np.copyto(out, v, casting="unsafe")
        return out


def dequantize(q: npt.ArrayLike, scale: float, zero_point: int) -> Array:
    """The model's integer values -> float32, as LiteRT's DEQUANTIZE kernel computes them."""
    v = np.asarray(q).astype(np.float32)
    v -= np.float32(zero_point)
    v *= np.float32(scale)
    return v


def affine(detail: Mapping[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of an integer interpreter tensor, None for a float or unquantized one.

    ``detail`` is one entry of ``get_input_details()``/``get_output_details()`` (or a signature runner's).
    """
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return None
    return float(scale), int(zero_point)


def quantize_input(x: npt.ArrayLike, detail: Mapping[str, Any]) -> Array:
    """What to set into an interpreter input: float values quantized (integer tensors) or cast (float ones)."""
    dtype = np.dtype(detail["dtype"])
    arr = np.asarray(x)
    if arr.dtype == dtype:
        return arr
    params = affine(detail)
    if params is None:
        return arr.astype(dtype)
    return quantize(arr, params[0], params[1], dtype)


def dequantize_output(y: Array, detail: Mapping[str, Any]) -> Array:
    """An interpreter output as float32 (dequantized when the tensor is quantized)."""
    params = affine(detail)
    if params is None:
        return y.astype(np.float32, copy=False)
    return dequantize(y, *params)


# ---------------------------------------------------------------------------------------------
# interpreters


def interpreter_class() -> Any:
    """LiteRT's ``Interpreter`` (``ai_edge_litert``), or TensorFlow's copy in an image that only has TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - images with full TensorFlow only
        from tensorflow.lite.python.interpreter import Interpreter
    return Interpreter


def new_interpreter(content: bytes, threads: int = 1, *, allocate: bool = True) -> Any:
    """An interpreter for a flatbuffer with ``threads`` intra-op threads (tensors allocated unless told)."""
    it = interpreter_class()(model_content=content, num_threads=max(1, threads))
    if allocate:
        it.allocate_tensors()
    return it


class InvokeMeter:
    """CPU seconds spent inside ``invoke()`` by one thread (plus how many calls). Not shared between threads.

    Reading a thread's CPU clock is a system call (microseconds in a VM): for a model whose invoke() takes about
    that long, ``sample_every`` > 1 times one call in that many and counts it that many times (an unbiased
    estimate of the total, instead of a measurement that costs as much as what it measures).
    """

    __slots__ = ("calls", "cpu_seconds", "sample_every", "threads")

    def __init__(self, threads: int = 1, sample_every: int = 1) -> None:
        #: intra-op threads of the interpreters this meter times; with more than one, thread CPU time of the
        #: caller undercounts the pool, so wall time x threads is counted instead (an upper bound)
        self.threads = max(1, threads)
        self.sample_every = max(1, sample_every)
        self.cpu_seconds = 0.0
        self.calls = 0


def run(interp: Any, feeds: Mapping[int, Array], fetch: Iterable[int], meter: InvokeMeter | None = None) -> list[Array]:
    """Set the inputs (already in the tensors' dtypes), invoke, and return copies of the outputs.

    With a ``meter``, the CPU time of ``invoke()`` alone is added to it.
    """
    for index, value in feeds.items():
        interp.set_tensor(index, value)
    if meter is None:
        interp.invoke()
    elif meter.calls % meter.sample_every:
        meter.calls += 1
        interp.invoke()
    elif meter.threads == 1:
        t0 = time.thread_time()
        interp.invoke()
        meter.cpu_seconds += (time.thread_time() - t0) * meter.sample_every
        meter.calls += 1
    else:
        w0 = time.perf_counter()
        interp.invoke()
        meter.cpu_seconds += (time.perf_counter() - w0) * meter.threads * meter.sample_every
        meter.calls += 1
    return [interp.get_tensor(i) for i in fetch]
