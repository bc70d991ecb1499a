"""Both protocols over real HTTP on loopback, against a pure-numpy model (no TensorFlow needed)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from .fakes import FakeModel, FakeRunner, ServerThread, wait_for

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]
K = [[1, 2], [3, 4]]


def v2_body(x: Any = X, k: Any = K, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "shape": list(np.shape(x)), "datatype": "FP32", "data": np.ravel(x).tolist()},
            {"name": "k", "shape": list(np.shape(k)), "datatype": "INT32", "data": k},
        ],
        **extra,
    }


def test_health_and_server_metadata(fake_server: ServerThread) -> None:
    with httpx.Client(base_url=fake_server.url) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        r = c.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (200, {"ready": True})
        meta = c.get("/v2").json()
        assert meta["name"] == "modelship" and "binary_tensor_data" in meta["extensions"]
        assert c.get("/v2/models/fake/ready").json() == {"name": "fake", "ready": True}
        assert c.get("/v2/models").json() == {"models": ["fake"]}
        assert c.get("/v1/models").json() == {"models": ["fake"]}


def test_model_metadata_both_protocols(fake_server: ServerThread) -> None:
    with httpx.Client(base_url=fake_server.url) as c:
        v2 = c.get("/v2/models/fake").json()
        assert v2 == {
            "name": "fake",
            "versions": ["1"],
            "platform": "fake",
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "k", "datatype": "INT32", "shape": [-1, 2]},
            ],
            "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "s", "datatype": "INT64", "shape": [-1]},
            ],
        }
        assert c.get("/v2/models/fake/versions/1").json() == v2
        status = c.get("/v1/models/fake").json()
        assert status["model_version_status"] == [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
        assert status["ready"] is True
        assert c.get("/v1/models/fake/versions/1").status_code == 200
        meta = c.get("/v1/models/fake/metadata").json()
        assert meta["model_spec"] == {"name": "fake", "signature_name": "", "version": "1"}
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert sig["inputs"]["k"]["dtype"] == "DT_INT32"
        assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "4"]
        assert sig["outputs"]["s"]["dtype"] == "DT_INT64"
        assert sig["method_name"] == "tensorflow/serving/predict"


def test_v1_row_format(fake_server: ServerThread) -> None:
    body = {"instances": [{"x": x, "k": k} for x, k in zip(X, K, strict=True)]}
    r = httpx.post(f"{fake_server.url}/v1/models/fake:predict", json=body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    expected = FakeModel.expected(X)
    assert len(preds) == 2
    for i, p in enumerate(preds):
        np.testing.assert_array_equal(np.asarray(p["y"], dtype=np.float32), expected[i])
        assert p["s"] == sum(K[i])


def test_v1_columnar_format_and_version_path(fake_server: ServerThread) -> None:
    r = httpx.post(
        f"{fake_server.url}/v1/models/fake/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": {"x": X, "k": K}},
    )
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    np.testing.assert_array_equal(np.asarray(out["y"], dtype=np.float32), FakeModel.expected(X))
    assert out["s"] == [3, 7]


def test_v1_single_input_model_takes_plain_instances() -> None:
    with ServerThread(FakeModel("one")) as s:
        r = httpx.post(f"{s.url}/v1/models/one:predict", json={"instances": X})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.asarray(r.json()["predictions"], dtype=np.float32), FakeModel.expected(X))
        r = httpx.post(f"{s.url}/v1/models/one:predict", json={"inputs": X})
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"], dtype=np.float32), FakeModel.expected(X))


def test_v2_infer_json(fake_server: ServerThread) -> None:
    r = httpx.post(f"{fake_server.url}/v2/models/fake/infer", json=v2_body(id="req-7"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "fake" and doc["model_version"] == "1" and doc["id"] == "req-7"
    outs = {o["name"]: o for o in doc["outputs"]}
    assert outs["y"]["datatype"] == "FP32" and outs["y"]["shape"] == [2, 3]
    np.testing.assert_array_equal(np.asarray(outs["y"]["data"], dtype=np.float32).reshape(2, 3), FakeModel.expected(X))
    assert outs["s"] == {"name": "s", "datatype": "INT64", "shape": [2], "data": [3, 7]}


def test_v2_nested_data_and_output_selection(fake_server: ServerThread) -> None:
    body = v2_body(outputs=[{"name": "s"}])
    body["inputs"][0]["data"] = X  # nested instead of flat
    r = httpx.post(f"{fake_server.url}/v2/models/fake/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["s"]


def test_v2_binary_tensor_extension(fake_server: ServerThread) -> None:
    x = np.asarray(X, dtype=np.float32)
    k = np.asarray(K, dtype=np.int32)
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
                {"name": "k", "shape": [2, 2], "datatype": "INT32", "parameters": {"binary_data_size": k.nbytes}},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "s"}],
        }
    ).encode()
    r = httpx.post(
        f"{fake_server.url}/v2/models/fake/infer",
        content=head + x.tobytes() + k.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:n])
    y_meta, s_meta = doc["outputs"]
    assert y_meta["parameters"]["binary_data_size"] == 2 * 3 * 4 and "data" not in y_meta
    y = np.frombuffer(r.content[n:], dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(y, FakeModel.expected(X))
    assert s_meta["data"] == [3, 7]


def test_v2_int_inputs_accept_other_integer_types_and_cast(fake_server: ServerThread) -> None:
    body = v2_body()
    body["inputs"][0]["datatype"] = "INT64"
    body["inputs"][0]["data"] = [1, 2, 3, 4, 0, -1, 0, 2]
    r = httpx.post(f"{fake_server.url}/v2/models/fake/infer", json=body)
    assert r.status_code == 200, r.text
    y = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(y, FakeModel.expected([[1, 2, 3, 4], [0, -1, 0, 2]]))


ERROR_CASES: list[tuple[str, str, Any, int, str]] = [
    # (method, path, body (dict -> JSON, bytes -> raw), status, substring of the error)
    ("POST", "/v1/models/fake:predict", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/models/fake:predict", b"", 400, "empty"),
    ("POST", "/v1/models/fake:predict", [1, 2], 400, "JSON object"),
    ("POST", "/v1/models/fake:predict", {"foo": 1}, 400, "'instances'"),
    ("POST", "/v1/models/fake:predict", {"instances": [], "inputs": {}}, 400, "exactly one"),
    ("POST", "/v1/models/fake:predict", {"instances": []}, 400, "non-empty"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": [1, 2, 3, 4]}]}, 400, "missing"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": [1, 2, 3], "k": [1, 2]}]}, 400, "shape"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": ["a", "b", "c", "d"], "k": [1, 2]}]}, 400, "FP32"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": [1, 2, 3, 4], "k": [1.5, 2]}]}, 400, "INT32"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": [1, 2, 3, 4], "k": [1, 2], "z": 1}]}, 400, "unknown"),
    ("POST", "/v1/models/fake:predict", {"inputs": {"x": [[1, 2, 3, 4]], "k": [[1, 2], [3, 4]]}}, 400, "batch"),
    ("POST", "/v1/models/fake:predict", {"instances": [{"x": [[1], [2, 3]], "k": [1, 2]}]}, 400, "x"),
    ("POST", "/v1/models/fake:predict", {"signature_name": "other", "instances": [1]}, 400, "signature_name"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found"),
    ("POST", "/v1/models/fake/versions/9:predict", {"instances": [1]}, 404, "Specific(fake, 9)"),
    ("POST", "/v1/models/fake:classify", {"examples": []}, 404, "classify"),
    ("GET", "/v1/models/fake:predict", None, 405, "POST"),
    ("GET", "/v1/models/nope", None, 404, "Servable not found"),
    ("GET", "/v1/models/fake/labels/stable", None, 404, "label"),
    ("POST", "/v2/models/fake/infer", b"\xff\xfe", 400, "not valid JSON"),
    ("POST", "/v2/models/fake/infer", {"inputs": []}, 400, "non-empty"),
    ("POST", "/v2/models/fake/infer", {"inputs": [{"name": "x"}]}, 400, "datatype"),
    ("POST", "/v2/models/fake/infer", {"inputs": [{"name": "q", "shape": [1], "datatype": "FP32", "data": [1]}]},
     400, "unknown input 'q'"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400, "missing inputs"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}, 400, "expects FP32"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "needs 4 values"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1] * 5}]}, 400, "shape"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4},
                 {"name": "k", "shape": [1, 2], "datatype": "INT32", "data": [1, 2**40]}]}, 400, "out of range"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, None, 3, 4]},
                 {"name": "k", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}, 400, "FP32"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4},
                 {"name": "k", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}],
      "outputs": [{"name": "nope"}]}, 400, "unknown output"),
    ("POST", "/v2/models/fake/infer",
     {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "WEIRD", "data": [1] * 4}]}, 400, "datatype"),
    ("POST", "/v2/models/nope/infer", {"inputs": []}, 404, "model 'nope'"),
    ("POST", "/v2/models/fake/versions/3/infer", {"inputs": []}, 404, "version '3'"),
    ("GET", "/v2/models/fake/infer", None, 405, "POST"),
    ("GET", "/v2/models/nope", None, 404, "not found"),
    ("GET", "/v3/anything", None, 404, "no route"),
    ("GET", "/v2/models/fake/unknown", None, 404, "no route"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), ERROR_CASES)
def test_bad_requests_get_json_errors(
    fake_server: ServerThread, method: str, path: str, body: Any, status: int, needle: str
) -> None:
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    with httpx.Client(base_url=fake_server.url) as c:
        r = c.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert isinstance(err, str) and needle in err, err
        # the server keeps serving on the same connection
        ok = c.post("/v2/models/fake/infer", json=v2_body())
        assert ok.status_code == 200


def test_binary_extension_errors(fake_server: ServerThread) -> None:
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    url = f"{fake_server.url}/v2/models/fake/infer"
    cases = [
        ({"Inference-Header-Content-Length": "abc"}, head + b"\0" * 16, "integer"),
        ({"Inference-Header-Content-Length": str(len(head) + 999)}, head, "outside"),
        ({"Inference-Header-Content-Length": str(len(head))}, head + b"\0" * 15, "binary_data_size"),
        ({}, head + b"\0" * 16, "not valid JSON"),
    ]
    for headers, content, needle in cases:
        r = httpx.post(url, content=content, headers=headers)
        assert r.status_code == 400 and needle in r.json()["error"], (needle, r.text)


def test_oversized_body_gets_413_and_server_keeps_serving() -> None:
    with ServerThread(FakeModel(two_inputs=True), max_request_bytes=4096) as s:
        big = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 20_000}]}
        r = httpx.post(f"{s.url}/v2/models/fake/infer", json=big)
        assert r.status_code == 413
        assert "exceeds the limit of 4096 bytes" in r.json()["error"]

        def chunks() -> Any:  # no Content-Length: chunked transfer encoding
            for _ in range(50):
                yield b"x" * 1000

        r = httpx.post(f"{s.url}/v1/models/fake:predict", content=chunks())
        assert r.status_code == 413
        ok = httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body())
        assert ok.status_code == 200


def _raw(port: int, data: bytes, read_until_close: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def test_malformed_http_gets_400_then_close(fake_server: ServerThread) -> None:
    resp = _raw(fake_server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 ")
    assert b"malformed HTTP request" in resp
    assert httpx.get(f"{fake_server.url}/v2/health/ready").status_code == 200


def test_pipelined_requests_are_answered_in_order(fake_server: ServerThread) -> None:
    def req(i: int) -> bytes:
        body = json.dumps(v2_body(x=[[float(i), 0, 0, 0]], k=[[i, 0]], id=str(i))).encode()
        return (
            f"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    last = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    resp = _raw(fake_server.port, b"".join(req(i) for i in range(5)) + last)
    assert resp.count(b"HTTP/1.1 200 OK") == 6
    ids = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["id"]
        for part in resp.split(b"HTTP/1.1 200 OK")[1:6]
    ]
    assert ids == ["0", "1", "2", "3", "4"]


def test_expect_100_continue(fake_server: ServerThread) -> None:
    body = json.dumps(v2_body()).encode()
    head = (
        f"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_expect_100_continue_with_oversized_length_gets_413_without_body() -> None:
    with ServerThread(FakeModel(), max_request_bytes=2048) as s:
        head = (
            b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n"
        )
        resp = _raw(s.port, head)
        assert resp.startswith(b"HTTP/1.1 413 ")


def test_concurrent_distinct_requests_are_batched_and_each_gets_its_rows() -> None:
    model = FakeModel(two_inputs=True)
    model.gate = threading.Event()
    with ServerThread(model, workers=1, max_batch_size=8) as s:
        batcher = s.server.app.models["fake"].batcher  # type: ignore[union-attr]
        assert batcher is not None
        n = 16
        xs = [[[float(i), float(i) / 2, -float(i), 1.0]] for i in range(n)]

        def call(i: int) -> tuple[int, Any]:
            r = httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body(x=xs[i], k=[[i, 1]]), timeout=30)
            return r.status_code, r.json()

        with ThreadPoolExecutor(n) as pool:
            first = pool.submit(call, 0)
            wait_for(lambda: len(model.batches) == 1, what="first batch to start")
            rest = [pool.submit(call, i) for i in range(1, n)]
            wait_for(lambda: batcher.queued == n - 1, what="the other requests to queue")
            model.gate.set()
            results = [first.result(), *[f.result() for f in rest]]
        for i, (status, doc) in enumerate(results):
            assert status == 200, doc
            outs = {o["name"]: o["data"] for o in doc["outputs"]}
            np.testing.assert_array_equal(np.asarray(outs["y"], dtype=np.float32), FakeModel.expected(xs[i])[0])
            assert outs["s"] == [i + 1]
        assert model.batches[0] == 1
        assert sum(model.batches) == n
        assert max(model.batches[1:]) == 8  # 15 queued requests went in batches of at most 8
        assert len(model.batches) == 3


def test_request_timeout_gives_504_and_server_recovers() -> None:
    model = FakeModel(two_inputs=True)
    model.gate = threading.Event()
    with ServerThread(model, workers=1, request_timeout_s=0.5) as s:
        r = httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body(), timeout=30)
        assert r.status_code == 504
        assert "timed out" in r.json()["error"]
        model.gate.set()
        # recovered: answers come back (a very busy machine may still time out an attempt or two)
        statuses: list[int] = []

        def answered() -> bool:
            r = httpx.post(f"{s.url}/v1/models/fake:predict", json={"inputs": {"x": X, "k": K}}, timeout=30)
            statuses.append(r.status_code)
            return r.status_code == 200

        wait_for(answered, timeout=30, what="a 200 after the timeout")
        assert set(statuses) <= {200, 504}


def test_readiness_is_false_until_the_model_is_loaded() -> None:
    with ServerThread() as s:
        s.call(lambda: s.server.app.expect("late"))  # type: ignore[union-attr]
        with httpx.Client(base_url=s.url) as c:
            assert c.get("/v2/health/live").status_code == 200
            r = c.get("/v2/health/ready")
            assert (r.status_code, r.json()) == (503, {"ready": False})
            assert c.get("/v2/models/late/ready").status_code == 503
            status = c.get("/v1/models/late")
            assert status.status_code == 503
            assert status.json()["model_version_status"][0]["state"] == "LOADING"
            r = c.post("/v2/models/late/infer", json=v2_body())
            assert r.status_code == 503 and "loading" in r.json()["error"]
            s.call(lambda: s.server.app.add_model(FakeModel("late")))  # type: ignore[union-attr]
            assert c.get("/v2/health/ready").status_code == 200
            assert c.get("/v1/models/late").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_metrics_endpoint(fake_server: ServerThread) -> None:
    with httpx.Client(base_url=fake_server.url) as c:
        for _ in range(3):
            assert c.post("/v2/models/fake/infer", json=v2_body()).status_code == 200
        assert c.post("/v1/models/fake:predict", json={"inputs": {"x": X, "k": K}}).status_code == 200
        assert c.post("/v1/models/fake:predict", json={}).status_code == 400
        text = httpx.get(f"{fake_server.metrics_url}/metrics").text
    assert 'modelship_requests_total{code="200",model="fake",protocol="v2"} 3.0' in text
    assert 'modelship_requests_total{code="400",model="fake",protocol="v1"} 1.0' in text
    assert 'modelship_request_duration_seconds_count{model="fake",protocol="v2"} 3.0' in text
    assert 'modelship_batch_size_sum{model="fake"} 8.0' in text  # 4 requests of 2 rows
    assert 'modelship_queue_depth{model="fake"} 0.0' in text
    assert 'modelship_model_load_seconds{model="fake"}' in text
    assert "modelship_ready 1.0" in text
    assert "modelship_in_flight_requests 0.0" in text


def test_drain_answers_in_flight_requests_and_refuses_new_connections() -> None:
    model = FakeModel(two_inputs=True)
    model.gate = threading.Event()
    s = ServerThread(model, workers=1, drain_seconds=30.0)
    with s:
        srv = s.server
        assert srv is not None
        with ThreadPoolExecutor(2) as pool:
            pending = pool.submit(lambda: httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body(), timeout=30))
            wait_for(lambda: len(model.batches) == 1, what="request in flight")
            shutdown = pool.submit(lambda: s.call(lambda: _stop(srv), timeout=60))
            # readiness turns false while the drain delay runs, and the server still answers
            wait_for(lambda: httpx.get(f"{s.url}/v2/health/ready").status_code == 503, what="readiness false")
            r = httpx.get(f"{s.url}/v2/models/fake/ready")
            assert r.status_code == 503 and r.headers["connection"] == "close"
            s.call(lambda: srv.request_stop())  # second signal: stop waiting for the drain delay
            wait_for(lambda: _refused(s.port), what="listener closed")
            assert not pending.done()
            model.gate.set()
            assert pending.result().status_code == 200
            assert shutdown.result() is True
        stats = srv.http.stats()
        assert stats["dropped"] == 0 and stats["requests"] == stats["responses"]


async def _stop(srv: Any) -> bool:
    srv.request_stop()
    return bool(await srv.shutdown())


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True  # reset: the connect raced the listener's close (its queued handshakes are reset)
    return False


@pytest.mark.asyncio
async def test_start_server_api_for_embedding() -> None:
    from modelship.serve.config import ServeConfig
    from modelship.serve.server import start_server

    cfg = ServeConfig(model="-", host="127.0.0.1", port=0, workers=1, threads=1, drain_seconds=0)
    server = await start_server(cfg, FakeModel("emb"))
    try:
        assert server.app.ready
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            r = await c.post("/v1/models/emb:predict", json={"instances": X})
            assert r.status_code == 200
            np.testing.assert_array_equal(np.asarray(r.json()["predictions"], np.float32), FakeModel.expected(X))
    finally:
        server.request_stop()
        assert await server.shutdown() is True
    assert not server.app.ready


def test_oversized_headers_get_431(fake_server: ServerThread) -> None:
    resp = _raw(fake_server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 431 ")
    assert httpx.get(f"{fake_server.url}/v2/health/live").status_code == 200


def test_work_for_a_client_that_left_is_skipped() -> None:
    model = FakeModel(two_inputs=True)
    model.gate = threading.Event()
    with ServerThread(model, workers=1) as s:
        batcher = s.server.app.models["fake"].batcher  # type: ignore[union-attr]
        assert batcher is not None
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(lambda: httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body(), timeout=30))
            wait_for(lambda: len(model.batches) == 1, what="first request running")
            body = json.dumps(v2_body(x=[[9.0, 9.0, 9.0, 9.0]] * 3, k=[[1, 1]] * 3)).encode()
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(
                f"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            wait_for(lambda: batcher.queued == 1, what="second request queued")
            sock.close()  # the client gives up while its request waits
            wait_for(lambda: s.server.http.stats()["dropped"] == 1, what="server to notice")  # type: ignore[union-attr]
            model.gate.set()
            assert first.result().status_code == 200
        wait_for(lambda: batcher.queued == 0, what="queue to empty")
        r = httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body(), timeout=30)
        assert r.status_code == 200
        assert model.batches == [2, 2]  # the 3-row request of the departed client never ran
        assert 'code="499"' in httpx.get(f"{s.metrics_url}/metrics").text


def test_large_json_request_takes_the_fast_path_and_is_exact(fake_server: ServerThread) -> None:
    pytest.importorskip("simdjson", reason="pysimdjson (the [serve] extra) enables the fast path")
    from modelship.serve import jsonparse

    rng = np.random.default_rng(1)
    x = (rng.integers(-64, 64, (3000, 4)) / 8).astype(np.float32)
    k = rng.integers(-1000, 1000, (3000, 2)).astype(np.int32)
    body = json.dumps(v2_body(x=x, k=k.tolist())).encode()
    assert len(body) > jsonparse.FAST_JSON_BYTES
    r = httpx.post(f"{fake_server.url}/v2/models/fake/infer", content=body, timeout=30)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    np.testing.assert_array_equal(np.asarray(outs["y"]["data"], np.float32).reshape(3000, 3), FakeModel.expected(x))
    np.testing.assert_array_equal(outs["s"]["data"], k.sum(axis=1))
    bad = v2_body(x=x, k=k.tolist())
    flat_k = k.ravel().tolist()
    flat_k[5] = 2**40  # out of INT32 range, found on the fast path too
    bad["inputs"][1]["data"] = flat_k
    r = httpx.post(f"{fake_server.url}/v2/models/fake/infer", json=bad, timeout=30)
    assert r.status_code == 400 and "out of range" in r.json()["error"]


def test_head_answers_headers_only_and_keeps_the_connection_usable(fake_server: ServerThread) -> None:
    resp = _raw(
        fake_server.port,
        b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, rest = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 14" in head  # {"ready":true}
    assert rest.startswith(b"HTTP/1.1 200 OK")  # no body bytes before the next response
    assert rest.endswith(b'{"live":true}')


def test_a_refused_upload_is_read_and_dropped_only_up_to_the_linger_limit() -> None:
    """After a 413 at the headers the server drops what the client still sends, at most LINGER_MAX_BYTES of it
    (then it stops reading until the connection closes): a flood of refused 64 MiB uploads costs the server a
    bounded copy each."""
    from modelship.serve.reading import LINGER_MAX_BYTES

    with ServerThread(FakeModel(two_inputs=True), max_request_bytes=4096) as s:
        assert s.server is not None
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        try:
            head = b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n"
            sock.settimeout(0.5)
            sent = 0
            with contextlib.suppress(OSError):  # the head and 1 MiB of body at once: most of it already waits
                sent = sock.send(head + b"x" * (4 * LINGER_MAX_BYTES)) - len(head)  # in the server's socket
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
            sock.settimeout(0.2)
            with contextlib.suppress(OSError):  # the server stops reading: our sends stall
                while sent < 8 * LINGER_MAX_BYTES:
                    sent += sock.send(b"x" * 65536)
            (conn,) = [c for c in list(s.server.http.connections) if c.lingering]
            wait_for(lambda: conn.paused, what="the server to stop reading the refused upload")
            assert sent > LINGER_MAX_BYTES and 0 < conn.discarded <= LINGER_MAX_BYTES
        finally:
            sock.close()


def test_closed_connections_leave_no_cyclic_garbage() -> None:
    """A closed connection (answered and closed, refused with 413, or dropped mid-request) is freed by reference
    counting: nothing is left for the cyclic garbage collector, whose full collections stop the whole server."""
    import gc

    from modelship.serve.connection import _Conn

    with ServerThread(FakeModel(two_inputs=True), max_request_bytes=4096) as s:
        assert s.server is not None
        gc.collect()
        gc.disable()  # nothing is collected behind the test's back
        try:
            for _ in range(5):
                assert httpx.post(f"{s.url}/v2/models/fake/infer", json=v2_body()).status_code == 200
                resp = _raw(s.port, b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
                assert resp.startswith(b"HTTP/1.1 413 ")
                with socket.create_connection(("127.0.0.1", s.port)) as sock:
                    sock.sendall(b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            wait_for(lambda: not s.server.http.connections, what="every connection to close")
            gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable goes to gc.garbage
            gc.collect()
            cyclic = [o for o in gc.garbage if isinstance(o, _Conn)]
            assert cyclic == [], f"{len(cyclic)} closed connections were left for the garbage collector"
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()


def test_only_small_bodies_on_their_way_count_as_arriving_for_the_batcher() -> None:
    """The batcher waits a little for requests still arriving to fill a batch: a small body about to complete
    counts, a large upload (say a slow one, an abuser's) does not, so it never delays the requests queued now."""
    with ServerThread(FakeModel(two_inputs=True)) as s:
        assert s.server is not None
        http, app = s.server.http, s.server.app
        head = "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", s.port)) as large, socket.create_connection(
            ("127.0.0.1", s.port)
        ) as small:
            large.sendall(head.format(4 << 20).encode() + b"[" * 1024)
            wait_for(lambda: http.receiving == 1, what="the large upload to be receiving")
            assert app._arriving() == 0
            small.sendall(head.format(200).encode() + b"{")
            wait_for(lambda: http.receiving == 2, what="the small body to be receiving")
            assert app._arriving() == 1
        wait_for(lambda: http.receiving == 0 and app._arriving() == 0, what="both to be forgotten")


