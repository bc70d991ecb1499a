"""The Python per lone JSON request, in process: a MobileNetV2 v2 JSON request (3.05 MB, FP32) fed to the app's
``handle`` with a budget hold as the connection makes it, from its received body to its encoded answer, on the
calling thread (the batcher runs a lone request inline, as the server's loop thread does). The interpreter's
``invoke()`` is stubbed out (``--real-invoke``: run, and its CPU reported apart). Per request, median of many: the
thread's CPU time (``cpu_ms``), the same less the CPU of libmsjson's calls (scan, read, quantize; timed around each
call: ``outside_native_ms`` is the Python, numpy, orjson and the cold caches they run in), minor page faults. Trees
are alternated in the same run (one subprocess per tree and round); the last lines are the medians over the rounds
and each tree against the first. The parse runs on one thread (``--threads 1``, the default: deterministic on a
loaded machine), or on two when the PSI gate allows (``--threads 2``). ``--profile``: a cProfile by thread CPU
time of the requests too, on stderr. Run it under the bench lock.

    python bench/json_lone.py --model /path/mobilenetv2_int8.tflite --tree /work/main --tree . --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import asyncio, gc, json, resource, statistics, sys, time
import numpy as np
from modelship.serve.app import AppConfig, create_app
from modelship.serve.messages import Request
from modelship.serve.model import load_model
from modelship.serve.limits import Budget, Hold

model_path, n, threads, stub = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
profile = len(sys.argv) > 5 and sys.argv[5] == "profile"

native_cpu = [0.0]


class _TimedLib:
    # libmsjson with the CPU time of each call on this thread added up (the scan, the read, the quantize)

    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        fn = getattr(self._lib, name)
        if not name.startswith("msjson_") or name in ("msjson_abi", "msjson_version"):
            return fn

        def timed(*args):
            t0 = time.thread_time()
            try:
                return fn(*args)
            finally:
                native_cpu[0] += time.thread_time() - t0

        return timed


def time_native():
    from modelship.serve import nativejson, nativequant
    lib = nativejson.LIBRARY
    if lib is None:
        return
    nativejson.LIBRARY = type(lib)(_TimedLib(lib.lib), lib.path, lib.version)
    fn = nativequant.QUANTIZE
    if fn is not None:
        def q(*args):
            t0 = time.thread_time()
            try:
                return fn(*args)
            finally:
                native_cpu[0] += time.thread_time() - t0
        nativequant.QUANTIZE = q


async def main():
    time_native()
    model = load_model(model_path, "m", "1")
    app = create_app(AppConfig())
    await app.add_model(model)
    app._split = threads >= 2
    spec = model.inputs[0]
    shape = [1, *spec.shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    body = json.dumps({"inputs": [{"name": spec.name, "shape": shape, "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    batcher = app.models["m"].batcher
    interps = [i for w in batcher._all for i in w.runner._interps.values()]
    invoke_cpu = []
    real = {}
    for it in interps:
        real[id(it)] = it.invoke
    def timed_invoke(f):
        def g():
            t0 = time.thread_time(); f(); invoke_cpu.append(time.thread_time() - t0)
        return g
    for it in interps:
        it.invoke = (lambda: None) if stub else timed_invoke(real[id(it)])
    out = []
    inflight, decoded = Budget("inflight", 1 << 30), Budget("decoded", 1 << 30)
    def respond(resp):
        out.append(resp)
        hold.close()  # as the connection does once the answer is written
    cpu, wall, rest = [], [], []
    faults = 0
    for i in range(n + 20):
        hold = Hold(inflight, decoded)
        hold.take_body(len(body))  # as the connection does while receiving
        req = Request("POST", "/v2/models/m/infer", "", {"content-type": "application/json"}, body, True, hold)
        gc.disable()
        native_cpu[0] = 0.0
        f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        c0, w0 = time.thread_time(), time.perf_counter()
        app.handle(req, respond)
        c1, w1 = time.thread_time(), time.perf_counter()
        nat = native_cpu[0]
        f1 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        gc.enable()
        assert out and out[-1].status == 200, (out[-1].status, out[-1].body[:200])
        if i >= 20:
            cpu.append(c1 - c0); wall.append(w1 - w0); rest.append(c1 - c0 - nat)
            faults += f1 - f0
    if profile:
        import cProfile, pstats
        pr = cProfile.Profile(time.thread_time); pr.enable()
        for _ in range(n):
            hold = Hold(inflight, decoded); hold.take_body(len(body))
            app.handle(Request("POST", "/v2/models/m/infer", "", {}, body, True, hold), respond)
        pr.disable(); pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    inline = app.models["m"].batcher.inline_runs
    await app.close()
    inv = statistics.median(invoke_cpu[20:]) if invoke_cpu else None
    print(json.dumps({"cpu_ms": statistics.median(cpu) * 1e3, "wall_ms": statistics.median(wall) * 1e3,
                      "cpu_p25": statistics.quantiles(cpu, n=4)[0] * 1e3,
                      "outside_native_ms": statistics.median(rest) * 1e3,
                      "outside_native_p25": statistics.quantiles(rest, n=4)[0] * 1e3, "inline": inline, "n": n,
                      "minflt_per_request": faults / n,
                      "invoke_ms": inv * 1e3 if inv else None, "body": len(body)}))

asyncio.run(main())
"""


