"""Request JSON to Python objects, and what that costs.

The checked path, :func:`loads`, is orjson (with the stdlib as a fallback for TF Serving's NaN/Infinity tokens
and very large integers). Bodies of :data:`FAST_JSON_BYTES` or more take a fast path: with libmsjson
(:mod:`modelship.serve.nativejson`) the tensor data is read by native code without the GIL straight into the input
buffer (:class:`~modelship.serve.tensors.NativeArray`, on two threads when the caller allows); else, or when the
library declines, with pysimdjson: :func:`loads_v2` and :func:`loads_v1` parse with simdjson and leave tensor data
as :class:`~modelship.serve.tensors.FastData`, read later straight into a numeric buffer, never through Python
lists; anything unusual falls back to :func:`loads`, which gives the same answers. :func:`decode_cost` bounds the
memory decoding takes before anything is parsed, so the server can reserve it (:mod:`modelship.serve.limits`).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from . import nativejson
from .errors import BadRequest
from .tensors import FastData

Body = bytes | bytearray | memoryview


def loads(body: Body) -> Any:
    """Parse JSON; accepts TF Serving's NaN/Infinity tokens and very large integers via the stdlib."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise BadRequest(f"request body is not valid JSON: {first}") from None


#: bodies at least this large are parsed with simdjson (when installed), tensor data straight into numpy
FAST_JSON_BYTES = 64 * 1024

#: peak bytes per JSON value while decoding: simdjson's tape (16) and structural index (4), the float64 buffer
#: (8) and the result (<= 8); on the checked path a Python float (24), its list slot (8) and the array (<= 8)
_BYTES_PER_VALUE = 40
#: ... plus inner lists of nested (row-format) tensors: a list per innermost row
_BYTES_PER_NESTED_VALUE = 72
_COMMA = ord(",")


def decode_cost(body: Body, json_len: int, nested: bool, count: bool = True) -> int:
    """Upper bound of the memory decoding the first ``json_len`` bytes of ``body`` takes at its peak: parser
    buffers (about twice the text) plus a per-value cost, values counted as commas (a vectorized count, ~0.15 ms
    per MB). ``nested``: row-format JSON (TF Serving ``instances``), decoded through Python lists. Without
    ``count``: the bound for the densest JSON (a value every two bytes), for free."""
    if json_len <= 0:
        return 0
    if json_len < FAST_JSON_BYTES or not count:  # at most a value per two bytes
        values = json_len // 2 + 1
    else:
        values = int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8, count=json_len) == _COMMA)) + 1
    return 2 * json_len + values * (_BYTES_PER_NESTED_VALUE if nested else _BYTES_PER_VALUE)


_simdjson: Any
try:
    _simdjson = importlib.import_module("simdjson")
except ImportError:  # pragma: no cover - optional speed-up (pysimdjson)
    _simdjson = None


def _py(v: Any) -> Any:
    if isinstance(v, _simdjson.Array):
        return v.as_list()
    if isinstance(v, _simdjson.Object):
        return v.as_dict()
    return v


_parsers = threading.local()

#: documents up to this size reuse a per-thread parser; a parser keeps buffers of ~10x the largest document it
#: parsed, so larger ones get a parser of their own that is freed with the request's data
REUSE_PARSER_BYTES = 4 * 1024 * 1024


def _parse_simd(data: Body) -> Any:
    """Parse with a per-thread reusable simdjson parser (a fresh one if the old is still referenced, or for a
    large document)."""
    if len(data) > REUSE_PARSER_BYTES:
        return _simdjson.Parser().parse(data)
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = _simdjson.Parser(REUSE_PARSER_BYTES)
    try:
        return parser.parse(data)
    except RuntimeError as e:
        if "re-use a parser" not in str(e):
            raise
        parser = _parsers.parser = _simdjson.Parser(REUSE_PARSER_BYTES)
        return parser.parse(data)