class _FastFake(FakeModel):
    """A FakeModel whose warm-up says a single row runs in 1 ms: a lone request may run on the loop thread."""

    def create_runner(self, threads: int, max_batch_size: int) -> FakeRunner:
        runner = FakeRunner(self)
        runner.single_row_seconds = 0.001
        return runner


def test_a_lone_request_runs_on_the_loop_thread_only_while_no_other_body_is_being_received() -> None:
    """Any other body still arriving, large ones included, sends the request to a worker: run on the loop thread
    it would stop the loop reading that body, and under load with large bodies every request would run there,
    one at a time."""
    with ServerThread(_FastFake()) as s:
        assert s.server is not None
        http = s.server.http
        batcher = s.server.app.models["fake"].batcher
        assert batcher is not None
        url = f"{s.url}/v2/models/fake/infer"
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": np.ravel(X).tolist()}]}

        def infer() -> None:
            r = httpx.post(url, json=body, timeout=10)
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(r.json()["outputs"][0]["data"], FakeModel.expected(X).ravel())

        infer()
        assert batcher.inline_runs == 1  # alone: on the loop thread
        head = "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", s.port)) as large:
            large.sendall(head.format(4 << 20).encode() + b"[" * 1024)
            wait_for(lambda: http.receiving == 1, what="the large upload to be receiving")
            assert s.server.app._arriving() == 0  # a large body does not count as arriving ...
            infer()
            assert batcher.inline_runs == 1  # ... but the request went to a worker
        wait_for(lambda: http.receiving == 0, what="the large upload to be forgotten")
        infer()
        assert batcher.inline_runs == 2


def test_cpu_pressure_is_read_only_for_a_body_a_second_parse_thread_could_split() -> None:
    """A small request never opens the PSI file (at a low request rate that read was a cold open/read/close on
    every other request); a body large enough to be parsed in two halves still consults it."""
    from modelship.serve.nativejson import SPLIT_BYTES, CpuPressure

    class Counting(CpuPressure):
        reads = 0

        def read(self) -> float:
            Counting.reads += 1
            return 0.0

    with ServerThread(FakeModel("one")) as s:
        assert s.server is not None
        app = s.server.app
        app._split = True  # as on a machine with two CPUs or more
        app._pressure = Counting()
        for _ in range(3):
            r = httpx.post(f"{s.url}/v1/models/one:predict", json={"instances": X})
            assert r.status_code == 200, r.text
        assert Counting.reads == 0
        rows = np.tile(np.asarray(X, dtype=np.float32), (SPLIT_BYTES // 40, 1))
        body = json.dumps({"instances": rows.tolist()}).encode()
        assert len(body) >= SPLIT_BYTES
        r = httpx.post(f"{s.url}/v1/models/one:predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.asarray(r.json()["predictions"], dtype=np.float32), FakeModel.expected(rows))
        assert Counting.reads == 1
