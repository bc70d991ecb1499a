"""Tensor specs and conversions between wire formats (JSON, base64, OIP binary) and numpy arrays.

Datatype names are the Open Inference Protocol's (``FP32``, ``INT8``, ``BYTES``...). A :class:`TensorSpec`
describes one input or output as the *caller* sees it (its logical datatype); a quantized int8 tensor is
advertised as ``FP32`` and carries the :class:`Quantization` used to convert at the interpreter boundary.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import numerics
from .errors import BadRequest

Array = npt.NDArray[Any]

#: OIP datatype -> numpy dtype. BYTES is an object array of ``bytes``.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

#: OIP datatype -> TensorFlow DataType enum name (TF Serving metadata).
TF_DTYPES: dict[str, str] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}

_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_INT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})


def datatype_of(dtype: npt.DTypeLike) -> str:
    """The OIP datatype name of a numpy dtype (strings and objects map to BYTES)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate == dt:
            return name
    raise ValueError(f"unsupported dtype {dt}")


@dataclass(frozen=True, slots=True)
class Quantization:
    """Affine quantization of an integer tensor: ``real = (q - zero_point) * scale``."""

    scale: float
    zero_point: int
    datatype: str  # the integer datatype inside the model (INT8, UINT8, INT16)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output as the caller sees it."""

    name: str
    datatype: str  # logical datatype the caller sends / receives
    shape: tuple[int, ...]  # -1 marks a dynamic dimension
    tensor_name: str = ""  # the tensor's own name inside the model (TF Serving metadata)
    quantization: Quantization | None = None

    @property
    def raw_datatype(self) -> str:
        """Datatype the model itself consumes/produces."""
        return self.quantization.datatype if self.quantization else self.datatype

    def accepts(self, datatype: str) -> bool:
        """Whether a request may send this input with ``datatype``."""
        if datatype == self.datatype or datatype == self.raw_datatype:
            return True
        if self.datatype in _FLOAT_TYPES:
            return datatype in _FLOAT_TYPES or datatype in _INT_TYPES
        if self.datatype in _INT_TYPES:
            return datatype in _INT_TYPES or datatype == "BOOL"
        return False

    def check_shape(self, shape: Sequence[int], what: str = "") -> None:
        """Raise BadRequest unless ``shape`` matches this spec (``-1`` matches anything)."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            raise BadRequest(
                f"input '{self.name}'{what} has shape {list(shape)} but the model expects {_fmt_shape(self.shape)}"
            )


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join("-1" if d < 0 else str(d) for d in shape) + "]"


# ---------------------------------------------------------------------------------------------
# JSON values -> numpy


def _decode_b64(value: Any) -> bytes:
    if isinstance(value, dict) and len(value) == 1 and "b64" in value and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"invalid base64 value: {e}") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise BadRequest(f"expected a string or {{'b64': ...}} but got {type(value).__name__}")


def _bytes_array(value: Any) -> Array:
    """Nested lists of strings / {"b64": ...} -> object array of bytes."""

    def walk(v: Any, depth: int) -> Any:
        if depth > 32:
            raise BadRequest("string tensor is nested too deeply")
        if isinstance(v, list):
            return [walk(x, depth + 1) for x in v]
        return _decode_b64(v)

    nested = walk(value, 0)
    try:
        # Build the shape from the nested lists without letting numpy look inside bytes.
        shape: list[int] = []
        probe = nested
        while isinstance(probe, list):
            shape.append(len(probe))
            if not probe:
                break
            probe = probe[0]
        out = np.empty(tuple(shape), dtype=np.object_)
        flat: list[bytes] = []

        def flatten(v: Any, depth: int) -> None:
            if depth == len(shape):
                if isinstance(v, list):
                    raise ValueError("ragged")
                flat.append(v)
                return
            if not isinstance(v, list) or len(v) != shape[depth]:
                raise ValueError("ragged")
            for x in v:
                flatten(x, depth + 1)

        flatten(nested, 0)
        out.reshape(-1)[:] = flat
        return out
    except ValueError:
        raise BadRequest("string tensor is ragged: every list at one depth must have the same length") from None


#: what a JSON number may consist of: deleting these from a numeric array's text leaves its skeleton
_NUMBER_CHARS = b"0123456789+-.eE"


def _skeleton(shape: Sequence[int]) -> bytes:
    """The minified JSON of a regular nested array of ``shape`` with its numbers deleted: ``[,]`` for (2,)."""
    inner = b"[" + b"," * (shape[-1] - 1) + b"]" if shape[-1] > 0 else b"[]"
    for d in reversed(shape[:-1]):
        inner = b"[" + b",".join([inner] * d) + b"]" if d > 0 else b"[]"
    return inner


class FastData:
    """A JSON array left unparsed by the fast path (pysimdjson): read straight into a numeric buffer when its
    elements are all numbers and its nesting is regular, else converted to Python lists for the checked path.

    A nested array is regular (not ragged) when its minified text, numbers deleted, is the skeleton of the shape
    its first elements show: one comparison of bytes instead of a Python walk of every level.
    """

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def numeric(self, datatype: str) -> Array | None:
        """The values as float64, int64 or uint64 in their nested shape; None when the checked path must decide
        (anything but numbers, a ragged or empty nesting, fractions for integers, BOOL and BYTES)."""
        kind = "d" if datatype in _FLOAT_TYPES else "u" if datatype == "UINT64" else "i"
        if datatype in ("BOOL", "BYTES"):
            return None
        shape: list[int] = []
        probe = self.array
        try:
            while hasattr(probe, "as_buffer"):  # a (simdjson) array: one more level
                shape.append(len(probe))
                if not shape[-1] or len(shape) > 32:
                    return None  # empty or absurdly deep: the checked path explains
                probe = probe[0]
            if not isinstance(probe, int | float) or isinstance(probe, bool):
                return None
            if len(shape) > 1 and self.array.mini.translate(None, _NUMBER_CHARS) != _skeleton(shape):
                return None  # ragged, or something other than numbers inside
            buf = self.array.as_buffer(of_type=kind)
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError):
            return None  # mixed, nulls, strings, objects, fractions for integers: let the checked path explain
        flat = np.frombuffer(buf, dtype={"d": np.float64, "u": np.uint64, "i": np.int64}[kind])
        if flat.size != math.prod(shape):
            return None
        return flat.reshape(shape)

    def as_list(self) -> Any:
        return self.array.as_list()


@dataclass(frozen=True, slots=True)
class NativeArray:
    """Tensor data libmsjson read (:mod:`modelship.serve.nativejson`): already in ``datatype``'s dtype, in the
    nested shape of its JSON, every value exactly what the checked path would make of it."""

    array: Array
    datatype: str

    def __len__(self) -> int:
        return len(self.array)


def _only_numbers(probe: Array) -> bool:
    """An object array of Python numbers only (integers beyond 64 bits mixed with others), no str/None/bool."""
    return probe.dtype.kind == "O" and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in probe.reshape(-1)
    )


def json_to_array(value: Any, datatype: str, what: str) -> Array:
    """Convert a JSON value (nested lists or a scalar) to an array of OIP ``datatype``.

    Raises BadRequest when the values do not fit the datatype (strings for numbers, fractions for
    integers, out-of-range integers, ragged lists, nulls).
    """
    if isinstance(value, NativeArray):
        if value.datatype == datatype:
            return value.array
        value = value.array
    if isinstance(value, FastData):
        flat = value.numeric(datatype)
        if flat is None:
            value = value.as_list()
        elif datatype in _FLOAT_TYPES:
            return flat.astype(DATATYPES[datatype])
        else:
            value = flat  # integers: range-checked below
    if datatype == "BYTES":
        return _bytes_array(value)
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"{what}: unsupported datatype '{datatype}'")
    try:
        if datatype in _FLOAT_TYPES:
            arr = np.asarray(value, dtype=dtype)
            if arr.dtype.kind != "f":
                raise ValueError("not numeric")
            if arr.size and (np.isnan(arr).any() or not isinstance(value, np.ndarray)):
                # A NaN is fine (TF Serving accepts the token) but a null would also become NaN, and numpy reads
                # a string of digits ("2") as a number: JSON strings are not numbers
                probe = np.asarray(value)
                if probe.dtype.kind not in "biuf" and not _only_numbers(probe):
                    raise ValueError("not numeric")
            return arr
        probe = np.asarray(value)
        kind = probe.dtype.kind
        if datatype == "BOOL":
            if kind != "b":
                raise ValueError("expected true/false")
            return probe
        if kind == "f":
            if probe.size and not bool(np.all(np.isfinite(probe) & (probe == np.floor(probe)))):
                raise ValueError("expected integers")
        elif kind not in "biu":
            raise ValueError("not numeric")
        if probe.size:
            info = np.iinfo(dtype)
            lo, hi = probe.min(), probe.max()
            if lo < info.min or hi > info.max:
                raise ValueError(f"values out of range [{info.min}, {info.max}]")
        return probe.astype(dtype)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise BadRequest(f"{what}: values do not fit datatype {datatype} ({detail})") from None


# ---------------------------------------------------------------------------------------------
# quantization


def quantize(arr: Array, q: Quantization) -> Array:
    """Float values -> the model's integer type, rounded and saturated as LiteRT does (:mod:`modelship.numerics`),
    by libmsjson when it is there (:mod:`modelship.serve.nativequant`: the same values in one pass)."""
    from .nativequant import quantize as quantize_fast  # (nativequant -> nativejson -> this module)

    return quantize_fast(arr, q.scale, q.zero_point, DATATYPES[q.datatype])


def dequantize(arr: Array, q: Quantization) -> Array:
    """The model's integer values -> float32."""
    return numerics.dequantize(arr, q.scale, q.zero_point)


