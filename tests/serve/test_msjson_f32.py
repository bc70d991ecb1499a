"""libmsjson's FP32 read (native/msjson/msjson.cpp, fast_f32 and the exact path it leaves tokens to) against the
checked path's arithmetic, bit for bit: Python's float() of the token (the correctly rounded float64, as orjson
gives it) cast to float32 by numpy. The fast path answers only away from float32 rounding boundaries; these inputs
sit on and around them (midpoints written to 17-20 digits, one float64 ulp either side), at the ends of float32's
range, in every token form it reads or leaves (e/E exponents, leading zeros, long mantissas, integers, zeros), and a
million float32 values as Python prints them. Tokens are placed at least 64 bytes before the array's end (padding),
where the fast path may read them. A fast path without its margin check fails here (checked by hand with
-DMSJSON_F32_MARGIN=0: the midpoint neighbours come out one float32 ulp off)."""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Iterable

import numpy as np
import pytest

from modelship.serve import nativejson

from .test_jsonparse import require_native

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(autouse=True)
def _native() -> None:
    require_native()


def _read(tokens: list[str], threads: int = 1, separator: str = ", ") -> np.ndarray | None:
    """The tokens as one FP32 OIP v2 array, read by libmsjson (None: declined)."""
    data = "[" + separator.join(tokens) + " " * 80 + "]"
    body = f'{{"inputs": [{{"name": "x", "shape": [{len(tokens)}], "datatype": "FP32", "data": {data}}}]}}'
    doc = nativejson.loads(body.encode(), 2, threads)
    if doc is None:
        return None
    got: np.ndarray = doc["inputs"][0]["data"].array
    return got


def _want(tokens: Iterable[str]) -> np.ndarray:
    """orjson's value (an int for an integer token: "-0" is 0, not -0.0) as numpy makes it float32."""
    values = [float(int(t)) if t.lstrip("-").isdigit() else float(t) for t in tokens]
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def _assert_same(tokens: list[str], threads: int = 1) -> None:
    got = _read(tokens, threads)
    assert got is not None, "declined"
    want = _want(tokens)
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, [(tokens[i], float(got[i]), float(want[i])) for i in bad[:10]]


