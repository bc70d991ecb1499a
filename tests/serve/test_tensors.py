from __future__ import annotations

import numpy as np
import pytest

from modelship.serve.errors import BadRequest
from modelship.serve.tensors import (
    DATATYPES,
    Quantization,
    TensorSpec,
    array_to_binary,
    binary_to_array,
    datatype_of,
    dequantize,
    json_to_array,
    quantize,
    to_model,
)


@pytest.mark.parametrize(
    ("value", "datatype", "expected"),
    [
        ([[1, 2], [3, 4]], "FP32", np.array([[1, 2], [3, 4]], dtype=np.float32)),
        ([1.5, -2.25], "FP16", np.array([1.5, -2.25], dtype=np.float16)),
        ([1, 2, 3], "INT8", np.array([1, 2, 3], dtype=np.int8)),
        ([1.0, 2.0], "INT32", np.array([1, 2], dtype=np.int32)),  # integral floats are fine
        ([True, False], "BOOL", np.array([True, False])),
        ([0, 255], "UINT8", np.array([0, 255], dtype=np.uint8)),
        ([2**62], "INT64", np.array([2**62], dtype=np.int64)),
        (3.0, "FP64", np.array(3.0)),
    ],
)
def test_json_to_array_accepts(value: object, datatype: str, expected: np.ndarray) -> None:
    arr = json_to_array(value, datatype, "t")
    assert arr.dtype == expected.dtype
    np.testing.assert_array_equal(arr, expected)


@pytest.mark.parametrize(
    ("value", "datatype"),
    [
        (["a"], "FP32"),
        ([None, 1.0], "FP32"),
        ([{"a": 1}], "FP32"),
        ([[1], [1, 2]], "FP32"),
        ([1.5], "INT32"),
        ([256], "UINT8"),
        ([-1], "UINT8"),
        ([-129], "INT8"),
        ([10**30], "INT64"),
        ([1], "BOOL"),
        (["1"], "INT32"),
        ([float("inf")], "INT32"),
        ([1], "COMPLEX"),
    ],
)
def test_json_to_array_rejects(value: object, datatype: str) -> None:
    with pytest.raises(BadRequest):
        json_to_array(value, datatype, "t")


def test_bytes_tensors_from_json_and_b64() -> None:
    arr = json_to_array([["ab", {"b64": "AAE="}], ["c", "d"]], "BYTES", "t")
    assert arr.shape == (2, 2) and arr.dtype == object
    assert arr[0, 1] == b"\x00\x01" and arr[1, 0] == b"c"
    with pytest.raises(BadRequest, match="base64"):
        json_to_array([{"b64": "!!!"}], "BYTES", "t")
    with pytest.raises(BadRequest, match="ragged"):
        json_to_array([["a"], ["b", "c"]], "BYTES", "t")
    with pytest.raises(BadRequest):
        json_to_array([1], "BYTES", "t")


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_binary_round_trip(datatype: str) -> None:
    rng = np.random.default_rng(0)
    if datatype == "BYTES":
        arr = np.array([[b"x", b""], [b"\x00\xff", "é".encode()]], dtype=object)
    elif datatype == "BOOL":
        arr = rng.integers(0, 2, (3, 2)).astype(bool)
    else:
        arr = (rng.standard_normal((3, 2)) * 10).astype(DATATYPES[datatype])
    blob = array_to_binary(arr, datatype)
    back = binary_to_array(blob, datatype, arr.shape, "t")
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_binary_size_and_content_checks() -> None:
    with pytest.raises(BadRequest, match="needs 16 bytes"):
        binary_to_array(b"\0" * 15, "FP32", [2, 2], "t")
    with pytest.raises(BadRequest, match="0 or 1"):
        binary_to_array(b"\x02", "BOOL", [1], "t")
    with pytest.raises(BadRequest, match="truncated"):
        binary_to_array(b"\x05\0\0\0ab", "BYTES", [1], "t")
    with pytest.raises(BadRequest, match="needs 2 elements"):
        binary_to_array(b"\x01\0\0\0a", "BYTES", [2], "t")


def test_quantize_matches_tflite_rounding_and_saturates() -> None:
    q = Quantization(scale=0.5, zero_point=-10, datatype="INT8")
    x = np.array([0.0, 0.25, -0.25, 0.75, 1000.0, -1000.0], dtype=np.float32)
    # x * (1 / 0.5) = 0, 0.5, -0.5, 1.5 -> half to even, as LiteRT's QUANTIZE kernel: 0, 0, 0, 2
    np.testing.assert_array_equal(quantize(x, q), np.array([-10, -10, -10, -8, 127, -128], dtype=np.int8))
    np.testing.assert_array_equal(dequantize(np.array([-10, -8], dtype=np.int8), q), [0.0, 1.0])


def test_spec_accepts_and_shapes() -> None:
    q = Quantization(0.1, 0, "INT8")
    spec = TensorSpec("x", "FP32", (-1, 3), quantization=q)
    assert spec.raw_datatype == "INT8"
    assert spec.accepts("FP32") and spec.accepts("INT8") and spec.accepts("FP64") and spec.accepts("UINT8")
    assert not spec.accepts("BYTES") and not spec.accepts("BOOL")
    ints = TensorSpec("k", "INT32", (2,))
    assert ints.accepts("INT64") and not ints.accepts("FP32")
    spec.check_shape([5, 3])
    with pytest.raises(BadRequest, match=r"\[-1, 3\]"):
        spec.check_shape([5, 4])
    with pytest.raises(BadRequest):
        spec.check_shape([3])
    # raw int8 passes through; float input is quantized
    assert to_model(np.array([[1, 2, 3]], dtype=np.int8), spec).tolist() == [[1, 2, 3]]
    assert to_model(np.array([[0.1, 0.2, 0.3]], dtype=np.float32), spec).tolist() == [[1, 2, 3]]


def test_datatype_of() -> None:
    assert datatype_of(np.float32) == "FP32"
    assert datatype_of(np.dtype("S3")) == "BYTES"
    assert datatype_of(np.int64) == "INT64"
    with pytest.raises(ValueError):
        datatype_of(np.complex64)
