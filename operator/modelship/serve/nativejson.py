"""Large JSON requests' tensor data read by libmsjson (``native/msjson``), without the GIL, into the input buffer.

The library is optional: ``hack/native/build`` compiles it (``hack/setup`` and the serving image do) into
``<venv>/lib/modelship/libmsjson.so``; ``$MODELSHIP_JSON_LIB`` names another file, or ``none`` to do without.
Without it (a plain ``pip install modelship[serve]``), :mod:`modelship.serve.jsonparse` uses pysimdjson.

How a request is read (:func:`loads`): the library finds the arrays of tensor data in the text (``msjson_scan``,
~0.07 ms per MB); the rest of the document, with each array replaced by ``null``, is parsed by orjson (a few hundred
bytes); each array is then parsed straight into a numpy buffer of its input's datatype (``msjson_read``), a flat
one in two halves on two threads when the caller allows it. ctypes releases the GIL for both calls. Numbers are
simdjson's (correctly rounded float64, then cast). Whenever the library cannot decode a request exactly as the
checked path (orjson + numpy) would, it declines and :func:`loads` returns None: the caller decodes it the usual way,
which gives the same answer or error (``tests/serve/test_fuzz.py`` compares all three paths).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .tensors import Array, NativeArray

#: the library's C interface version this module speaks (msjson_abi); 2 added msjson_quantize
#: (:mod:`modelship.serve.nativequant` binds it)
ABI = 2
ENV = "MODELSHIP_JSON_LIB"
#: at most this many tensor arrays in one request take the native path (more: the usual path)
MAX_SPANS = 64
#: a flat array of at least this many bytes is parsed on two threads when the caller allows it; below, the second
#: thread's start (~30 us) costs more than it saves
SPLIT_BYTES = 256 * 1024

#: a second thread pays only when a core is free for it: not when the tasks of this cgroup (else of the machine)
#: waited for a CPU more than this share (%) of the last 10 s (PSI "some avg10"). On a busy machine the helper waits
#: to be scheduled and the request with it: measured 3-10 ms decodes at 86% pressure instead of ~1.7 ms
SPLIT_MAX_PRESSURE = 20.0
_PRESSURE_FILES = ("/sys/fs/cgroup/cpu.pressure", "/proc/pressure/cpu")
#: the pressure is read at most this often (seconds)
_PRESSURE_EVERY = 0.5

#: datatype -> (the library's kind, the numpy dtype it writes); FP16 is read as float64 and cast by numpy (the
#: checked path's own cast), BOOL and BYTES are not read natively
_KINDS: dict[str, tuple[int, np.dtype[Any]]] = {
    "FP32": (0, np.dtype(np.float32)),
    "FP64": (1, np.dtype(np.float64)),
    "FP16": (1, np.dtype(np.float64)),
    "INT8": (2, np.dtype(np.int8)),
    "INT16": (3, np.dtype(np.int16)),
    "INT32": (4, np.dtype(np.int32)),
    "INT64": (5, np.dtype(np.int64)),
    "UINT8": (6, np.dtype(np.uint8)),
    "UINT16": (7, np.dtype(np.uint16)),
    "UINT32": (8, np.dtype(np.uint32)),
    "UINT64": (9, np.dtype(np.uint64)),
}


class Span(ctypes.Structure):
    """``struct msjson_span`` (native/msjson/msjson.cpp)."""

    _fields_ = [
        ("start", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
        ("split", ctypes.c_uint64),
        ("split_index", ctypes.c_uint64),
        ("name_start", ctypes.c_uint64),
        ("name_len", ctypes.c_uint64),
        ("depth", ctypes.c_uint32),
        ("owner", ctypes.c_uint32),
    ]


@dataclass(frozen=True, slots=True)
class Library:
    lib: ctypes.CDLL
    path: str
    version: str


def default_path() -> Path:
    """Where ``hack/native/build`` installs the library for this Python environment."""
    return Path(sys.prefix) / "lib" / "modelship" / "libmsjson.so"


def _load() -> tuple[Library | None, str]:
    """The library, or None and why not."""
    where = os.environ.get(ENV, "")
    if where.lower() == "none":
        return None, f"${ENV}=none"
    path = Path(where) if where else default_path()
    if not path.is_file():
        return None, f"no {path}" + ("" if where else " (hack/native/build makes it)")
    return open_library(path)


def open_library(path: Path) -> tuple[Library | None, str]:
    """The library at path, its functions typed, or None and why not (bench/json_read.py opens two side by side)."""
    try:
        # RTLD_LOCAL: its symbols never take part in resolving anyone else's (it exports only msjson_*, and carries
        # its own libstdc++, hidden); RTLD_NOW: a broken file fails here, not on the first request
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        lib.msjson_abi.restype = ctypes.c_int
        lib.msjson_abi.argtypes = []
        abi = lib.msjson_abi()
        if abi != ABI:
            return None, f"{path} speaks ABI {abi}, this code {ABI} (rebuild with hack/native/build)"
        lib.msjson_version.restype = ctypes.c_char_p
        lib.msjson_version.argtypes = []
        lib.msjson_scan.restype = ctypes.c_long
        lib.msjson_scan.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        lib.msjson_read.restype = ctypes.c_int
        lib.msjson_read.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        version = lib.msjson_version().decode()
    except (OSError, AttributeError) as e:
        return None, f"{path} does not load: {e}"
    return Library(lib, str(path), version), ""


LIBRARY, WHY_NOT = _load()


def describe() -> str:
    """One line for the server's start-up log: which JSON path large requests take."""
    if LIBRARY is not None:
        return f"native ({LIBRARY.version}; {LIBRARY.path})"
    return f"not native: {WHY_NOT}"


