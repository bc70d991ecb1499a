"""What the optimizer leaves behind: the shipped artifact (model.tflite or saved_model/, none when the gate
blocks), the summary with its gate message, and report.json."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import fetch as fetching
from ..api.optimization import ExportFormat, Optimization, Strategy
from ..api.report import GateDecision, Measurement, Report, ShipDecision, Summary
from . import gate as gatemod
from . import tfenv
from .errors import OptimizeError, first_line
from .measure import path_sizes
from .modelio import LoadedModel
from .variants import Variant

REPORT_FILE = "report.json"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_DIR = "saved_model"


def clear(out: Path) -> None:
    """Create the output directory and remove what an earlier run left there."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / TFLITE_FILE, out / SAVED_MODEL_DIR, out / REPORT_FILE):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def write_outputs(
    opt: Optimization,
    out: Path,
    loaded: LoadedModel,
    fetched: fetching.Fetched,
    decision: gatemod.Decision,
    shipped: Variant | None,
    judged: Variant | None,
    baseline: Measurement,
) -> Summary:
    """Write the shipped artifact (none when blocked) and return the summary."""
    clear(out)
    artifact = artifact_digest = None
    original_bytes, original_gzip = baseline.raw_bytes, baseline.gzip_bytes
    shown = shipped or judged  # what the numbers describe: the shipped result, or the rejected one
    m = shown.report.measurement if shown is not None else None
    optimized_bytes = m.raw_bytes if m is not None else None
    optimized_gzip = m.gzip_bytes if m is not None else None
    if shipped is not None:
        if opt.export.format == ExportFormat.TFLITE:
            path = out / TFLITE_FILE
            path.write_bytes(shipped.tflite)
        else:
            path = out / SAVED_MODEL_DIR
            export_saved_model(shipped.keras, path, fetched.path)
            optimized_bytes, optimized_gzip = path_sizes(path)
            original_bytes, original_gzip = baseline_saved_model_sizes(loaded, fetched.path)
        artifact = path.name
        artifact_digest = fetching.sha256_path(path)
    ratio = round(original_gzip / optimized_gzip, 3) if original_gzip and optimized_gzip else None
    return Summary(
        ok=True,
        source_digest=fetched.digest,
        source_bytes=fetched.size,
        artifact=artifact,
        artifact_digest=artifact_digest,
        metric_name=gatemod.metric_name(opt.metric) if baseline.metric is not None else None,
        baseline=baseline.metric,
        value=m.metric if m is not None else None,
        drop=m.drop if m is not None else None,
        gate=decision.gate,
        decision=decision.ship,
        candidate=shown.name if shown is not None else None,
        original_bytes=original_bytes,
        optimized_bytes=optimized_bytes,
        original_gzip_bytes=original_gzip,
        optimized_gzip_bytes=optimized_gzip,
        compression_ratio=ratio,
        latency_p50_ms=m.latency_p50_ms if m is not None else None,
        baseline_latency_p50_ms=baseline.latency_p50_ms,
        message=message(opt, baseline.metric, decision, shipped, judged, ratio)[:1024],
    )


def message(
    opt: Optimization,
    baseline: float | None,
    decision: gatemod.Decision,
    shipped: Variant | None,
    judged: Variant | None,
    ratio: float | None,
) -> str:
    """The gate's message with its numbers: what was judged, against what, and what ships."""
    size = ""
    if ratio:
        size = f", {ratio:.1f}x smaller (gzip)" if ratio >= 1 else f", {1 / ratio:.1f}x larger (gzip)"
    what = shipped.name if shipped is not None else "nothing"
    if decision.gate == GateDecision.SKIPPED or baseline is None:
        if not opt.enabled:
            return f"optimization disabled: the model ships as {opt.export.format.value} (float32){size}"
        return f"no evaluation data: {what} ships ungated{size}"
    name = gatemod.metric_name(opt.metric)
    verdict = ""
    jm = judged.report.measurement if judged is not None else None
    if jm is not None and jm.metric is not None and jm.drop is not None:
        verdict = gatemod.judgement(name, baseline, jm.metric, jm.drop, opt.gate)
    if decision.gate == GateDecision.PASSED:
        return f"gate passed: {verdict}; {what} ships{size}"
    rejected = judged.name if judged is not None else "the result"
    if opt.strategy == Strategy.STEPS:
        lead = f"gate failed for {rejected}: {verdict}"
    else:
        lead = f"no auto candidate passed the gate; the {opt.objective.value.lower()} pick was {rejected}: {verdict}"
    if decision.ship == ShipDecision.BASELINE:
        return f"{lead}; onFail DeployBaseline: the unoptimized model ships{size}"
    if decision.ship == ShipDecision.BEST_PASSING and shipped is not None:
        sm = shipped.report.measurement
        return (
            f"{lead}; onFail DeployBestPassing: {what} ships ({name} {gatemod.fmt(sm.metric)}, "
            f"drop {gatemod.fmt(sm.drop)}){size}"
        )
    return f"{lead}; onFail {opt.gate.on_fail.value}: blocked, nothing new ships"


def export_saved_model(keras_model: Any | None, path: Path, source: Path) -> None:
    """Export a tf-keras model as a SavedModel (a plain SavedModel input is copied as it is)."""
    if keras_model is None:
        if source.is_dir():
            shutil.copytree(source, path)
            return
        raise OptimizeError("nothing to export as a SavedModel (the result is a TFLite model)")
    try:
        with tfenv.quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()):
            keras_model.export(str(path))  # prints its signature to stdout
    except Exception as exc:
        raise OptimizeError(f"SavedModel export failed: {first_line(exc)}") from None


def baseline_saved_model_sizes(loaded: LoadedModel, source: Path) -> tuple[int | None, int | None]:
    """(raw, gzip) bytes of the original exported as a SavedModel, to compare like with like."""
    if loaded.keras is None:
        return path_sizes(source) if source.is_dir() else (None, None)
    with tempfile.TemporaryDirectory(prefix="modelship-baseline-") as tmp:
        target = Path(tmp) / SAVED_MODEL_DIR
        export_saved_model(loaded.keras, target, source)
        return path_sizes(target)


def write_report(out: Path, report: Report) -> None:
    (out / REPORT_FILE).write_text(report.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")