def describe() -> str:
    """Which path large JSON requests take, for the server's start-up log."""
    simd = "pysimdjson" if _simdjson is not None else "orjson only (pysimdjson is not installed)"
    if nativejson.LIBRARY is not None:
        return f"{nativejson.describe()}, else {simd}"
    return f"{simd} ({nativejson.describe()})"


def _simd_document(body: Body) -> Any:
    """pysimdjson's document of a large body, for the callers to walk when it is an object; otherwise the answer
    itself: the checked parse's (:func:`loads`) where pysimdjson is absent or refuses the body, the document as
    Python where it is not an object."""
    if _simdjson is None:
        return loads(body)
    try:
        doc = _parse_simd(body if isinstance(body, bytes) else memoryview(body))
    except (ValueError, RuntimeError, TypeError):
        return loads(body)
    return doc if isinstance(doc, _simdjson.Object) else _py(doc)


def loads_v2(body: Body, threads: int = 1) -> Any:
    """Parse an inference request; large ones leave each input's ``data`` as :class:`NativeArray` (libmsjson;
    ``threads`` 2 lets it parse a large flat array on two threads) or :class:`FastData` (pysimdjson).

    Anything unusual falls back to :func:`loads`, which gives the same answers (or errors) without simdjson.
    Only the keys are walked (``items()`` would convert every value, data included, to Python).
    """
    if len(body) < FAST_JSON_BYTES:
        return loads(body)
    if nativejson.LIBRARY is not None:
        doc = nativejson.loads(body, 2, threads)
        if doc is not None:
            return doc
    doc = _simd_document(body)
    if _simdjson is None or not isinstance(doc, _simdjson.Object):
        return doc  # already the answer
    out: dict[str, Any] = {k: _py(doc[k]) for k in doc.keys() if k != "inputs"}  # noqa: SIM118 - proxy object
    if "inputs" in doc:
        inputs = doc["inputs"]
        if isinstance(inputs, _simdjson.Array):
            tensors: list[Any] = []
            for t in inputs:
                if isinstance(t, _simdjson.Object):
                    d = {k: _py(t[k]) for k in t.keys() if k != "data"}  # noqa: SIM118
                    if "data" in t:
                        data = t["data"]
                        d["data"] = FastData(data) if _numeric_array(data) else _py(data)
                    tensors.append(d)
                else:
                    tensors.append(_py(t))
            out["inputs"] = tensors
        else:
            out["inputs"] = _py(inputs)
    return out


def _numeric_array(v: Any) -> bool:
    """A simdjson array of numbers or of arrays (the fast path's candidates), not one of objects."""
    return isinstance(v, _simdjson.Array) and (len(v) == 0 or not isinstance(v[0], _simdjson.Object))


def loads_v1(body: Body, datatypes: Mapping[str, str] | None = None, threads: int = 1) -> Any:
    """Parse a TF Serving request; large ones leave ``instances`` / ``inputs`` tensors as :class:`NativeArray`
    (libmsjson, in ``datatypes``: the model's input name -> datatype) or :class:`FastData` (pysimdjson); rows of
    named inputs stay Python objects. Falls back to :func:`loads` like :func:`loads_v2`."""
    if len(body) < FAST_JSON_BYTES:
        return loads(body)
    if nativejson.LIBRARY is not None and datatypes is not None:
        doc = nativejson.loads(body, 1, threads, datatypes)
        if doc is not None:
            return doc
    doc = _simd_document(body)
    if _simdjson is None or not isinstance(doc, _simdjson.Object):
        return doc  # already the answer
    out: dict[str, Any] = {}
    for key in doc.keys():  # noqa: SIM118 - proxy object
        v = doc[key]
        if key in ("instances", "inputs") and _numeric_array(v):
            out[key] = FastData(v)
        elif key == "inputs" and isinstance(v, _simdjson.Object):
            out[key] = {k: FastData(v[k]) if _numeric_array(v[k]) else _py(v[k]) for k in v.keys()}  # noqa: SIM118
        else:
            out[key] = _py(v)
    return out
