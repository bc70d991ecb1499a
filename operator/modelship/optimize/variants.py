"""Model variants: the state a chain of steps carries, and the measured results the gate chooses among."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..api.report import StepReport
from . import gate as gatemod
from .conversion import convert
from .modelio import LoadedModel
from .tfenv import TF


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


def tflite_of(t: TF, loaded: LoadedModel, state: State) -> bytes:
    """The variant as TFLite: its quantized flatbuffer, or its (cached) float32 conversion."""
    if state.tflite is not None:
        return state.tflite
    if state.float_tflite is None:
        if state.keras is not None:
            state.float_tflite = convert(t, keras_model=state.keras)
        else:
            state.float_tflite = convert(t, saved_model_dir=loaded.path)
    return state.float_tflite


@dataclass(frozen=True)
class Variant:
    """A measured result: a step of the chain or an auto candidate."""

    report: StepReport
    tflite: bytes
    keras: Any | None
    name: str
    """The chain that produced it (prune+int8) or the auto candidate's name."""

    def outcome(self) -> gatemod.Outcome:
        """What the gate's decision needs to know about it."""
        m = self.report.measurement
        return gatemod.Outcome(
            name=self.name, passed=self.report.passed, gzip_bytes=m.gzip_bytes, latency_ms=m.latency_p50_ms
        )


class Search(NamedTuple):
    """What the steps or the auto search produced."""

    variants: list[Variant]
    """The measured results, in order (what the gate chooses among)."""
    reports: list[StepReport]
    """Every step or candidate in order, including skipped and failed ones."""
    notes: list[str]
    """Notes for the whole report."""
