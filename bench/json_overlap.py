"""Would parsing a JSON body while it is still being received pay? An experiment on libmsjson's own entry points.

    PYTHONPATH=operator python bench/json_overlap.py [--rates 0,1.25,0.6] [--step-kb 256,128] [-n 400] [--no-append]

A sender process writes the MobileNetV2 request body (3.1 MB of JSON, 150,528 float32 values) over loopback TCP each
time the receiver asks; the receiver reads it into one buffer, like the server's receive path, and decodes the
``data`` array two ways, alternating:

- ``after``: the whole body first, then ``msjson_scan`` and ``msjson_read`` on two threads (what the server does
  for a lone request);
- ``overlap``: whenever ``--step-kb`` more bytes have arrived and the parse thread is idle, the values up to the last
  comma received are handed to that (one, persistent) thread, which parses them with ``msjson_read`` while the
  receiver keeps reading; after the last byte: the scan, then the rest on two threads.

Both must give the same array as the checked path (asserted). ``--rates`` paces the sender (GB/s; 0: as fast as it
can, the benchmark's load generator on the same cores; 1.25: a 10 Gbit/s link; 0.6: 5 Gbit/s). It prints the median
time from asking for the body to having its values, and the share of the values parsed before the last byte came.
The comma positions the receiver hands over are taken from the known body (a stand-in for a prefix scan), so the
``overlap`` figure is a bound on what a server could gain, not a design.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import datetime as dt
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "operator"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.results import cpu_model, publish  # noqa: E402
from modelship.serve import nativejson as nj  # noqa: E402

CHUNK = 256 * 1024


def body_bytes() -> bytes:
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    doc = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    return json.dumps(doc).encode()


def sender(port: int, rate: float) -> None:
    """Send the body each time a byte arrives; ``rate`` GB/s (0: unpaced), in CHUNK writes."""
    body = body_bytes()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while s.recv(1):
        if not rate:
            s.sendall(body)
            continue
        t0 = time.perf_counter()
        for off in range(0, len(body), CHUNK):
            s.sendall(body[off : off + CHUNK])
            left = t0 + (off + CHUNK) / (rate * 1e9) - time.perf_counter()
            if left > 0:
                time.sleep(left)


def run(rate: float, step_kb: int, n: int) -> dict[str, Any]:
    lib = nj.LIBRARY.lib if nj.LIBRARY is not None else None
    if lib is None:
        raise SystemExit(f"libmsjson is not loaded: {nj.WHY_NOT}")
    body = body_bytes()
    size = len(body)
    ref = np.array(json.loads(body)["inputs"][0]["data"], np.float32)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    proc = mp.get_context("spawn").Process(target=sender, args=(listener.getsockname()[1], rate))
    proc.start()
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = np.empty(size, np.uint8)
    view, addr = buf.data, int(buf.ctypes.data)
    start = body.index(b"[", body.index(b'"data"'))
    commas = np.flatnonzero(np.frombuffer(body, np.uint8) == ord(","))
    commas = commas[commas > start]
    spans = (nj.Span * nj.MAX_SPANS)()
    shape = (ctypes.c_int64 * 1)()
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def read(span: nj.Span, out: np.ndarray, threads: int) -> None:
        if lib.msjson_read(addr, size, ctypes.byref(span), 0, out.ctypes.data, shape, threads) != 0:
            raise AssertionError("msjson_read declined")

    def finish(out: np.ndarray, first: int, pos: int) -> None:
        """Scan the whole body, then read what was not read yet (from value ``first``, at ``pos``) on 2 threads."""
        if lib.msjson_scan(addr, size, 2, ctypes.byref(spans), nj.MAX_SPANS) != 1:
            raise AssertionError("msjson_scan found no single span")
        whole = spans[0]
        if not first:
            return read(whole, out, 2)
        rest = nj.Span(start=pos, end=whole.end, count=whole.count - first, depth=1)
        i = int(np.searchsorted(commas, (pos + whole.end) // 2))
        rest.split, rest.split_index = int(commas[i]), i + 1 - first
        read(rest, out[first:], 2)

    times: dict[str, list[float]] = {"after": [], "overlap": []}
    shares: list[float] = []
    for _ in range(n):
        for mode in times:
            out = np.empty(ref.size, np.float32)
            state = {"k": 0, "pos": start, "handed": 0}
            idle = threading.Event()
            idle.set()

            def work(
                k0: int, pos0: int, k1: int, pos1: int, out: Any = out, state: Any = state, idle: Any = idle
            ) -> None:
                read(nj.Span(start=pos0, end=pos1 + 1, count=k1 - k0, depth=1), out[k0:], 1)
                state["k"], state["pos"] = k1, pos1
                idle.set()

            t0 = time.perf_counter()
            conn.send(b"g")
            got = 0
            while got < size:
                got += conn.recv_into(view[got:])
                if mode == "overlap" and got < size and idle.is_set() and got - state["handed"] >= step_kb * 1024:
                    state["handed"] = got
                    k1 = int(np.searchsorted(commas, got - 1))  # values whose comma has arrived
                    if k1 > state["k"]:
                        idle.clear()
                        pool.submit(work, state["k"], state["pos"], k1, int(commas[k1 - 1]))
            idle.wait()
            if mode == "overlap":
                shares.append(state["k"] / ref.size)
            finish(out, state["k"], state["pos"])
            times[mode].append(time.perf_counter() - t0)
            if not np.array_equal(out, ref):
                raise AssertionError(f"{mode}: values differ from the checked path's")
    conn.close()
    proc.join()
    pool.shutdown()
    return {
        "rate": rate,
        "step_kb": step_kb,
        "after_ms": statistics.median(times["after"]) * 1e3,
        "overlap_ms": statistics.median(times["overlap"]) * 1e3,
        "share": statistics.median(shares),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="0,1.25,0.6", help="sender pacing, GB/s (0: unpaced)")
    ap.add_argument("--step-kb", default="256,128", help="hand a prefix to the parse thread every this many KB")
    ap.add_argument("-n", type=int, default=400, help="bodies per mode and setting")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    rows = []
    load = [os.getloadavg()[0]]
    for rate in (float(r) for r in args.rates.split(",")):
        for step in (int(s) for s in args.step_kb.split(",")):
            rows.append(run(rate, step, args.n))
            load.append(os.getloadavg()[0])
            r = rows[-1]
            print(f"rate {rate:g} GB/s step {step} KB: after {r['after_ms']:.3f} ms, overlap {r['overlap_ms']:.3f} ms, "
                  f"parsed during the receive {r['share']:.0%}", flush=True)  # fmt: skip
    text = [
        "## JSON parse overlapped with the receive: an experiment (bench/json_overlap.py) — "
        + dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        f"\nMachine: {os.cpu_count()} CPUs, {cpu_model()}; {args.n} bodies per mode and setting, the modes "
        f"alternating; load average (1 min) {min(load):.1f} to {max(load):.1f}. Median ms from asking for the "
        "3.1 MB body to having its values (see the script's docstring for the method).\n",
        "| sender | step KB | receive, then decode | decode overlapped | saved | values parsed before the last byte |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sender_text = "unpaced (loopback, same cores)" if not r["rate"] else f"{r['rate']:g} GB/s"
        text.append(
            f"| {sender_text} | {r['step_kb']} | {r['after_ms']:.3f} | {r['overlap_ms']:.3f} | "
            f"{r['after_ms'] - r['overlap_ms']:.3f} | {r['share']:.0%} |"
        )
    publish("\n".join(text) + "\n", not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
