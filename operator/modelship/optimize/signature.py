"""A model's named inputs and outputs, and named input rows (``Features``) that follow them.

Names are the model's own: a tf-keras model's input layer and output names, a SavedModel's serving_default
signature keys, a TFLite model's signature keys. A TFLite conversion of a tf-keras model keeps those names, but
NOT their order: TFLite tensors are matched by name, never by position (except when there is only one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import OptimizeError

Array = np.ndarray[Any, Any]
Features = dict[str, Array]
"""Model input name -> rows, in the model's input order."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    """Including the batch dimension."""
    dtype: str = "float32"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def output(self, name: str | None) -> TensorInfo:
        """The output named ``name`` (metric.output), or the only output when ``name`` is None."""
        if name is None:
            if len(self.outputs) != 1:
                raise OptimizeError(
                    f"the model has {len(self.outputs)} outputs ({', '.join(self.output_names)}): "
                    "name the one the metric reads with metric.output"
                )
            return self.outputs[0]
        for t in self.outputs:
            if t.name == name:
                return t
        raise OptimizeError(
            f"metric.output: the model has no output named {name!r} (its outputs: {', '.join(self.output_names)})"
        )


def rows(features: Mapping[str, Array], index: Any) -> Features:
    """The same rows (an index, slice or index array) of every input."""
    return {name: a[index] for name, a in features.items()}


def count(features: Mapping[str, Array]) -> int:
    """Rows per input (every input has as many)."""
    return len(next(iter(features.values())))


def keras_inputs(features: Mapping[str, Array]) -> Array | list[Array]:
    """What tf-keras predict/fit/call take: the array of a one-input model, else a list in the model's order."""
    arrays = list(features.values())
    return arrays[0] if len(arrays) == 1 else arrays


def pick(outputs: Mapping[str, Array], name: str) -> Array:
    """The output named ``name`` (the only output of a one-output model, whatever its name)."""
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    if name not in outputs:
        raise OptimizeError(f"the model has no output named {name!r} (its outputs: {', '.join(outputs)})")
    return outputs[name]


def bind(features: Mapping[str, Array], names: list[str], what: str) -> dict[str, Array]:
    """``features`` keyed by ``names`` (a model's inputs): by name, or the only one to the only one."""
    if len(features) == 1 and len(names) == 1:
        return {names[0]: next(iter(features.values()))}
    missing = [n for n in names if n not in features]
    if missing:
        raise OptimizeError(
            f"{what} has inputs {', '.join(names)} but the data has {', '.join(features)} (no {', '.join(missing)})"
        )
    return {n: features[n] for n in names}
