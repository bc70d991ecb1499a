"""Hypothesis over request bodies: the server answers 200 or a 4xx JSON error, never a 500, and stays healthy."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelship.serve.tensors import DATATYPES

from .fakes import FakeModel, ServerThread

ALLOWED = {200, 400, 404, 405, 413}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)
numbers = st.integers(-300, 300) | st.floats(-1e6, 1e6) | st.floats(allow_nan=True, allow_infinity=True)
shapes = st.lists(st.integers(-2, 6) | st.just(10**12), max_size=4) | json_values
datatypes = st.sampled_from([*sorted(DATATYPES), "FP8", "", "fp32"]) | json_values
names = st.sampled_from(["x", "k", "y", "", "zz"]) | json_values


@st.composite
def tensor_data(draw: st.DrawFn) -> Any:
    n = draw(st.integers(0, 12))
    flat = draw(st.lists(numbers, min_size=n, max_size=n))
    if draw(st.booleans()) and n % 2 == 0 and n:
        return [flat[: n // 2], flat[n // 2 :]]
    return flat


v2_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "shape": shapes,
        "datatype": datatypes,
        "data": tensor_data() | json_values,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), json_values, max_size=2)
        | json_values,
    },
)
v2_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(v2_tensor, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({}, optional={"name": names, "parameters": json_values}), max_size=3)
        | json_values,
        "id": json_values,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output"]), json_values) | json_values,
    },
)
row = st.fixed_dictionaries({}, optional={"x": st.lists(numbers, max_size=5) | json_values, "k": json_values})
v1_bodies = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(row | st.lists(numbers, max_size=5), max_size=4) | json_values,
        "inputs": st.fixed_dictionaries({}, optional={"x": json_values, "k": json_values}) | json_values,
        "signature_name": st.sampled_from(["serving_default", "other"]) | json_values,
    },
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(FakeModel(two_inputs=True), max_request_bytes=64 * 1024) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def check(r: httpx.Response) -> None:
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=v2_bodies | json_values)
def test_v2_infer_json_bodies(client: httpx.Client, body: Any) -> None:
    check(client.post("/v2/models/fake/infer", content=encode(body)))


@FUZZ
@given(body=v1_bodies | json_values)
def test_v1_predict_json_bodies(client: httpx.Client, body: Any) -> None:
    check(client.post("/v1/models/fake:predict", content=encode(body)))


@FUZZ
@given(
    body=st.binary(max_size=512),
    header=st.none()
    | st.integers(-5, 600).map(str)
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=5),
    path=st.sampled_from(["/v2/models/fake/infer", "/v1/models/fake:predict", "/v1/models/fake/versions/1:predict"]),
)
def test_raw_bytes_and_binary_header(client: httpx.Client, body: bytes, header: str | None, path: str) -> None:
    headers = {"Inference-Header-Content-Length": header} if header is not None else {}
    check(client.post(path, content=body, headers=headers))


@FUZZ
@given(
    tensors=st.lists(v2_tensor, min_size=1, max_size=3),
    blob=st.binary(max_size=64),
    outputs=st.none() | st.just([{"name": "y", "parameters": {"binary_data": True}}]),
)
def test_binary_extension_bodies(
    client: httpx.Client, tensors: list[dict[str, Any]], blob: bytes, outputs: Any
) -> None:
    doc: dict[str, Any] = {"inputs": tensors}
    if outputs is not None:
        doc["outputs"] = outputs
    head = encode(doc)
    check(
        client.post(
            "/v2/models/fake/infer", content=head + blob, headers={"Inference-Header-Content-Length": str(len(head))}
        )
    )


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]), path=st.text(max_size=30))
def test_paths_and_methods(server: ServerThread, method: str, path: str) -> None:
    target = "/" + quote(path, safe="/:%?#&=;,+@!$*'()")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    assert status in ALLOWED | {503}, (target, data[:300])


def test_still_healthy_and_correct_after_fuzzing(client: httpx.Client, server: ServerThread) -> None:
    assert client.get("/v2/health/ready").status_code == 200
    x = [[1.0, 2.0, 3.0, 4.0]]
    r = client.post("/v1/models/fake:predict", json={"inputs": {"x": x, "k": [[1, 1]]}})
    assert r.status_code == 200
    np.testing.assert_array_equal(np.asarray(r.json()["outputs"]["y"], dtype=np.float32), FakeModel.expected(x))
    text = httpx.get(f"{server.metrics_url}/metrics").text
    assert 'code="500"' not in text
    assert server.server is not None and server.server.http.stats()["dropped"] == 0


def _fast_paths() -> list[str]:
    """The fast paths this machine has: libmsjson (native; required in CI, where hack/setup builds it) and
    pysimdjson."""
    from modelship.serve import jsonparse, nativejson

    if nativejson.LIBRARY is None and os.environ.get("CI"):
        pytest.fail(f"libmsjson is missing in CI: {nativejson.WHY_NOT}")
    paths = ["native"] if nativejson.LIBRARY is not None else []
    if jsonparse._simdjson is not None:
        paths.append("simdjson")
    if not paths:
        pytest.skip("neither libmsjson nor pysimdjson (the [serve] extra) is installed")
    return paths


def _answer(c: httpx.Client, url: str, body: bytes, path: str | None) -> httpx.Response:
    """POST ``body`` with the server decoding it the ``path`` way (None: the checked path, orjson + numpy)."""
    from modelship.serve import jsonparse, nativejson

    saved = jsonparse.FAST_JSON_BYTES, nativejson.LIBRARY
    try:
        jsonparse.FAST_JSON_BYTES = 1 << 40 if path is None else 0
        if path == "simdjson":
            nativejson.LIBRARY = None
        return c.post(url, content=body)
    finally:
        jsonparse.FAST_JSON_BYTES, nativejson.LIBRARY = saved


safe_numbers = (
    st.integers(-(2**53), 2**53)
    | st.floats(-1e30, 1e30)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=2)
)
fast_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "k", "zz"]),
        "shape": st.sampled_from([[1, 4], [2, 4], [1, 2], [2, 2], [3], [8]]),
        "datatype": st.sampled_from(["FP32", "FP16", "FP64", "INT32", "INT64", "UINT8", "INT8", "BOOL", "BYTES"]),
        "data": st.lists(safe_numbers, max_size=9) | st.lists(st.lists(safe_numbers, max_size=4), max_size=3),
    }
)


@FUZZ
@given(tensors=st.lists(fast_tensor, min_size=1, max_size=3), rid=st.none() | st.text(max_size=4))
def test_simdjson_fast_path_answers_exactly_like_the_checked_path(
    client: httpx.Client, tensors: list[dict[str, Any]], rid: str | None
) -> None:
    """Large bodies are parsed with libmsjson (native) or simdjson; force each path on small ones and compare every
    answer with the checked path's."""
    doc: dict[str, Any] = {"inputs": tensors}
    if rid is not None:
        doc["id"] = rid
    body = encode(doc)
    slow = _answer(client, "/v2/models/fake/infer", body, None)
    for path in _fast_paths():
        fast = _answer(client, "/v2/models/fake/infer", body, path)
        check(fast)
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), path


