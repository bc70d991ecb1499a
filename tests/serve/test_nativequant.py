"""libmsjson's msjson_quantize (modelship.serve.nativequant) against numpy's modelship.numerics.quantize: the same
integers, bit for bit, on random values and on every edge the arithmetic has (ties of both signs, saturation at both
ends, infinities, huge values, -0.0, subnormals, NaN, scales below and above 1, the zero point at both extremes of
its type), for int8, uint8 and int16; the native path taken where it should be (unaligned bodies included) and
numpy's where it cannot."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from modelship import numerics
from modelship.serve import nativejson, nativequant

#: target dtype -> zero points to try: 0, both extremes of the type, and one in between
ZERO_POINTS: dict[Any, list[int]] = {
    np.int8: [0, -128, 127, -3],
    np.uint8: [0, 255, 128, 3],
    np.int16: [0, -32768, 32767, 11],
}
SCALES = [0.5, 0.0078125, 0.023529412, 1.0 / 3.0, 3.0, 17.25, 1e-6, 1e6]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The native function, counted (every call appends its value count); skips without the library (not in CI)."""
    fn = nativequant.QUANTIZE
    if fn is None:
        if os.environ.get("CI"):
            pytest.fail(f"libmsjson is missing in CI: {nativejson.WHY_NOT}")
        pytest.skip(f"libmsjson is not built: {nativejson.WHY_NOT}")
    seen: list[int] = []

    def counted(*args: Any) -> int:
        seen.append(int(args[1]))
        return int(fn(*args))

    monkeypatch.setattr(nativequant, "QUANTIZE", counted)
    yield seen


def _edges(scale: float) -> np.ndarray:
    """Float32 values on the arithmetic's edges for ``scale``."""
    s = np.float32(scale)
    inv = np.float32(1.0) / s
    ks = np.arange(-40, 41, dtype=np.float32)
    # exact ties of x * inv: (k + 0.5) / inv, kept where the product lands on k + 0.5 exactly
    ties = ((ks + np.float32(0.5)) / inv).astype(np.float32)
    ties = ties[(ties * inv) == ks + np.float32(0.5)]
    # the values either side of each integer and each tie (the last bit decides)
    near = np.concatenate([ks / inv, (ks + np.float32(0.5)) / inv]).astype(np.float32)
    around = np.concatenate(
        [np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf)), near]
    ).astype(np.float32)
    fmax = np.finfo(np.float32).max
    tiny = np.finfo(np.float32).smallest_subnormal
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, fmax, -fmax, 1e30, -1e30, 3e9, -3e9, 2.0**31, -(2.0**31), 2.0**24 + 2,
         -(2.0**24) - 2, 8388609.0, -8388609.0, tiny, -tiny, 1e-40, -1e-40, np.finfo(np.float32).tiny,
         128.0 / inv, -129.0 / inv, 255.5 / inv, 32767.5 / inv, -32768.5 / inv, 65536.0 / inv, -65536.0 / inv],
        dtype=np.float32,
    )  # fmt: skip
    with np.errstate(over="ignore"):
        return np.concatenate([ties, around, special, s * special[:12]]).astype(np.float32)


@pytest.mark.parametrize("dtype", list(ZERO_POINTS))
@pytest.mark.parametrize("scale", SCALES)
def test_native_equals_numpy_on_edges_and_random_values(calls: list[int], dtype: Any, scale: float) -> None:
    rng = np.random.default_rng(int(scale * 1000) % 2**32)
    x = np.concatenate(
        [
            _edges(scale),
            rng.normal(0.0, 200.0 * scale, 5000).astype(np.float32),
            rng.uniform(-70000 * scale, 70000 * scale, 3000).astype(np.float32),
            # random bit patterns: every exponent, subnormals, infinities and NaNs among them
            rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        ]
    )
    for zp in ZERO_POINTS[dtype]:
        want = numerics.quantize(x, scale, zp, dtype)
        got = nativequant.quantize(x, scale, zp, dtype)
        assert got.dtype == want.dtype == np.dtype(dtype)
        bad = np.flatnonzero(got != want)
        assert not bad.size, [(float(x[i]), int(got[i]), int(want[i])) for i in bad[:5]]
    assert calls == [x.size] * len(ZERO_POINTS[dtype])