def _f32(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _midpoint_tokens(rng: random.Random, n: int) -> list[str]:
    """Midpoints between float32 neighbours (exact float64s) in every binade of the normal range and just below it,
    written with 17-20 significant digits and as the shortest text of the float64s one ulp either side."""
    out = []
    for _ in range(n):
        exponent = rng.choice([1, 2, 3, 60, 100, 120, 126, 127, 128, 129, 130, 140, 200, 250, 253, 254])
        bits = (exponent << 23) | rng.getrandbits(23)
        lo, hi = _f32(bits), _f32(bits + 1)
        if not math.isfinite(hi) or hi > FLT_MAX:
            continue
        mid = (lo + hi) / 2  # exact: 25 significant bits
        sign = rng.choice(["", "-"])
        for digits in (17, 18, 19, 20):
            out.append(sign + f"{mid:.{digits - 1}e}")
        out.append(sign + repr(mid))
        out.append(sign + repr(math.nextafter(mid, math.inf)))
        out.append(sign + repr(math.nextafter(mid, -math.inf)))
        out.append(sign + repr(lo))
    return out


def test_float32_midpoints_and_their_float64_neighbours() -> None:
    _assert_same(_midpoint_tokens(random.Random(16), 3000))


def test_midpoints_in_plain_decimal_form() -> None:
    """The same boundaries as Python's positional text ("0.50000002980232239"), where the fast path reads most."""
    rng = random.Random(17)
    tokens = []
    for _ in range(4000):
        bits = ((rng.randint(110, 133)) << 23) | rng.getrandbits(23)  # ~2^-17 .. ~2^7
        mid = (_f32(bits) + _f32(bits + 1)) / 2
        for v in (mid, math.nextafter(mid, math.inf), math.nextafter(mid, -math.inf)):
            text = f"{v:.20f}".rstrip("0")
            tokens.append(text[: text.index(".") + 1 + rng.randint(12, 20)])
            tokens.append(f"{v:.17f}")
    _assert_same([t for t in tokens if not t.endswith(".")])


CRAFTED = {
    # zeros and integers ("-0" is the int 0: +0.0; "-0.0" is -0.0)
    "zeros-integers": "0 -0 0.0 -0.0 0e5 -0e-5 0.000 -0.000e+12 0E0 0.0e310 -0.0e310 0.0e-330 -0e-300 -0.0e-999"
    " 0.000000000000000000000000 -0.00000000000000000000000e5 1 -1 7 999 -999 1000 16777217 123456789"
    " 9007199254740992",
    # e/E exponents in every form
    "exponents": "1e5 1E5 1e+5 1E+5 1e-5 1E-5 1.5e3 -2.5E+02 15e-1 1e0 1.0e-0 2.5e001 9.99e-3 1.25E-007 -7.5e+37"
    " 3.0e38 1e-38 1.17549435e-38 1.1754943e-38",
    # near float32's ends: the largest float32, its rounding edge, the smallest normal and subnormals
    "range-ends": "3.4028234663852886e+38 3.4028234e38 3.40282346638528859e+38 -3.4028234e38 1.1754942106924411e-38"
    " 1.1754943508222875e-38 1.401298464324817e-45 7.006492321624085e-46 7.0064923216240862e-46 1e-45 1e-46 2.8e-45"
    " 4.2e-45 5.877471754111438e-39 1e-300",
    # long mantissas: 19, 20 and more significant digits, leading zeros
    "long-mantissas": "0.1234567890123456789 1.2345678901234567890 12.345678901234567890 123.45678901234567890123"
    " 0.00012345678901234567 0.000000000000000000000000000000001 0.0000000000000000000000000000000000001"
    " 0.5000000298023223876953125 0.50000002980232238769531249 0.50000002980232238769531251"
    " 1.00000005960464477539062500000000001 999.99999999999999999999 0.99999999999999999999999999",
    # what Python prints for float32 values
    "python-reprs": " ".join(
        repr(_f32(b)) for b in (0x3F800001, 0x3EAAAAAB, 0x3DCCCCCD, 0x00800000, 0x007FFFFF, 0x7F7FFFFF, 0x33D6BF95)
    ),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_tokens(name: str) -> None:
    tokens = CRAFTED[name].split()
    for threads in (1, 2):
        _assert_same(tokens * 3, threads)


def test_a_million_float32_values_as_python_prints_them() -> None:
    """np.asarray(list_of_floats, dtype=np.float32) bit for bit, on one thread and on two."""
    rng = np.random.default_rng(20261130)
    parts = [
        rng.uniform(-1, 1, 300_000),
        rng.normal(0, 50, 200_000),
        *(rng.uniform(0, 255, 25_000).round(decimals) for decimals in range(4)),
        np.exp(rng.uniform(math.log(1.2e-38), math.log(3.4e38), 300_000)) * rng.choice([-1, 1], 300_000),
    ]
    any_bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    parts.append(any_bits[np.isfinite(any_bits)].astype(np.float64))
    values = np.concatenate(parts).astype(np.float32)
    values = values[np.isfinite(values)]
    floats = values.tolist()
    want = np.asarray(floats, dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(floats)], "datatype": "FP32", "data": floats}]})
    assert len(floats) > 990_000
    for threads in (1, 2):
        doc = nativejson.loads(body.encode(), 2, threads)
        assert doc is not None, "declined"
        got = doc["inputs"][0]["data"].array
        assert got.tobytes() == want.tobytes()


def test_what_the_exact_path_declines_is_still_declined() -> None:
    """Tokens the fast path leaves alone keep the exact path's answer: out of float32's range, bad grammar."""
    pad = ["0.25"] * 10
    # (above FLT_MAX as a float64 is declined even where float32 would round it down to FLT_MAX, as before)
    bad_tokens = "3.5e38 -1e39 1e400 3.4028235e38 3.40282356779733661e+38 9007199254740993 01.5 1. .5 1.5e 1e+ - --1"
    for bad in [*bad_tokens.split(), "1.5.3", "0x10", "1e5e"]:
        assert _read([*pad, bad, *pad]) is None, bad


def test_the_fast_path_is_built_in_on_x86_64() -> None:
    """Every test above passes on the exact path alone (only slower): on x86-64, where the fast path's conditions
    hold (SSE2, plain float arithmetic), the library must say it has it, or a build that lost it goes unnoticed."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the fast path is built for x86-64 only (this is {platform.machine()})")
    library = nativejson.LIBRARY
    assert library is not None
    assert library.version.endswith(", f32 fast path"), library.version
