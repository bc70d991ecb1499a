"""The event loop's CPU per binary-extension request, in process: bench/serve.py's MobileNetV2 int8 binary request
(602 KB, FP32) fed through the real connection (``_Conn``: httptools, the head in the scratch buffer, the body read
straight into its buffer), the app (decode, budget hold, queue) and the batcher (one worker, the run inline on the
calling thread, as a lone request runs on the loop thread), to the answer written to a fake transport. invoke() is
stubbed out, and the body's bytes are not copied into the buffer (the kernel's copy in the server) unless
``--copy``. Per request: the thread's CPU time, median of ``--n`` after a warm-up; hot caches, so a lower bound of
what the same Python costs the server under load. Trees are alternated, one subprocess per tree and round.

    python bench/binary_lone.py --model /path/mobilenetv2_int8.tflite --tree /tmp/main/operator --tree operator

``--profile`` prints a cProfile by thread CPU time of the requests (to stderr).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.json_lone import lone_arguments  # noqa: E402

CHILD = r"""
import asyncio, gc, json, statistics, sys, time
import numpy as np
import uvloop
sys.path.insert(0, sys.argv[5])
from bench import serve as S
from modelship.serve.app import AppConfig, create_app
from modelship.serve.connection import _Conn
from modelship.serve.http import HttpServer
from modelship.serve.limits import Budget
from modelship.serve.model import load_model

model_path, n, copy, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"


async def main():
    model = load_model(model_path, "m", "1")
    app = create_app(AppConfig(workers=1, threads=1, max_batch_size=8))
    await app.add_model(model)
    batcher = app.models["m"].batcher
    for w in batcher._all:
        for it in w.runner._interps.values():
            it.invoke = lambda: None
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    request = S.requests_for("m", model.inputs[0].name, x, True)
    srv = HttpServer(app.handle, budget=Budget("inflight", 1 << 30), decoded_budget=Budget("decoded", 1 << 30),
                     admit=app.admit)
    srv._update_date()
    app.set_arriving(lambda: srv.receiving_small, lambda: srv.receiving)
    answers = []

    class Transport(asyncio.Transport):
        def write(self, data): answers.append(bytes(data[:12]))
        def is_closing(self): return False
        def get_extra_info(self, name, default=None): return None
        def pause_reading(self): pass
        def resume_reading(self): pass

    conn = _Conn(srv)
    conn.connection_made(Transport())
    view = memoryview(request)

    def one():
        pos = 0
        while pos < len(request):
            buf = conn.get_buffer(-1)
            k = min(len(buf), len(request) - pos, 262144)
            if pos == 0 or copy:  # the head always: the parser reads it
                buf[:k] = view[pos : pos + k]
            conn.buffer_updated(k)
            pos += k

    cpu = []
    for i in range(n + 30):
        gc.disable()
        c0 = time.thread_time()
        one()
        c1 = time.thread_time()
        gc.enable()
        if i >= 30:
            cpu.append(c1 - c0)
    assert answers[-1].startswith(b"HTTP/1.1 200"), answers[-1]
    assert batcher.inline_runs >= n, batcher.inline_runs
    if profile:
        import cProfile, pstats
        pr = cProfile.Profile(time.thread_time)
        pr.enable()
        for _ in range(n):
            one()
        pr.disable()
        pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(35)
    q = statistics.quantiles(cpu, n=4)
    print(json.dumps({"cpu_us": statistics.median(cpu) * 1e6, "p25_us": q[0] * 1e6, "p75_us": q[2] * 1e6}))
    await app.close()


uvloop.install()
asyncio.run(main())
"""


def main() -> int:
    ap = lone_arguments(__doc__, "an operator/ directory (repeat: alternated)", 2000)
    ap.add_argument("--copy", action="store_true", help="copy the body's bytes into its buffer too")
    args = ap.parse_args()
    results: dict[str, list[float]] = {t: [] for t in args.tree}
    for r in range(args.rounds):
        for tree in args.tree if r % 2 == 0 else args.tree[::-1]:
            env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()), TF_USE_LEGACY_KERAS="1")
            argv = [args.model, str(args.n), "1" if args.copy else "0", "1" if args.profile else "0", str(REPO)]
            out = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
            if args.profile:
                sys.stderr.write(out.stderr)
            if out.returncode:
                raise SystemExit(f"{tree}: the child failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[tree].append(res["cpu_us"])
            print(f"round {r} {tree}: {res['cpu_us']:.1f} us per request (p25 {res['p25_us']:.1f}, "
                  f"p75 {res['p75_us']:.1f})", flush=True)  # fmt: skip
    for tree, values in results.items():
        print(f"{tree}: median {statistics.median(values):.1f} us over {len(values)} rounds "
              f"({min(values):.1f}-{max(values):.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
