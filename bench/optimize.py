"""Optimizer benchmark: our best passing candidate vs the plain TFLiteConverter vs the float32 model.

    PYTHONPATH=operator python bench/optimize.py [--no-append] [--skip-mobilenet]

For the digits MLP and CNN (sklearn's bundled digits, trained here, seed 0) it runs ``strategy: Auto`` (objective
Size, gate: accuracy drop <= 1 point) and compares the shipped candidate with what a user would do instead,
``TFLiteConverter`` with ``optimizations=[Optimize.DEFAULT]`` (dynamic-range), and with the float32 conversion:
gzip -9 size, accuracy on the held-out 20%, and single-sample p50 latency on the LiteRT interpreter (1 thread).
MobileNetV2 (``weights=None``: random weights, so size and latency only) is compared as float32 / plain / our int8
(calibrated on crops of the two photos bundled with scikit-learn). Latencies are the median of interleaved rounds.

Targets: at least 2x smaller (gzip) than the plain converter at equal accuracy (within 1 point) on the digits
models; int8 MobileNetV2 at least 1.8x faster than float32 on one thread.

Results are printed and appended as a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import append_section, cpu_model  # noqa: E402

sys.path.insert(0, str(REPO / "operator"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from modelship.api.optimization import Gate, Objective, QuantizeMode, Strategy  # noqa: E402
from modelship.optimize import examples, pipeline, tfenv  # noqa: E402
from modelship.optimize.conversion import convert, representative  # noqa: E402
from modelship.optimize.measure import Runner, gzip_size, quantize_input  # noqa: E402


@dataclass
class Row:
    model: str
    variant: str
    raw: int
    gz: int
    accuracy: float | None
    p50_ms: float
    p50_2t_ms: float


def _interleaved(
    blobs: dict[str, bytes], sample: np.ndarray[Any, Any], threads: int, rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Single-sample latencies (ms) with the variants interleaved finely: every round runs a few invocations of
    each variant in turn, so load from other jobs on a shared machine falls on all variants alike."""
    runners = {k: Runner(b, batch_size=1, threads=threads) for k, b in blobs.items()}
    # one input, one output: the first (only) entry of each
    feeds = {k: (next(iter(r.inputs.values())), next(iter(r.outputs.values()))) for k, r in runners.items()}
    inputs = {k: quantize_input(sample[:1], feeds[k][0]) for k in runners}
    times: dict[str, list[float]] = {k: [] for k in blobs}
    for _ in range(3):  # warm-up
        for k, r in runners.items():
            r.interpreter.set_tensor(feeds[k][0]["index"], inputs[k])
            r.interpreter.invoke()
    for _ in range(rounds):
        for k, r in runners.items():
            it, idx, out, x = r.interpreter, feeds[k][0]["index"], feeds[k][1]["index"], inputs[k]
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                it.set_tensor(idx, x)
                it.invoke()
                it.get_tensor(out)
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
    return times


def latencies(blobs: dict[str, bytes], sample: np.ndarray[Any, Any], rounds: int) -> dict[str, tuple[float, float]]:
    """(p50 on 1 thread, p50 on 2 threads) per variant, from finely interleaved invocations."""
    one = _interleaved(blobs, sample, threads=1, rounds=rounds, per_round=5)
    two = _interleaved(blobs, sample, threads=2, rounds=rounds, per_round=5)
    return {k: (float(np.percentile(one[k], 50)), float(np.percentile(two[k], 50))) for k in blobs}