def run(
    tree: Path, model: str, n: int, threads: int, stub: bool, json_lib: str | None, profile: bool = False
) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'operator'}:{tree}", TF_USE_LEGACY_KERAS="1")
    if json_lib is not None:
        env["MODELSHIP_JSON_LIB"] = json_lib
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(n), str(threads), "1" if stub else "0", "profile" if profile else ""],
        env=env,
        capture_output=True,
        text=True,
    )
    if profile:
        sys.stderr.write(out.stderr)
    if out.returncode:
        raise SystemExit(f"{tree}: the child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    """One line per tree: the median over its rounds of each round's medians (CPU per request, and CPU outside
    the native calls), and for every tree after the first its difference from the first in the same run."""
    by_tree: dict[str, list[dict[str, float]]] = {}
    for tree, res in rows:
        by_tree.setdefault(tree, []).append(res)
    lines: list[str] = []
    first: dict[str, float] | None = None
    for tree, results in by_tree.items():
        med = {k: statistics.median(r[k] for r in results) for k in ("cpu_ms", "outside_native_ms")}
        cpu, rest = med["cpu_ms"], med["outside_native_ms"]
        line = f"{tree}: {len(results)} rounds, CPU {cpu:.3f} ms, outside libmsjson {rest:.3f} ms"
        if first is None:
            first = med
        else:
            line += f" ({cpu - first['cpu_ms']:+.3f} / {rest - first['outside_native_ms']:+.3f} ms vs the first tree)"
        lines.append(line)
    return lines


def lone_arguments(doc: str | None, tree_help: str, n: int) -> argparse.ArgumentParser:
    """The arguments of the in-process request benchmarks (this one and bench/binary_lone.py)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="MobileNetV2 int8 .tflite (bench/serve.py builds one)")
    ap.add_argument("--tree", action="append", required=True, help=tree_help)
    ap.add_argument("--n", type=int, default=n, help="requests per subprocess")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the requests too (to stderr)")
    return ap


def main() -> int:
    ap = lone_arguments(__doc__, "a checkout (repeat: compared in one run)", 300)
    ap.add_argument("--threads", type=int, default=1, help="parse threads (2: as the server on a free machine)")
    ap.add_argument("--real-invoke", action="store_true", help="do not stub invoke() (time it apart instead)")
    ap.add_argument("--json-lib", action="append", help="per tree: $MODELSHIP_JSON_LIB for it")
    args = ap.parse_args()
    libs = args.json_lib or [None] * len(args.tree)
    rows: list[tuple[str, dict[str, float]]] = []
    for r in range(args.rounds):
        for tree, lib in zip(args.tree, libs, strict=True):
            res = run(Path(tree).resolve(), args.model, args.n, args.threads, not args.real_invoke, lib, args.profile)
            rows.append((tree, res))
            shown = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())
            print(f"round {r} {tree}: {shown}", flush=True)
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
