"""Serving benchmark: Modelship's server vs KServe's Python ModelServer on the same TFLite models.

    PYTHONPATH=operator python bench/serve.py [--duration 5] [--quick] [--no-append]

For each model (digits CNN int8, MobileNetV2 int8) it builds the .tflite (nothing downloaded), times a bare
``interpreter.invoke()``, then for each server (ours; KServe 0.21 ``ModelServer`` with a ``kserve.Model``
wrapping the same interpreter, the way a KServe user writes it) runs a closed-loop load at 1, 8 and 64
concurrent keep-alive connections from a separate load-generator process (uvloop + httptools, pre-encoded
requests), and reports throughput, p50/p99 latency, the ratios ours/KServe and p50 / bare invoke.
The servers run one at a time on the same machine; all figures come from the same run.

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


def start_ours(model: Path, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    return subprocess.Popen(
        [PY, "-m", "modelship.serve", "--model", str(model), "--name", name, "--port", str(port), "--host", "127.0.0.1",
         "--drain-seconds", "0", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip


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


def bare_invoke_ms(model: Path, x: np.ndarray, threads: int | None, n: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=threads)
    it.allocate_tensors()
    idx = it.get_input_details()[0]["index"]
    it.set_tensor(idx, x)
    for _ in range(max(5, n // 10)):
        it.invoke()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--quick", action="store_true", help="digits only")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
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
    for label, (path, x) in models.items():
        big = x.size > 10_000
        n_invoke = 200 if big else 5000
        bare[label] = {
            "threads=1": bare_invoke_ms(path, x, 1, n_invoke),
            "threads=default": bare_invoke_ms(path, x, None, n_invoke),
        }
        print(f"{label}: bare invoke {bare[label]}", flush=True)
        name = "m"
        iname = input_name(path)
        fmts = ["json", "binary"] if big else ["json"]
        for fmt in fmts:
            req = requests_for(name, iname, x, fmt == "binary")
            for server in ("modelship", "kserve"):
                port = free_port()
                log = work / f"{server}-{port}.log"
                proc = (
                    start_ours(path, name, port, log)
                    if server == "modelship"
                    else start_kserve(path, name, port, log, kserve_script)
                )
                try:
                    wait_ready(port, name, proc)
                    for c in levels:
                        interleave = server == "modelship" and c == 1
                        before = bare_invoke_ms(path, x, 1, n_invoke) if interleave else None
                        r = run_loadgen(port, req, c, args.warmup, args.duration)
                        if before is not None:
                            # bare invoke right before and after, with the server idle: same machine state
                            r["bare_ms"] = (before + bare_invoke_ms(path, x, 1, n_invoke)) / 2
                        r.update(model=label, server=server, fmt=fmt, load=os.getloadavg()[0])
                        rows.append(r)
                        print(
                            f"  {label:18s} {fmt:6s} {server:9s} c={c:3d}  {r['throughput']:9.1f} req/s  "
                            f"p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  ok={r['ok']} bad={r['bad']} "
                            f"err={r['errors']} load={r['load']:.1f}"
                            + (f" bare={r['bare_ms']:.4f} ms" if "bare_ms" in r else ""),
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
        f"`bench/serve.py --duration {args.duration:g} --warmup {args.warmup:g}`: closed loop, keep-alive, "
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
                verdict = f"target < 1.5x: {'met' if ratio < 1.5 else 'NOT met'}"
            else:
                verdict = f"a tiny model: the HTTP + JSON floor is {r['p50_ms']:.3f} ms per request"
            out.append(
                f"- {r['model']}, {r['fmt']}, 1 client: p50 {r['p50_ms']:.3f} ms = {ratio:.2f}x a bare invoke "
                f"({verdict})"
            )
    out.append(
        "- KServe 0.21 turns binary tensor data back into Python lists (`InferRequest.from_bytes` calls "
        "`set_data_from_numpy(..., binary_data=False)`), so the binary extension does not speed it up; its "
        "`Model.predict` runs on the event loop, one request at a time. A 3 MB JSON body costs modelship "
        "~7 ms to decode (simdjson fast path), which is why JSON at 1 client sits well above a bare invoke."
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
