"""The server's bounds over real HTTP: the budget of bytes in flight, the decoded-tensor budget, the batching queue,
the connection limit, head/body timeouts, decoding off the event loop, the metrics port, and 500s that say
nothing but a request id."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from modelship.serve.http import LAG_PROBE_S
from modelship.serve.model import load_model

from .conftest import Digits
from .fakes import FakeModel, ServerThread, wait_for

X = [[1.0, 2.0, 3.0, 4.0]]


def small_body() -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[0]}]}).encode()


def post_head(path: str, length: int, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (status, lower-case headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:n]


def binary_request(x: np.ndarray, datatype: str = "FP32") -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": datatype,
                     "parameters": {"binary_data_size": x.nbytes}}]}
    ).encode()  # fmt: skip
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def metric(server: ServerThread, name: str) -> float:
    """The value of one sample (``name`` with its labels, as exposed) on the metrics port."""
    text = httpx.get(f"{server.metrics_url}/metrics").text
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


# ---------------------------------------------------------------------------------------------
# budget of bytes in flight


def test_in_flight_budget_refuses_large_bodies_with_429_while_small_requests_pass() -> None:
    """A slow upload holds its declared size; a large body that does not fit beside it gets 429 + Retry-After
    at its headers, a body that could never fit gets 413, and small requests still use the reserve."""
    with ServerThread(FakeModel(), max_inflight_bytes=1 << 20, max_request_bytes=1 << 20) as s:
        budget = s.server.inflight  # type: ignore[union-attr]
        assert budget.limit == 1 << 20 and budget.reserve == 128 << 10
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(post_head("/v2/models/fake/infer", 800_000) + b'{"inputs"')
        wait_for(lambda: budget.used == 800_000, what="the slow upload's reservation")

        with socket.create_connection(("127.0.0.1", s.port)) as big:
            big.sendall(post_head("/v2/models/fake/infer", 300_000))
            status, headers, body = read_response(big)
        assert status == 429 and headers["retry-after"] == "1"
        assert "in flight" in json.loads(body)["error"]

        # 1 MiB was asked as the request limit, but a large body may not use the reserve: lowered to what fits
        assert s.server.http.max_request_bytes == (1 << 20) - (128 << 10)  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", s.port)) as never:
            never.sendall(post_head("/v2/models/fake/infer", 1_000_000))
            status, _, body = read_response(never)
        assert status == 413 and "exceeds the limit of 917504 bytes" in json.loads(body)["error"]

        r = httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body())
        assert r.status_code == 200, r.text

        slow.close()  # the client gives up: its reservation returns
        wait_for(lambda: budget.used == 0, what="the reservation to return")
        x = np.zeros((18_000, 4), np.float32)  # 288 KB, more than the reserve
        content, headers = binary_request(x)
        r = httpx.post(f"{s.url}/v2/models/fake/infer", content=content, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        wait_for(lambda: budget.used == 0, what="the answered request's bytes to return")
        assert metric(s, "modelship_http_rejected_requests_total") >= 2


def test_chunked_bodies_are_charged_as_they_grow() -> None:
    with ServerThread(FakeModel(), max_inflight_bytes=1 << 20, max_request_bytes=1 << 20) as s:
        budget = s.server.inflight  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sock.sendall(b"%x\r\n%s\r\n" % (300_000, b" " * 300_000))
            wait_for(lambda: budget.used >= 300_000, what="the chunk to be charged")
            # 1 MB in all: the body outgrows what the server can hold for one request, while it is arriving
            sock.sendall(b"%x\r\n%s\r\n" % (700_000, b" " * 700_000))
            status, _, body = read_response(sock)
        assert status == 413 and "can hold" in json.loads(body)["error"]
        assert budget.peak > 300_000
        wait_for(lambda: budget.used == 0, what="the chunked body's bytes to return")


# ---------------------------------------------------------------------------------------------
# decoded-tensor budget


def test_decoded_budget_refuses_what_cannot_be_decoded_now_or_ever() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    limits = {"max_decoded_bytes": 1 << 20, "max_inflight_bytes": 8 << 20, "max_request_bytes": 4 << 20}
    with ServerThread(model, workers=1, **limits) as s:
        decoded = s.server.decoded  # type: ignore[union-attr]
        # FP64 binary data for an FP32 input is converted: 800 KB of decoded tensors, held while the model runs
        content, headers = binary_request(np.ones((50_000, 4), np.float64), "FP64")
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                lambda: httpx.post(f"{s.url}/v2/models/fake/infer", content=content, headers=headers, timeout=30)
            )
            wait_for(lambda: len(model.batches) == 1, what="the converted request to run")
            assert decoded.used == 800_000
            # 10k values, ~200 KB of JSON: parsing it takes ~0.8 MB, which fits the budget but not beside the first
            values = (np.arange(10_000, dtype=np.float32) / 7).reshape(2_500, 4)
            body = {"inputs": [{"name": "x", "shape": [2500, 4], "datatype": "FP32", "data": values.ravel().tolist()}]}
            r = httpx.post(f"{s.url}/v2/models/fake/infer", json=body)
            assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
            assert "decoded tensors" in r.json()["error"]
            model.gate.set()
            assert first.result().status_code == 200
        wait_for(lambda: decoded.used == 0, what="decoded bytes to return")
        assert httpx.post(f"{s.url}/v2/models/fake/infer", json=body, timeout=30).status_code == 200
        huge = {"inputs": [{"name": "x", "shape": [50_000, 4], "datatype": "FP32", "data": [0] * 200_000}]}
        r = httpx.post(f"{s.url}/v2/models/fake/infer", json=huge, timeout=30)
        assert r.status_code == 413 and "send binary tensors" in r.json()["error"]
        assert metric(s, 'modelship_rejected_requests_total{reason="decode_budget"}') == 1
        assert metric(s, 'modelship_rejected_requests_total{reason="too_large_to_decode"}') == 1


# ---------------------------------------------------------------------------------------------
# batching queue


def test_full_queue_answers_429_at_once_not_after_a_timeout() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    with ServerThread(model, workers=1, max_queue=2, request_timeout_s=60) as s:
        batcher = s.server.app.models["fake"].batcher  # type: ignore[union-attr]
        assert batcher is not None
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(lambda: httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body(), timeout=60))
            wait_for(lambda: len(model.batches) == 1, what="the first request to run")
            queued = [
                pool.submit(lambda: httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body(), timeout=60))
                for _ in range(2)
            ]
            wait_for(lambda: batcher.queued == 2, what="two requests to queue")
            t0 = time.monotonic()
            for path in ("/v2/models/fake/infer", "/v1/models/fake:predict"):
                body = small_body() if "v2" in path else json.dumps({"inputs": {"x": X}}).encode()
                r = httpx.post(f"{s.url}{path}", content=body, timeout=60)
                assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
                assert "waiting (limit 2)" in r.json()["error"]
            assert not running.done()  # answered while the model was still busy: refused, not timed out
            assert time.monotonic() - t0 < 30
            model.gate.set()
            assert [f.result().status_code for f in [running, *queued]] == [200, 200, 200]
        assert metric(s, 'modelship_rejected_requests_total{reason="queue_full"}') == 2


# ---------------------------------------------------------------------------------------------
# connections


def test_connection_limit_closes_idle_connections_then_refuses_with_429() -> None:
    with ServerThread(FakeModel(), max_connections=3) as s:
        http = s.server.http  # type: ignore[union-attr]
        idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        wait_for(lambda: len(http.connections) == 3, what="three connections")
        # at the limit: the longest-idle connection makes room for a new one
        assert httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body()).status_code == 200
        assert http.evicted >= 1
        assert idle[0].recv(1) == b""  # the oldest idle one was closed
        for sock in idle:
            sock.close()
        wait_for(lambda: len(http.connections) == 0, what="connections to close")

        busy = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        for sock in busy:  # requests in progress: not idle, never closed to make room
            sock.sendall(post_head("/v2/models/fake/infer", 1000) + b"{")
        wait_for(lambda: http.receiving == 3, what="three uploads in progress")
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", s.port)) as extra:
            extra.sendall(post_head("/v2/models/fake/infer", 10) + b"0123456789")
            status, headers, body = read_response(extra)
        assert status == 429 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert "too many connections" in json.loads(body)["error"]
        assert time.monotonic() - t0 < 5
        assert http.refused == 1
        # health on the metrics port is not behind the inference port's connections
        assert httpx.get(f"{s.metrics_url}/v2/health/ready").status_code == 200
        for sock in busy:
            sock.close()


def test_slow_heads_and_stalled_bodies_get_408() -> None:
    with ServerThread(FakeModel(), header_timeout_s=1.0) as s:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
            status, _, body = read_response(sock, timeout=10)
        assert status == 408 and "head not received" in json.loads(body)["error"]
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(post_head("/v2/models/fake/infer", 100) + b'{"in')
            status, _, body = read_response(sock, timeout=10)
        assert status == 408 and "stalled" in json.loads(body)["error"]
        # a large body trickling in (never stalled long enough for that) is cut once the head timeout has
        # passed: a slow upload does not keep its share of the budget for the whole read timeout
        budget = s.server.inflight  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(post_head("/v2/models/fake/infer", 4_000_000))
            wait_for(lambda: budget.used == 4_000_000, what="the slow upload's reservation")
            sock.settimeout(0.3)
            answer = b""
            for _ in range(100):
                try:
                    sock.sendall(b"[" * 1024)
                    answer = sock.recv(65536)
                    break
                except TimeoutError:
                    continue
        assert answer.startswith(b"HTTP/1.1 408") and b"less than 65536 bytes/s" in answer
        assert budget.used == 0


# ---------------------------------------------------------------------------------------------
# decoding off the event loop


def test_large_json_is_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """While other requests are in flight, a large body is decoded on the decode thread: health, metadata and
    new requests are still answered meanwhile."""
    from modelship.serve import app as appmod

    entered, release = threading.Event(), threading.Event()
    real = appmod.v2_decode

    def slow_decode(*args: Any) -> Any:
        if len(args[1]) >= 64 * 1024:
            assert threading.current_thread() is not threading.main_thread()
            entered.set()
            release.wait(30)
        return real(*args)

    monkeypatch.setattr(appmod, "v2_decode", slow_decode)
    model = FakeModel()
    model.gate = threading.Event()
    with ServerThread(model, workers=1) as s:
        x = np.arange(40_000, dtype=np.float32).reshape(-1, 4)
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        with ThreadPoolExecutor(3) as pool:
            busy = pool.submit(lambda: httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body(), timeout=60))
            wait_for(lambda: len(model.batches) == 1, what="a request in flight")
            timed = {"x-modelship-timing": "1"}
            large = pool.submit(
                lambda: httpx.post(f"{s.url}/v2/models/fake/infer", json=body, headers=timed, timeout=60)
            )
            assert entered.wait(30)
            held = time.perf_counter()
            with httpx.Client(base_url=s.url, timeout=5) as c:
                assert c.get("/v2/health/ready").status_code == 200
                assert c.get("/v2/models/fake").status_code == 200
                queued = pool.submit(
                    lambda: httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body(), timeout=60)
                )
                wait_for(lambda: s.server.app.models["fake"].batcher.queued == 1, what="a new request queued")  # type: ignore[union-attr]
            assert httpx.get(f"{s.metrics_url}/v2/health/live", timeout=5).status_code == 200
            assert not large.done()
            held = time.perf_counter() - held
            release.set()
            model.gate.set()
            r = large.result()
            assert busy.result().status_code == 200 and queued.result().status_code == 200
        assert r.status_code == 200
        y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(y, FakeModel.expected(x))
        # Server-Timing counts the decode on the decode thread (it was held there), not the wait for that thread
        steps = {e.split(";")[0].strip(): e for e in r.headers["server-timing"].split(",")}
        assert list(steps) == ["recv", "decode", "queue", "run", "total", "read"]
        assert float(steps["decode"].split("dur=")[1]) >= held * 1e3


# ---------------------------------------------------------------------------------------------
# metrics port


def test_metrics_have_their_own_port_and_not_the_inference_one(fake_server: ServerThread) -> None:
    s = fake_server
    assert s.server is not None and s.server.metrics_port not in (0, s.port)
    with httpx.Client(base_url=s.url) as c:
        assert c.post("/v2/models/fake/infer", json={"inputs": []}).status_code == 400
        r = c.get("/metrics")
        assert r.status_code == 404 and "metrics port" in r.json()["error"]
        assert c.get("/v2/health/live").status_code == 200  # health stays on both ports
    with httpx.Client(base_url=s.metrics_url) as m:
        text = m.get("/metrics").text
        assert 'modelship_requests_total{code="400",model="fake",protocol="v2"} 1.0' in text
        for name in ("modelship_invoke_cpu_seconds_total", "modelship_process_cpu_seconds_total",
                     "modelship_budget_limit_bytes", "modelship_max_request_bytes"):  # fmt: skip
            assert name in text
        assert m.get("/v2/health/ready").json() == {"ready": True}
        assert m.get("/v2/health/live").json() == {"live": True}
        assert m.get("/v2/models/fake").status_code == 404  # no inference routes here
        assert m.post("/metrics", content=b"x").status_code == 405


def test_server_timing_on_request_and_where_the_time_went_on_the_metrics_port(fake_server: ServerThread) -> None:
    """A request carrying ``x-modelship-timing`` is answered with a Server-Timing header that splits its time in
    the server (receiving, decoding, waiting for a worker, running, total); others are not. The metrics port counts the
    wait for a worker, the event loop's lag (a blocked loop shows up) and its thread's CPU time."""
    s = fake_server
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                       {"name": "k", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}  # fmt: skip
    with httpx.Client(base_url=s.url) as c:
        sent = time.time()
        r = c.post("/v2/models/fake/infer", json=body, headers={"x-modelship-timing": "1"})
        assert r.status_code == 200 and r.json()["outputs"]
        entries = dict(e.strip().split(";d", 1) for e in r.headers["server-timing"].split(","))
        assert list(entries) == ["recv", "decode", "queue", "run", "total", "read"]
        read = float(entries.pop("read").removeprefix("esc="))  # the wall clock time of the first byte read
        assert sent <= read <= time.time()
        ms = {k: float(v.removeprefix("ur=")) for k, v in entries.items()}
        assert all(v >= 0 for v in ms.values())
        assert ms["total"] >= sum(ms[k] for k in ("recv", "decode", "queue", "run")) - 0.01
        plain = c.post("/v2/models/fake/infer", json=body)
        assert plain.status_code == 200 and "server-timing" not in plain.headers
        # requests the app answers without a worker still get their receiving and total time
        refused = c.post("/v2/models/fake/infer", json={"inputs": []}, headers={"x-modelship-timing": "1"})
        assert refused.status_code == 400 and [
            e.split(";")[0].strip() for e in refused.headers["server-timing"].split(",")
        ] == ["recv", "total", "read"]
    assert metric(s, 'modelship_queue_wait_seconds_count{model="fake"}') >= 2
    assert metric(s, "modelship_event_loop_cpu_seconds_total") > 0
    assert metric(s, "modelship_event_loop_cpu_wait_seconds_total") >= 0
    assert metric(s, 'modelship_gc_pause_seconds_count{generation="0"}') >= 0
    blocked = threading.Event()

    def block() -> None:
        blocked.set()
        time.sleep(0.3)

    before = metric(s, "modelship_event_loop_lag_seconds_count") - metric(
        s, 'modelship_event_loop_lag_seconds_bucket{le="0.1"}'
    )
    with httpx.Client(base_url=s.url) as c:  # the loop blocked right after a request (its probe is due)

        def blocked_after_a_request() -> bool:
            blocked.clear()
            assert c.get("/v2/health/live").status_code == 200
            s.loop.call_soon_threadsafe(block)
            assert blocked.wait(5)
            late = metric(s, "modelship_event_loop_lag_seconds_count") - metric(
                s, 'modelship_event_loop_lag_seconds_bucket{le="0.1"}'
            )
            return late > before

        wait_for(blocked_after_a_request, what="the blocked loop's lag (> 100 ms) to be counted")


def test_an_idle_server_does_not_probe_its_loop(fake_server: ServerThread) -> None:
    """The loop's lag is probed (every 50 ms) only while requests arrive: with none for a probe period the
    inference loop has no timer but the 1 s sweep, so an idle pod costs next to no CPU (its HPA utilization is
    its traffic's), also while a client holds a keep-alive connection open between requests (a proxy, a sidecar).
    The next request starts the probe again; the metrics port's own loop is never probed."""
    s = fake_server
    assert s.server is not None
    http = s.server.http

    def samples() -> float:
        return metric(s, "modelship_event_loop_lag_seconds_count")

    with httpx.Client(base_url=s.url) as c:
        assert c.get("/v2/health/live").status_code == 200
        first = samples()
        wait_for(
            lambda: c.get("/v2/health/live").status_code == 200 and samples() >= first + 2,
            what="the lag probed while requests arrive",
        )
        wait_for(lambda: http._lag_probe is None, what="the probe to stop with the connection open and no request")
        idle = samples()
        time.sleep(10 * LAG_PROBE_S)  # ten probe periods with a connection open and no request: no sample taken
        assert samples() == idle and http.connections
        assert c.get("/v2/health/live").status_code == 200  # a request starts it again
        wait_for(lambda: samples() > idle, what="the lag probed after the next request")
    wait_for(lambda: not http.connections, what="the server to see the client go")
    wait_for(lambda: http._lag_probe is None, what="the probe to stop once no client is connected")
    idle = samples()
    time.sleep(10 * LAG_PROBE_S)  # ten probe periods with nobody connected: no sample taken
    assert samples() == idle
    assert s.server.admin.http._lag_probe is None and sum(s.server.admin.http.lag.counts) == 0
    with httpx.Client(base_url=s.url) as c:
        assert c.get("/v2/health/live").status_code == 200
        wait_for(lambda: samples() > idle, what="the probe to start again with a new connection and its request")


def test_probes_are_answered_while_the_inference_loop_is_stuck(fake_server: ServerThread) -> None:
    """The metrics port runs on its own thread and loop: a busy (here: blocked) inference loop does not delay
    the kubelet's probes."""
    s = fake_server
    stuck = threading.Event()

    def block() -> None:
        stuck.set()
        time.sleep(3)

    s.loop.call_soon_threadsafe(block)
    assert stuck.wait(5)
    t0 = time.monotonic()
    assert httpx.get(f"{s.metrics_url}/v2/health/live", timeout=2).status_code == 200
    assert httpx.get(f"{s.metrics_url}/v2/health/ready", timeout=2).json() == {"ready": True}
    assert time.monotonic() - t0 < 2.5  # the inference loop is blocked for 3 s


@pytest.mark.slow
def test_invoke_cpu_is_counted_for_a_real_interpreter(digits: Digits) -> None:
    with ServerThread(load_model(digits.path("int8"), name="m"), workers=1) as s:
        x = digits.x[:4]
        body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        for _ in range(50):
            r = httpx.post(f"{s.url}/v2/models/m/infer", json=body)
            assert r.status_code == 200, r.text
        meters = s.server.app.models["m"].batcher.meters()  # type: ignore[union-attr]
        assert sum(m.calls for m in meters) >= 50
        invoke = metric(s, 'modelship_invoke_cpu_seconds_total{model="m"}')
        process = metric(s, "modelship_process_cpu_seconds_total")
        assert 0 < invoke < process
        assert 0 < metric(s, "modelship_invoke_cpu_ratio") < 1


# ---------------------------------------------------------------------------------------------
# 500s


def test_a_500_names_a_request_id_and_never_the_exception(caplog: pytest.LogCaptureFixture) -> None:
    model = FakeModel()
    model.fail = RuntimeError("secret detail /etc/model-credentials")
    with caplog.at_level(logging.ERROR, logger="modelship.serve.app"), ServerThread(model) as s:
        r = httpx.post(f"{s.url}/v2/models/fake/infer", content=small_body())
        assert r.status_code == 500
        assert "secret" not in r.text and "RuntimeError" not in r.text and "credentials" not in r.text
        rid = r.json()["request_id"]
        assert r.headers["x-request-id"] == rid and rid in r.json()["error"]
        r = httpx.post(
            f"{s.url}/v1/models/fake:predict", json={"inputs": {"x": X}}, headers={"X-Request-Id": "trace-42"}
        )
        assert r.status_code == 500 and r.json()["request_id"] == "trace-42" and "secret" not in r.text
        r = httpx.post(
            f"{s.url}/v1/models/fake:predict", json={"inputs": {"x": X}}, headers={"X-Request-Id": "bad id!"}
        )
        assert r.status_code == 500 and r.json()["request_id"] != "bad id!"
    logged = [rec for rec in caplog.records if getattr(rec, "request_id", None) in (rid, "trace-42")]
    assert len(logged) == 2
    assert all(rec.exc_info and "secret detail" in str(rec.exc_info[1]) for rec in logged)
