"""libmsjson (native/msjson, loaded by modelship.serve.nativejson): the plain requests it must take (not decline),
the ones it must decline (the checked path answers them), its two-thread split, and how it sits in the process
(local symbols, nothing exported but its entry points, only the C library needed). Answer-for-answer equality with
the checked path over random documents is test_fuzz.py's; the float edge cases are test_jsonparse.py's."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import orjson
import pytest

from modelship.serve import codec, jsonparse, nativejson
from modelship.serve.tensors import NativeArray, TensorSpec, json_to_array

from .fakes import FakeModel, ServerThread
from .test_jsonparse import require_native


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


def _tensor(doc: Any, protocol: int, name: str) -> NativeArray:
    if protocol == 2:
        (t,) = [t for t in doc["inputs"] if t["name"] == name]
        value = t["data"]
    elif isinstance(doc.get("inputs"), dict):
        value = doc["inputs"][name]
    else:
        value = doc.get("instances", doc.get("inputs"))
    assert isinstance(value, NativeArray), value
    return value


def _checked(body: bytes, protocol: int, name: str, datatype: str) -> np.ndarray:
    doc = orjson.loads(body)
    if protocol == 2:
        value = next(t["data"] for t in doc["inputs"] if t["name"] == name)
    elif isinstance(doc.get("inputs"), dict):
        value = doc["inputs"][name]
    else:
        value = doc.get("instances", doc.get("inputs"))
    return json_to_array(value, datatype, name)


def _v2(datatype: str, shape: str, data: str, name: str = "x") -> bytes:
    return f'{{"inputs": [{{"name": "{name}", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'.encode()


TAKEN = [
    (2, {"x": "FP32"}, _v2("FP32", "[4]", "[1e5, -0.0, 1E-7, 2.5e+3]")),
    (2, {"x": "FP64"}, b'{"inputs":[{"data":[0.1,0.30000000000000004,5e-324,1.7976931348623157e308],'
     b'"name":"x","datatype":"FP64","shape":[4]}]}'),
    (2, {"x": "FP16"}, _v2("FP16", "[3]", "[65519.9, 1e-8, -3]")),
    (2, {"x": "FP32"}, _v2("FP32", "[2, 2]", "[[1, 2], [3, 4]]")),
    (2, {"x": "FP32"}, _v2("FP32", "[3]", "[-0, 9007199254740992, 0.84442186355590820000000001]")),
    (2, {"k": "INT8"}, _v2("INT8", "[3]", "[-128, 127, -0]", "k")),
    (2, {"k": "UINT64"}, _v2("UINT64", "[2]", "[0, 9223372036854775807]", "k")),
    (2, {"k": "INT64"}, _v2("INT64", "[2]", "[-9223372036854775808, 1]", "k")),
    # exponents past int64 (once a signed overflow in the lexer, native/msjson/fuzz-corpus): 0.0 as orjson says
    (2, {"x": "FP64"}, _v2("FP64", "[3]", "[1e-9223372036854775808, 2e-9999999999999999999, 1E+0000000000000000001]")),
    (2, {"x": "FP32"}, b'{"id": "a]", "inputs": [{"name": "x", "parameters": {"p": [{"q": "]["}]}, "shape": [1], '
     b'"datatype": "FP32", "data": [ 1 ]}], "outputs": [{"name": "y"}]}'),
    (1, {"x": "FP32"}, b'{"instances": [[[1.5, 2], [3, 4]], [[5, 6], [7, 8e-1]]]}'),
    (1, {"x": "FP32"}, b'{"signature_name": "serving_default", "inputs": [1, 2, 3, 4]}'),
    (1, {"x": "FP32", "k": "INT32"}, b'{"inputs": {"x": [[1, 2, 3, 4]], "k": [[1, 2]]}}'),
]


@pytest.mark.parametrize(("protocol", "datatypes", "body"), TAKEN)
def test_plain_requests_take_the_native_path_and_decode_exactly(
    protocol: int, datatypes: dict[str, str], body: bytes
) -> None:
    doc = nativejson.loads(body, protocol, 1, datatypes)
    assert doc is not None, "declined"
    for name, datatype in datatypes.items():
        got = _tensor(doc, protocol, name)
        want = _checked(body, protocol, name, datatype)
        assert got.datatype == datatype
        assert (got.array.dtype, got.array.shape) == (want.dtype, want.shape)
        assert got.array.tobytes() == want.tobytes()  # bit for bit: signed zeros, subnormals, rounding
    # everything but the tensors is what orjson makes of the document
    plain = orjson.loads(body)
    if protocol == 2:
        assert [{k: v for k, v in t.items() if k != "data"} for t in doc["inputs"]] == [
            {k: v for k, v in t.items() if k != "data"} for t in plain["inputs"]
        ]
        assert {k: v for k, v in doc.items() if k != "inputs"} == {k: v for k, v in plain.items() if k != "inputs"}


DECLINED = [
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, NaN]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, Infinity]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "2"]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, null]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, true]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 9007199254740993]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 1e400]}]}',
    # past float32's range: no float (the cast was undefined behaviour); the checked path makes it inf
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1e39, -3.5e38]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 01]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 1.]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, .5]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, +5]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1,, 2]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1 2]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.0]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 128]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, -1]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "UINT64", "data": [1, 18446744073709551615]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "BOOL", "data": [1, 0]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP8", "data": [1, 0]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "data": [1, 0]}]}',
    b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [[1, 2], [3]]}]}',
    b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [[1, 2], 3]}]}',
    b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, [2, 3]]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[], []]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2], "data": [3, 4]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "d\\u0061ta": [3, 4]}]}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "inputs": []}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]} trailing',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "id": NaN}',
    b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]]}',
    b'\xef\xbb\xbf{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
]


@pytest.mark.parametrize("body", DECLINED)
def test_what_the_checked_path_must_decide_is_declined(body: bytes) -> None:
    """NaN/Infinity tokens, strings, nulls, booleans, integers past 2**53 in a float tensor, infinities, JSON the
    grammar refuses, fractions and out-of-range integers in integer tensors, datatypes it does not read, ragged or
    empty nesting, duplicate or escaped keys, anything outside the tensors that orjson refuses."""
    assert nativejson.loads(body, 2, 2) is None


def test_a_run_of_commas_is_declined_by_the_scan_before_any_buffer_is_sized() -> None:
    """The caller sizes its buffer by a span's count: a count above what the span's bytes can hold (n values take
    2n - 1 bytes) is no array of numbers, and a megabyte of commas must not ask for 8 MB of float64."""
    lib = nativejson.LIBRARY
    assert lib is not None
    spans = (nativejson.Span * nativejson.MAX_SPANS)()
    for body in (b'{"instances": [' + b"," * 1_000_000 + b"]}", b'{"instances": [[1' + b"," * 100 + b"]]}"):
        assert lib.lib.msjson_scan(body, len(body), 1, ctypes.byref(spans), nativejson.MAX_SPANS) < 0
    body = b'{"instances": [' + b",".join([b"1"] * 1000) + b"]}"
    assert lib.lib.msjson_scan(body, len(body), 1, ctypes.byref(spans), nativejson.MAX_SPANS) == 1
    assert spans[0].count == 1000


def test_v1_declines_what_it_cannot_place() -> None:
    two = {"x": "FP32", "k": "INT32"}
    assert nativejson.loads(b'{"instances": [[1, 2, 3, 4]]}', 1, 1, two) is None  # whose datatype?
    assert nativejson.loads(b'{"inputs": {"x": [[1, 2, 3, 4]], "x": [[1, 2]]}}', 1, 1, two) is None
    assert nativejson.loads(b'{"inputs": {"zz": [[1, 2, 3, 4]]}}', 1, 1, two) is None
    assert nativejson.loads(b'{"inputs": {"x": [[1, 2, 3, 4]], "k": 5}}', 1, 1, two) is None
    # rows of named inputs are not tensor arrays: no span, the usual path
    assert nativejson.loads(b'{"instances": [{"x": [1, 2, 3, 4], "k": [1, 2]}]}', 1, 1, two) is None


def _float32_body(n: int, separators: tuple[str, str] = (", ", ": "), seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = random.Random(seed)
    values = [struct.unpack("f", struct.pack("f", rng.uniform(-3, 3)))[0] for _ in range(n)]
    doc = {"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32", "data": values}], "id": "big"}
    return json.dumps(doc, separators=separators).encode(), np.asarray(values, dtype=np.float32)


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":"), (" ,\n\t", " : ")])
def test_a_large_flat_array_splits_over_two_threads_exactly(separators: tuple[str, str]) -> None:
    """The bench's request shape (float32 values as 17-digit reprs): one thread and two give the same bits as
    orjson + numpy; the comma the halves meet at is inside the array, near its middle."""
    body, want = _float32_body(60_000, separators)
    assert len(body) > nativejson.SPLIT_BYTES
    data = np.frombuffer(body, dtype=np.uint8)
    spans = (nativejson.Span * 4)()
    assert nativejson.LIBRARY is not None
    n = nativejson.LIBRARY.lib.msjson_scan(int(data.ctypes.data), len(body), 2, ctypes.byref(spans), 4)
    assert n == 1
    s = spans[0]
    assert (s.count, s.depth) == (60_000, 1)
    assert s.start < s.split < s.end and body[s.split : s.split + 1] == b","
    assert abs(s.split - (s.start + s.end) / 2) < 0.05 * (s.end - s.start)
    assert body[s.start : s.split].count(b",") + 1 == s.split_index
    for threads in (1, 2):
        doc = nativejson.loads(body, 2, threads)
        assert doc is not None and doc["id"] == "big"
        got = doc["inputs"][0]["data"].array
        assert got.shape == (60_000,) and got.tobytes() == want.tobytes()
    # a bad value in the second half: both threads' work is declined, never half an answer
    at = body.index(b",", s.start + (s.end - s.start) * 3 // 4) + 1
    for token in (b" 1e400,", b" 01,", b' "2",'):
        bad = body[:at] + token + body[at:]
        assert nativejson.loads(bad, 2, 2) is None, token
    # and through the decoder, with the shape checked there
    req = codec.v2_decode(_OneInput(60_000), body, None, threads=2)
    assert req.inputs["x"].tobytes() == want.reshape(1, -1).tobytes()


class _OneInput(FakeModel):
    def __init__(self, n: int) -> None:
        super().__init__("one")
        self.inputs = [TensorSpec("x", "FP32", (-1, n))]
        self.input_by_name = {s.name: s for s in self.inputs}


def test_the_library_keeps_to_itself() -> None:
    """Loaded RTLD_LOCAL; exports its five entry points and nothing else (simdjson and its static libstdc++ are
    hidden), needs only the C library: nothing in it can take the place of a symbol TensorFlow or LiteRT use."""
    lib = nativejson.LIBRARY
    assert lib is not None
    out = subprocess.run(["nm", "-D", "--defined-only", lib.path], capture_output=True, text=True, check=True).stdout
    exported = sorted(line.split()[-1].split("@")[0] for line in out.splitlines() if line.split()[1:2] == ["T"])
    assert exported == ["msjson_abi", "msjson_quantize", "msjson_read", "msjson_scan", "msjson_version"]
    dyn = subprocess.run(["readelf", "-d", lib.path], capture_output=True, text=True, check=True).stdout
    needed = sorted(line.split("[")[1].rstrip("]") for line in dyn.splitlines() if "(NEEDED)" in line)
    assert all(n.startswith(("libc.so", "ld-linux", "libm.so")) for n in needed), needed
    with pytest.raises(AttributeError):
        _ = ctypes.CDLL(None).msjson_scan  # not in the process' global namespace


def test_the_server_says_at_start_which_json_path_it_takes(caplog: pytest.LogCaptureFixture) -> None:
    assert jsonparse.describe().startswith("native (msjson 2, simdjson ")
    caplog.set_level(logging.INFO, logger="modelship.serve")
    with ServerThread(FakeModel()):
        pass
    said = [r for r in caplog.records if r.getMessage() == "large JSON requests"]
    assert len(said) == 1 and getattr(said[0], "json_path", "") == jsonparse.describe()
    assert nativejson.LIBRARY is not None and nativejson.LIBRARY.path in jsonparse.describe()


def test_without_the_library_the_reason_is_given(tmp_path: Any) -> None:
    env = {**os.environ, nativejson.ENV: str(tmp_path / "missing.so")}
    code = "from modelship.serve import jsonparse; print(jsonparse.describe())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "not native: no " in out.stdout and "missing.so" in out.stdout
    (tmp_path / "junk.so").write_bytes(b"not an ELF file")
    env[nativejson.ENV] = str(tmp_path / "junk.so")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "does not load" in out.stdout


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (1, 224, 224, 3), (3, 5000)])
def test_large_nested_rows_read_exactly(shape: tuple[int, ...]) -> None:
    """TF Serving rows of images (the scan's 64-byte steps through brackets every few values): exactly the checked
    path's array, in its nested shape."""
    x = np.random.default_rng(1).random(shape, dtype=np.float32) * 2 - 1
    body = json.dumps({"instances": x.tolist()}).encode()
    doc = nativejson.loads(body, 1, 2, {"x": "FP32"})
    assert doc is not None
    got = doc["instances"].array
    assert got.shape == shape and got.tobytes() == x.tobytes()
    ragged = body.replace(b"], [", b", 0.5], [", 1)
    assert nativejson.loads(ragged, 1, 2, {"x": "FP32"}) is None


def test_a_second_thread_only_when_the_cpu_is_not_under_pressure(tmp_path: Any) -> None:
    """PSI's CPU "some avg10" decides whether a lone request's parse takes a second thread (the cgroup's file first,
    else the machine's); without PSI a core counts as free."""
    busy, quiet = tmp_path / "busy", tmp_path / "quiet"
    busy.write_text("some avg10=86.53 avg60=81.93 avg300=62.90 total=1790505502\nfull avg10=0.00 avg60=0.00\n")
    quiet.write_text("some avg10=1.50 avg60=3.00 avg300=2.00 total=17905\nfull avg10=0.00 avg60=0.00\n")
    missing = str(tmp_path / "missing")
    assert nativejson.CpuPressure((missing, str(busy))).read() == pytest.approx(86.53)
    assert not nativejson.CpuPressure((str(busy), str(quiet))).free()
    assert nativejson.CpuPressure((str(quiet), str(busy))).free()
    assert nativejson.CpuPressure((missing,)).free()
    (tmp_path / "odd").write_text("some avg10=x\n")
    assert nativejson.CpuPressure((str(tmp_path / "odd"),)).read() == 0.0
