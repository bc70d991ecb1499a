"""Everything the optimizer knows before it measures anything: the loaded model, its data fitted to the model's
input and output, the fine-tuning setup, and the samples used for calibration and latency.

:func:`prepare` builds one immutable :class:`Context`; nothing in it is filled in later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.optimization import DataRef, ExportFormat, Optimization
from ..api.source import ModelFormat
from . import data as datamod
from . import gate as gatemod
from . import modelio, tfenv
from .conversion import recurrent_layers, representative
from .errors import OptimizeError
from .progress import Progress
from .request import Request
from .signature import Features, TensorInfo, rows
from .techniques import TrainingSetup, choose_loss

CALIBRATION_SAMPLES = 200
"""Calibration samples when no quantize step says how many."""


@dataclass(frozen=True)
class Datasets:
    """The data sets the optimization names (None: not given, or not needed)."""

    calibration: datamod.Dataset | None = None
    evaluation: datamod.Dataset | None = None
    fine_tune: datamod.Dataset | None = None

    def present(self) -> list[datamod.Dataset]:
        """The given data sets, in calibration, evaluation, fine-tuning order."""
        return [ds for ds in (self.calibration, self.evaluation, self.fine_tune) if ds is not None]

    @property
    def notes(self) -> list[str]:
        return [note for ds in self.present() for note in ds.notes]


@dataclass(frozen=True)
class Context:
    """The inputs of a run, ready to measure and optimize."""

    request: Request
    progress: Progress
    loaded: modelio.LoadedModel
    tf: tfenv.TF | None
    """TensorFlow (None for a .tflite input, which is served as is)."""
    data: Datasets
    output: str
    """The model output the metric reads (and fine-tuning trains)."""
    sample: Features
    """One input row for latency measurements (and one-shot pruning masks)."""
    calibration_sample: Features | None
    """The representative rows int8/int16x8 calibration sees (None without calibration data)."""
    setup: TrainingSetup | None
    """How to fine-tune (None without fine-tuning data or a trainable model)."""
    custom: Callable[[Any, Any], Any] | None
    """The custom metric's callable."""
    notes: list[str] = field(default_factory=list)

    @property
    def opt(self) -> Optimization:
        return self.request.optimization

    def require_tf(self) -> tfenv.TF:
        """TensorFlow, which every input but a .tflite file loads."""
        if self.tf is None:
            raise OptimizeError("a tflite model is served as is: set optimization.enabled to false")
        return self.tf


def prepare(request: Request, info: modelio.ModelInfo, work: Path, progress: Progress) -> Context:
    """Fetch the data, load TensorFlow and the model, and fit the data to the model."""
    opt = request.optimization
    data = load_data(request, work, progress)
    custom = None
    if opt.metric.callable and opt.enabled:
        if not request.allow_code:
            raise OptimizeError(f"custom metric {opt.metric.callable}: a custom metric is Python code; "
                                f"{modelio.CODE_ADVICE}")  # fmt: skip
        custom = gatemod.load_callable(opt.metric.callable)
    t: tfenv.TF | None = None
    if info.format != ModelFormat.TFLITE:
        t = tfenv.load()
        t.keras.utils.set_random_seed(request.seed)
    progress.log(f"loading {info.format.value} model")
    loaded = modelio.load_model(info, allow_code=request.allow_code)
    if loaded.ptq_only and opt.enabled and opt.export.format == ExportFormat.SAVEDMODEL:
        raise OptimizeError(f"{info.path}: {modelio.PTQ_ONLY_NOTE}; use export.format tflite")
    output = metric_output(loaded, data, opt)
    conform_data(data, loaded, output, opt)
    notes = list(loaded.notes)
    if loaded.keras is not None and (rolled := recurrent_layers(loaded.keras)):
        notes.append(
            f"recurrent layers {', '.join(rolled)} are converted unrolled over their time steps (the TFLite "
            "converter needs a static batch size for them otherwise, and its fused LSTM keeps state between calls)"
        )
    setup = training_setup(t, loaded, data, output, opt)
    if setup is not None:
        notes.append(f"fine-tuning loss: {setup.loss_name}")
        others = [name for name in loaded.signature.output_names if name != output.name]
        if others:
            notes.append(
                f"fine-tuning trains the {output.name} output against the labels; "
                f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} neither trained nor gated"
            )
    return Context(
        request=request,
        progress=progress,
        loaded=loaded,
        tf=t,
        data=data,
        output=output.name,
        sample=first_sample(data, loaded),
        calibration_sample=calibration_sample(data, opt),
        setup=setup,
        custom=custom,
        notes=notes,
    )


