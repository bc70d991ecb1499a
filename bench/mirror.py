"""Mirroring benchmark: the stable server's throughput and p99 with 20% of its requests mirrored to a candidate,
against no mirroring, in the same run.

    PYTHONPATH=operator python bench/mirror.py [--duration 3] [--rounds 8] [--percent 20] [--no-append]

One stable server (``modelship serve``, the digits CNN int8) and one candidate (the same model as float32: a
"good new revision") run on loopback; a closed-loop load generator (bench/serve.py's, a separate process, 8 and
1 keep-alive connections, small v2 JSON requests) drives the stable one. Each round runs the same load twice,
back to back, with mirroring off (mirror file at 0%) and on (20%), in alternating order (off/on, then on/off:
a load that drifts during the run weighs on both settings alike); the same process, the mirror file rewritten
between runs (the server reads it again every second, as it does a ConfigMap). The stable server is pinned to
CPU 0 and the load generator and the candidate to CPU 1, so the figures are the cost of mirroring in the stable
server's own process (in a cluster the candidate's CPU is its own pods').

On shared cores one run's throughput swings by a quarter from the next, so no single run is a figure: reported
are, per setting, the median over the rounds with their range (min-max), and the cost of mirroring as the median
of each round's own on/off ratio (its two runs seconds apart see about the same machine) with the rounds' range
and how many of them are within the target (<= 10% throughput loss); beside it the stable server's CPU time per
request answered (from /proc), the steadier figure; and the mirror's own counters (compared, dropped,
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
from dataclasses import dataclass
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
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=8)
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
            rounds: dict[int, list[Round]] = {}
            for c in args.concurrency:
                for i in range(args.rounds):
                    pair: dict[int, dict[str, Any]] = {}
                    for percent in round_order(i, args.percent):
                        write_mirror(mirror, f"http://127.0.0.1:{cport}", percent)
                        time.sleep(1.5)  # the server reads the file every second
                        cpu0 = process_cpu(stable.pid)
                        r = run_loadgen(sport, request, c, args.warmup, args.duration)
                        answered = r["ok"] + r["bad"]
                        r["cpu_us_per_request"] = (process_cpu(stable.pid) - cpu0) / max(1, answered) * 1e6
                        pair[percent] = r
                        print(f"c={c} round {i + 1} mirror={percent}%: {r['throughput']:.0f} req/s "
                              f"p99 {r['p99_ms']:.2f} ms stable CPU {r['cpu_us_per_request']:.0f} us/request "
                              f"(bad {r['bad']}, errors {r['errors']})", flush=True)  # fmt: skip
                    rounds.setdefault(c, []).append(Round(off=pair[0], on=pair[args.percent]))
            counters = mirror_counters(smport)
        finally:
            stop(stable)
            stop(cand)
    load_after = os.getloadavg()[0]
    text = render(rounds, counters, args, cpus, time.monotonic() - started, load_before, load_after)
    print(text)
    if not args.no_append:
        append_section(text)
    return 0


def round_order(i: int, percent: int) -> tuple[int, int]:
    """The settings of round ``i``: off then on, then on then off the next round (ABBA), so a load that drifts
    during the run weighs on both alike instead of always on the second."""
    return (0, percent) if i % 2 == 0 else (percent, 0)


@dataclass(frozen=True)
class Round:
    """One round: the same load run with mirroring off and on, back to back."""

    off: dict[str, Any]
    on: dict[str, Any]

    def ratio(self, key: str) -> float:
        return float(self.on[key]) / float(self.off[key]) if self.off[key] else float("nan")


def spread(values: list[float], fmt: str = ".0f", unit: str = "") -> str:
    """``median (min-max)`` of the rounds' values."""
    return f"{statistics.median(values):{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}})"


def change(ratio: float) -> str:
    """A ratio of on to off as words: ``5.1% lower``, ``26.1% higher``, ``unchanged``."""
    pct = 100 * (ratio - 1)
    if round(pct, 1) == 0:
        return "unchanged"
    return f"{abs(pct):.1f}% {'higher' if pct > 0 else 'lower'}"


def verdict(c: int, percent: int, rs: list[Round], target_loss: float = 10.0) -> str:
    """The throughput cost of mirroring from the paired rounds: its median, the rounds' range, the target."""
    ratios = [r.ratio("throughput") for r in rs]
    med = statistics.median(ratios)
    loss = 100 * (1 - med)
    met = "met" if loss <= target_loss else "NOT met"
    within = sum(1 for x in ratios if 100 * (1 - x) <= target_loss)
    cpu_off = statistics.median(r.off["cpu_us_per_request"] for r in rs)
    cpu_on = statistics.median(r.on["cpu_us_per_request"] for r in rs)
    return (
        f"- {c} connection(s): with {percent}% mirrored the stable server's throughput is {change(med)} than "
        f"without (median of {len(rs)} paired rounds; the rounds range from {change(min(ratios))} to "
        f"{change(max(ratios))}); target <= {target_loss:g}% loss: {met} ({within} of {len(rs)} rounds within "
        f"it). Its CPU time per request: {cpu_on:.0f} us against {cpu_off:.0f} us ({change(cpu_on / cpu_off)})."
    )


def render(
    rounds: dict[int, list[Round]],
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
        f"{args.rounds} rounds per connection count, each running mirroring off and on back to back for "
        f"{args.duration:g} s each (off first in odd rounds, on first in even ones); each figure is the median "
        "over the rounds with their range (min-max); a ratio is the median of the rounds' own on/off ratios.",
        "",
        "| connections | mirror | throughput (req/s) | p99 (ms) | throughput vs none | p99 vs none "
        "| stable CPU per request (us) | bad / errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for c, rs in rounds.items():
        for percent, side in ((0, "off"), (args.percent, "on")):
            runs = [getattr(r, side) for r in rs]
            tp = spread([r["throughput"] for r in runs])
            p99 = spread([r["p99_ms"] for r in runs], ".2f")
            cpu = spread([r["cpu_us_per_request"] for r in runs])
            bad = sum(r["bad"] for r in runs), sum(r["errors"] for r in runs)
            if percent:
                tp_ratio = spread([r.ratio("throughput") for r in rs], ".3f", "x")
                p99_ratio = spread([r.ratio("p99_ms") for r in rs], ".2f", "x")
            else:
                tp_ratio, p99_ratio = "1.000x", "1.00x"
            lines.append(f"| {c} | {percent}% | {tp} | {p99} | {tp_ratio} | {p99_ratio} | {cpu} "
                         f"| {bad[0]} / {bad[1]} |")  # fmt: skip
        verdicts.append(verdict(c, args.percent, rs))
    lines += ["", *verdicts, "", "Mirror counters of the stable server at the end: "
              + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(counters.items()))]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
