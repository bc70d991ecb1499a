"""Serving benchmark: Modelship's server vs KServe's Python ModelServer on the same TFLite models.

    PYTHONPATH=operator python bench/serve.py [--duration 5] [--quick] [--no-append] [--before TREE]

For each model (digits CNN int8, MobileNetV2 int8) it builds the .tflite (nothing downloaded), times a bare
``interpreter.invoke()``, then for each server (ours; KServe 0.21 ``ModelServer`` with a ``kserve.Model``
wrapping the same interpreter, the way a KServe user writes it) runs a closed-loop load at 1, 8 and 64
concurrent keep-alive connections from a separate load-generator process (uvloop + httptools, pre-encoded
requests), and reports throughput, p50/p99 latency, the ratios ours/KServe and p50 / bare invoke.
The servers run one at a time on the same machine; all figures come from the same run.

Where Modelship's CPU goes, per cell: the server's own count (``modelship_invoke_cpu_seconds_total`` against
``modelship_process_cpu_seconds_total``: the share of its CPU spent inside ``invoke()``), and the same share
estimated from outside, comparable across versions: the batches it ran (the batch-size histogram, whose buckets
are the interpreter's padded sizes) times a bare ``invoke()``'s CPU at each size, over the process's CPU time
(/proc). ``--before TREE`` also runs the server from another checkout (e.g. ``git archive <rev> operator | tar
-x -C TREE``) for the MobileNetV2 cells, for a before/after in the same run.

At 1 client with a JSON body, the stages are also timed in the running server, right after the cell: a client
sends requests one after another asking for Server-Timing, and the table splits its time into its own send, the
server's receive, decode, queue and run, and what is outside the server.

``--profile`` samples the server with py-spy (the ``test`` extra) during the busiest MobileNetV2 cells and lists
where its time goes, by function.

Results are printed and appended as a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import append_section, cpu_model  # noqa: E402

PY = sys.executable

# =============================================================================================
# load generator (runs in its own process)


def _loadgen(
    host: str, port: int, request: bytes, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    import httptools

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    # The window opens `warmup_s` after every connection has had its first answer (steady state, not the
    # opening burst) and lasts `duration_s`. Latency counts every request sent inside the window, however
    # long it takes to come back; throughput counts answers received inside the window.
    inf = float("inf")
    window = {"measure": inf, "end": inf}
    lat: list[float] = []
    counts = {"ok": 0, "bad": 0, "errors": 0, "completed_in_window": 0}
    done = loop.create_future()
    open_conns = [concurrency]
    first_answers = [0]

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.t0 = 0.0
            self.answered = False
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.send()

        def send(self) -> None:
            self.t0 = time.perf_counter()
            self.transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            now = time.perf_counter()
            if self.parser.get_status_code() == 200:
                counts["ok"] += 1
            else:
                counts["bad"] += 1
            if not self.answered:
                self.answered = True
                first_answers[0] += 1
                if first_answers[0] == concurrency:
                    window["measure"] = now + warmup_s
                    window["end"] = window["measure"] + duration_s
            if window["measure"] <= self.t0 <= window["end"]:
                lat.append(now - self.t0)
            if window["measure"] <= now <= window["end"]:
                counts["completed_in_window"] += 1
            if now < window["end"]:
                self.send()
            else:
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if time.perf_counter() < window["end"]:
                counts["errors"] += 1
            open_conns[0] -= 1
            if open_conns[0] == 0 and not done.done():
                done.set_result(None)

    async def main() -> None:
        for _ in range(concurrency):
            await loop.create_connection(Client, host, port)
        await asyncio.wait_for(done, timeout=warmup_s + duration_s + 300)

    loop.run_until_complete(main())
    loop.close()
    lat.sort()
    n = len(lat)

    def pct(p: float) -> float:
        return lat[min(n - 1, int(p * n))] if n else float("nan")

    return {
        "concurrency": concurrency,
        "throughput": counts["completed_in_window"] / duration_s,
        "p50_ms": pct(0.50) * 1e3,
        "p99_ms": pct(0.99) * 1e3,
        "mean_ms": (statistics.fmean(lat) * 1e3) if n else float("nan"),
        "samples": n,
        **counts,
    }


def run_loadgen(port: int, request: bytes, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_loadgen, ("127.0.0.1", port, request, concurrency, warmup_s, duration_s))


def http_request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    for k, v in (headers or {"Content-Type": "application/json"}).items():
        head.append(f"{k}: {v}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# =============================================================================================
# KServe baseline server (runs in its own process)

KSERVE_SERVER = r'''
import os, sys
import numpy as np
import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid
from ai_edge_litert.interpreter import Interpreter

class TFLiteModel(kserve.Model):
    """What a KServe user writes to serve a .tflite: load an Interpreter, set/invoke/get in predict."""

    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.interp = Interpreter(model_path=self.path)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.shape = tuple(self.inp["shape"])
        self.ready = True
        return self.ready

    def _run(self, x):
        if tuple(x.shape) != self.shape:
            self.interp.resize_tensor_input(self.inp["index"], x.shape)
            self.interp.allocate_tensors()
            self.shape = tuple(x.shape)
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            y = self._run(payload.inputs[0].as_numpy().astype(np.float32))
            out = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or generate_uuid())
        y = self._run(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": y.tolist()}

if __name__ == "__main__":
    name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = TFLiteModel(name, path)
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([model])
'''


# =============================================================================================
# orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, name: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v2/models/{name}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on {port} not ready")


def has_metrics_port(tree: Path | None) -> bool:
    """Whether the server in ``tree`` serves /metrics on a port of its own (``--metrics-port``)."""
    cli = tree / "modelship" / "serve" / "cli.py" if tree is not None else None
    return cli is not None and cli.is_file() and "--metrics-port" in cli.read_text()


def tree_env(tree: Path, json_lib: str | None = None) -> dict[str, str]:
    """The environment a server tree runs in: its operator/ first on the path, and its own libmsjson when given
    (``$MODELSHIP_JSON_LIB``: a tree that speaks another ABI than the venv's library needs its own build)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if json_lib:
        env["MODELSHIP_JSON_LIB"] = json_lib
    return env


def start_ours(
    model: Path,
    name: str,
    port: int,
    log: Path,
    tree: Path = REPO / "operator",
    metrics_port: int | None = None,
    json_lib: str | None = None,
) -> subprocess.Popen[bytes]:
    """``modelship serve`` from ``tree`` (this checkout's operator/ by default). ``metrics_port`` None: a version
    from before the metrics port (metrics on the inference port). ``json_lib``: the libmsjson it loads."""
    env = tree_env(tree, json_lib)
    extra = [] if metrics_port is None else ["--metrics-port", str(metrics_port)]
    return subprocess.Popen(
        [PY, "-m", "modelship.serve", "--model", str(model), "--name", name, "--port", str(port), "--host", "127.0.0.1",
         "--drain-seconds", "0", "--log-level", "warning", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip


def scrape(port: int) -> dict[str, float]:
    """Every sample of a Prometheus text page, keyed by name with labels as exposed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches_by_size(metrics: dict[str, float], name: str) -> dict[int, float]:
    """Batches run at each padded size (1, 2, 4, 8), from the cumulative buckets of modelship_batch_size."""
    cum = {b: metrics.get(f'modelship_batch_size_bucket{{le="{float(b)}",model="{name}"}}', 0.0) for b in (1, 2, 4, 8)}
    out, prev = {}, 0.0
    for b in (1, 2, 4, 8):
        out[b] = cum[b] - prev
        prev = cum[b]
    return out


def start_kserve(model: Path, name: str, port: int, log: Path, script: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, str(script), name, str(model), str(port)], stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bare_invoke_ms(
    model: Path, x: np.ndarray, threads: int | None, n: int, batch: int = 1, clock: Any = time.perf_counter
) -> float:
    """Median time of one invoke() of ``batch`` rows (wall clock; ``clock=time.thread_time`` for its CPU)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=threads)
    idx = it.get_input_details()[0]["index"]
    if batch != x.shape[0]:
        it.resize_tensor_input(idx, [batch, *x.shape[1:]])
    it.allocate_tensors()
    it.set_tensor(idx, np.repeat(x[:1], batch, axis=0))
    for _ in range(max(5, n // 10)):
        it.invoke()
    times = []
    for _ in range(n):
        t = clock()
        it.invoke()
        times.append(clock() - t)
    return statistics.median(times) * 1e3


def build_models(workdir: Path, quick: bool) -> dict[str, tuple[Path, np.ndarray]]:
    """-> name: (tflite path, one input sample). Built in a subprocess so this process stays TF-free."""
    code = (
        "import sys; sys.path.insert(0, {!r}); import modelgen, numpy as np; from pathlib import Path; "
        "out = Path({!r}); d = modelgen.build_digits(out); np.save(out / 'digits_x.npy', d.x_test[:1]); "
        "{}"
    ).format(str(REPO / "tests" / "serve"), str(workdir), "" if quick else "modelgen.build_mobilenet_int8(out)")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([PY, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = {"digits CNN int8": (workdir / "digits_int8.tflite", np.load(workdir / "digits_x.npy"))}
    if not quick:
        rng = np.random.default_rng(0)
        models["MobileNetV2 int8"] = (
            workdir / "mobilenetv2_int8.tflite",
            rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32),
        )
    return models


def requests_for(name: str, iname: str, x: np.ndarray, binary: bool) -> bytes:
    if binary:
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": iname,
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ]
            }
        ).encode()
        return http_request(
            f"/v2/models/{name}/infer",
            head + x.astype("<f4").tobytes(),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
        )
    body = json.dumps(
        {"inputs": [{"name": iname, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()
    return http_request(f"/v2/models/{name}/infer", body)


def input_name(model: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    sigs = it.get_signature_list()
    return str(sigs["serving_default"]["inputs"][0])


#: run in a subprocess with the server tree's PYTHONPATH: the server's own decode, run and encode of one JSON
#: request, timed one by one (median of ``n``) without HTTP
_STAGES = r"""
import inspect, json, statistics, sys, time
from modelship.serve import codec, jsonparse
from modelship.serve.model import load_model
path, body_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = open(body_file, "rb").read()
model = load_model(path, "m", "1")
runner = model.create_runner(1, 8)
runner.warmup()
def median_ms(f):
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3
# a lone request may parse on two threads (libmsjson) where the tree's server does
lone = {"threads": 2} if "threads" in inspect.signature(codec.v2_decode).parameters else {}
req = codec.v2_decode(model, body, None)
raw = runner.run_parts(model, [req.inputs], [1])
out = model.decode_outputs(raw)
parse = median_ms(lambda: jsonparse.loads_v2(body, **lone))
decode = median_ms(lambda: codec.v2_decode(model, body, None, **lone))
print(json.dumps({
    "json_path": jsonparse.describe() if hasattr(jsonparse, "describe") else "pysimdjson",
    "parse_ms": parse,
    "to_array_ms": max(0.0, decode - parse),
    "run_ms": median_ms(lambda: runner.run_parts(model, [req.inputs], [1])),
    "encode_ms": median_ms(lambda: codec.v2_encode(model, req, model.decode_outputs(raw))),
}))
"""


def stage_times(
    tree: Path, model: Path, request: bytes, work: Path, n: int = 50, json_lib: str | None = None
) -> dict[str, Any]:
    """Where a JSON request's time goes inside the server of ``tree``, stage by stage, without HTTP: parse (JSON
    text to the parser's document), to array (tensor data to the input array, checks), run (quantize, invoke,
    outputs) and encode (dequantize, response JSON)."""
    body = request.split(b"\r\n\r\n", 1)[1]
    body_file = work / "stages-body.json"
    body_file.write_bytes(body)
    env = tree_env(tree, json_lib)
    out = subprocess.run(
        [PY, "-c", _STAGES, str(model), str(body_file), str(n)], env=env, check=True, capture_output=True, text=True
    )
    stages: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    stages["body_bytes"] = float(len(body))
    return stages


def live_stages(port: int, request: bytes, n: int = 200) -> dict[str, float]:
    """Where one request's time goes in the running server: ``n`` requests one after another on a keep-alive
    connection, each asking for Server-Timing (``x-modelship-timing``); medians (ms) of the client's whole
    request, its ``send`` (the body written to the socket: wall and this thread's CPU), the server's steps
    (``recv`` its first byte read to its last, ``decode`` where the server reports it, ``queue``, ``run``,
    ``total``) and ``outside`` = client - total (the kernel, the wake-ups, the answer's way back)."""
    head, body = request.split(b"\r\n\r\n", 1)
    timed = head + b"\r\nx-modelship-timing: 1\r\n\r\n" + body
    rows: list[dict[str, float]] = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n + n // 10):
            t0, c0 = time.perf_counter(), time.thread_time()
            s.sendall(timed)
            t1, c1 = time.perf_counter(), time.thread_time()
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf += chunk
            answer_head, rest = buf.split(b"\r\n\r\n", 1)
            fields = dict(line.split(b":", 1) for line in answer_head.lower().split(b"\r\n")[1:] if b":" in line)
            length = int(fields[b"content-length"])
            while len(rest) < length:
                rest += s.recv(1 << 16)
            t2 = time.perf_counter()
            if not answer_head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer: {answer_head[:100]!r}")
            if i < n // 10:
                continue  # warm-up
            row = {"client": t2 - t0, "send": t1 - t0, "send_cpu": c1 - c0}
            for part in fields.get(b"server-timing", b"").decode().split(","):
                step, _, dur = part.strip().partition(";dur=")
                if dur:
                    row[step] = float(dur) / 1e3
            row["outside"] = row["client"] - row.get("total", 0.0)
            rows.append(row)
    return {k: statistics.median(r[k] for r in rows) * 1e3 for k in rows[0] if all(k in r for r in rows)}


def start_profile(pid: int, out: Path, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy on the server for ``seconds`` (non-blocking sampling, every thread, idle time excluded)."""
    spy = Path(PY).with_name("py-spy")
    cmd = [str(spy), "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200", "-f", "raw",
           "-o", str(out), "--nonblocking", "--threads"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def finish_profile(proc: subprocess.Popen[bytes], out: Path, top: int = 8) -> list[tuple[str, float]]:
    """(function, share of samples) for the functions the server's threads were in most (self time)."""
    proc.wait(timeout=120)
    counts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, n = line.rpartition(" ")
        name = stack.rsplit(";", 1)[-1].split(" (")[0]  # "Interpreter.invoke (ai_edge_litert/...py:1015)"
        counts[name] = counts.get(name, 0) + int(n)
        total += int(n)
    return [(k, v / total) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:top]] if total else []


def efficiency(
    m0: dict[str, float], m1: dict[str, float], name: str, process_cpu_s: float, invoke_cpu_ms: dict[int, float]
) -> dict[str, float]:
    """The share of the server's CPU inside invoke() during a cell: as the server counts it (when it does), and
    estimated from its batches and a bare invoke()'s CPU at each padded size."""
    out: dict[str, float] = {"server_cpu_s": process_cpu_s}
    b0, b1 = batches_by_size(m0, name), batches_by_size(m1, name)
    estimate = sum((b1[b] - b0[b]) * invoke_cpu_ms[b] / 1e3 for b in b1)
    if process_cpu_s > 0:
        out["cpu_share_estimate"] = estimate / process_cpu_s
    key = f'modelship_invoke_cpu_seconds_total{{model="{name}"}}'
    if key in m1 and "modelship_process_cpu_seconds_total" in m1:
        invoke = m1[key] - m0.get(key, 0.0)
        process = m1["modelship_process_cpu_seconds_total"] - m0["modelship_process_cpu_seconds_total"]
        if process > 0:
            out["cpu_share"] = invoke / process
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--quick", action="store_true", help="digits only")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    ap.add_argument("--before", help="a checkout's operator/ directory whose server also runs (MobileNetV2 cells)")
    ap.add_argument(
        "--before-json-lib",
        help="the libmsjson the --before server loads ($MODELSHIP_JSON_LIB; default: the one this run's server "
        "loads), for a tree of another ABI: e.g. that checkout's native/msjson/build --dest FILE",
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the server in the MobileNetV2 1- and N-client cells")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="modelship-bench-"))
    kserve_script = work / "kserve_server.py"
    kserve_script.write_text(KSERVE_SERVER)
    print(f"building models in {work} ...", flush=True)
    models = build_models(work, args.quick)

    from modelship.serve.config import available_cpus

    cpus = available_cpus()
    rows: list[dict[str, Any]] = []
    bare: dict[str, dict[str, float]] = {}
    before = Path(args.before).resolve() if args.before else None
    for label, (path, x) in models.items():
        big = x.size > 10_000
        n_invoke = 200 if big else 5000
        bare[label] = {
            "threads=1": bare_invoke_ms(path, x, 1, n_invoke),
            "threads=default": bare_invoke_ms(path, x, None, n_invoke),
        }
        # CPU of one invoke() at each padded batch size: the yardstick of the outside estimate
        invoke_cpu = {b: bare_invoke_ms(path, x, 1, max(20, n_invoke // b), b, time.thread_time) for b in (1, 2, 4, 8)}
        bare[label].update({f"cpu@{b}": v for b, v in invoke_cpu.items()})
        print(f"{label}: bare invoke {bare[label]}", flush=True)
        name = "m"
        iname = input_name(path)
        fmts = ["json", "binary"] if big else ["json"]
        servers = ["modelship", "kserve"] + (["modelship-before"] if before is not None and big else [])
        for fmt in fmts:
            req = requests_for(name, iname, x, fmt == "binary")
            for server in servers:
                port = free_port()
                mport = free_port() if server == "modelship" or has_metrics_port(before) else None
                log = work / f"{server}-{port}.log"
                if server == "kserve":
                    proc = start_kserve(path, name, port, log, kserve_script)
                else:
                    is_before = server == "modelship-before" and before is not None
                    tree = before if is_before and before is not None else REPO / "operator"
                    lib = args.before_json_lib if is_before else None
                    proc = start_ours(path, name, port, log, tree, mport, lib)
                try:
                    wait_ready(port, name, proc)
                    for c in levels:
                        ours = server != "kserve"
                        interleave = server == "modelship" and c == 1
                        pre = bare_invoke_ms(path, x, 1, n_invoke) if interleave else None
                        m0 = scrape(mport or port) if ours else {}
                        cpu0 = process_cpu(proc.pid)
                        spy = None
                        if args.profile and ours and big and c in (1, max(levels)):
                            spy = start_profile(proc.pid, work / f"{server}-{fmt}-{c}.txt", args.warmup + args.duration)
                        r = run_loadgen(port, req, c, args.warmup, args.duration)
                        if spy is not None:
                            r["profile"] = finish_profile(*spy)
                        cpu1 = process_cpu(proc.pid)
                        m1 = scrape(mport or port) if ours else {}
                        if pre is not None:
                            # bare invoke right before and after, with the server idle: same machine state
                            r["bare_ms"] = (pre + bare_invoke_ms(path, x, 1, n_invoke)) / 2
                        if ours and big and fmt == "json" and c == 1:
                            r["stages"] = stage_times(tree, path, req, work, json_lib=lib)
                            r["live"] = live_stages(port, req)
                        r.update(model=label, server=server, fmt=fmt, load=os.getloadavg()[0])
                        if ours:
                            r.update(efficiency(m0, m1, name, cpu1 - cpu0, invoke_cpu))
                        rows.append(r)
                        eff = ""
                        if "cpu_share_estimate" in r:
                            eff = f" invoke share est {r['cpu_share_estimate']:.3f}"
                            if "cpu_share" in r:
                                eff += f" in-server {r['cpu_share']:.3f}"
                        print(
                            f"  {label:18s} {fmt:6s} {server:16s} c={c:3d}  {r['throughput']:9.1f} req/s  "
                            f"p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  ok={r['ok']} bad={r['bad']} "
                            f"err={r['errors']} load={r['load']:.1f}"
                            + (f" bare={r['bare_ms']:.4f} ms" if "bare_ms" in r else "") + eff,
                            flush=True,
                        )
                finally:
                    stop(proc)

    report = render(rows, bare, levels, cpus, args)
    print()
    print(report)
    if not args.no_append:
        append_section(report, args.results)
    return 0


def render(
    rows: list[dict[str, Any]], bare: dict[str, dict[str, float]], levels: list[int], cpus: int, args: Any
) -> str:
    def get(model: str, fmt: str, server: str, c: int) -> dict[str, Any] | None:
        for r in rows:
            if (r["model"], r["fmt"], r["server"], r["concurrency"]) == (model, fmt, server, c):
                return r
        return None

    out = [
        f"## Serving: modelship vs KServe ModelServer ({dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc {cpus} usable), {cpu_model()}, Python {platform.python_version()}. "
        f"`bench/serve.py --duration {args.duration:g} --warmup {args.warmup:g}"
        + (" --before <main's operator/>" if args.before else "")
        + "`: closed loop, keep-alive, "
        "load generator in a separate process (uvloop + httptools) on the same machine. Servers run one at a "
        "time: modelship (defaults: one worker per CPU, 1 thread each, dynamic batching max 8) and KServe 0.21 "
        "`ModelServer` (1 worker) with a `kserve.Model` wrapping `ai_edge_litert` `Interpreter(model_path)`. "
        "Request: OIP v2 infer, JSON (`data` list) or binary tensor extension.",
        "",
        "| model | body | clients | modelship req/s | KServe req/s | throughput x | modelship p50 / p99 ms "
        "| KServe p50 / p99 ms | p99 ratio (ours/KServe) | p50 / bare invoke |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in bare:
        fmts = sorted({r["fmt"] for r in rows if r["model"] == model}, key=lambda f: f != "json")
        for fmt in fmts:
            for c in levels:
                a, b = get(model, fmt, "modelship", c), get(model, fmt, "kserve", c)
                if a is None or b is None:
                    continue
                x = a["throughput"] / b["throughput"] if b["throughput"] else float("inf")
                pr = a["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan")
                ov_text = f"{a['p50_ms'] / a['bare_ms']:.2f}x" if "bare_ms" in a else ""
                out.append(
                    f"| {model} | {fmt} | {c} | {a['throughput']:.0f} | {b['throughput']:.0f} | {x:.2f}x | "
                    f"{a['p50_ms']:.3f} / {a['p99_ms']:.3f} | {b['p50_ms']:.3f} / {b['p99_ms']:.3f} | {pr:.2f} | "
                    f"{ov_text} |"
                )
    out.append("")
    top = max(levels)
    for model in bare:
        for fmt in sorted({r["fmt"] for r in rows if r["model"] == model}, key=lambda f: f != "json"):
            a, b = get(model, fmt, "modelship", top), get(model, fmt, "kserve", top)
            if a is None or b is None or not b["throughput"]:
                continue
            x = a["throughput"] / b["throughput"]
            ok = x >= 2 and a["p99_ms"] < b["p99_ms"]
            out.append(
                f"- {model}, {fmt}, {top} clients: {x:.2f}x KServe's throughput, p99 {a['p99_ms']:.1f} vs "
                f"{b['p99_ms']:.1f} ms (target >= 2x with lower p99: {'met' if ok else 'NOT met'})"
            )
    for r in rows:
        if "bare_ms" in r:
            ratio = r["p50_ms"] / r["bare_ms"]
            if r["bare_ms"] > 1.0:
                target = 2.0 if r["fmt"] == "json" else 1.5
                verdict = f"target <= {target:g}x: {'met' if ratio <= target else 'NOT met'}"
            else:
                verdict = f"a tiny model: the HTTP + JSON floor is {r['p50_ms']:.3f} ms per request"
            out.append(
                f"- {r['model']}, {r['fmt']}, 1 client: p50 {r['p50_ms']:.3f} ms = {ratio:.2f}x a bare invoke "
                f"({verdict})"
            )
    shares = [r for r in rows if "cpu_share_estimate" in r and r["server"].startswith("modelship")]
    if shares:
        out += [
            "",
            "Where modelship's CPU goes: the share of the server process's CPU time spent inside the interpreter's "
            "`invoke()` during each cell, as the server counts it (`modelship_invoke_cpu_seconds_total` / "
            "`modelship_process_cpu_seconds_total`) and estimated from outside (the batches it ran, by padded size, "
            "times a bare `invoke()`'s CPU at that size, over the process's CPU from /proc: comparable across "
            "versions, and lower than the server's count because a hot bare loop runs faster than invoke() "
            "between requests).",
            "",
            "| model | body | clients | server | req/s | p50 / p99 ms | server CPU s | invoke share (in-server) "
            "| invoke share (estimate) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(shares, key=lambda r: (r["model"], r["fmt"] != "json", r["concurrency"], r["server"])):
            in_server = f"{r['cpu_share']:.3f}" if "cpu_share" in r else "(not counted)"
            out.append(
                f"| {r['model']} | {r['fmt']} | {r['concurrency']} | {r['server']} | {r['throughput']:.0f} | "
                f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['server_cpu_s']:.2f} | {in_server} | "
                f"{r['cpu_share_estimate']:.3f} |"
            )
        out.append("")
        for r in rows:
            if r["server"] == "modelship" and r["fmt"] == "binary" and r["concurrency"] == top and "cpu_share" in r:
                met = "met" if r["cpu_share"] >= 0.9 else "NOT met"
                out.append(
                    f"- {r['model']}, binary, {top} clients: {r['cpu_share']:.1%} of the server's CPU inside invoke() "
                    f"(target >= 90%: {met})"
                )
    staged = [r for r in rows if "stages" in r]
    if staged:
        out += [
            "",
            "Where a JSON request's time goes at 1 client: the server's own stages timed one by one in a separate "
            "process (median, no HTTP, same body): parse (the JSON text to simdjson's document; with libmsjson, "
            "the document with the `data` values already in the input array, on two threads as a lone request "
            "is), to array (the `data` values into the input array, with the protocol's checks), run (quantize, "
            "`invoke()`, "
            "outputs), encode (dequantize, response JSON); the rest of the p50 is HTTP (receiving the body, "
            "answering), the event loop and the load generator's own send and receive.",
            "",
            "| model | server | body MB | p50 ms | parse | to array | run | encode | rest | bare invoke |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in staged:
            st = r["stages"]
            known = st["parse_ms"] + st["to_array_ms"] + st["run_ms"] + st["encode_ms"]
            bare_text = f"{r['bare_ms']:.2f}" if "bare_ms" in r else ""
            out.append(
                f"| {r['model']} | {r['server']} | {st['body_bytes'] / 1e6:.2f} | {r['p50_ms']:.2f} | "
                f"{st['parse_ms']:.2f} | {st['to_array_ms']:.2f} | {st['run_ms']:.2f} | {st['encode_ms']:.3f} | "
                f"{r['p50_ms'] - known:.2f} | {bare_text} |"
            )
        out += [f"- {r['server']}'s JSON path: {r['stages'].get('json_path', '?')}" for r in staged]
        out += [
            "",
            "The same in the running server, right after the cell: 200 requests one after another on one "
            "keep-alive connection, each asking for Server-Timing (median ms): client (send to answer read), the "
            "client's send (the 3 MB write: wall / its CPU), recv (the server's first body byte read to its last), "
            "decode (reported by servers that time it), queue, run (a worker taking it to the answer back on the "
            "loop), total (first byte read to the answer written), outside = client - total.",
            "",
            "| model | server | client | send wall / CPU | recv | decode | queue | run | total | outside |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in staged:
            lv = r.get("live", {})
            if not lv:
                continue

            def ms(key: str, lv: dict[str, float] = lv) -> str:
                return f"{lv[key]:.2f}" if key in lv else "-"

            out.append(
                f"| {r['model']} | {r['server']} | {ms('client')} | {ms('send')} / {ms('send_cpu')} | {ms('recv')} "
                f"| {ms('decode')} | {ms('queue')} | {ms('run')} | {ms('total')} | {ms('outside')} |"
            )
    for r in rows:
        if r.get("profile"):
            out.append(
                f"- py-spy, {r['server']} {r['model']} {r['fmt']} {r['concurrency']} client(s), where its threads "
                "were (self, share of samples): " + "; ".join(f"`{f}` {p:.0%}" for f, p in r["profile"])
            )
    out.append(
        "- KServe 0.21 turns binary tensor data back into Python lists (`InferRequest.from_bytes` calls "
        "`set_data_from_numpy(..., binary_data=False)`), so the binary extension does not speed it up; its "
        "`Model.predict` runs on the event loop, one request at a time."
    )
    out.append(
        "- Method: the window opens 1 s after every connection got its first answer (steady state) and lasts "
        "the duration; latency covers every request sent inside it, throughput the answers received inside it."
    )
    out.append("")
    out.append(
        "Bare `interpreter.invoke()` (median, same input, no HTTP): "
        + "; ".join(
            f"{m}: {v['threads=1']:.3f} ms at 1 thread, {v['threads=default']:.3f} ms at the default thread count"
            for m, v in bare.items()
        )
        + ". The last column divides modelship's p50 at 1 client by a bare 1-thread `invoke()` (each modelship "
        "worker runs one thread) timed right before and after that cell with the server idle: "
        + "; ".join(f"{r['model']} {r['fmt']}: {r['bare_ms']:.4f} ms" for r in rows if "bare_ms" in r)
        + f". Load average (1 min) during the cells: {min(r['load'] for r in rows):.1f} to "
        f"{max(r['load'] for r in rows):.1f} on {os.cpu_count()} CPUs (other jobs share this machine)."
    )
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
