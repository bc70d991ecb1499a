"""The optimizer end to end: fetch and verify, load, measure the baseline, run the steps (or the auto search),
gate, write the artifact and report.json.

Output directory::

    OUT/model.tflite     the shipped artifact (export tflite), absent when the gate blocks
    OUT/saved_model/     the shipped artifact (export savedmodel), absent when the gate blocks
    OUT/report.json      api.report.Report; its summary is the termination message
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fetch as fetching
from ..api.optimization import (
    ExportFormat,
    FineTune,
    Optimization,
    OptimizationStep,
    QuantizeMode,
    QuantizeParams,
    StepType,
    Strategy,
)
from ..api.report import GateDecision, Measurement, Report, ShipDecision, StepReport, Summary
from ..api.source import ModelFormat
from . import data as datamod
from . import gate as gatemod
from . import modelio, tfenv
from .candidates import Candidate, auto_candidates
from .errors import OptimizeError, first_line
from .measure import Runner, WeightStats, gzip_size, keras_weight_stats, path_sizes, speed, variables_weight_stats
from .progress import Progress, Task
from .techniques import (
    TrainingSetup,
    choose_loss,
    cluster,
    convert,
    low_rank,
    prune,
    qat,
    representative,
)

REPORT_FILE = "report.json"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_DIR = "saved_model"
QAT_DEFAULT = FineTune(epochs=2, learning_rate=1e-4, batch_size=32)
PTQ_MODES = (QuantizeMode.DYNAMIC, QuantizeMode.FLOAT16, QuantizeMode.INT8, QuantizeMode.INT16X8)


@dataclass
class Request:
    """What to optimize, with what, and where the results go."""

    model: str
    """Model URI or local path."""
    optimization: Optimization
    out_dir: Path
    model_format: ModelFormat | None = None
    """None: inferred from the name, then the content."""
    digest: str | None = None
    """Pinned sha256:<hex>; a mismatch fails before anything else runs."""
    pvc_root: str = fetching.DEFAULT_PVC_ROOT
    ca_bundle: str | None = None
    endpoint: str | None = None
    work_dir: Path | None = None
    """Where remote models and data are downloaded (a temporary directory when None)."""
    seed: int = 0
    threads: int = 1
    """Interpreter threads for latency and throughput."""
    speed_seconds: float = 1.0
    """Time spent measuring latency per model variant."""
    revision: str | None = None


@dataclass
class State:
    """A model variant along a chain of steps."""

    keras: Any | None
    """The float tf-keras model (None once quantized, or for SavedModel-only inputs)."""
    tflite: bytes | None = None
    """The quantized flatbuffer (None while the model is float)."""
    stats_model: Any | None = None
    """The float model whose weights the statistics describe."""
    pruned: bool = False
    clustered: bool = False
    float_tflite: bytes | None = None
    """Cached float32 conversion of ``keras``."""


@dataclass
class Variant:
    """A measured result: a step of the chain or an auto candidate."""

    report: StepReport
    tflite: bytes
    keras: Any | None
    name: str
    """The chain that produced it (prune+int8) or the auto candidate's name."""


@dataclass
class Datasets:
    calibration: datamod.Dataset | None = None
    evaluation: datamod.Dataset | None = None
    fine_tune: datamod.Dataset | None = None
    notes: list[str] = field(default_factory=list)


def optimize(request: Request, progress: Progress | None = None) -> Report:
    """Run the optimizer; write the artifact and report.json to ``request.out_dir``; return the report.

    Raises OptimizeError with a readable message (its ``context`` holds the source digest when known).
    """
    run = _Run(request, progress or Progress(enabled=False))
    try:
        return run.execute()
    except fetching.FetchError as exc:
        err = OptimizeError(str(exc), temporary=exc.temporary)
        err.context.update(run.context)
        raise err from None
    except OptimizeError as exc:
        exc.context.update(run.context)
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


def describe_step(step: OptimizationStep) -> str:
    """``prune {"targetSparsity":0.8,...} fineTune {"epochs":4,...}``."""
    params = {
        StepType.PRUNE: step.prune,
        StepType.CLUSTER: step.cluster,
        StepType.LOW_RANK: step.low_rank,
        StepType.QUANTIZE: step.quantize,
    }[step.type]
    text = step.type.value
    if params is not None:
        text += " " + json.dumps(params.wire(), sort_keys=True, separators=(",", ":"))
    if step.fine_tune is not None:
        text += " fineTune " + json.dumps(step.fine_tune.wire(), sort_keys=True, separators=(",", ":"))
    return text


