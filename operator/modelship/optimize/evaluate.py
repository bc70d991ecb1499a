"""Scoring a model variant: the metric on the evaluation data, its drop against the baseline, the gate's verdict,
sizes, weight statistics and latency."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..api.optimization import Optimization
from ..api.report import Measurement, StepReport
from . import gate as gatemod
from .data import Dataset
from .measure import Runner, WeightStats, gzip_size, keras_weight_stats, speed, variables_weight_stats
from .prepare import Context
from .signature import Features, pick

Array = np.ndarray[Any, Any]
THROUGHPUT_BATCH = 32
"""Batch size of the throughput measurement (measure.speed's default)."""


@dataclass(frozen=True)
class Evaluator:
    """Measures variants against the evaluation data and, once known, the baseline's metric."""

    opt: Optimization
    evaluation: Dataset | None
    output: str
    """The model output the metric reads."""
    sample: Features
    custom: Callable[[Any, Any], Any] | None
    saved_model: Any | None
    """The plain SavedModel input (its variables give the weight statistics when there is no tf-keras model)."""
    threads: int
    speed_seconds: float
    baseline: float | None = None
    """The original model's metric (None until measured, or without evaluation data)."""

    @classmethod
    def of(cls, ctx: Context) -> Evaluator:
        return cls(
            opt=ctx.opt,
            evaluation=ctx.data.evaluation,
            output=ctx.output,
            sample=ctx.sample,
            custom=ctx.custom,
            saved_model=ctx.loaded.saved_model,
            threads=ctx.request.threads,
            speed_seconds=ctx.request.speed_seconds,
        )

    def with_baseline(self, baseline: float | None) -> Evaluator:
        return dataclasses.replace(self, baseline=baseline)

    def metric(self, outputs: Mapping[str, Array]) -> float | None:
        """The metric of a model's outputs on the evaluation data (None without labelled evaluation data)."""
        ev = self.evaluation
        if ev is None or ev.y is None:
            return None
        return gatemod.compute(self.opt.metric, ev.y, pick(outputs, self.output), self.custom)

    def measure(self, tflite: bytes, stats: WeightStats | None) -> Measurement:
        """Metric, drop, sizes and speed of a TFLite model."""
        ev = self.evaluation
        metric = d = None
        if ev is not None:
            runner = Runner(tflite, batch_size=min(64, len(ev)), threads=self.threads)
            metric = self.metric(runner.run(ev.inputs))
            if metric is not None and self.baseline is not None:
                d = gatemod.drop(self.baseline, metric, self.opt.metric, self.opt.gate)
        sp = speed(tflite, self.sample, threads=self.threads, max_seconds=self.speed_seconds)
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
            threads=self.threads,
            batch_size=THROUGHPUT_BATCH if sp.throughput_per_s is not None else None,
        )

    def stats(self, model: Any | None) -> WeightStats | None:
        """Weight statistics of a float tf-keras model, or of the plain SavedModel input."""
        if model is not None:
            return keras_weight_stats(model)
        if self.saved_model is not None:
            return variables_weight_stats(getattr(self.saved_model, "variables", []))
        return None

    def judge(self, m: Measurement) -> bool | None:
        """Whether a measured drop passes the gate (None: nothing to judge)."""
        if m.drop is None:
            return None
        return gatemod.passes(m.drop, self.opt.gate)

    def line(self, r: StepReport) -> str:
        """The one-line result a progress bar finishes with."""
        m = r.measurement
        name = gatemod.metric_name(self.opt.metric)
        verdict = {True: "passes", False: "fails", None: "not gated"}[r.passed]
        return (
            f"{name} {gatemod.fmt(m.metric)} (drop {gatemod.fmt(m.drop)}, {verdict}), "
            f"{m.gzip_bytes} bytes gzip, p50 {gatemod.fmt(m.latency_p50_ms)} ms"
        )