nested_rows = st.lists(st.lists(safe_numbers, max_size=5), max_size=4) | st.lists(
    st.lists(st.lists(safe_numbers, max_size=2), max_size=3), max_size=3
)


@pytest.fixture(scope="module")
def one_input() -> Iterator[httpx.Client]:
    """A single-input model (x: FP32 [-1, 4]), so unnamed TF Serving instances are valid."""
    with ServerThread(FakeModel("one"), max_request_bytes=64 * 1024) as s, httpx.Client(base_url=s.url) as c:
        yield c


@FUZZ
@given(rows=nested_rows, columnar=st.booleans(), k=nested_rows)
def test_v1_fast_path_answers_exactly_like_the_checked_path(
    client: httpx.Client, one_input: httpx.Client, rows: Any, columnar: bool, k: Any
) -> None:
    """Large TF Serving bodies are parsed with simdjson and nested numbers read straight into arrays (ragged
    nesting found by comparing skeletons); forced on small ones, every answer equals the checked path's."""
    calls = [
        (one_input, "/v1/models/one:predict", {"inputs": rows} if columnar else {"instances": rows}),
        (client, "/v1/models/fake:predict", {"inputs": {"x": rows, "k": k}}),
    ]
    for c, url, doc in calls:
        body = encode(doc)
        slow = _answer(c, url, body, None)
        for path in _fast_paths():
            fast = _answer(c, url, body, path)
            check(fast)
            assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), (path, doc)
