"""SavedModel serving through TensorFlow (imported only here, only when a SavedModel is served)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .model import Runner, ServedModel
from .tensors import Array, TensorSpec, datatype_of


def _import_tf() -> Any:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - depends on the image
        raise RuntimeError(
            "serving a SavedModel needs TensorFlow (install modelship[optimize]): the serving image "
            "(modelship/serving) serves .tflite models; build or serve a SavedModel on the optimizer image "
            "(modelship/optimizer, images.servingTensorflow)"
        ) from e
    return tf


def _spec(tf: Any, name: str, s: Any) -> TensorSpec:
    dims = s.shape.as_list() if s.shape.rank is not None else []
    shape = tuple(-1 if d is None else int(d) for d in dims)
    dtype = "BYTES" if s.dtype == tf.string else datatype_of(s.dtype.as_numpy_dtype)
    return TensorSpec(name=name, datatype=dtype, shape=shape, tensor_name=str(getattr(s, "name", "") or name))


class _SavedModelRunner(Runner):
    def __init__(self, model: SavedModelModel) -> None:
        self.model = model

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        tf = self.model.tf
        kwargs = {}
        for name, arr in inputs.items():
            kwargs[name] = tf.constant(arr.astype(np.bytes_) if arr.dtype == np.object_ else arr)
        out = self.model.fn(**kwargs)
        result: dict[str, Array] = {}
        for name in self.model.output_by_name:
            value = out[name].numpy()
            if value.dtype.kind == "S":
                value = value.astype(np.object_)
            result[name] = value
        return result

    def warmup(self) -> None:
        inputs = {}
        for s in self.model.inputs:
            shape = [d if d > 0 else 1 for d in s.shape]
            if s.datatype == "BYTES":
                inputs[s.name] = np.full(shape, b"", dtype=np.object_)
            else:
                inputs[s.name] = np.zeros(shape, dtype=np.dtype(self.model.np_dtypes[s.name]))
        self.run(inputs)


class SavedModelModel(ServedModel):
    platform = "tensorflow_savedmodel"

    def __init__(self, path: str, name: str, version: str) -> None:
        tf = _import_tf()
        self.tf = tf
        loaded = tf.saved_model.load(path)
        sigs = loaded.signatures
        key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
        self.fn = sigs[key]
        self.signature_name = key
        self._loaded = loaded  # keep variables alive
        _, kw = self.fn.structured_input_signature
        inputs = [_spec(tf, n, s) for n, s in kw.items()]
        outputs = [_spec(tf, n, s) for n, s in self.fn.structured_outputs.items()]
        self.np_dtypes = {n: (np.object_ if s.dtype == tf.string else s.dtype.as_numpy_dtype) for n, s in kw.items()}
        batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in (*inputs, *outputs))
        super().__init__(name, version, inputs, outputs, batchable=batchable, path=path)

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        return _SavedModelRunner(self)
