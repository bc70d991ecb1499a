"""Applying optimization steps: prune, cluster and low-rank on the float model, then quantization (post-training
or QAT) to TFLite; and ``strategy: Steps``, the steps in the order written, each result measured and judged."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import NamedTuple

from ..api.gate import step_short_name
from ..api.optimization import FineTune, OptimizationStep, QuantizeMode, QuantizeParams, StepType
from ..api.report import Measurement, StepReport
from . import modelio
from .conversion import convert, representative
from .errors import OptimizeError, first_line
from .evaluate import Evaluator
from .prepare import Context
from .progress import Task
from .signature import Features, count
from .techniques import TrainingSetup, cluster, low_rank, prune, qat
from .tfenv import TF
from .variants import Search, State, Variant, tflite_of

QAT_DEFAULT = FineTune(epochs=2, learning_rate=1e-4, batch_size=32)


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


def step_label(step: OptimizationStep) -> str:
    if step.type == StepType.QUANTIZE and step.quantize is not None:
        return f"quantize:{step.quantize.mode.value}"
    return step.type.value


class StepOutcome(NamedTuple):
    """A step's result."""

    state: State
    fine_tuned: bool
    notes: list[str]
    skipped: bool
    """The step did not apply (see notes)."""


class Measured(NamedTuple):
    """A variant as TFLite, measured and judged."""

    tflite: bytes
    measurement: Measurement
    passed: bool | None


def _skipped(state: State, note: str) -> StepOutcome:
    return StepOutcome(state=state, fine_tuned=False, notes=[note], skipped=True)


@dataclass(frozen=True)
class StepRunner:
    """Applies steps to model variants and measures the results."""

    t: TF
    ctx: Context
    evaluator: Evaluator

    def apply(self, step: OptimizationStep, state: State, task: Task | None) -> StepOutcome:
        """Apply one step to a variant (the input variant is never modified)."""
        self.t.keras.utils.set_random_seed(self.ctx.request.seed)
        setup = self.ctx.setup
        if setup is not None and task is not None:
            setup = dataclasses.replace(setup, on_epoch=lambda e, n: task.advance(f"epoch {e}/{n}"))
        if step.type == StepType.QUANTIZE:
            return self._quantize(step, step.quantize or QuantizeParams(), state, setup)
        return self._float_step(step, state, setup)

    def measure(self, state: State) -> Measured:
        """The variant as TFLite, measured, and the gate's verdict on it."""
        tfl = tflite_of(self.t, self.ctx.loaded, state)
        measurement = self.evaluator.measure(tfl, self.evaluator.stats(state.stats_model))
        return Measured(tflite=tfl, measurement=measurement, passed=self.evaluator.judge(measurement))

    def _float_step(self, step: OptimizationStep, state: State, setup: TrainingSetup | None) -> StepOutcome:
        """prune, cluster or lowRank on the float model, fine-tuned when the step and the data allow."""
        if state.keras is None:
            why = modelio.PTQ_ONLY_NOTE if self.ctx.loaded.ptq_only else "the model is already quantized"
            return _skipped(state, f"{step.type.value} skipped: {why}")
        t = self.t
        ft = step.fine_tune if setup is not None else None
        use = setup if ft is not None else None
        notes: list[str] = []
        if ft is None:
            hint = " (set fineTune on the step to recover accuracy)" if setup is not None else " (no data.fineTune)"
            notes.append("one-shot: no fine-tuning" + hint)
        if step.type == StepType.PRUNE and step.prune is not None:
            res = prune(t, state.keras, step.prune, use, ft, self.ctx.sample)
            new = State(keras=res.model, stats_model=res.model, pruned=True, clustered=state.clustered)
        elif step.type == StepType.CLUSTER and step.cluster is not None:
            res = cluster(t, state.keras, step.cluster, use, ft)
            new = State(keras=res.model, stats_model=res.model, pruned=state.pruned, clustered=True)
        elif step.type == StepType.LOW_RANK and step.low_rank is not None:
            res = low_rank(t, state.keras, step.low_rank, use, ft)
            new = State(keras=res.model, stats_model=res.model, pruned=state.pruned, clustered=state.clustered)
        else:  # the API's rules make every step carry its parameters
            raise OptimizeError(f"a {step.type.value} step without its {step.type.value} parameters")
        return StepOutcome(state=new, fine_tuned=res.fine_tuned, notes=notes + res.notes, skipped=False)

    def _quantize(
        self, step: OptimizationStep, params: QuantizeParams, state: State, setup: TrainingSetup | None
    ) -> StepOutcome:
        """Quantize to TFLite: QAT when asked and possible (else a post-training fallback), or post-training."""
        cal = self.ctx.data.calibration
        rep = representative(cal.inputs, params.representative_samples) if cal is not None else None
        fallback = QuantizeMode.INT8 if rep is not None else QuantizeMode.DYNAMIC
        mode = params.mode
        notes: list[str] = []
        if mode == QuantizeMode.QAT:
            if state.keras is None or setup is None:
                mode = fallback
                why = modelio.PTQ_ONLY_NOTE if state.keras is None else "no data.fineTune"
                notes.append(f"qat not possible ({why}): post-training {mode.value} instead")
            else:
                try:
                    return self._qat(step, state, setup)
                except (ValueError, RuntimeError, TypeError) as exc:
                    mode = fallback
                    notes.append(f"qat failed ({first_line(exc)[:200]}): post-training {mode.value} instead")
        return self._post_training(mode, params, state, rep, notes)

    def _qat(self, step: OptimizationStep, state: State, setup: TrainingSetup) -> StepOutcome:
        res = qat(
            self.t, state.keras, setup, step.fine_tune or QAT_DEFAULT, pruned=state.pruned, clustered=state.clustered
        )
        names = self.ctx.loaded.signature.output_names
        tfl = convert(self.t, keras_model=res.model, mode=QuantizeMode.QAT, output_names=names)
        new = State(keras=None, tflite=tfl, stats_model=res.model, pruned=state.pruned, clustered=state.clustered)
        return StepOutcome(state=new, fine_tuned=True, notes=res.notes, skipped=False)

    def _post_training(
        self, mode: QuantizeMode, params: QuantizeParams, state: State, rep: Features | None, notes: list[str]
    ) -> StepOutcome:
        """The TFLite converter's post-training quantization (per tensor after prune/cluster, so zeros and shared
        values stay few distinct integers)."""
        if mode in (QuantizeMode.INT8, QuantizeMode.INT16X8) and rep is None:
            raise OptimizeError(f"{mode.value} quantization needs calibration data (data.calibration)")
        if state.tflite is not None:
            return _skipped(state, "quantize skipped: the model is already quantized")
        per_tensor = "all" if state.clustered else ("dense" if state.pruned else None)
        if per_tensor is not None and mode != QuantizeMode.FLOAT16:
            which = "all kernels" if per_tensor == "all" else "Dense kernels"
            notes.append(f"{which} quantized per tensor, so shared values and zeros stay few distinct integers")
        t = self.t
        if state.keras is not None:
            tfl = convert(t, keras_model=state.keras, mode=mode, params=params, calibration=rep, per_tensor=per_tensor)
        else:
            tfl = convert(t, saved_model_dir=self.ctx.loaded.path, mode=mode, params=params, calibration=rep)
        if rep is not None and mode in (QuantizeMode.INT8, QuantizeMode.INT16X8):
            notes.append(f"calibrated on {count(rep)} samples")
        stats_model = state.stats_model if state.stats_model is not None else state.keras
        notes.append("parameter statistics are of the float weights before quantization")
        new = State(keras=None, tflite=tfl, stats_model=stats_model, pruned=state.pruned, clustered=state.clustered)
        return StepOutcome(state=new, fine_tuned=False, notes=notes, skipped=False)


