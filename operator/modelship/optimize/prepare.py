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
from .errors import OptimizeError
from .progress import Progress
from .request import Request
from .techniques import TrainingSetup, choose_loss, representative

Array = np.ndarray[Any, Any]
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
    sample: Array
    """One input row for latency measurements (and one-shot pruning masks)."""
    calibration_sample: Array | None
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
    custom = gatemod.load_callable(opt.metric.callable) if opt.metric.callable and opt.enabled else None
    t: tfenv.TF | None = None
    if info.format != ModelFormat.TFLITE:
        t = tfenv.load()
        t.keras.utils.set_random_seed(request.seed)
    progress.log(f"loading {info.format.value} model")
    loaded = modelio.load_model(info)
    if loaded.ptq_only and opt.enabled and opt.export.format == ExportFormat.SAVEDMODEL:
        raise OptimizeError(f"{info.path}: {modelio.PTQ_ONLY_NOTE}; use export.format tflite")
    conform_data(data, loaded, opt)
    notes = list(loaded.notes)
    setup = training_setup(t, loaded, data, opt)
    if setup is not None:
        notes.append(f"fine-tuning loss: {setup.loss_name}")
    return Context(
        request=request,
        progress=progress,
        loaded=loaded,
        tf=t,
        data=data,
        sample=first_sample(data, loaded),
        calibration_sample=calibration_sample(data, opt),
        setup=setup,
        custom=custom,
        notes=notes,
    )


def _fetch_data(
    request: Request, role: str, ref: DataRef, needs_labels: bool, work: Path, progress: Progress
) -> datamod.Dataset:
    ds = datamod.load(role, ref, request.fetch(ref.uri, work / role).path, needs_labels=needs_labels)
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


def conform_data(data: Datasets, loaded: modelio.LoadedModel, opt: Optimization) -> None:
    """Reshape features to the model's input and check labels against its output (clear errors otherwise)."""
    for ds in data.present():
        datamod.conform(ds, loaded.input_shape, loaded.input_dtype)
        if ds.role != "calibration":
            datamod.check_labels(ds, loaded.output_shape, opt.metric.type)


def calibration_sample(data: Datasets, opt: Optimization) -> Array | None:
    """The rows the first quantize step calibrates on."""
    if data.calibration is None:
        return None
    quant = [s.quantize for s in opt.steps if s.quantize is not None]
    n = quant[0].representative_samples if quant else CALIBRATION_SAMPLES
    return representative(data.calibration.x, n)


def first_sample(data: Datasets, loaded: modelio.LoadedModel) -> Array:
    """The first row of the evaluation, calibration or fine-tuning data; zeros of the input shape without data."""
    for ds in (data.evaluation, data.calibration, data.fine_tune):
        if ds is not None:
            return ds.x[:1]
    shape = tuple(1 if d is None else d for d in loaded.input_shape[1:])
    return np.zeros((1, *shape), dtype=np.float32)


def training_setup(
    t: tfenv.TF | None, loaded: modelio.LoadedModel, data: Datasets, opt: Optimization
) -> TrainingSetup | None:
    """The fine-tuning loss for the metric, the labels and what the model outputs."""
    ft = data.fine_tune
    if ft is None or loaded.keras is None or t is None or ft.y is None:
        return None
    outputs = loaded.predict(ft.x[:64])
    loss, loss_name = choose_loss(t, opt.metric, ft.y, outputs)
    return TrainingSetup(data=ft, loss=loss, loss_name=loss_name)


def calibration_warnings(ctx: Context) -> list[str]:
    """A warning when the calibration rows do not cover the evaluation inputs."""
    cal, ev = ctx.data.calibration, ctx.data.evaluation
    if cal is None or ev is None or ctx.calibration_sample is None:
        return []
    used = datamod.Dataset(role="calibration", uri=cal.uri, x=ctx.calibration_sample)
    warning = datamod.coverage_warning(used, ev)
    return [warning] if warning else []
