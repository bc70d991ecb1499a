"""modelship.numerics without a model: the rounding rule, saturation, dequantization, tensor details, imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from modelship import numerics


def _ties(scale: float, ks: np.ndarray) -> np.ndarray:
    """Float32 values x whose x * float32(1 / scale) is exactly k + 0.5 (a tie for the kernel's rounding)."""
    inv = np.float32(1.0) / np.float32(scale)
    x = ((ks + 0.5).astype(np.float32) / inv).astype(np.float32)
    return x[(x * inv) == (ks + 0.5).astype(np.float32)]


def test_ties_round_half_to_even_after_multiplying_by_the_reciprocal() -> None:
    scale, zp = 0.023510603, -7
    x = _ties(scale, np.arange(-60, 60))
    assert len(x) > 50
    got = numerics.quantize(x, scale, zp, np.int8).astype(np.int32)
    v = (x * (np.float32(1) / np.float32(scale))).astype(np.float64)
    assert np.all(np.abs(v - np.trunc(v)) == 0.5)
    np.testing.assert_array_equal(got - zp, np.rint(v))  # half to even
    assert np.all((got - zp) % 2 == 0)
    # the rules used before this module differ on these values: the server's (x / scale, half away from zero)
    # and the optimizer's (x / scale + zero point, half to even)
    server = np.copysign(np.floor(np.abs((x / np.float32(scale)).astype(np.float64)) + 0.5), x) + zp
    optimizer = np.round(x / scale + zp)
    assert np.any(server != got) and np.any(optimizer != got)


@pytest.mark.parametrize(("dtype", "lo", "hi"), [(np.int8, -128, 127), (np.uint8, 0, 255), (np.int16, -32768, 32767)])
def test_saturates_to_the_integer_range(dtype: type, lo: int, hi: int) -> None:
    x = np.array([-1e9, -1e4, 0.0, 1e4, 1e9, np.inf, -np.inf], dtype=np.float32)
    got = numerics.quantize(x, 0.5, 3 if dtype is not np.int16 else 0, dtype)
    assert got.dtype == dtype
    assert got[0] == lo and got[-1] == lo and got[4] == hi and got[5] == hi


def test_dequantize_is_float32_affine() -> None:
    q = np.array([-128, -7, 0, 127], dtype=np.int8)
    got = numerics.dequantize(q, 0.1, -7)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (q.astype(np.float32) + np.float32(7)) * np.float32(0.1))
    assert got[1] == 0.0


def test_tensor_details_decide_what_is_quantized() -> None:
    int8 = {"dtype": np.int8, "quantization": (0.5, -1)}
    raw_int = {"dtype": np.int32, "quantization": (0.0, 0)}
    f32 = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert numerics.affine(int8) == (0.5, -1)
    assert numerics.affine(raw_int) is None and numerics.affine(f32) is None
    x = np.array([[0.25, 1.0, -3.0]])
    assert numerics.quantize_input(x, int8).tolist() == [[-1, 1, -7]]  # 0.5 -> 0 (even), 2, -6
    already = np.array([[5, 6, 7]], dtype=np.int8)
    assert numerics.quantize_input(already, int8) is already  # the model's own integers pass through
    assert numerics.quantize_input(x, f32).dtype == np.float32
    assert numerics.quantize_input(np.array([1.0, 2.0]), raw_int).tolist() == [1, 2]
    out = numerics.dequantize_output(np.array([1, 3], dtype=np.int8), int8)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0]
    assert numerics.dequantize_output(np.array([4], dtype=np.int32), raw_int).dtype == np.float32


def test_imports_nothing_internal_and_litert_lazily() -> None:
    code = (
        "import sys, modelship.numerics; "
        "print(sorted(m for m in sys.modules if m.startswith(('modelship', 'ai_edge_litert', 'tensorflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['modelship', 'modelship.numerics']"