def _epochs(step: OptimizationStep, fine_tuning: bool) -> int:
    """Epochs a step trains (for its progress bar)."""
    if step.type == StepType.QUANTIZE and step.quantize and step.quantize.mode == QuantizeMode.QAT:
        return (step.fine_tune or QAT_DEFAULT).epochs
    return step.fine_tune.epochs if step.fine_tune is not None and fine_tuning else 0


def run_steps(runner: StepRunner) -> Search:
    """``strategy: Steps``: each step applies to the previous result; every result is measured and judged."""
    ctx = runner.ctx
    steps = ctx.opt.steps
    state = State(keras=ctx.loaded.keras, stats_model=ctx.loaded.keras)
    variants: list[Variant] = []
    done: list[str] = []
    for i, step in enumerate(steps, start=1):
        label = step_label(step)
        task = ctx.progress.task(f"step {i}/{len(steps)} {label}", total=_epochs(step, ctx.setup is not None) + 1)
        started = time.monotonic()
        outcome = runner.apply(step, state, task)
        state = outcome.state
        measured = runner.measure(state)
        report = StepReport(
            name=label,
            fine_tuned=outcome.fine_tuned,
            notes=outcome.notes,
            skipped=outcome.skipped,
            chain=[describe_step(step)],
            measurement=measured.measurement,
            passed=measured.passed,
            seconds=round(time.monotonic() - started, 3),
        )
        if not outcome.skipped:
            done.append(step_short_name(step))
        name = "+".join(done) or "baseline"
        variants.append(Variant(report=report, tflite=measured.tflite, keras=state.keras, name=name))
        task.finish(runner.evaluator.line(report))
    return Search(variants=variants, reports=[v.report for v in variants], notes=[])
