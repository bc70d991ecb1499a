"""Mirroring benchmark: the stable server's throughput and p99 with 20% of its requests mirrored to a candidate,
against no mirroring, in the same run.

    PYTHONPATH=operator python bench/mirror.py [--duration 5] [--rounds 3] [--percent 20] [--no-append]

One stable server (``modelship serve``, the digits CNN int8) and one candidate (the same model as float32: a
"good new revision") run on loopback; a closed-loop load generator (bench/serve.py's, a separate process, 8 and
1 keep-alive connections, small v2 JSON requests) drives the stable one. Rounds alternate between mirroring off
(mirror file at 0%) and on (20%): the same process, the mirror file rewritten between rounds (the server reads
it again every second, as it does a ConfigMap). The stable server is pinned to CPU 0 and the load generator and
the candidate to CPU 1, so the figures are the cost of mirroring in the stable server's own process (in a
cluster the candidate's CPU is its own pods'). Reported: median throughput and p99 per setting and their
ratio; the stable server's CPU time per request answered (from /proc) and the capacity it leaves (CPU per
request without mirroring over with it: what a CPU-bound server's throughput scales with, unlike the measured
throughput, which on 2 shared cores also moves with the load generator's own share of CPU 1, where the
candidate's work for the mirrored requests lands); and the mirror's own counters (compared, dropped,
agreement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import append_section, cpu_model  # noqa: E402
from bench.serve import (  # noqa: E402
    build_models,
    free_port,
    input_name,
    process_cpu,
    requests_for,
    run_loadgen,
    scrape,
    start_ours,
    stop,
    wait_ready,
)

NAME = "digits"


def write_mirror(path: Path, url: str, percent: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "percent": percent, "candidate": "candidate", "comparison": "top1"}))
    tmp.replace(path)


def pin(pid: int, cpus: set[int]) -> None:
    try:
        for task in os.listdir(f"/proc/{pid}/task"):  # every thread, the ones started later inherit it
            os.sched_setaffinity(int(task), cpus)
    except OSError:
        pass


def mirror_counters(metrics_port: int) -> dict[str, float]:
    m = scrape(metrics_port)
    out = {}
    for key, value in m.items():
        if key.startswith("modelship_mirror_requests_total") or key.startswith("modelship_mirror_rows_total"):
            out[key.split("{", 1)[1].rstrip("}")] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--percent", type=int, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 1])
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        work = Path(tmp)
        models = build_models(work, quick=True)
        stable_model, x = models["digits CNN int8"]
        cand_model = work / "digits_float32.tflite"
        iname = input_name(stable_model)
        request = requests_for(NAME, iname, x, binary=False)
        mirror = work / "mirror.json"
        cport, cmport, sport, smport = free_port(), free_port(), free_port(), free_port()
        write_mirror(mirror, f"http://127.0.0.1:{cport}", 0)
        cand = start_ours(cand_model, NAME, cport, work / "cand.log", metrics_port=cmport)
        os.environ["MODELSHIP_MIRROR_CONFIG"] = str(mirror)
        os.environ["MODELSHIP_WORKERS"] = "1"
        stable = start_ours(stable_model, NAME, sport, work / "stable.log", metrics_port=smport)
        del os.environ["MODELSHIP_MIRROR_CONFIG"], os.environ["MODELSHIP_WORKERS"]
        try:
            wait_ready(cport, NAME, cand)
            wait_ready(sport, NAME, stable)
            if cpus >= 2:
                pin(stable.pid, {0})
                pin(cand.pid, {1})
                os.sched_setaffinity(0, {1})  # the load generator (spawned from here) inherits it
            results: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for c in args.concurrency:
                for _ in range(args.rounds):
                    for percent in (0, args.percent):
                        write_mirror(mirror, f"http://127.0.0.1:{cport}", percent)
                        time.sleep(1.5)  # the server reads the file every second
                        cpu0 = process_cpu(stable.pid)
                        r = run_loadgen(sport, request, c, args.warmup, args.duration)
                        answered = r["ok"] + r["bad"]
                        r["cpu_us_per_request"] = (process_cpu(stable.pid) - cpu0) / max(1, answered) * 1e6
                        results.setdefault((c, percent), []).append(r)
                        print(f"c={c} mirror={percent}%: {r['throughput']:.0f} req/s p99 {r['p99_ms']:.2f} ms "
                              f"stable CPU {r['cpu_us_per_request']:.0f} us/request "
                              f"(bad {r['bad']}, errors {r['errors']})", flush=True)  # fmt: skip
            counters = mirror_counters(smport)
        finally:
            stop(stable)
            stop(cand)
    load_after = os.getloadavg()[0]
    text = render(results, counters, args, cpus, time.monotonic() - started, load_before, load_after)
    print(text)
    if not args.no_append:
        append_section(text)
    return 0


def render(
    results: dict[tuple[int, int], list[dict[str, Any]]],
    counters: dict[str, float],
    args: argparse.Namespace,
    cpus: int,
    seconds: float,
    load_before: float,
    load_after: float,
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Mirroring: stable server with {args.percent}% mirrored vs none (bench/mirror.py) — {when}",
        "",
        f"Machine: {cpus} CPUs ({cpu_model()}); run took {seconds:.0f} s; 1-minute load average {load_before:.1f} "
        f"at the start, {load_after:.1f} at the end (other engineers' jobs share these cores). Stable: digits CNN "
        "int8, 1 worker, pinned to CPU 0; candidate (same model, float32) and load generator on CPU 1. "
        f"{args.rounds} interleaved rounds of {args.duration:g} s per setting; medians.",
        "",
        "| connections | mirror | throughput (req/s) | p99 (ms) | throughput vs none | p99 vs none "
        "| stable CPU per request (us) | capacity vs none | bad / errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for c in args.concurrency:
        base = results[(c, 0)]
        base_tp = statistics.median(r["throughput"] for r in base)
        base_p99 = statistics.median(r["p99_ms"] for r in base)
        base_cpu = statistics.median(r["cpu_us_per_request"] for r in base)
        for percent in (0, args.percent):
            rs = results[(c, percent)]
            tp = statistics.median(r["throughput"] for r in rs)
            p99 = statistics.median(r["p99_ms"] for r in rs)
            cpu = statistics.median(r["cpu_us_per_request"] for r in rs)
            bad = sum(r["bad"] for r in rs), sum(r["errors"] for r in rs)
            lines.append(f"| {c} | {percent}% | {tp:.0f} | {p99:.2f} | {tp / base_tp:.3f}x | {p99 / base_p99:.2f}x "
                         f"| {cpu:.0f} | {base_cpu / cpu:.3f}x | {bad[0]} / {bad[1]} |")  # fmt: skip
            if percent:
                loss = 100 * (1 - base_cpu / cpu)
                met = "met" if loss <= 10 else "NOT met"
                verdicts.append(f"- {c} connection(s): {percent}% mirrored costs the stable server "
                                f"{cpu - base_cpu:.0f} us of CPU per request: {loss:.1f}% of its capacity "
                                f"(target <= 10%: {met}); "
                                f"measured throughput {100 * (1 - tp / base_tp):.1f}% lower")  # fmt: skip
    lines += ["", *verdicts, "", "Mirror counters of the stable server at the end: "
              + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(counters.items()))]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