def _short(step: OptimizationStep) -> str:
    return step.quantize.mode.value if step.quantize is not None else step.type.value


def step_label(step: OptimizationStep) -> str:
    if step.type == StepType.QUANTIZE and step.quantize is not None:
        return f"quantize:{step.quantize.mode.value}"
    return step.type.value


class _Run:
    def __init__(self, request: Request, progress: Progress) -> None:
        self.req = request
        self.opt = request.optimization
        self.progress = progress
        self.context: dict[str, Any] = {}
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.t: tfenv.TF | None = None
        self.loaded: modelio.LoadedModel | None = None
        self.data = Datasets()
        self.custom: Callable[[Any, Any], Any] | None = None
        self.baseline_metric: float | None = None
        self.setup: TrainingSetup | None = None
        self.sample: np.ndarray[Any, Any] | None = None
        self.rep_x: np.ndarray[Any, Any] | None = None
        self.step_reports: list[StepReport] = []
        """Every step or candidate in order, including skipped and failed ones."""

    # ------------------------------------------------------------------ main flow

    def execute(self) -> Report:
        if self.req.work_dir is not None:
            return self._execute(self.req.work_dir)
        with tempfile.TemporaryDirectory(prefix="modelship-optimize-") as tmp:
            return self._execute(Path(tmp))

    def _fetch(self, uri: str, work: Path, digest: str | None = None) -> fetching.Fetched:
        req = self.req
        return fetching.fetch(
            uri, work, pvc_root=req.pvc_root, ca_bundle=req.ca_bundle, endpoint=req.endpoint, digest=digest
        )

    def _execute(self, work: Path) -> Report:
        req, opt = self.req, self.opt
        self.progress.log(f"fetching {req.model}")
        fetched = self._fetch(req.model, work / "model", digest=req.digest)
        self.context.update(source_digest=fetched.digest, source_bytes=fetched.size)
        self.progress.log(f"model {fetched.path} ({fetched.size} bytes, {fetched.digest})")
        info = modelio.inspect_model(fetched.path, req.model_format)
        check_plan(opt, info.format)
        self._load_data(work)
        if opt.metric.callable and opt.enabled:
            self.custom = gatemod.load_callable(opt.metric.callable)
        if info.format != ModelFormat.TFLITE:
            self.t = tfenv.load()
            self.t.keras.utils.set_random_seed(req.seed)
        self.progress.log(f"loading {info.format.value} model")
        loaded = modelio.load_model(info)
        self.loaded = loaded
        self.notes += loaded.notes
        if loaded.ptq_only and opt.enabled and opt.export.format == ExportFormat.SAVEDMODEL:
            raise OptimizeError(f"{info.path}: {modelio.PTQ_ONLY_NOTE}; use export.format tflite")
        self._conform_data()

        baseline_tflite, baseline_measure, baseline_tfl_measure = self._baseline()
        variants: list[Variant] = []
        if opt.enabled and opt.strategy == Strategy.STEPS:
            variants = self._run_steps()
            decision = gatemod.decide_steps([self._outcome(v) for v in variants], opt.gate.on_fail)
        elif opt.enabled:
            variants = self._run_auto()
            if not variants:
                raise OptimizeError("strategy Auto: no candidate could run (see the report's steps)")
            decision = gatemod.decide_auto([self._outcome(v) for v in variants], opt.objective, opt.gate.on_fail)
        else:
            decision = gatemod.Decision(GateDecision.SKIPPED, ShipDecision.BASELINE, None, None)

        shipped: Variant | None = None
        if decision.chosen is not None:  # Optimized or BestPassing
            shipped = variants[decision.chosen]
            self.step_reports = [
                r.model_copy(update={"shipped": True}) if r is shipped.report else r for r in self.step_reports
            ]
        elif decision.ship == ShipDecision.BASELINE:
            shipped = Variant(report=StepReport(name="baseline", measurement=baseline_tfl_measure),
                              tflite=baseline_tflite, keras=loaded.keras, name="baseline")  # fmt: skip
        judged = variants[decision.judged] if decision.judged is not None else None
        summary = self._write_outputs(fetched, decision, shipped, judged, baseline_measure)
        report = Report(
            summary=summary,
            revision=req.revision,
            model_format=info.format.value,
            baseline=baseline_measure,
            steps=self.step_reports,
            result=shipped.report.measurement if shipped is not None else Measurement(),
            calibration_warnings=self._calibration_warnings(),
            notes=_unique(self.notes + self.data.notes),
            environment=tfenv.versions(),
            strategy=opt.strategy.value if opt.enabled else "Disabled",
            objective=opt.objective.value if opt.enabled and opt.strategy == Strategy.AUTO else None,
            gate={"maxDrop": opt.gate.max_drop, "dropType": opt.gate.drop_type.value, "onFail": opt.gate.on_fail.value},
            baseline_tflite_metric=baseline_tfl_measure.metric,
            source_gzip_bytes=path_sizes(fetched.path)[1],
            export_format=opt.export.format.value,
            seconds=round(time.monotonic() - self.started, 3),
        )
        (req.out_dir / REPORT_FILE).write_text(
            report.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"
        )
        self.progress.log(summary.message or "done")
        return report

    # ------------------------------------------------------------------ data

    def _fetch_data(self, role: str, ref: Any, needs_labels: bool, work: Path) -> datamod.Dataset:
        ds = datamod.load(role, ref, self._fetch(ref.uri, work / role).path, needs_labels=needs_labels)
        self.progress.log(f"{role} data: {len(ds)} samples from {ref.uri}")
        return ds

    def _load_data(self, work: Path) -> None:
        d = self.opt.data
        if d.evaluation is not None:
            self.data.evaluation = self._fetch_data("evaluation", d.evaluation, True, work)
        if d.calibration is not None and self.opt.enabled:
            self.data.calibration = self._fetch_data("calibration", d.calibration, False, work)
        if d.fine_tune is not None and self.opt.enabled:
            self.data.fine_tune = self._fetch_data("fineTune", d.fine_tune, True, work)

    def _conform_data(self) -> None:
        loaded = self.loaded
        assert loaded is not None
        metric = self.opt.metric.type
        for ds in (self.data.calibration, self.data.evaluation, self.data.fine_tune):
            if ds is None:
                continue
            datamod.conform(ds, loaded.input_shape, loaded.input_dtype)
            if ds.role != "calibration":
                datamod.check_labels(ds, loaded.output_shape, metric)
            self.data.notes += ds.notes
        if self.data.calibration is not None:
            n = 200
            quant = [s.quantize for s in self.opt.steps if s.quantize is not None]
            if quant:
                n = quant[0].representative_samples
            self.rep_x = representative(self.data.calibration.x, n)
        for ds in (self.data.evaluation, self.data.calibration, self.data.fine_tune):
            if ds is not None:
                self.sample = ds.x[:1]
                break
        if self.sample is None:
            shape = tuple(1 if d is None else d for d in loaded.input_shape[1:])
            self.sample = np.zeros((1, *shape), dtype=np.float32)
        if self.data.fine_tune is not None and loaded.keras is not None and self.t is not None:
            ft = self.data.fine_tune
            assert ft.y is not None
            outputs = loaded.predict(ft.x[:64])
            loss, loss_name = choose_loss(self.t, self.opt.metric, ft.y, outputs)
            self.setup = TrainingSetup(data=ft, loss=loss, loss_name=loss_name)
            self.notes.append(f"fine-tuning loss: {loss_name}")

    def _calibration_warnings(self) -> list[str]:
        if self.data.calibration is None or self.data.evaluation is None or self.rep_x is None:
            return []
        used = datamod.Dataset(role="calibration", uri=self.data.calibration.uri, x=self.rep_x)
        warning = datamod.coverage_warning(used, self.data.evaluation)
        return [warning] if warning else []

    # ------------------------------------------------------------------ measuring

    def _metric(self, y_pred: np.ndarray[Any, Any]) -> float | None:
        ev = self.data.evaluation
        if ev is None or ev.y is None:
            return None
        return gatemod.compute(self.opt.metric, ev.y, y_pred, self.custom)

    def _measure(self, tflite: bytes, stats: WeightStats | None) -> Measurement:
        ev = self.data.evaluation
        metric = d = None
        if ev is not None:
            runner = Runner(tflite, batch_size=min(64, len(ev)), threads=self.req.threads)
            metric = self._metric(runner(ev.x))
            if metric is not None and self.baseline_metric is not None:
                d = gatemod.drop(self.baseline_metric, metric, self.opt.metric, self.opt.gate)
        assert self.sample is not None
        sp = speed(tflite, self.sample, threads=self.req.threads, max_seconds=self.req.speed_seconds)
        return Measurement(
            params=stats.params if stats else None,
            nonzero_params=stats.nonzero if stats else None,
            complexity=stats.complexity if stats else None,
            raw_bytes=len(tflite),
            gzip_bytes=gzip_size(tflite),
            metric=metric,
            drop=d,
            latency_p50_ms=sp.p50_ms,
            latency_p95_ms=sp.p95_ms,
            throughput_per_s=sp.throughput_per_s,
            threads=self.req.threads,
            batch_size=32 if sp.throughput_per_s is not None else None,
        )

    def _stats(self, model: Any | None) -> WeightStats | None:
        if model is not None:
            return keras_weight_stats(model)
        loaded = self.loaded
        if loaded is not None and loaded.saved_model is not None:
            return variables_weight_stats(getattr(loaded.saved_model, "variables", []))
        return None

    def _float_tflite(self, state: State) -> bytes:
        if state.tflite is not None:
            return state.tflite
        if state.float_tflite is None:
            assert self.t is not None
            if state.keras is not None:
                state.float_tflite = convert(self.t, keras_model=state.keras)
            else:
                assert self.loaded is not None
                state.float_tflite = convert(self.t, saved_model_dir=self.loaded.path)
        return state.float_tflite

    def _baseline(self) -> tuple[bytes, Measurement, Measurement]:
        """(float32 TFLite, baseline measurement (metric of the original model), its TFLite measurement)."""
        loaded = self.loaded
        assert loaded is not None
        task = self.progress.task("baseline", total=2)
        ev = self.data.evaluation
        if loaded.tflite is not None:  # a .tflite input is its own baseline
            tfl = loaded.tflite
        else:
            tfl = self._float_tflite(State(keras=loaded.keras))
            if ev is not None:
                self.baseline_metric = self._metric(loaded.predict(ev.x))
        task.advance("converted and evaluated")
        tfl_measure = self._measure(tfl, self._stats(loaded.keras))
        if loaded.tflite is not None:
            self.baseline_metric = tfl_measure.metric
            tfl_measure = tfl_measure.model_copy(update={"drop": 0.0 if ev else None})
        measure = tfl_measure.model_copy(update={"metric": self.baseline_metric, "drop": 0.0 if ev else None})
        name = gatemod.metric_name(self.opt.metric)
        task.finish(
            f"{name} {gatemod.fmt(self.baseline_metric)} (float32 TFLite {gatemod.fmt(tfl_measure.metric)}), "
            f"{tfl_measure.gzip_bytes} bytes gzip, p50 {gatemod.fmt(tfl_measure.latency_p50_ms)} ms"
        )
        return tfl, measure, tfl_measure

    def _outcome(self, v: Variant) -> gatemod.Outcome:
        m = v.report.measurement
        return gatemod.Outcome(
            name=v.name, passed=v.report.passed, gzip_bytes=m.gzip_bytes, latency_ms=m.latency_p50_ms
        )

    def _judge(self, m: Measurement) -> bool | None:
        if m.drop is None:
            return None
        return gatemod.passes(m.drop, self.opt.gate)

    # ------------------------------------------------------------------ steps

    def _apply(self, step: OptimizationStep, state: State, task: Task | None) -> tuple[State, bool, list[str], bool]:
        """Apply one step: (new state, fine-tuned, notes, skipped)."""
        t = self.t
        loaded = self.loaded
        assert loaded is not None
        notes: list[str] = []
        if t is not None:
            t.keras.utils.set_random_seed(self.req.seed)
        setup = self.setup
        if setup is not None and task is not None:
            setup = TrainingSetup(
                data=setup.data, loss=setup.loss, loss_name=setup.loss_name,
                on_epoch=lambda e, n: task.advance(f"epoch {e}/{n}"),
            )  # fmt: skip
        if step.type != StepType.QUANTIZE:
            if state.keras is None:
                why = modelio.PTQ_ONLY_NOTE if loaded.ptq_only else "the model is already quantized"
                return state, False, [f"{step.type.value} skipped: {why}"], True
            assert t is not None
            ft = step.fine_tune if setup is not None else None
            use = setup if ft is not None else None
            if ft is None:
                notes.append(
                    "one-shot: no fine-tuning"
                    + (
                        " (set fineTune on the step to recover accuracy)"
                        if setup is not None
                        else " (no data.fineTune)"
                    )
                )
            if step.type == StepType.PRUNE:
                assert step.prune is not None and self.sample is not None
                res = prune(t, state.keras, step.prune, use, ft, self.sample)
                new = State(keras=res.model, stats_model=res.model, pruned=True, clustered=state.clustered)
            elif step.type == StepType.CLUSTER:
                assert step.cluster is not None
                res = cluster(t, state.keras, step.cluster, use, ft)
                new = State(keras=res.model, stats_model=res.model, pruned=state.pruned, clustered=True)
            else:
                assert step.low_rank is not None
                res = low_rank(t, state.keras, step.low_rank, use, ft)
                new = State(keras=res.model, stats_model=res.model, pruned=state.pruned, clustered=state.clustered)
            return new, res.fine_tuned, notes + res.notes, False
        params = step.quantize or QuantizeParams()
        mode = params.mode
        cal = self.data.calibration
        rep = representative(cal.x, params.representative_samples) if cal is not None else None
        fine_tuned = False
        if mode == QuantizeMode.QAT:
            if state.keras is None or setup is None:
                mode = QuantizeMode.INT8 if rep is not None else QuantizeMode.DYNAMIC
                why = modelio.PTQ_ONLY_NOTE if state.keras is None else "no data.fineTune"
                notes.append(f"qat not possible ({why}): post-training {mode.value} instead")
            else:
                assert t is not None
                try:
                    res = qat(
                        t,
                        state.keras,
                        setup,
                        step.fine_tune or QAT_DEFAULT,
                        pruned=state.pruned,
                        clustered=state.clustered,
                    )
                except (ValueError, RuntimeError, TypeError) as exc:
                    mode = QuantizeMode.INT8 if rep is not None else QuantizeMode.DYNAMIC
                    notes.append(f"qat failed ({first_line(exc)[:200]}): post-training {mode.value} instead")
                else:
                    notes += res.notes
                    tfl = convert(t, keras_model=res.model, mode=QuantizeMode.QAT)
                    return (
                        State(
                            keras=None,
                            tflite=tfl,
                            stats_model=res.model,
                            pruned=state.pruned,
                            clustered=state.clustered,
                        ),
                        True,
                        notes,
                        False,
                    )
        if mode in (QuantizeMode.INT8, QuantizeMode.INT16X8) and rep is None:
            raise OptimizeError(f"{mode.value} quantization needs calibration data (data.calibration)")
        if state.tflite is not None:
            return state, False, ["quantize skipped: the model is already quantized"], True
        assert t is not None
        per_tensor = "all" if state.clustered else ("dense" if state.pruned else None)
        if per_tensor is not None and mode != QuantizeMode.FLOAT16:
            which = "all kernels" if per_tensor == "all" else "Dense kernels"
            notes.append(f"{which} quantized per tensor, so shared values and zeros stay few distinct integers")
        if state.keras is not None:
            tfl = convert(t, keras_model=state.keras, mode=mode, params=params, calibration=rep, per_tensor=per_tensor)
        else:
            tfl = convert(t, saved_model_dir=loaded.path, mode=mode, params=params, calibration=rep)
        if rep is not None and mode in (QuantizeMode.INT8, QuantizeMode.INT16X8):
            notes.append(f"calibrated on {len(rep)} samples")
        stats_model = state.stats_model if state.stats_model is not None else state.keras
        notes.append("parameter statistics are of the float weights before quantization")
        return (
            State(keras=None, tflite=tfl, stats_model=stats_model, pruned=state.pruned, clustered=state.clustered),
            fine_tuned,
            notes,
            False,
        )

    def _run_steps(self) -> list[Variant]:
        loaded = self.loaded
        assert loaded is not None
        state = State(keras=loaded.keras, stats_model=loaded.keras)
        variants: list[Variant] = []
        done: list[str] = []
        steps = self.opt.steps
        for i, step in enumerate(steps, start=1):
            epochs = step.fine_tune.epochs if step.fine_tune is not None and self.setup is not None else 0
            if step.type == StepType.QUANTIZE and step.quantize and step.quantize.mode == QuantizeMode.QAT:
                epochs = (step.fine_tune or QAT_DEFAULT).epochs
            task = self.progress.task(f"step {i}/{len(steps)} {step_label(step)}", total=epochs + 1)
            started = time.monotonic()
            state, fine_tuned, notes, skipped = self._apply(step, state, task)
            report = StepReport(
                name=step_label(step), fine_tuned=fine_tuned, notes=notes, skipped=skipped, chain=[describe_step(step)]
            )
            tfl = self._float_tflite(state)
            measurement = self._measure(tfl, self._stats(state.stats_model))
            report = report.model_copy(
                update={
                    "measurement": measurement,
                    "passed": self._judge(measurement),
                    "seconds": round(time.monotonic() - started, 3),
                }
            )
            if not skipped:
                done.append(_short(step))
            variants.append(Variant(report=report, tflite=tfl, keras=state.keras, name="+".join(done) or "baseline"))
            self.step_reports.append(report)
            task.finish(self._line(report))
        return variants

    def _line(self, r: StepReport) -> str:
        m = r.measurement
        name = gatemod.metric_name(self.opt.metric)
        verdict = {True: "passes", False: "fails", None: "not gated"}[r.passed]
        return (
            f"{name} {gatemod.fmt(m.metric)} (drop {gatemod.fmt(m.drop)}, {verdict}), "
            f"{m.gzip_bytes} bytes gzip, p50 {gatemod.fmt(m.latency_p50_ms)} ms"
        )

    # ------------------------------------------------------------------ auto

    def _run_auto(self) -> list[Variant]:
        loaded = self.loaded
        assert loaded is not None
        cands = auto_candidates(
            trainable=loaded.keras is not None,
            calibration=self.rep_x is not None,
            fine_tune=self.setup is not None,
            export=self.opt.export.format,
        )
        if loaded.ptq_only:
            self.notes.append("strategy Auto: post-training quantization candidates only")
        budget = self.opt.time_budget_seconds
        begin = time.monotonic()
        cache: dict[tuple[str, ...], State] = {}
        variants: list[Variant] = []
        for n, cand in enumerate(cands, start=1):
            chain = [describe_step(s) for s in cand.steps]
            if n > 1 and time.monotonic() - begin > budget:  # the first candidate always runs
                self.step_reports.append(
                    StepReport(
                        name=cand.name,
                        skipped=True,
                        chain=chain,
                        notes=[f"skipped: the time budget of {budget}s was used up"],
                    )
                )
                self.progress.log(f"candidate {cand.name}: skipped (time budget of {budget}s used up)")
                continue
            epochs = sum(s.fine_tune.epochs for s in cand.steps if s.fine_tune is not None)
            task = self.progress.task(f"candidate {n}/{len(cands)} {cand.name}", total=epochs + 1)
            started = time.monotonic()
            try:
                state, fine_tuned, notes = self._run_chain(cand, cache, task)
                tfl = self._float_tflite(state)
                measurement = self._measure(tfl, self._stats(state.stats_model))
            except Exception as exc:  # one candidate failing must not end the search
                msg = str(exc) if isinstance(exc, OptimizeError) else f"{type(exc).__name__}: {first_line(exc)}"
                self.step_reports.append(StepReport(name=cand.name, chain=chain, passed=False, error=msg[:1000]))
                task.finish(f"failed: {msg[:200]}")
                continue
            report = StepReport(
                name=cand.name,
                chain=chain,
                fine_tuned=fine_tuned,
                notes=notes,
                measurement=measurement,
                passed=self._judge(measurement),
                seconds=round(time.monotonic() - started, 3),
            )
            variants.append(Variant(report=report, tflite=tfl, keras=state.keras, name=cand.name))
            self.step_reports.append(report)
            task.finish(self._line(report))
        return variants

    def _run_chain(
        self, cand: Candidate, cache: dict[tuple[str, ...], State], task: Task
    ) -> tuple[State, bool, list[str]]:
        loaded = self.loaded
        assert loaded is not None
        state = State(keras=loaded.keras, stats_model=loaded.keras)
        fine_tuned = False
        notes: list[str] = []
        key: tuple[str, ...] = ()
        for step in cand.steps:
            key = (*key, describe_step(step))
            if key in cache:
                state = cache[key]
                notes.append(f"{step_label(step)}: reused from an earlier candidate")
                task.advance(f"{step_label(step)} reused", amount=step.fine_tune.epochs if step.fine_tune else 0)
                continue
            state, ft, step_notes, skipped = self._apply(step, state, task)
            fine_tuned = fine_tuned or ft
            notes += [f"{step_label(step)}: {n}" for n in step_notes]
            if state.tflite is None and not skipped:
                cache[key] = state
        return state, fine_tuned, notes

    # ------------------------------------------------------------------ outputs

    def _write_outputs(
        self,
        fetched: fetching.Fetched,
        decision: gatemod.Decision,
        shipped: Variant | None,
        judged: Variant | None,
        baseline: Measurement,
    ) -> Summary:
        """Write the shipped artifact (none when blocked) and return the summary."""
        opt = self.opt
        out = self.req.out_dir
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / TFLITE_FILE, out / SAVED_MODEL_DIR, out / REPORT_FILE):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
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
                self._export_saved_model(shipped.keras, path, fetched.path)
                optimized_bytes, optimized_gzip = path_sizes(path)
                original_bytes, original_gzip = self._baseline_saved_model_sizes(fetched.path)
            artifact = path.name
            artifact_digest = fetching.sha256_path(path)
        ratio = round(original_gzip / optimized_gzip, 3) if original_gzip and optimized_gzip else None
        return Summary(
            ok=True,
            source_digest=fetched.digest,
            source_bytes=fetched.size,
            artifact=artifact,
            artifact_digest=artifact_digest,
            metric_name=gatemod.metric_name(opt.metric) if self.baseline_metric is not None else None,
            baseline=self.baseline_metric,
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
            message=self._message(decision, shipped, judged, ratio)[:1024],
        )

    def _message(
        self, decision: gatemod.Decision, shipped: Variant | None, judged: Variant | None, ratio: float | None
    ) -> str:
        opt = self.opt
        name = gatemod.metric_name(opt.metric)
        size = ""
        if ratio:
            size = f", {ratio:.1f}x smaller (gzip)" if ratio >= 1 else f", {1 / ratio:.1f}x larger (gzip)"
        what = shipped.name if shipped is not None else "nothing"
        if decision.gate == GateDecision.SKIPPED:
            if not opt.enabled:
                return f"optimization disabled: the model ships as {opt.export.format.value} (float32){size}"
            return f"no evaluation data: {what} ships ungated{size}"
        assert self.baseline_metric is not None
        verdict = ""
        jm = judged.report.measurement if judged is not None else None
        if jm is not None and jm.metric is not None and jm.drop is not None:
            verdict = gatemod.judgement(name, self.baseline_metric, jm.metric, jm.drop, opt.gate)
        if decision.gate == GateDecision.PASSED:
            return f"gate passed: {verdict}; {what} ships{size}"
        rejected = judged.name if judged is not None else "the result"
        if opt.strategy == Strategy.STEPS:
            lead = f"gate failed for {rejected}: {verdict}"
        else:
            lead = (
                f"no auto candidate passed the gate; the {opt.objective.value.lower()} pick was {rejected}: {verdict}"
            )
        if decision.ship == ShipDecision.BASELINE:
            return f"{lead}; onFail DeployBaseline: the unoptimized model ships{size}"
        if decision.ship == ShipDecision.BEST_PASSING and shipped is not None:
            sm = shipped.report.measurement
            return (
                f"{lead}; onFail DeployBestPassing: {what} ships ({name} {gatemod.fmt(sm.metric)}, "
                f"drop {gatemod.fmt(sm.drop)}){size}"
            )
        return f"{lead}; onFail {opt.gate.on_fail.value}: blocked, nothing new ships"

    def _export_saved_model(self, keras_model: Any | None, path: Path, source: Path) -> None:
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

    def _baseline_saved_model_sizes(self, source: Path) -> tuple[int | None, int | None]:
        import tempfile

        loaded = self.loaded
        if loaded is None or loaded.keras is None:
            return path_sizes(source) if source.is_dir() else (None, None)
        with tempfile.TemporaryDirectory(prefix="modelship-baseline-") as tmp:
            target = Path(tmp) / "saved_model"
            self._export_saved_model(loaded.keras, target, source)
            return path_sizes(target)


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
