"""The server's CPU per request at a low request rate, against baselines measured in the same run.

    PYTHONPATH=operator python bench/lowrate.py [--duration 10] [--rates 1,5,20] [--before TREE] [--no-append]

Most pods a platform runs see a few requests a second; their CPU is what an HPA reads and what the tenant pays
for. A hot server amortizes what a cold one pays on every request (caches, waking threads, lazily touched state),
so this benchmark measures the server process's CPU per request at a few low rates, paced (one request every
1/rate seconds, from a separate client process), with a new connection per request and on one keep-alive
connection, against:

* a minimal stdlib server (``http.server``, one thread) doing the same JSON decode and encode of the same TF
  Serving REST request (``{"instances": [[4.0]]}``, answering ``{"predictions": [[7.0]]}``) and nothing else;
* our server at a high rate (3 back-to-back keep-alive clients), where it is hot.

The model is the e2e's linear model (one Dense unit, y = 2x - 1, as TFLite), served by ``modelship serve`` with 1
worker and 1 thread. CPU comes from the scheduler's per-thread counts (/proc/PID/task/*/schedstat, ns), also per
thread; page faults (minflt) and context switches per request from /proc too. The idle CPU (no requests) is
measured over the same window. ``--before TREE`` also runs the server from another checkout (e.g. ``git archive
<rev> operator | tar -x -C TREE``) in the same run. Run under the bench lock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import cpu_model, publish  # noqa: E402
from bench.serve import free_port  # noqa: E402

PY = sys.executable
NAME = "linear"
BODY = json.dumps({"instances": [[4.0]]}).encode()
PATH = f"/v1/models/{NAME}:predict"

#: the stdlib baseline: one thread, HTTP/1.1 keep-alive, json.loads + json.dumps of the same request and answer
STDLIB_SERVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall between them
    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        req = json.loads(self.rfile.read(n))
        out = json.dumps({"predictions": [[2.0 * x[0] - 1.0] for x in req["instances"]]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

#: builds the linear model (y = 2x - 1, one Dense unit) as TFLite, in a subprocess so this process stays TF-free
BUILD_MODEL = r"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras as keras
m = keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)], name="linear")
m.layers[0].set_weights([np.array([[2.0]], np.float32), np.array([-1.0], np.float32)])
open(sys.argv[1], "wb").write(tf.lite.TFLiteConverter.from_keras_model(m).convert())
"""


# =============================================================================================
# /proc


def threads(pid: int) -> dict[int, tuple[str, int, int, int]]:
    """tid -> (name, CPU ns from schedstat, minor faults, context switches) of every thread of ``pid`` (the
    server's threads are long-lived; the main thread runs the inference event loop)."""
    out: dict[int, tuple[str, int, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns = int((task / "schedstat").read_text().split()[0])
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (OSError, ValueError):
            continue
        name = "main (event loop)" if int(task.name) == pid else f"thread {task.name}"
        minflt = int(stat.rsplit(")", 1)[1].split()[7])
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if line.endswith("ctxt_switches", 0, line.find(":"))
        )
        out[int(task.name)] = (name, run_ns, minflt, switches)
    return out


def delta(
    before: dict[int, tuple[str, int, int, int]], after: dict[int, tuple[str, int, int, int]]
) -> dict[str, tuple[float, int, int]]:
    """Thread name -> (CPU seconds, minor faults, context switches) between two snapshots (threads of one name
    summed; a thread born in between counts from zero)."""
    out: dict[str, tuple[float, int, int]] = {}
    for tid, (name, ns, flt, sw) in after.items():
        b = before.get(tid, (name, 0, 0, 0))
        cpu, f, s = out.get(name, (0.0, 0, 0))
        out[name] = (cpu + (ns - b[1]) / 1e9, f + flt - b[2], s + sw - b[3])
    return out


# =============================================================================================
# clients (run in their own process, so the bench's own work never shares the server's CPU accounting)


def _request(conn: http.client.HTTPConnection) -> None:
    conn.request("POST", PATH, BODY, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"answer {r.status}: {data[:200]!r}")


def _paced(port: int, rate: float, count: int, keepalive: bool, go: Any, q: Any) -> None:
    """``count`` requests, one every 1/rate seconds (paced from the start: a slow answer does not shift the rest)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10) if keepalive else None
    go.wait()
    t0 = time.monotonic()
    lat = []
    for i in range(count):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        s = time.perf_counter()
        if keepalive:
            assert conn is not None
            _request(conn)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            _request(c)
            c.close()
        lat.append(time.perf_counter() - s)
    if conn is not None:
        conn.close()
    q.put(sorted(lat))


def _flood(port: int, seconds: float, q: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _request(conn)
        n += 1
    conn.close()
    q.put(n)


def measure(pid: int, run: Any) -> dict[str, Any]:
    """Run ``run()`` (-> requests sent) and return the server's CPU, faults and switches over it."""
    before = threads(pid)
    t0 = time.monotonic()
    n = run()
    wall = time.monotonic() - t0
    per = delta(before, threads(pid))
    cpu = sum(v[0] for v in per.values())
    return {
        "requests": n,
        "wall": wall,
        "cpu": cpu,
        "threads": {k: v for k, v in per.items() if v[0] > 0 or v[2] > 0},
        "minflt": sum(v[1] for v in per.values()),
        "switches": sum(v[2] for v in per.values()),
    }


def paced_cell(pid: int, port: int, rate: float, seconds: float, keepalive: bool) -> dict[str, Any]:
    count = max(3, round(rate * seconds))
    ctx = mp.get_context("spawn")
    q, go = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_paced, args=(port, rate, count, keepalive, go, q))
    proc.start()
    time.sleep(1.0)  # the client process's start-up is over before the window opens

    def run() -> int:
        go.set()
        q.get(timeout=seconds * 3 + 60)
        return count

    res = measure(pid, run)
    proc.join()
    return res


