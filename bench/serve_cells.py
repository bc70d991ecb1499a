"""Issue 16's two bench/serve.py cells for several server trees, alternated, in rounds: MobileNetV2 int8 binary at
64 clients (the server's own invoke share) and JSON at 1 client (p50 / a bare invoke timed beside the cell).

    PYTHONPATH=operator python bench/serve_cells.py --tree main=/tmp/main/operator --tree new=operator --rounds 3
        [--lib main=/tmp/main-lib/libmsjson.so --lib new=/tmp/new-lib/libmsjson.so]

Each cell is bench/serve.py's, built from its own functions (model, requests, load generator, metrics scrape,
bare invoke, efficiency), with a fresh server per cell; the order of the trees flips every round (``--lib
LABEL=PATH``: the libmsjson that tree's servers load, else the venv's). One JSON line per cell is printed (and
appended to ``--out``), then the median and range per tree and cell. Figures are not appended to bench/RESULTS.md:
a run on a shared machine is one sample; write them up with the load it ran at.
Run it under the bench lock.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import serve as S  # noqa: E402

CELLS = {"binary64": ("binary", 64), "json1": ("json", 1)}


def cell(path: Path, tree: Path, fmt: str, clients: int, request: bytes, invoke_cpu: dict[int, float], args: Any,
         log: Path, json_lib: str | None = None) -> dict[str, Any]:  # fmt: skip
    port, mport = S.free_port(), S.free_port()
    proc = S.start_ours(path, "m", port, log, tree, mport, json_lib)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    try:
        S.wait_ready(port, "m", proc)
        pre = S.bare_invoke_ms(path, x, 1, 200) if clients == 1 else None
        m0, cpu0 = S.scrape(mport), S.process_cpu(proc.pid)
        r = S.run_loadgen(port, request, clients, args.warmup, args.duration)
        cpu1, m1 = S.process_cpu(proc.pid), S.scrape(mport)
        if pre is not None:
            r["bare_ms"] = (pre + S.bare_invoke_ms(path, x, 1, 200)) / 2
            r["ratio"] = r["p50_ms"] / r["bare_ms"]
        r.update(S.efficiency(m0, m1, "m", cpu1 - cpu0, invoke_cpu))
        return {k: v for k, v in r.items() if not isinstance(v, list | dict)}
    finally:
        S.stop(proc)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per tree and cell, in the order first seen: the median and range of the cell's figure (the
    in-server invoke share at 64 binary clients, p50 / bare invoke at 1 JSON client) and the load it ran at."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        by[(r["tree"], r["cell"])].append(r)
    lines: list[str] = []
    for (label, name), rs in by.items():
        key = "ratio" if name == "json1" else "cpu_share"
        vals = [r[key] for r in rs if key in r]
        loads = [r["load"] for r in rs]
        if vals:
            spread = f"{min(vals):.4f}-{max(vals):.4f}"
            lines.append(
                f"{label} {name}: {key} median {statistics.median(vals):.4f}, {spread} over {len(vals)} runs "
                f"(load {min(loads):.1f}-{max(loads):.1f})"
            )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, help="LABEL=an operator/ directory (repeat)")
    ap.add_argument("--lib", action="append", default=[], help="LABEL=a libmsjson.so for that tree (repeat)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    ap.add_argument("--cells", default="binary64,json1", help=f"some of {','.join(CELLS)}")
    ap.add_argument("--models", help="a directory to keep the built models in (else a temporary one)")
    ap.add_argument("--out", help="append each cell's JSON line to this file")
    args = ap.parse_args()
    work = Path(args.models or tempfile.mkdtemp(prefix="modelship-cells-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "mobilenetv2_int8.tflite"
    if not path.exists():
        S.build_models(work, False)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    iname = S.input_name(path)
    invoke_cpu = {b: S.bare_invoke_ms(path, x, 1, max(20, 200 // b), b, time.thread_time) for b in (1, 2, 4, 8)}
    requests = {fmt: S.requests_for("m", iname, x, fmt == "binary") for fmt in ("binary", "json")}
    trees = [(label, Path(tree)) for label, _, tree in (t.partition("=") for t in args.tree)]
    libs = dict(t.partition("=")[::2] for t in args.lib)
    rows: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for label, tree in trees if rnd % 2 == 0 else trees[::-1]:
            for name in args.cells.split(","):
                fmt, clients = CELLS[name]
                r = cell(
                    path, tree, fmt, clients, requests[fmt], invoke_cpu, args, work / f"{label}.log", libs.get(label)
                )
                r.update(tree=label, cell=name, round=rnd, load=os.getloadavg()[0], at=time.strftime("%H:%M:%S"))
                rows.append(r)
                print(json.dumps(r), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    for line in summary(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
