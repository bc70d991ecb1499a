"""The fast paths (libmsjson, native; pysimdjson) read tensor data straight into arrays; on every edge case each
must decode exactly what the checked path (orjson, the stdlib for NaN/Infinity and huge integers, numpy) decodes,
or refuse with the same message (the native one declines, and the checked path answers). The hypothesis fuzz in
test_fuzz.py covers random documents; these are the cases a float parser gets wrong: exponents, signed zeros,
NaN/Infinity tokens, overflow and underflow, integers beyond 2**53 and 2**64 for float inputs, fractions and
out-of-range values for integer inputs, nesting and wrong element counts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from modelship.serve import codec, jsonparse, nativejson
from modelship.serve.errors import BadRequest

from .fakes import FakeModel

pytestmark = pytest.mark.skipif(jsonparse._simdjson is None, reason="pysimdjson (the [serve] extra) is missing")


def require_native() -> None:
    """Skip without libmsjson, except in CI, where hack/setup builds it: there its absence is a failure."""
    if nativejson.LIBRARY is None:
        if os.environ.get("CI"):
            pytest.fail(f"libmsjson is missing in CI: {nativejson.WHY_NOT}")
        pytest.skip(f"libmsjson is not built: {nativejson.WHY_NOT}")


@pytest.fixture(autouse=True, params=["native", "simdjson"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test here runs once per fast path: libmsjson, then pysimdjson alone."""
    if request.param == "native":
        require_native()
    else:
        monkeypatch.setattr(nativejson, "LIBRARY", None)
    yield request.param

X_DATA = [
    "[1e5, -0.0, 1E-7, 2.5e+3]",
    "[1, 2, 3, 4]",
    "[9007199254740993, 16777217, -9223372036854775808, 18446744073709551615]",
    "[99999999999999999999, 1, 2, 3]",
    "[1e400, 0, 0, 0]",
    "[-1e308, 1e308, 2e308, 0]",
    "[1e-400, 5e-324, 3.4028235e38, 3.5e38]",
    "[0.1, 0.30000000000000004, 1.00000005960464477539062, 16777216.5]",
    "[NaN, 1, 2, 3]",
    "[Infinity, 1, 2, -Infinity]",
    '[1.0, 2, "3", 4]',
    "[null, 1, 2, 3]",
    "[true, 1, 2, 3]",
    "[1, 2, 3]",
    "[1, 2, 3, 4, 5]",
    "[[1, 2, 3, 4]]",
    "[[1, 2], [3, 4]]",
    "[[1, 2, 3, 4], [5, 6, 7]]",
    "[]",
    "[{}, 1, 2, 3]",
    "[-0, 00, 1, 2]",
    "[1., 2, 3, 4]",
    "[.5, 2, 3, 4]",
    "[+1, 2, 3, 4]",
]
K_DATA = [
    "[1, 2]",
    "[1.0, 2]",
    "[1.5, 2]",
    "[2147483648, 1]",
    "[1e2, 3]",
    "[-0.0, 0]",
    "[9223372036854775807, 0]",
    "[18446744073709551615, 0]",
    "[true, 1]",
]


def _decode(body: bytes) -> Any:
    model = FakeModel(two_inputs=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf in a cast: part of the answer
            req = codec.v2_decode(model, body, None)
    except BadRequest as e:
        return ("refused", str(e))
    return {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in req.inputs.items()}


def _both(monkeypatch: pytest.MonkeyPatch, body: bytes) -> tuple[Any, Any]:
    monkeypatch.setattr(jsonparse, "FAST_JSON_BYTES", 0)
    fast = _decode(body)
    monkeypatch.setattr(jsonparse, "FAST_JSON_BYTES", 1 << 40)
    return fast, _decode(body)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16"])
@pytest.mark.parametrize("x", X_DATA)
def test_fast_path_decodes_float_edge_cases_like_the_checked_path(
    monkeypatch: pytest.MonkeyPatch, x: str, datatype: str
) -> None:
    shape = "[1, 1, 4]" if x.startswith("[[1, 2, 3, 4]]") else "[1, 4]"
    for k in K_DATA:
        body = (
            f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "{datatype}", "data": {x}}}, '
            f'{{"name": "k", "shape": [1, 2], "datatype": "INT32", "data": {k}}}]}}'
        ).encode()
        fast, checked = _both(monkeypatch, body)
        assert fast == checked, (x, k)


def test_edge_cases_decode_to_the_values_json_means(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only the same answer twice: the answers are right (signed zero kept, exponents read, 2**53 + 1 rounded
    to nearest even on the way to float64, then to float32; NaN/Infinity tokens are TF Serving's and accepted)."""
    import numpy as np

    body = (
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1e5, -0.0, 1E-7, 9007199254740993]}]'
        b', "id": "e"}'
    )
    monkeypatch.setattr(jsonparse, "FAST_JSON_BYTES", 0)
    x = codec.v2_decode(FakeModel(), body, None).inputs["x"]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([[1e5, -0.0, 1e-7, 9007199254740992.0]], dtype=np.float32))
    assert np.signbit(x[0, 1])
    body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, Infinity, -Infinity]}]}'
    x = codec.v2_decode(FakeModel(), body, None).inputs["x"]
    assert np.isnan(x[0, 0]) and x[0, 2] == np.inf and x[0, 3] == -np.inf


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ("[1, 2, 3]", "[1, 4]", "needs 4 values but 'data' has 3"),
        ("[[1, 2], [3, 4, 5]]", "[1, 4]", "values do not fit datatype FP32"),
        ('[1, "2", 3, 4]', "[1, 4]", "values do not fit datatype FP32"),
        ('["1e5", "nan", "inf", "3"]', "[1, 4]", "values do not fit datatype FP32"),
        ("[null, 2, 3, 4]", "[1, 4]", "values do not fit datatype FP32"),
    ],
)
def test_fast_path_refuses_what_the_checked_path_refuses(
    monkeypatch: pytest.MonkeyPatch, data: str, shape: str, message: str
) -> None:
    """Both paths; a JSON string of digits is not a number (numpy alone would read "2" as 2.0)."""
    body = f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP32", "data": {data}}}]}}'.encode()
    for threshold in (0, 1 << 40):
        monkeypatch.setattr(jsonparse, "FAST_JSON_BYTES", threshold)
        with pytest.raises(BadRequest, match=message.replace("[", r"\[")):
            codec.v2_decode(FakeModel(), body, None)