@pytest.mark.parametrize("dtype", list(ZERO_POINTS))
def test_ties_go_to_even_and_saturate_at_both_ends(calls: list[int], dtype: Any) -> None:
    """The values themselves, not just agreement: scale 0.5 (x * 2 exact)."""
    info = np.iinfo(dtype)
    x = np.array([0.25, -0.25, 0.75, -0.75, 1.25, -1.25, -0.0, 1e-45, -1e-45, 1e9, -1e9, np.inf, -np.inf], np.float32)
    big = 10**6  # saturates whatever the zero point
    want = np.array([0, 0, 2, -2, 2, -2, 0, 0, 0, big, -big, big, -big])
    zp = 0 if info.min < 0 else 100
    got = nativequant.quantize(x, 0.5, zp, dtype).astype(np.int64)
    np.testing.assert_array_equal(got, np.clip(want + zp, info.min, info.max))
    np.testing.assert_array_equal(numerics.quantize(x, 0.5, zp, dtype).astype(np.int64), got)


@pytest.mark.parametrize("dtype", list(ZERO_POINTS))
def test_nan_is_the_zero_point_on_both_paths(calls: list[int], dtype: Any) -> None:
    nans = np.array([np.nan, -np.nan, 1.0], np.float32)
    nans[1] = np.uint32(0x7FC00001).view(np.float32)  # a NaN with a payload
    for zp in ZERO_POINTS[dtype]:
        for got in (nativequant.quantize(nans, 0.1, zp, dtype), numerics.quantize(nans, 0.1, zp, dtype)):
            assert got[:2].tolist() == [zp, zp]
    assert len(calls) == len(ZERO_POINTS[dtype])


def test_into_a_slice_of_a_tensor_and_from_unaligned_bytes(calls: list[int]) -> None:
    """How the server calls it: the rows of a binary body (at any byte offset) into rows of an input tensor."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (3, 5, 4)).astype(np.float32)
    body = b"\x01" + x.tobytes()  # the tensor starts one byte in: not aligned for float32
    unaligned = np.frombuffer(body, dtype=np.float32, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned
    tensor = np.full((8, 5, 4), 99, dtype=np.int8)
    out = nativequant.quantize(unaligned, 0.02, -5, np.int8, out=tensor[2:5])
    assert np.shares_memory(out, tensor)
    np.testing.assert_array_equal(tensor[2:5], numerics.quantize(x, 0.02, -5, np.int8))
    assert (tensor[:2] == 99).all() and (tensor[5:] == 99).all()
    assert calls == [x.size]


def test_what_the_library_cannot_take_goes_to_numpy(calls: list[int]) -> None:
    x = np.random.default_rng(3).normal(0.0, 3.0, (6, 10)).astype(np.float32)
    cases: list[tuple[Any, Any, int, Any]] = [
        (x[:, ::2], np.int8, 0, None),  # strided input
        (x.astype(np.float64), np.int8, 0, None),  # not float32
        (x.astype(">f4"), np.int8, 0, None),  # not native byte order
        (x.tolist(), np.int8, 0, None),  # not an array
        (x, np.int32, 0, None),  # a target the library has no kind for
        (x, np.int16, 1 << 21, None),  # a zero point past the library's bound
        (x, np.int8, 0, np.zeros((10, 6), np.int8).T),  # a non-contiguous destination
    ]
    for arr, dtype, zp, out in cases:
        want = numerics.quantize(np.asarray(arr, dtype=np.float32), 0.05, zp, dtype)
        got = nativequant.quantize(arr, 0.05, zp, dtype, out=out)
        np.testing.assert_array_equal(got, want)
        if out is not None:
            np.testing.assert_array_equal(out, want)
    assert calls == []


def test_the_c_function_declines_what_it_does_not_do() -> None:
    lib = nativejson.LIBRARY
    if lib is None:
        pytest.skip(f"libmsjson is not built: {nativejson.WHY_NOT}")
    x = np.ones(4, np.float32)
    out = np.zeros(4, np.int32)
    fn = nativequant.QUANTIZE
    assert fn is not None
    assert fn(x.ctypes.data, 4, 1.0, 0, 4, out.ctypes.data) == -1  # INT32: not a quantized input type
    assert fn(x.ctypes.data, 4, 1.0, (1 << 20) + 1, 2, out.ctypes.data) == -1
    assert fn(None, 4, 1.0, 0, 2, out.ctypes.data) == -1
    assert fn(None, 0, 1.0, 0, 2, None) == 0  # nothing to do
    assert not out.any()
    assert fn(x.ctypes.data, 4, 1.0, 0, 2, out.ctypes.data) == 0
    assert ctypes.string_at(out.ctypes.data, 4) == b"\x01" * 4


def test_without_the_library_numpy_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nativequant, "QUANTIZE", None)
    x = np.array([0.25, 0.75, np.nan, 300.0], np.float32)
    np.testing.assert_array_equal(nativequant.quantize(x, 0.5, 1, np.int8), [1, 3, 1, 127])
