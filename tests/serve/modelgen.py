"""Build small real TFLite models for the serving tests and benchmark (nothing is downloaded).

Imports TensorFlow, so only call it from test fixtures / the benchmark, never from the server.
Run as a script to build the models into a directory: ``python modelgen.py OUTDIR [--mobilenet]``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


@dataclass(frozen=True)
class DigitsModels:
    float32: Path
    int8: Path  # full-integer weights and activations, float input/output kept
    int8_io: Path  # integer-only: int8 input and output tensors
    float16: Path
    dynamic: Path
    saved_model: Path
    x_test: np.ndarray  # (n, 8, 8, 1) float32 in [0, 1]
    y_test: np.ndarray


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_tr, x_te, y_tr, y_te


def build_digits(outdir: Path, epochs: int = 8) -> DigitsModels:
    """Train a small digits CNN and convert it five ways."""
    import tensorflow as tf
    import tf_keras as keras

    outdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_tr, x_te, y_tr, y_te = _digits()
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=64, verbose=0)

    def rep() -> Any:
        for i in range(0, 200):
            yield [x_tr[i : i + 1]]

    def convert(kind: str) -> bytes:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind != "float32":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "float16":
            c.target_spec.supported_types = [tf.float16]
        if kind in ("int8", "int8_io"):
            c.representative_dataset = rep
        if kind == "int8_io":
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        return bytes(c.convert())

    paths: dict[str, Path] = {}
    for kind in ("float32", "int8", "int8_io", "float16", "dynamic"):
        p = outdir / f"digits_{kind}.tflite"
        p.write_bytes(convert(kind))
        paths[kind] = p
    # the same weights with a fixed batch of 1 (shape_signature [1, 8, 8, 1]): served without batching
    fn = tf.function(lambda image: model(image)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32, name="image")
    )
    fixed = tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()
    (outdir / "digits_fixed.tflite").write_bytes(bytes(fixed))
    sm = outdir / "digits_savedmodel" / "1"
    model.export(str(sm))
    build_sequence_model(outdir)
    return DigitsModels(
        float32=paths["float32"],
        int8=paths["int8"],
        int8_io=paths["int8_io"],
        float16=paths["float16"],
        dynamic=paths["dynamic"],
        saved_model=sm.parent,
        x_test=x_te,
        y_test=y_te,
    )


def build_sequence_model(outdir: Path) -> Path:
    """A model with a dynamic non-batch dimension (input [-1, -1, 3]): exercises resizing per request."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.layers.Input(shape=(None, 3), name="seq"),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, name="score"),
        ]
    )
    p = outdir / "sequence.tflite"
    p.write_bytes(bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert()))
    return p


def build_mobilenet_int8(outdir: Path, calibration_samples: int = 8) -> Path:
    """MobileNetV2 (random init, weights=None downloads nothing) converted to full int8 with float I/O."""
    import tensorflow as tf
    import tf_keras as keras

    outdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None)
    rng = np.random.default_rng(0)

    def rep() -> Any:
        for _ in range(calibration_samples):
            yield [rng.uniform(-1.0, 1.0, size=(1, 224, 224, 3)).astype(np.float32)]

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    p = outdir / "mobilenetv2_int8.tflite"
    p.write_bytes(bytes(c.convert()))
    return p


if __name__ == "__main__":
    out = Path(sys.argv[1])
    m = build_digits(out)
    print(m)
    if "--mobilenet" in sys.argv:
        print(build_mobilenet_int8(out))
