"""The baseline: the original model's metric, and its float32 TFLite conversion measured like every variant."""

from __future__ import annotations

from typing import NamedTuple

from ..api.optimization import ExportFormat
from ..api.report import Measurement
from . import gate as gatemod
from .conversion import StatefulModel
from .evaluate import Evaluator
from .prepare import Context
from .variants import State, tflite_of


class Baseline(NamedTuple):
    tflite: bytes
    """The float32 TFLite conversion (a .tflite input: the file itself)."""
    measurement: Measurement
    """The original model: its metric, with the TFLite conversion's sizes and speed."""
    tflite_measurement: Measurement
    """The float32 TFLite conversion, measured."""
    evaluator: Evaluator
    """Measures variants against the baseline's metric."""

    @property
    def metric(self) -> float | None:
        return self.measurement.metric


def measure_baseline(ctx: Context) -> Baseline:
    """Convert (unless the input is TFLite), evaluate the original model, and measure its TFLite conversion."""
    loaded = ctx.loaded
    task = ctx.progress.task("baseline", total=2)
    ev = ctx.data.evaluation
    evaluator = Evaluator.of(ctx)
    if loaded.tflite is not None:  # a .tflite input is its own baseline
        tfl = loaded.tflite
    else:
        try:
            tfl = tflite_of(ctx.require_tf(), loaded, State(keras=loaded.keras))
        except StatefulModel as exc:
            if ctx.opt.export.format != ExportFormat.SAVEDMODEL:
                raise  # the TFLite would ship
            # the SavedModel ships (the TF runtime serves it, stateless): its TFLite conversion is only measured
            tfl = exc.tflite
            ctx.notes.append(
                "the float32 TFLite conversion keeps state between invocations (measured only: the SavedModel "
                "ships); its figures come from requests answered in a row, each from the previous one's state"
            )
        if ev is not None:
            evaluator = evaluator.with_baseline(evaluator.metric(loaded.predict(ev.inputs)))
    task.advance("converted and evaluated")
    tfl_measure = evaluator.measure(tfl, evaluator.stats(loaded.keras))
    if loaded.tflite is not None:
        evaluator = evaluator.with_baseline(tfl_measure.metric)
        tfl_measure = tfl_measure.model_copy(update={"drop": 0.0 if ev else None})
    measure = tfl_measure.model_copy(update={"metric": evaluator.baseline, "drop": 0.0 if ev else None})
    name = gatemod.metric_name(ctx.opt.metric)
    task.finish(
        f"{name} {gatemod.fmt(evaluator.baseline)} (float32 TFLite {gatemod.fmt(tfl_measure.metric)}), "
        f"{tfl_measure.gzip_bytes} bytes gzip, p50 {gatemod.fmt(tfl_measure.latency_p50_ms)} ms"
    )
    return Baseline(tflite=tfl, measurement=measure, tflite_measurement=tfl_measure, evaluator=evaluator)
