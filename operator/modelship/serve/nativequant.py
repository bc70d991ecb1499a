"""Float inputs quantized for an integer input tensor by libmsjson (``msjson_quantize``): one pass, without the GIL.

:func:`quantize` is :func:`modelship.numerics.quantize` (same arguments, same values, NaN included) computed by the
native library that :mod:`modelship.serve.nativejson` loads, when it is there and the arrays suit it: ``x`` float32
in native byte order and C-contiguous (a binary body's bytes need not be aligned), ``out`` C-contiguous and aligned,
an int8, uint8 or int16 target. Otherwise (no library: ``$MODELSHIP_JSON_LIB=none``, another dtype, a strided view)
numpy computes it. numpy's five passes (multiply, NaN, round, add, clip, cast) hold the GIL between them; the
library makes one pass with the GIL released (ctypes), which the model server's workers do for every request's
input (~0.1 ms of a MobileNetV2 row).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import numerics
from . import nativejson

Array = npt.NDArray[Any]

#: target dtype -> the library's kind (msjson_read's numbering)
_KINDS: dict[np.dtype[Any], int] = {np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.uint8): 6}
_FLOAT32 = np.dtype(np.float32)
#: the library declines zero points past this (msjson.cpp's MAX_ZERO_POINT)
_MAX_ZERO_POINT = 1 << 20


def _bind(lib: nativejson.Library | None) -> Any | None:
    """The library's ``msjson_quantize``, typed; None without the library."""
    if lib is None:
        return None
    fn = lib.lib.msjson_quantize
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_float, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p]
    return fn


#: the native function, or None (tests set it to None to take numpy's path)
QUANTIZE = _bind(nativejson.LIBRARY)


def quantize(
    x: npt.ArrayLike, scale: float, zero_point: int, dtype: npt.DTypeLike, out: Array | None = None
) -> Array:
    """Real values -> the model's integer type: :func:`modelship.numerics.quantize`, natively when it can."""
    fn = QUANTIZE
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    target = np.dtype(dtype)
    kind = _KINDS.get(target)
    if (
        fn is None
        or kind is None
        or arr.dtype != _FLOAT32
        or not arr.flags.c_contiguous
        or not -_MAX_ZERO_POINT <= zero_point <= _MAX_ZERO_POINT
    ):
        return numerics.quantize(arr, scale, zero_point, target, out=out)
    if out is None:
        dest = np.empty(arr.shape, dtype=target)
    elif out.dtype == target and out.shape == arr.shape and out.flags.c_contiguous and out.flags.aligned:
        dest = out
    else:
        return numerics.quantize(arr, scale, zero_point, target, out=out)
    inv = np.float32(1.0) / np.float32(scale)  # numerics.quantize's reciprocal, to the bit
    if fn(arr.ctypes.data, arr.size, float(inv), int(zero_point), kind, dest.ctypes.data) != 0:
        return numerics.quantize(arr, scale, zero_point, target, out=out)
    return dest