class CpuPressure:
    """Whether a core looks free for a second thread: PSI's CPU "some avg10", re-read every half second. Without
    PSI (an old kernel, a cgroup without it) a core counts as free."""

    def __init__(self, files: tuple[str, ...] = _PRESSURE_FILES, limit: float = SPLIT_MAX_PRESSURE) -> None:
        self.files = files
        self.limit = limit
        self._checked = -1e9
        self._free = True

    def free(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= _PRESSURE_EVERY:
            self._checked = now
            self._free = self.read() <= self.limit
        return self._free

    def read(self) -> float:
        """The share (%) of the last 10 s in which some task waited for a CPU; 0 when unknown."""
        for name in self.files:
            try:
                with open(name, "rb") as f:
                    first = f.readline().split()
            except OSError:
                continue
            for field in first:
                if field.startswith(b"avg10="):
                    try:
                        return float(field[6:])
                    except ValueError:
                        return 0.0
        return 0.0


def loads(
    body: bytes | bytearray | memoryview, protocol: int, threads: int = 1, datatypes: Mapping[str, str] | None = None
) -> Any | None:
    """The request document with each tensor array as a :class:`NativeArray`, or None: the library is absent,
    declined, or found no tensor array (the caller decodes the usual way). ``protocol``: 2 (OIP: each input's
    ``data``, in its ``datatype``), 1 (TF Serving: ``instances``/``inputs``, in ``datatypes``, the model's input
    name -> datatype). ``threads``: 2 lets a large flat array be parsed in two halves at once."""
    lib = LIBRARY
    if lib is None or not len(body):
        return None
    view = memoryview(body)
    if not view.c_contiguous:
        return None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    data = np.frombuffer(view, dtype=np.uint8)  # the body in place: its address for the library, no copy
    addr, size = int(data.ctypes.data), data.size
    spans = (Span * MAX_SPANS)()
    n = lib.lib.msjson_scan(addr, size, protocol, ctypes.byref(spans), MAX_SPANS)
    if n <= 0:
        return None
    found = spans[:n]
    parts: list[memoryview | bytes] = []
    prev = 0
    for s in found:
        parts += (view[prev : s.start], b"null")
        prev = s.end
    parts.append(view[prev:])
    try:
        doc = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for s in found:
        slot = _slot(doc, s, view, protocol, datatypes)
        if slot is None:
            return None
        container, key, datatype = slot
        array = _read(lib, addr, size, s, datatype, threads)
        if array is None:
            return None
        container[key] = NativeArray(array, datatype)
    return doc


def _slot(
    doc: dict[str, Any], s: Span, view: memoryview, protocol: int, datatypes: Mapping[str, str] | None
) -> tuple[Any, Any, str] | None:
    """Where span ``s`` sits in ``doc`` (it holds ``null`` there) and the datatype to read it in; None to decline."""
    if protocol == 2:
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or s.owner >= len(inputs):
            return None
        tensor = inputs[s.owner]
        if not isinstance(tensor, dict) or "data" not in tensor or tensor["data"] is not None:
            return None
        datatype = tensor.get("datatype")
        return (tensor, "data", datatype) if isinstance(datatype, str) and datatype in _KINDS else None
    if datatypes is None:
        return None
    if s.owner == 2:
        cols = doc.get("inputs")
        try:
            name = bytes(view[s.name_start : s.name_start + s.name_len]).decode()
        except UnicodeDecodeError:
            return None
        if not isinstance(cols, dict) or cols.get(name, 0) is not None or name not in datatypes:
            return None
        container, key, datatype = cols, name, datatypes[name]
    else:
        key = "instances" if s.owner == 0 else "inputs"
        if doc.get(key, 0) is not None or len(datatypes) != 1:
            return None
        container, datatype = doc, next(iter(datatypes.values()))
    return (container, key, datatype) if datatype in _KINDS else None


def _read(lib: Library, addr: int, size: int, s: Span, datatype: str, threads: int) -> Array | None:
    kind, dtype = _KINDS[datatype]
    out = np.empty(s.count, dtype=dtype)
    shape = (ctypes.c_int64 * max(1, s.depth))()
    split = threads if s.depth == 1 and s.end - s.start >= SPLIT_BYTES else 1
    if lib.lib.msjson_read(addr, size, ctypes.byref(s), kind, out.ctypes.data, shape, split) != 0:
        return None
    result = out.reshape(tuple(shape[: s.depth]))
    if datatype == "FP16":
        result = result.astype(np.float16)
    return result