def _fetch_data(
    request: Request, role: str, ref: DataRef, needs_labels: bool, work: Path, progress: Progress
) -> datamod.Dataset:
    ds = datamod.load(role, ref, request.fetch(role, ref.uri, work / role).path, needs_labels=needs_labels)
    progress.log(f"{role} data: {len(ds)} samples from {ref.uri}")
    return ds


def load_data(request: Request, work: Path, progress: Progress) -> Datasets:
    """Fetch and read the data sets the optimization uses (calibration and fine-tuning only when it is enabled)."""
    opt = request.optimization
    d = opt.data
    evaluation = calibration = fine_tune = None
    if d.evaluation is not None:
        evaluation = _fetch_data(request, "evaluation", d.evaluation, True, work, progress)
    if d.calibration is not None and opt.enabled:
        calibration = _fetch_data(request, "calibration", d.calibration, False, work, progress)
    if d.fine_tune is not None and opt.enabled:
        fine_tune = _fetch_data(request, "fineTune", d.fine_tune, True, work, progress)
    return Datasets(calibration=calibration, evaluation=evaluation, fine_tune=fine_tune)


def metric_output(loaded: modelio.LoadedModel, data: Datasets, opt: Optimization) -> TensorInfo:
    """The output metric.output names, or the only one; a model with several outputs and data to score or train
    on needs metric.output."""
    outputs = loaded.signature.outputs
    if opt.metric.output is not None or len(outputs) == 1 or data.evaluation or data.fine_tune:
        return loaded.signature.output(opt.metric.output)
    return outputs[0]  # nothing is scored or trained


def conform_data(data: Datasets, loaded: modelio.LoadedModel, output: TensorInfo, opt: Optimization) -> None:
    """Match the data to the model's inputs and check labels against the metric's output (clear errors)."""
    for ds in data.present():
        datamod.conform(ds, loaded.signature.inputs)
        if ds.role != "calibration":
            datamod.check_labels(ds, output.shape, opt.metric.type)


def calibration_sample(data: Datasets, opt: Optimization) -> Features | None:
    """The rows the first quantize step calibrates on."""
    if data.calibration is None:
        return None
    quant = [s.quantize for s in opt.steps if s.quantize is not None]
    n = quant[0].representative_samples if quant else CALIBRATION_SAMPLES
    return representative(data.calibration.inputs, n)


def first_sample(data: Datasets, loaded: modelio.LoadedModel) -> Features:
    """The first row of the evaluation, calibration or fine-tuning data; zeros of the input shapes without data."""
    for ds in (data.evaluation, data.calibration, data.fine_tune):
        if ds is not None:
            return rows(ds.inputs, slice(0, 1))
    return {
        t.name: np.zeros((1, *(1 if d is None else d for d in t.shape[1:])), dtype=np.dtype(t.dtype))
        for t in loaded.signature.inputs
    }


def training_setup(
    t: tfenv.TF | None, loaded: modelio.LoadedModel, data: Datasets, output: TensorInfo, opt: Optimization
) -> TrainingSetup | None:
    """The fine-tuning loss for the metric, the labels and what the model outputs."""
    ft = data.fine_tune
    if ft is None or loaded.keras is None or t is None or ft.y is None:
        return None
    outputs = loaded.predict(rows(ft.inputs, slice(0, 64)))[output.name]
    loss, loss_name = choose_loss(t, opt.metric, ft.y, outputs)
    names = loaded.signature.output_names
    index = names.index(output.name) if len(names) > 1 else None
    return TrainingSetup(data=ft, loss=loss, loss_name=loss_name, output_index=index)


def calibration_warnings(ctx: Context) -> list[str]:
    """A warning when the calibration rows do not cover the evaluation inputs."""
    cal, ev = ctx.data.calibration, ctx.data.evaluation
    if cal is None or ev is None or ctx.calibration_sample is None:
        return []
    used = datamod.Dataset(role="calibration", uri=cal.uri, inputs=ctx.calibration_sample)
    warning = datamod.coverage_warning(used, ev)
    return [warning] if warning else []
