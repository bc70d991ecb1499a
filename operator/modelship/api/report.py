"""The optimizer's report: the full JSON (report.json beside the artifact) and the one-line summary the
optimization Job writes to its termination message for the operator to read.

The summary must fit Kubernetes' termination-message limit (4096 bytes); ``Summary.to_line`` enforces it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StrictBool

from .common import ApiModel

TERMINATION_MESSAGE_LIMIT = 4096


class GateDecision(StrEnum):
    """Outcome of the accuracy gate."""

    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class FailureKind(StrEnum):
    """How a failed optimization is to be treated, as kopf splits PermanentError from TemporaryError."""

    PERMANENT = "Permanent"
    """The same input fails the same way (model file missing, digest mismatch, a model that cannot load, bad
    data): the stage fails at once, nothing is retried."""
    TEMPORARY = "Temporary"
    """The environment failed (network, object store, an unexpected internal error): retried with backoff."""


EXIT_CODES: dict[FailureKind, int] = {FailureKind.PERMANENT: 1, FailureKind.TEMPORARY: 75}
"""Exit code of ``modelship optimize`` per kind of failure (75 is sysexits' EX_TEMPFAIL). The optimization Job's
podFailurePolicy fails the Job at the first pod that exits with the permanent code, instead of retrying it."""


class ShipDecision(StrEnum):
    """What the operator should deploy."""

    OPTIMIZED = "Optimized"
    """The optimized artifact passed the gate."""
    BASELINE = "Baseline"
    """Gate failed with onFail DeployBaseline: the unoptimized model (converted) ships."""
    BEST_PASSING = "BestPassing"
    """Gate failed with onFail DeployBestPassing: the best passing intermediate result ships."""
    BLOCKED = "Blocked"
    """Gate failed with onFail Block (or nothing passed): nothing new ships."""


class Measurement(ApiModel):
    """Size, metric and speed of one model variant."""

    params: int | None = None
    """Parameter count."""
    nonzero_params: int | None = None
    """Parameters that are not zero (pruning)."""
    complexity: float | None = None
    """Sum of squared weights (the seed's complexity C)."""
    raw_bytes: int | None = None
    """Artifact size as stored and loaded."""
    gzip_bytes: int | None = None
    """Artifact size after gzip -9 (what a registry transfers)."""
    metric: float | None = None
    """Metric on the evaluation data."""
    drop: float | None = None
    """Metric drop against the baseline, in the gate's dropType."""
    latency_p50_ms: float | None = None
    """Median single-sample latency with the TFLite interpreter."""
    latency_p95_ms: float | None = None
    """95th-percentile single-sample latency."""
    throughput_per_s: float | None = None
    """Samples per second at the benchmark batch size."""
    threads: int | None = None
    """Interpreter threads the latency and throughput were measured with."""
    batch_size: int | None = None
    """Batch size of the throughput measurement."""


class StepReport(ApiModel):
    """What one step (or one auto candidate) did."""

    name: str
    """Step type, or candidate name such as prune+int8."""
    seconds: float | None = None
    """Wall time of the step."""
    fine_tuned: StrictBool = False
    """Whether the step fine-tuned on data (false: one-shot)."""
    passed: StrictBool | None = None
    """Whether this result passes the gate."""
    measurement: Measurement = Field(default_factory=Measurement)
    """Measurements after the step."""
    notes: list[str] = Field(default_factory=list)
    """Warnings and limits (e.g. layers skipped, Keras 3 PTQ-only)."""
    chain: list[str] = Field(default_factory=list)
    """Auto candidates: the steps the candidate ran, with their parameters."""
    skipped: bool = False
    """The step or candidate did not run (see notes: time budget, PTQ-only input, ...)."""
    error: str | None = None
    """Why the step or candidate failed (auto candidates fail alone; the search goes on)."""
    shipped: bool = False
    """This result is the artifact that ships."""


class Summary(ApiModel):
    """One-line JSON written to the termination message of the optimization Job."""

    ok: bool
    """false when the optimizer failed (error says why)."""
    error: Annotated[str, Field(max_length=1024)] | None = None
    """Readable error when ok is false."""
    failure: FailureKind | None = None
    """When ok is false: Permanent (also when unset) or Temporary."""
    source_digest: str | None = None
    """sha256 of the model as fetched."""
    source_bytes: int | None = None
    """Size of the model as fetched."""
    artifact: str | None = None
    """Path of the shipped artifact relative to the output directory."""
    artifact_digest: str | None = None
    """sha256 of the shipped artifact."""
    artifact_ref: str | None = None
    """oci://REPOSITORY@sha256:... where the artifact was pushed (revisions served without a build)."""
    metric_name: str | None = None
    """Metric name (accuracy, topK, mse, mae or the custom callable)."""
    baseline: float | None = None
    """Metric of the original model."""
    value: float | None = None
    """Metric of the shipped artifact."""
    drop: float | None = None
    """Drop of the shipped artifact against the baseline."""
    gate: GateDecision | None = None
    """Gate outcome."""
    decision: ShipDecision | None = None
    """What ships."""
    candidate: str | None = None
    """Which step chain or candidate ships."""
    original_bytes: int | None = None
    """Size of the original model (its file, or its float32 TFLite conversion)."""
    optimized_bytes: int | None = None
    """Raw size of the shipped artifact."""
    original_gzip_bytes: int | None = None
    """gzip -9 size of the original."""
    optimized_gzip_bytes: int | None = None
    """gzip -9 size of the shipped artifact."""
    compression_ratio: float | None = None
    """original_gzip_bytes / optimized_gzip_bytes."""
    latency_p50_ms: float | None = None
    """Median single-sample latency of the shipped artifact."""
    baseline_latency_p50_ms: float | None = None
    """Median single-sample latency of the float32 baseline."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    """Human-readable gate message with the numbers."""

    def to_line(self) -> str:
        """Compact JSON on one line, within the termination-message limit (long texts are cut first)."""
        data = self.wire()
        line = json.dumps(data, separators=(",", ":"), sort_keys=True)
        for key in ("message", "error"):
            if len(line.encode()) <= TERMINATION_MESSAGE_LIMIT:
                break
            if key in data:
                data[key] = data[key][:200]
                line = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if len(line.encode()) > TERMINATION_MESSAGE_LIMIT:
            raise ValueError("optimization summary does not fit the termination message")
        return line

    @classmethod
    def from_line(cls, text: str) -> Summary:
        """Parse a termination message; raises ValueError with a readable reason when it is not a summary."""
        text = text.strip()
        if not text:
            raise ValueError("the optimizer wrote no summary (empty termination message)")
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:
            raise ValueError(f"the optimizer's summary is not valid: {str(exc).splitlines()[0]}") from None


class Report(ApiModel):
    """The full optimization report (report.json beside the artifact)."""

    summary: Summary
    """The same summary the termination message carries."""
    revision: str | None = None
    """Revision the report belongs to."""
    model_format: str | None = None
    """Format of the input model."""
    baseline: Measurement = Field(default_factory=Measurement)
    """The original model, measured."""
    steps: list[StepReport] = Field(default_factory=list)
    """Each step (Steps) or candidate (Auto), in order."""
    result: Measurement = Field(default_factory=Measurement)
    """The shipped artifact, measured."""
    calibration_warnings: list[str] = Field(default_factory=list)
    """E.g. calibration data that does not cover the evaluation range."""
    notes: list[str] = Field(default_factory=list)
    """Limits that applied (Keras 3 input: post-training quantization only, ...)."""
    environment: dict[str, str] = Field(default_factory=dict)
    """Versions of TensorFlow, tf-keras, TFMOT and LiteRT used."""
    strategy: str | None = None
    """Steps, Auto, or Disabled (optimization.enabled false)."""
    objective: str | None = None
    """Auto: Size or Latency."""
    gate: dict[str, str | float] = Field(default_factory=dict)
    """The gate as applied: maxDrop, dropType, onFail."""
    baseline_tflite_metric: float | None = None
    """Metric of the float32 TFLite conversion of the original (differs from baseline.metric only by conversion)."""
    source_gzip_bytes: int | None = None
    """gzip -9 size of the model as fetched (a directory: of a deterministic tar)."""
    export_format: str | None = None
    """tflite or savedmodel."""
    inputs: list[str] = Field(default_factory=list)
    """The model's input names (what a client sends; the optimized model keeps them)."""
    outputs: list[str] = Field(default_factory=list)
    """The model's output names."""
    metric_output: str | None = None
    """The output the metric read (metric.output, or the only one)."""
    seconds: float | None = None
    """Wall time of the whole optimization."""