def hot_cell(pid: int, port: int, seconds: float, clients: int = 3) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_flood, args=(port, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()

    def run() -> int:
        return sum(q.get(timeout=seconds + 60) for _ in procs)

    res = measure(pid, run)
    for p in procs:
        p.join()
    return res


def idle_cell(pid: int, seconds: float) -> dict[str, Any]:
    return measure(pid, lambda: (time.sleep(seconds), 0)[1])


# =============================================================================================
# servers


def wait_up(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
            c.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on {port} not up")


def start_ours(model: Path, tree: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, mport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(
        [PY, "-m", "modelship.serve", "--model", str(model), "--name", NAME, "--port", str(port), "--host",
         "127.0.0.1", "--metrics-port", str(mport), "--workers", "1", "--threads", "1", "--drain-seconds", "0",
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    wait_up(port, f"/v2/models/{NAME}/ready", proc)
    return proc, port


def start_stdlib(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    script = workdir / "stdlib_server.py"
    script.write_text(STDLIB_SERVER)
    proc = subprocess.Popen([PY, str(script), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(port, "/", proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# =============================================================================================


def run_servers(starts: dict[str, Any], rates: list[float], seconds: float, hot_s: float) -> dict[str, Any]:
    """Start every server, then run each cell on each server in turn (the machine's load drifts: interleaved,
    every server sees the same drift), then stop them."""
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    results: dict[str, Any] = {label: {} for label in starts}
    try:
        for label, start in starts.items():
            procs[label] = start()
        for label, (proc, port) in procs.items():
            # warm the path once on each kind of connection (first-request costs are not the steady state)
            for keepalive in (False, True):
                paced_cell(proc.pid, port, 20.0, 0.5, keepalive)
            results[label]["idle"] = idle_cell(proc.pid, seconds)
        for rate in rates:
            for keepalive in (False, True):
                key = f"{rate:g}/s {'keep-alive' if keepalive else 'new conn'}"
                for label, (proc, port) in procs.items():
                    c = results[label][key] = paced_cell(proc.pid, port, rate, seconds, keepalive)
                    print(f"  {label:>8} {key:>20}: {c['cpu'] / c['requests'] * 1e3:.3f} ms CPU/request "
                          f"({c['minflt'] / c['requests']:.1f} faults, {c['switches'] / c['requests']:.1f} "
                          "switches)", flush=True)  # fmt: skip
        for label, (proc, port) in procs.items():
            c = results[label]["hot"] = hot_cell(proc.pid, port, hot_s)
            print(f"  {label:>8} {'hot (3 clients)':>20}: {c['cpu'] / c['requests'] * 1e3:.3f} ms CPU/request, "
                  f"{c['requests'] / c['wall']:.0f} req/s", flush=True)  # fmt: skip
    finally:
        for proc, _ in procs.values():
            stop(proc)
    return results


def render(results: dict[str, Any], rates: list[float], seconds: float, hot_s: float, loads: list[float]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    servers = [s for s in results if s != "stdlib"]
    lines = [
        f"## Low request rate: server CPU per request (bench/lowrate.py, {now})",
        "",
        f"Machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}. "
        f"`bench/lowrate.py --duration {seconds:g}`: the linear model (one Dense unit, TFLite), `modelship serve "
        f"--workers 1 --threads 1`, TF Serving REST `{{\"instances\": [[4.0]]}}`, paced requests from a separate "
        f"client process (http.client), a new connection per request or one keep-alive connection; the stdlib "
        f"baseline is `http.server` (one thread) doing json.loads + json.dumps of the same request; hot = 3 "
        f"back-to-back keep-alive clients for {hot_s:g} s (the stdlib server is one thread: it serves one client "
        f"at a time). The servers run side by side, each cell on each in turn. CPU: the server process's threads' "
        f"scheduler counts "
        f"(/proc/PID/task/*/schedstat). Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}.",
        "",
    ]
    head = "| cell | " + " | ".join(f"{s} CPU ms/req" for s in ["stdlib", *servers])
    head += " | " + " | ".join(f"{s} / stdlib" for s in servers) + " | " + " | ".join(f"{s} / its hot" for s in servers)
    head += " | " + " | ".join(f"{s} faults, switches /req" for s in servers) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    keys = [f"{r:g}/s {k}" for r in rates for k in ("new conn", "keep-alive")] + ["hot"]

    def per(server: str, key: str) -> float | None:
        c = results.get(server, {}).get(key)
        return c["cpu"] / c["requests"] * 1e3 if c and c["requests"] else None

    for key in keys:
        base = per("stdlib", key)
        row = [key] + [f"{v:.3f}" if (v := per(s, key)) is not None else "-" for s in ["stdlib", *servers]]
        for s in servers:
            v = per(s, key)
            row.append(f"{v / base:.2f}x" if v is not None and base else "-")
        for s in servers:
            v, h = per(s, key), per(s, "hot")
            row.append(f"{v / h:.2f}x" if v is not None and h else "-")
        for s in servers:
            c = results[s].get(key)
            row.append(f"{c['minflt'] / c['requests']:.1f}, {c['switches'] / c['requests']:.1f}" if c else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Idle CPU (no requests, {seconds:g} s): " + ", ".join(
        f"{s} {results[s]['idle']['cpu'] / results[s]['idle']['wall'] * 1e3:.2f} mCPU" for s in results
    ) + ".", ""]  # fmt: skip
    lines.append("CPU per request by thread (ms), a new connection per request at the lowest rate and hot:")
    lines.append("")
    for s in servers:
        for key in (keys[0], "hot"):
            c = results[s][key]
            parts = sorted(c["threads"].items(), key=lambda kv: -kv[1][0])
            lines.append(f"- {s}, {key}: " + ", ".join(
                f"{name} {v[0] / c['requests'] * 1e3:.3f}" for name, v in parts if v[0] / c["requests"] > 5e-6
            ))  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per paced cell (and the idle window)")
    ap.add_argument("--rates", default="1,5,20", help="requests per second")
    ap.add_argument("--hot", type=float, default=3.0, help="seconds of the hot cell")
    ap.add_argument("--before", help="a checkout's operator/ directory whose server also runs")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="lowrate-") as tmp:
        workdir = Path(tmp)
        model = workdir / "linear.tflite"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([PY, "-c", BUILD_MODEL, str(model)], check=True, env=env, stderr=subprocess.DEVNULL)
        starts: dict[str, Any] = {"stdlib": lambda: start_stdlib(workdir)}
        starts["ours"] = lambda: start_ours(model, REPO / "operator", workdir / "ours.log")
        if args.before:
            before = Path(args.before).resolve()
            starts["before"] = lambda: start_ours(model, before, workdir / "before.log")
        loads = [loadavg()]
        results = run_servers(starts, rates, args.duration, args.hot)
        loads.append(loadavg())
        publish(render(results, rates, args.duration, args.hot, loads), append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
