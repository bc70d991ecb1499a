"""`modelship serve` as a real process: no TensorFlow for .tflite, env configuration, SavedModel, and SIGTERM
under load losing no accepted request."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from .conftest import PY, REPO, Digits, free_port, json_lines, serve_cmd, serve_env

pytestmark = pytest.mark.slow


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> int:
    """Poll readiness; returns how many polls got an HTTP answer (the server counts those too)."""
    answered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
            answered += 1
            if r.status_code == 200:
                return answered
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server not ready in time")


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise
    return proc.returncode, err


def test_serving_a_tflite_model_never_imports_tensorflow(digits: Digits) -> None:
    code = (
        "import sys, json, numpy as np\n"
        "from modelship.serve import app, cli, server, http, batching, codec\n"
        "from modelship.serve.model import load_model\n"
        f"m = load_model({str(digits.path('int8'))!r})\n"
        "m.predict({'image': np.zeros((2, 8, 8, 1), np.float32)})\n"
        "print(json.dumps(sorted(k for k in sys.modules if 'tensorflow' in k or 'keras' in k)))\n"
    )
    out = subprocess.run([PY, "-c", code], env=serve_env(), capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_env_configuration_and_json_logs(digits: Digits) -> None:
    port = free_port()
    env = serve_env(
        MODELSHIP_MODEL=str(digits.path("float16")),
        MODELSHIP_NAME="envmodel",
        MODELSHIP_PORT=str(port),
        MODELSHIP_HOST="127.0.0.1",
        MODELSHIP_DRAIN_SECONDS="0",
        MODELSHIP_MAX_BATCH_SIZE="4",
    )
    proc = subprocess.Popen(serve_cmd(), env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_ready(port, proc)
        meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/envmodel").json()
        assert meta["name"] == "envmodel"
    finally:
        rc, err = stop(proc)
    assert rc == 0
    logs = json_lines(err)  # every stderr line is a JSON object, including LiteRT's native banner
    ready = next(e for e in logs if e["msg"] == "model ready")
    assert ready["max_batch_size"] == 4 and ready["batch_timeout_us"] == 500
    assert any(e.get("native") for e in logs)
    assert next(e for e in logs if e["msg"] == "stopped")["clean"] is True


def test_saved_model_is_served_through_tensorflow(digits: Digits) -> None:
    from .test_real_models import reference

    port = free_port()
    proc = subprocess.Popen(
        serve_cmd("--model", str(digits.saved_model), "--name", "sm", "--port", str(port), "--host", "127.0.0.1",
                  "--drain-seconds", "0"),
        env=serve_env(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3"),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_ready(port, proc, timeout=180)
        base = f"http://127.0.0.1:{port}"
        meta = httpx.get(f"{base}/v2/models/sm").json()
        assert meta["platform"] == "tensorflow_savedmodel" and meta["versions"] == ["1"]
        (inp,) = meta["inputs"]
        assert inp["datatype"] == "FP32" and inp["shape"] == [-1, 8, 8, 1]
        x = digits.x[:20]
        r = httpx.post(f"{base}/v1/models/sm/versions/1:predict", json={"instances": x.tolist()}, timeout=60)
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["predictions"], dtype=np.float32)
        np.testing.assert_allclose(got, reference(digits.path("float32"), x), rtol=1e-5, atol=1e-6)
    finally:
        rc, _ = stop(proc)
    assert rc == 0


class LoadClient(threading.Thread):
    """Closed loop of predict calls. Fresh connection per request, or one keep-alive connection."""

    def __init__(self, port: int, body: bytes, keep_alive: bool, stop_evt: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.body, self.keep_alive, self.stop_evt = port, body, keep_alive, stop_evt
        self.outcomes: Counter[str] = Counter()
        self.ok_times: list[float] = []
        self.problems: list[str] = []

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        refused_in_a_row = 0
        while not self.stop_evt.is_set() and refused_in_a_row < 20:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    self.outcomes["refused"] += 1
                    refused_in_a_row += 1
                    conn = None
                    time.sleep(0.01)
                    continue
            refused_in_a_row = 0
            headers = {"Content-Type": "application/json"}
            if not self.keep_alive:
                headers["Connection"] = "close"
            try:
                conn.request("POST", "/v2/models/digits/infer", body=self.body, headers=headers)
                resp = conn.getresponse()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                # no status line came back: the server never accepted this request (checked by accounting)
                self.outcomes["unanswered"] += 1
                conn.close()
                conn = None
                continue
            try:
                data = resp.read()
            except (http.client.IncompleteRead, ConnectionResetError) as e:
                self.outcomes["cut"] += 1  # a response started and did not finish: must never happen
                self.problems.append(repr(e))
                conn.close()
                conn = None
                continue
            self.outcomes["answered"] += 1
            if resp.status == 200 and "outputs" in json.loads(data):
                self.outcomes["ok"] += 1
                self.ok_times.append(time.monotonic())
            else:
                self.outcomes["bad"] += 1
                self.problems.append(f"{resp.status} {data[:200]!r}")
            if resp.will_close or not self.keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


class ReadinessWatcher(threading.Thread):
    def __init__(self, port: int, stop_evt: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop_evt = port, stop_evt
        self.statuses: list[tuple[float, int]] = []
        self.answered = 0

    def run(self) -> None:
        while not self.stop_evt.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/v2/health/ready", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                self.answered += 1
                self.statuses.append((time.monotonic(), resp.status))
            except ConnectionRefusedError:
                return
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                pass
            finally:
                conn.close()
            time.sleep(0.02)


def test_sigterm_under_load_loses_no_accepted_request(digits: Digits) -> None:
    port = free_port()
    proc = subprocess.Popen(
        serve_cmd("--model", str(digits.path("int8")), "--name", "digits", "--port", str(port), "--host", "127.0.0.1",
                  "--drain-seconds", "1.0", "--shutdown-timeout-s", "20"),
        env=serve_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    polls = wait_ready(port, proc)
    x = digits.x[:1]
    body = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    stop_evt = threading.Event()
    clients = [LoadClient(port, body, keep_alive=i % 2 == 0, stop_evt=stop_evt) for i in range(8)]
    watcher = ReadinessWatcher(port, stop_evt)
    for t in (*clients, watcher):
        t.start()
    try:
        deadline = time.monotonic() + 60
        while sum(c.outcomes["ok"] for c in clients) < 300:
            assert time.monotonic() < deadline, "load did not get going"
            time.sleep(0.01)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        stop_evt.set()
        for t in (*clients, watcher):
            t.join(30)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    total: Counter[str] = Counter()
    for c in clients:
        total.update(c.outcomes)
    problems = [p for c in clients for p in c.problems]
    assert total["cut"] == 0 and total["bad"] == 0, (total, problems[:5])
    # the drain delay served requests after SIGTERM, and readiness said 503 meanwhile
    assert sum(1 for c in clients for t in c.ok_times if t > t_term) > 0
    assert any(status == 503 for t, status in watcher.statuses if t > t_term)
    # then the listener closed while clients were still trying
    assert total["refused"] > 0
    stopped = next(e for e in json_lines(err) if e["msg"] == "stopped")
    assert stopped["clean"] is True and stopped["dropped"] == 0
    assert stopped["requests"] == stopped["responses"]
    # every request the server accepted reached its client whole: nothing was lost in flight
    assert stopped["responses"] == total["answered"] + watcher.answered + polls, (stopped, total, watcher.answered)
    print(f"\nSIGTERM under load: {dict(total)}; server {stopped}")


def test_bench_module_imports() -> None:
    """bench/serve.py stays importable (its KServe baseline server code is exercised by the benchmark)."""
    out = subprocess.run(
        [PY, "-c", "import runpy; runpy.run_path('bench/serve.py', run_name='not_main')"],
        cwd=REPO, env=serve_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
