"""The optimizer end to end: fetch and verify, load, measure the baseline, run the steps (or the auto search),
gate, write the artifact and report.json.

The parts, in the order they run: :mod:`.prepare` (data, model, fine-tuning setup), :mod:`.baseline`,
:mod:`.steps` or :mod:`.auto` (the variants, measured by :mod:`.evaluate`), :mod:`.gate` (the decision),
:mod:`.outputs` (artifact, summary, report).

Output directory::

    OUT/model.tflite     the shipped artifact (export tflite), absent when the gate blocks
    OUT/saved_model/     the shipped artifact (export savedmodel), absent when the gate blocks
    OUT/report.json      api.report.Report; its summary is the termination message
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from .. import fetch as fetching
from ..api.optimization import ExportFormat, Optimization, StepType, Strategy
from ..api.redact import redact
from ..api.report import GateDecision, Measurement, Report, ShipDecision, StepReport
from ..api.source import ModelFormat
from . import gate as gatemod
from . import modelio, outputs, tfenv
from .auto import run_auto
from .baseline import Baseline, measure_baseline
from .errors import OptimizeError
from .measure import path_sizes
from .prepare import Context, calibration_warnings, prepare
from .progress import Progress
from .request import Request
from .steps import StepRunner, run_steps
from .variants import Search, Variant

__all__ = ["Request", "check_plan", "optimize"]


def optimize(request: Request, progress: Progress | None = None) -> Report:
    """Run the optimizer; write the artifact and report.json to ``request.out_dir``; return the report.

    Raises OptimizeError with a readable message (its ``context`` holds the source digest when known).
    """
    context: dict[str, Any] = {}
    try:
        if request.work_dir is not None:
            return _run(request, progress or Progress(enabled=False), request.work_dir, context)
        with tempfile.TemporaryDirectory(prefix="modelship-optimize-") as tmp:
            return _run(request, progress or Progress(enabled=False), Path(tmp), context)
    except fetching.FetchError as exc:
        err = OptimizeError(str(exc), temporary=exc.temporary)
        err.context.update(context)
        raise err from None
    except OptimizeError as exc:
        exc.context.update(context)
        raise


def check_plan(opt: Optimization, fmt: ModelFormat) -> None:
    """Checks that need no TensorFlow: what the spec allows but the optimizer cannot do."""
    if opt.enabled and fmt == ModelFormat.TFLITE:
        raise OptimizeError("a tflite model is served as is: set optimization.enabled to false")
    if fmt == ModelFormat.TFLITE and opt.export.format == ExportFormat.SAVEDMODEL:
        raise OptimizeError("a tflite model cannot be exported as a SavedModel (export.format tflite)")
    if not opt.enabled or opt.strategy == Strategy.AUTO:
        return
    for i, step in enumerate(opt.steps):
        if step.type == StepType.QUANTIZE and i != len(opt.steps) - 1:
            raise OptimizeError(f"steps[{i}]: quantize must be the last step (it produces the final model)")
        if step.type == StepType.QUANTIZE and opt.export.format == ExportFormat.SAVEDMODEL:
            raise OptimizeError(
                f"steps[{i}]: quantization produces a TFLite model; use export.format tflite, or drop the quantize step"
            )


def _run(request: Request, progress: Progress, work: Path, context: dict[str, Any]) -> Report:
    started = time.monotonic()
    opt = request.optimization
    progress.log(f"fetching {redact(request.model)}")
    fetched = request.fetch("model", request.model, work / "model", digest=request.digest)
    context.update(source_digest=fetched.digest, source_bytes=fetched.size)
    progress.log(f"model {fetched.path} ({fetched.size} bytes, {fetched.digest})")
    info = modelio.inspect_model(fetched.path, request.model_format or modelio.declared_format(fetched.format_hint))
    check_plan(opt, info.format)
    ctx = prepare(request, info, work, progress)
    baseline = measure_baseline(ctx)
    search, decision = _search(ctx, baseline)
    shipped = _shipped(decision, search, baseline, ctx)
    judged = search.variants[decision.judged] if decision.judged is not None else None
    summary = outputs.write_outputs(
        opt, request.out_dir, ctx.loaded, fetched, decision, shipped, judged, baseline.measurement
    )
    report = Report(
        summary=summary,
        revision=request.revision,
        model_format=info.format.value,
        baseline=baseline.measurement,
        steps=_mark_shipped(search.reports, shipped),
        result=shipped.report.measurement if shipped is not None else Measurement(),
        calibration_warnings=calibration_warnings(ctx),
        notes=_unique(ctx.notes + search.notes + ctx.data.notes),
        environment=tfenv.versions(),
        strategy=opt.strategy.value if opt.enabled else "Disabled",
        objective=opt.objective.value if opt.enabled and opt.strategy == Strategy.AUTO else None,
        gate={"maxDrop": opt.gate.max_drop, "dropType": opt.gate.drop_type.value, "onFail": opt.gate.on_fail.value},
        baseline_tflite_metric=baseline.tflite_measurement.metric,
        source_gzip_bytes=path_sizes(fetched.path)[1],
        export_format=opt.export.format.value,
        inputs=ctx.loaded.signature.input_names,
        outputs=ctx.loaded.signature.output_names,
        metric_output=ctx.output if baseline.metric is not None else None,
        seconds=round(time.monotonic() - started, 3),
    )
    outputs.write_report(request.out_dir, report)
    progress.log(summary.message or "done")
    return report


def _search(ctx: Context, baseline: Baseline) -> tuple[Search, gatemod.Decision]:
    """Run the steps or the auto search, and let the gate decide what ships."""
    opt = ctx.opt
    if not opt.enabled:
        return Search([], [], []), gatemod.Decision(GateDecision.SKIPPED, ShipDecision.BASELINE, None, None)
    runner = StepRunner(t=ctx.require_tf(), ctx=ctx, evaluator=baseline.evaluator)
    if opt.strategy == Strategy.STEPS:
        search = run_steps(runner)
        return search, gatemod.decide_steps([v.outcome() for v in search.variants], opt.gate.on_fail)
    search = run_auto(runner)
    if not search.variants:
        raise OptimizeError("strategy Auto: no candidate could run (see the report's steps)")
    return search, gatemod.decide_auto([v.outcome() for v in search.variants], opt.objective, opt.gate.on_fail)


def _shipped(decision: gatemod.Decision, search: Search, baseline: Baseline, ctx: Context) -> Variant | None:
    """What ships: the chosen variant, the float32 baseline (DeployBaseline, or disabled), or nothing."""
    if decision.chosen is not None:  # Optimized or BestPassing
        return search.variants[decision.chosen]
    if decision.ship == ShipDecision.BASELINE:
        report = StepReport(name="baseline", measurement=baseline.tflite_measurement)
        return Variant(report=report, tflite=baseline.tflite, keras=ctx.loaded.keras, name="baseline")
    return None


def _mark_shipped(reports: list[StepReport], shipped: Variant | None) -> list[StepReport]:
    return [r.model_copy(update={"shipped": True}) if shipped and r is shipped.report else r for r in reports]


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
