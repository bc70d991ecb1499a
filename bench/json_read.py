"""libmsjson's read of the JSON-at-1-client body, in process: two builds of the library side by side.

The body is bench/serve.py's MobileNetV2 JSON request (1x224x224x3 float32 values of uniform(-1, 1), sent through
Python floats: ~17-digit reprs, 3.13 MB). Each library scans it and reads its FP32 array (msjson_scan +
msjson_read) on one thread and on two (the split read; the second thread needs a free core), rounds alternated
between the libraries; each round times ``--calls`` calls and keeps their median. Every read is checked bit for bit
against numpy's float32 of the Python floats. The last lines are the medians over the rounds and each library
against the first. Run it under the bench lock.

    python bench/json_read.py --lib old=/tmp/old/libmsjson.so --lib new=/tmp/new/libmsjson.so --rounds 6
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from pathlib import Path

import numpy as np

from modelship.serve import nativejson


def body() -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    return json.dumps(doc).encode(), x.ravel()


def time_reads(lib: ctypes.CDLL, data: np.ndarray, want: np.ndarray, threads: int, calls: int) -> dict[str, float]:
    """Median ms of the scan and of the read over calls, the read's output checked each time."""
    addr, size = int(data.ctypes.data), len(data)
    spans = (nativejson.Span * 4)()
    out = np.empty(want.size, dtype=np.float32)
    shape = np.empty(1, dtype=np.int64)
    scans, reads = [], []
    for _ in range(calls):
        out.fill(np.nan)
        t0 = time.perf_counter()
        n = lib.msjson_scan(addr, size, 2, ctypes.byref(spans), 4)
        t1 = time.perf_counter()
        rc = lib.msjson_read(
            addr, size, ctypes.byref(spans[0]), 0, int(out.ctypes.data), int(shape.ctypes.data), threads
        )
        t2 = time.perf_counter()
        if n != 1 or rc != 0 or out.tobytes() != want.tobytes():
            raise SystemExit(f"wrong read: spans {n}, rc {rc}")
        scans.append(t1 - t0)
        reads.append(t2 - t1)
    return {"scan_ms": statistics.median(scans) * 1e3, "read_ms": statistics.median(reads) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", action="append", required=True, help="NAME=PATH of a libmsjson.so (the first: baseline)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    libs = {}
    for item in args.lib:
        name, _, path = item.partition("=")
        lib, why = nativejson.open_library(Path(path))
        if lib is None:
            raise SystemExit(why)
        libs[name] = lib.lib
    raw, want = body()
    data = np.frombuffer(raw, dtype=np.uint8)
    print(json.dumps({"body_bytes": len(raw), "values": int(want.size)}), flush=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        order = list(libs.items()) if r % 2 == 0 else list(reversed(libs.items()))
        for name, lib in order:
            for threads in (1, 2):
                got = time_reads(lib, data, want, threads, args.calls)
                results.setdefault((name, threads), []).append(got)
                print(json.dumps({"round": r, "lib": name, "threads": threads, **got}), flush=True)
    base = next(iter(libs))
    for threads in (1, 2):
        for name in libs:
            reads = [g["read_ms"] for g in results[(name, threads)]]
            scans = [g["scan_ms"] for g in results[(name, threads)]]
            ref = statistics.median(g["read_ms"] for g in results[(base, threads)])
            med = statistics.median(reads)
            print(
                json.dumps(
                    {
                        "lib": name,
                        "threads": threads,
                        "read_ms_median": round(med, 3),
                        "read_ms_rounds": [round(x, 3) for x in reads],
                        "scan_ms_median": round(statistics.median(scans), 3),
                        "ns_per_value": round(med * 1e6 / want.size, 2),
                        f"read_vs_{base}": round(med / ref, 3),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
