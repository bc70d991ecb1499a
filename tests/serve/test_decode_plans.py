"""The binary extension's decode plans (codec._Plan): a request whose JSON header repeats one seen before is
decoded without parsing it again, to the same result the full decode gives, with the binary data's own checks
still made, and the plans kept bounded."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelship.serve import codec
from modelship.serve.errors import BadRequest
from modelship.serve.model import Runner, ServedModel
from modelship.serve.tensors import TensorSpec

from .fakes import FakeModel


def _request(x: np.ndarray, **extra: Any) -> tuple[bytes, str]:
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
            ],
            **extra,
        }
    ).encode()
    return head + x.astype("<f4").tobytes(), str(len(head))


def _same(a: codec.V2Request, b: codec.V2Request) -> None:
    assert a.inputs.keys() == b.inputs.keys()
    for name in a.inputs:
        np.testing.assert_array_equal(a.inputs[name], b.inputs[name])
        assert a.inputs[name].shape == b.inputs[name].shape
        assert a.inputs[name].dtype == b.inputs[name].dtype
    assert (a.rows, a.id, a.outputs, a.binary_outputs, a.owned_bytes, a.body_views) == (
        b.rows,
        b.id,
        b.outputs,
        b.binary_outputs,
        b.owned_bytes,
        b.body_views,
    )


def test_a_repeated_header_decodes_from_its_plan_to_the_full_decodes_result() -> None:
    model = FakeModel()
    rng = np.random.default_rng(0)
    x1 = rng.random((2, 4), dtype=np.float32)
    x2 = rng.random((2, 4), dtype=np.float32)
    extra = {"id": "a", "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    body1, n = _request(x1, **extra)
    body2, n2 = _request(x2, **extra)
    assert n == n2 and body1[: int(n)] == body2[: int(n)]  # the same header, other data

    first = codec.v2_decode(model, body1, n)
    assert len(codec._PLANS[model]) == 1
    second = codec.v2_decode(model, body2, n)  # from the plan
    np.testing.assert_array_equal(second.inputs["x"], x2)  # this request's data, not the first one's
    codec._PLANS.pop(model)
    _same(second, codec.v2_decode(model, body2, n))  # what the full decode gives
    np.testing.assert_array_equal(first.inputs["x"], x1)
    # each answer gets its own lists: one request's changes do not reach the next
    assert second.outputs is not codec.v2_decode(model, body2, n).outputs


def test_each_input_of_a_plan_gets_its_own_slice_of_the_binary_data() -> None:
    model = FakeModel(two_inputs=True)
    rng = np.random.default_rng(1)

    def request(x: np.ndarray, k: np.ndarray) -> tuple[bytes, str]:
        head = json.dumps(
            {
                "inputs": [
                    {"name": n, "shape": list(a.shape), "datatype": t, "parameters": {"binary_data_size": a.nbytes}}
                    for n, t, a in (("x", "FP32", x), ("k", "INT32", k))
                ]
            }
        ).encode()
        return head + x.astype("<f4").tobytes() + k.astype("<i4").tobytes(), str(len(head))

    x1, k1 = rng.random((3, 4), dtype=np.float32), rng.integers(-99, 99, (3, 2), dtype=np.int32)
    x2, k2 = rng.random((3, 4), dtype=np.float32), rng.integers(-99, 99, (3, 2), dtype=np.int32)
    body1, n = request(x1, k1)
    body2, n2 = request(x2, k2)
    assert n == n2 and body1[: int(n)] == body2[: int(n)]
    first = codec.v2_decode(model, body1, n)
    assert len(codec._PLANS[model]) == 1
    second = codec.v2_decode(model, body2, n)  # from the plan
    np.testing.assert_array_equal(first.inputs["x"], x1)
    np.testing.assert_array_equal(first.inputs["k"], k1)
    # k is the 48 bytes after x's, not the start of the binary data, and x is not k's bytes either
    np.testing.assert_array_equal(second.inputs["x"], x2)
    np.testing.assert_array_equal(second.inputs["k"], k2)
    codec._PLANS.pop(model)
    _same(second, codec.v2_decode(model, body2, n))


def test_a_header_planned_for_one_model_is_decoded_for_another_as_that_model_says() -> None:
    planned = FakeModel()  # x FP32 [-1, 4] -> y
    renamed = _OneInputModel("renamed", (-1, 4), "z")  # the same input, another output
    narrower = _OneInputModel("narrower", (-1, 2), "y")  # the same input name, another shape
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, n = _request(x)  # no "outputs": each model's own outputs are wanted
    assert codec.v2_decode(planned, body, n).outputs == ["y"]
    assert len(codec._PLANS[planned]) == 1
    other = codec.v2_decode(renamed, body, n)  # the full decode, for this model
    assert other.outputs == ["z"]
    np.testing.assert_array_equal(other.inputs["x"], x)
    with pytest.raises(BadRequest, match=r"shape \[2, 4\] but the model expects \[-1, 2\]"):
        codec.v2_decode(narrower, body, n)
    assert narrower not in codec._PLANS
    assert codec.v2_decode(planned, body, n).outputs == ["y"]  # the first model's plan is still its own


def test_the_binary_datas_checks_hold_on_a_plan() -> None:
    model = _BoolModel()
    head = json.dumps(
        {"inputs": [{"name": "b", "shape": [1, 3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}]}
    ).encode()
    n = str(len(head))
    ok = codec.v2_decode(model, head + b"\x00\x01\x00", n)
    assert ok.inputs["b"].tolist() == [[False, True, False]]
    assert model in codec._PLANS
    with pytest.raises(BadRequest, match="BOOL bytes must be 0 or 1"):
        codec.v2_decode(model, head + b"\x00\x02\x00", n)  # the plan's header, bad data
    # another length of binary data is another key: the full decode says what is wrong
    with pytest.raises(BadRequest, match="does not fit"):
        codec.v2_decode(model, head + b"\x00\x01", n)


def test_no_plan_for_converted_inputs_or_invalid_headers() -> None:
    model = FakeModel()
    x = np.ones((1, 4), dtype=np.float64)
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}]}
    ).encode()
    out = codec.v2_decode(model, head + x.tobytes(), str(len(head)))  # FP64 converted to FP32: owned, not a view
    assert out.inputs["x"].dtype == np.float32 and out.owned_bytes == 16
    assert model not in codec._PLANS
    bad = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "parameters": {"binary_data_size": 20}}]}
    ).encode()
    for _ in range(2):  # refused each time: a refused header leaves no plan
        with pytest.raises(BadRequest, match="shape"):
            codec.v2_decode(model, bad + bytes(20), str(len(bad)))
    assert model not in codec._PLANS


def test_plans_are_bounded() -> None:
    model = FakeModel()
    x = np.zeros((1, 4), dtype=np.float32)
    for i in range(codec.MAX_PLANS + 5):
        body, n = _request(x, id=str(i))  # a header of its own each time
        assert codec.v2_decode(model, body, n).id == str(i)
        assert len(codec._PLANS[model]) <= codec.MAX_PLANS
    assert len(codec._PLANS[model]) == 5  # forgotten when full, then filled again


class _BoolModel(ServedModel):
    def __init__(self) -> None:
        super().__init__(
            "bools",
            "1",
            [TensorSpec("b", "BOOL", (-1, 3))],
            [TensorSpec("y", "FP32", (-1, 1))],
            batchable=True,
            path="<fake>",
        )

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:  # pragma: no cover - never run
        raise NotImplementedError


class _OneInputModel(ServedModel):
    def __init__(self, name: str, shape: tuple[int, ...], output: str) -> None:
        super().__init__(
            name,
            "1",
            [TensorSpec("x", "FP32", shape)],
            [TensorSpec(output, "FP32", (-1, 1))],
            batchable=True,
            path="<fake>",
        )

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:  # pragma: no cover - never run
        raise NotImplementedError