def accuracy(blob: bytes, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
    out = Runner(blob, batch_size=64)(x)
    return float(np.mean(np.argmax(out, axis=1) == y))


def digits_rows(kind: str, work: Path) -> tuple[list[Row], dict[str, Any]]:
    t = tfenv.load()
    ex = examples.digits(work, kind)
    model = t.keras.models.load_model(str(ex.model), compile=False)
    ev = np.load(ex.files["eval"])
    cal = np.load(ex.files["calibration"])["x"]
    opt = ex.optimization.model_copy(
        update={"strategy": Strategy.AUTO, "objective": Objective.SIZE, "steps": [], "gate": Gate(max_drop=0.01)}
    )
    started = time.monotonic()
    report = pipeline.optimize(
        pipeline.Request(
            model=str(ex.model),
            optimization=opt,
            out_dir=work / f"out-{kind}",
            pvc_root=str(ex.root),
            speed_seconds=0.3,
        )
    )
    auto_seconds = time.monotonic() - started
    ours = (work / f"out-{kind}" / "model.tflite").read_bytes()
    blobs = {
        "float32": convert(t, keras_model=model),
        "plain Optimize.DEFAULT": convert(t, keras_model=model, mode=QuantizeMode.DYNAMIC),
        f"ours: {report.summary.candidate}": ours,
    }
    speeds = latencies(blobs, ev["x"][:1].astype(np.float32), rounds=400)
    rows = [
        Row(ex.name, name, len(b), gzip_size(b), accuracy(b, ev["x"], ev["y"]), *speeds[name])
        for name, b in blobs.items()
    ]
    info = {
        "auto_seconds": auto_seconds,
        "candidates": [(s.name, s.measurement.gzip_bytes, s.measurement.metric, s.passed) for s in report.steps],
        "keras_accuracy": float(np.mean(np.argmax(model.predict(ev["x"], verbose=0), axis=1) == ev["y"])),
        "calibration": len(cal),
    }
    return rows, info


def mobilenet_rows() -> list[Row]:
    t = tfenv.load()
    t.keras.utils.set_random_seed(0)
    model = t.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    crops = calibration_crops(32)
    calibration = representative({"image": crops}, 32)
    blobs = {
        "float32": convert(t, keras_model=model),
        "plain Optimize.DEFAULT": convert(t, keras_model=model, mode=QuantizeMode.DYNAMIC),
        "ours: int8": convert(t, keras_model=model, mode=QuantizeMode.INT8, calibration=calibration),
    }
    speeds = latencies(blobs, crops[:1], rounds=60)
    return [Row("MobileNetV2", name, len(b), gzip_size(b), None, *speeds[name]) for name, b in blobs.items()]


def calibration_crops(n: int) -> np.ndarray[Any, Any]:
    """224x224 crops of sklearn's two bundled photos, scaled to [-1, 1]; uniform noise if Pillow is missing."""
    rng = np.random.default_rng(0)
    try:
        from sklearn.datasets import load_sample_images

        images = [np.asarray(img, dtype=np.float32) for img in load_sample_images().images]
    except ImportError:
        return rng.uniform(-1, 1, size=(n, 224, 224, 3)).astype(np.float32)
    out = []
    for i in range(n):
        img = images[i % len(images)]
        y0 = int(rng.integers(0, img.shape[0] - 224))
        x0 = int(rng.integers(0, img.shape[1] - 224))
        out.append(img[y0 : y0 + 224, x0 : x0 + 224] / 127.5 - 1.0)
    return np.stack(out).astype(np.float32)


def render(
    rows: list[Row], infos: dict[str, dict[str, Any]], started: dt.datetime, seconds: float, load: list[float]
) -> str:
    env = tfenv.versions()
    lines = [
        f"## Optimizer: best passing candidate vs plain TFLiteConverter vs float32 ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`bench/optimize.py`; machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"TF {env.get('tensorflow-cpu') or env.get('tensorflow')}, tf-keras {env.get('tf-keras')}, "
        f"TFMOT {env.get('tensorflow-model-optimization')}, LiteRT {env.get('ai-edge-litert')}; "
        f"run took {seconds:.0f} s; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        "(other jobs share these cores). Sizes are gzip -9 of the .tflite. Latency is the single-sample p50 on the "
        "LiteRT interpreter (set input, invoke, read output), the variants' invocations interleaved in rounds of 5 "
        "so background load falls on all alike. Digits accuracy is on the held-out 20% (360 images); MobileNetV2 "
        "has random weights (size and latency only).",
        "",
        "| model | variant | raw bytes | gzip bytes | gzip vs float32 | gzip vs plain | accuracy | drop (pts) "
        "| p50 ms 1 thr | speedup vs float32 | p50 ms 2 thr |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for model in dict.fromkeys(r.model for r in rows):
        group = [r for r in rows if r.model == model]
        f32, plain, ours = group
        for r in group:
            acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
            drop = "-" if r.accuracy is None or f32.accuracy is None else f"{100 * (f32.accuracy - r.accuracy):+.2f}"
            lines.append(
                f"| {model} | {r.variant} | {r.raw:,} | {r.gz:,} | {f32.gz / r.gz:.2f}x | {plain.gz / r.gz:.2f}x "
                f"| {acc} | {drop} | {r.p50_ms:.4f} | {f32.p50_ms / r.p50_ms:.2f}x | {r.p50_2t_ms:.4f} |"
            )
        if model == "MobileNetV2":
            ratio = f32.p50_ms / ours.p50_ms
            verdicts.append(
                f"- MobileNetV2 int8 vs float32 on 1 thread: {ratio:.2f}x faster "
                f"(target >= 1.8x: {'met' if ratio >= 1.8 else 'NOT met'})"
            )
        else:
            ratio = plain.gz / ours.gz
            assert ours.accuracy is not None and plain.accuracy is not None
            equal = abs(ours.accuracy - plain.accuracy) <= 0.01
            verdicts.append(
                f"- {model}: ours ({ours.variant.removeprefix('ours: ')}) is {ratio:.2f}x smaller than the plain "
                f"converter, accuracy {ours.accuracy:.4f} vs {plain.accuracy:.4f} "
                f"(target >= 2x at equal accuracy within 1 point: {'met' if ratio >= 2 and equal else 'NOT met'})"
            )
    lines += ["", *verdicts, ""]
    for model, info in infos.items():
        cands = ", ".join(
            f"{name} {gz:,} B {acc:.4f}{'' if ok else ' (fails gate)'}"
            for name, gz, acc, ok in info["candidates"]
            if gz is not None and acc is not None
        )
        lines.append(
            f"- {model} Auto search ({info['auto_seconds']:.0f} s; Keras baseline accuracy "
            f"{info['keras_accuracy']:.4f}): {cands}"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--skip-mobilenet", action="store_true", help="digits models only")
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    args = ap.parse_args()
    started = dt.datetime.now(dt.UTC)
    begin = time.monotonic()
    load = [os.getloadavg()[0]]
    rows: list[Row] = []
    infos: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="modelship-bench-") as tmp:
        for kind in ("mlp", "cnn"):
            got, info = digits_rows(kind, Path(tmp))
            rows += got
            infos[f"digits-{kind}"] = info
            print(f"digits-{kind} done", flush=True)
    if not args.skip_mobilenet:
        rows += mobilenet_rows()
        print("MobileNetV2 done", flush=True)
    load.append(os.getloadavg()[0])
    text = render(rows, infos, started, time.monotonic() - begin, load)
    print()
    print(text)
    if not args.no_append:
        append_section(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