def to_model(arr: Array, spec: TensorSpec) -> Array:
    """A validated request array -> what the model consumes (quantize float input of an int8 tensor)."""
    q = spec.quantization
    raw = DATATYPES[spec.raw_datatype]
    if q is not None and arr.dtype != raw:
        return quantize(arr, q)
    if arr.dtype != raw:
        return arr.astype(raw)
    return arr


def from_model(arr: Array, spec: TensorSpec) -> Array:
    """What the model produced -> what the caller receives (dequantize int8 outputs)."""
    if spec.quantization is not None:
        return dequantize(arr, spec.quantization)
    return arr


# ---------------------------------------------------------------------------------------------
# numpy -> JSON-able / binary


def jsonable(arr: Array) -> Any:
    """An array orjson can serialize (with OPT_SERIALIZE_NUMPY) or nested lists for strings."""
    if arr.dtype.kind in "OSU":
        return _strings_to_json(arr)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def _string_value(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, str):
        return v
    return str(v)


def _strings_to_json(arr: Array) -> Any:
    if arr.ndim == 0:
        return _string_value(arr.item())
    return [_strings_to_json(x) for x in arr]


def array_to_binary(arr: Array, datatype: str) -> bytes:
    """OIP binary tensor data: raw little-endian values, BYTES as 4-byte length + bytes."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    dtype = DATATYPES[datatype].newbyteorder("<")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def binary_to_array(data: bytes | memoryview, datatype: str, shape: Sequence[int], what: str) -> Array:
    """Inverse of :func:`array_to_binary`, validating the byte count against the shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if pos + 4 > len(view):
                raise BadRequest(f"{what}: truncated BYTES element length")
            (n,) = struct.unpack_from("<I", view, pos)
            pos += 4
            if pos + n > len(view):
                raise BadRequest(f"{what}: truncated BYTES element")
            items.append(bytes(view[pos : pos + n]))
            pos += n
        if len(items) != count:
            raise BadRequest(f"{what}: shape {list(shape)} needs {count} elements but got {len(items)}")
        out = np.empty(len(items), dtype=np.object_)
        out[:] = items
        return out.reshape(tuple(shape))
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"{what}: unsupported datatype '{datatype}'")
    le = dtype.newbyteorder("<")
    if len(data) != count * le.itemsize:
        raise BadRequest(
            f"{what}: shape {list(shape)} of {datatype} needs {count * le.itemsize} bytes but got {len(data)}"
        )
    arr = np.frombuffer(data, dtype=le)
    if datatype == "BOOL" and arr.size and not bool(np.all(arr.view(np.uint8) <= 1)):
        raise BadRequest(f"{what}: BOOL bytes must be 0 or 1")
    result: Array = arr.reshape(tuple(shape)).astype(dtype, copy=False)
    return result
