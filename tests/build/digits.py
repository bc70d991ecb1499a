"""A small real model for the image tests: an MLP on sklearn's bundled digits (nothing is downloaded),
converted to int8 TFLite (float input/output), written as an optimizer output directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .support import sha256

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class DigitsOutput:
    path: Path
    """The optimizer-style output directory (model.tflite + report.json)."""
    digest: str
    x: np.ndarray
    """A few test samples, (n, 64) float32."""
    expected: np.ndarray
    """What the TFLite interpreter answers for them, (n, 10)."""


def interpreter_predict(model: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    rows = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None, :].astype(inp["dtype"]))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def make_digits_output(outdir: Path, samples: int = 6) -> DigitsOutput:
    import tensorflow as tf
    import tf_keras as keras
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(64,), name="pixels"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=64, verbose=0)
    accuracy = float(model.evaluate(x[1400:], y[1400:], verbose=0)[1])

    def representative() -> object:
        for i in range(0, 200, 2):
            yield [x[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    blob = converter.convert()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "model.tflite").write_bytes(blob)
    digest = sha256(blob)
    report = {
        "revision": "rdigits0001",
        "modelFormat": "keras",
        "summary": {
            "ok": True,
            "sourceDigest": sha256(b"digits-mlp"),
            "artifact": "model.tflite",
            "artifactDigest": digest,
            "metricName": "accuracy",
            "baseline": accuracy,
            "gate": "Skipped",
            "decision": "Optimized",
            "candidate": "int8",
            "optimizedBytes": len(blob),
        },
    }
    (outdir / "report.json").write_text(json.dumps(report, indent=2))
    xs = x[1400 : 1400 + samples]
    return DigitsOutput(outdir, digest, xs, interpreter_predict(outdir / "model.tflite", xs))
