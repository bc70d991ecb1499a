"""The held-out models: none of them is used by the optimizer's own tests (tests/optimize), each has layers those
tests do not have, and each comes with data the test makes (synthetic, or sklearn's bundled digits) and a
ModelDeployment that optimizes it.

| case             | layers                                   | saved as   | inputs                   | task           |
|------------------|------------------------------------------|------------|--------------------------|----------------|
| conv1d-waves     | Conv1D, MaxPooling1D, GlobalMaxPooling1D | .h5        | one (64x1 signal)        | 3-class, acc.  |
| embedding-tokens | Embedding, GlobalAveragePooling1D        | .keras     | one (20 int32 token ids) | binary, acc.   |
| residual-bn      | Conv2D, BatchNormalization, residual Add | SavedModel | one (8x8x1 digit)        | 10-class, acc. |
| lstm-regression  | LSTM                                     | SavedModel | one (16x2 sequence)      | regression MAE |
| two-input-price  | Embedding + Dense branches, Concatenate  | .keras     | two (numeric, tokens)    | regression MSE |
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
CLAIM = "models"


@dataclass(frozen=True)
class Case:
    name: str
    model: Path
    """The saved model (a file, or a SavedModel directory)."""
    spec: dict[str, Any]
    """The ModelDeployment (its spec.model and spec.optimization are what `modelship optimize --spec` runs)."""
    inputs: dict[str, Array]
    """The evaluation set as a client sends it: model input name -> rows."""
    y: Array
    metric: str
    """accuracy, mae or mse: computed by the test from the served answers."""
    keras_metric: float
    """The metric of the original model on the evaluation set, computed here with tf-keras."""


def metric(name: str, y: Array, pred: Array) -> float:
    """The test's own metric (not the optimizer's code): accuracy of argmax (or p > 0.5 for one sigmoid
    output), mean absolute or squared error."""
    if name == "accuracy":
        classes = np.argmax(pred, axis=1) if pred.shape[-1] > 1 else (pred.reshape(len(pred)) > 0.5).astype(int)
        return float(np.mean(classes == y.reshape(len(y))))
    diff = pred.astype(np.float64).reshape(len(y), -1) - y.astype(np.float64).reshape(len(y), -1)
    return float(np.mean(np.abs(diff)) if name == "mae" else np.mean(diff**2))


def _dir(root: Path, name: str) -> Path:
    d = root / CLAIM / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _uri(name: str, file: str) -> str:
    return f"pvc://{CLAIM}/{name}/{file}"


def _npz_ref(name: str, file: str, **extra: Any) -> dict[str, Any]:
    return {"uri": _uri(name, file), "format": "npz", **extra}


def _spec(name: str, model_file: str, fmt: str, optimization: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": _uri(name, model_file), "format": fmt}, "optimization": optimization},
    }


def _save(model: Any, path: Path) -> None:
    if path.suffix == ".keras":
        model.save(str(path))
    elif path.suffix == ".h5":
        model.save(str(path), include_optimizer=False)
    else:
        model.save(str(path), include_optimizer=False, save_format="tf")  # a SavedModel directory


def _npz_case(
    root: Path,
    name: str,
    model: Any,
    model_file: str,
    fmt: str,
    train: tuple[Array, Array],
    test: tuple[Array, Array],
    metric_name: str,
    gate: dict[str, Any],
    steps: list[dict[str, Any]] | None = None,
) -> Case:
    """Save the model and its train/eval .npz (arrays x, y), optimized by ``steps`` (default: int8 calibrated on
    training rows), judged by ``metric_name`` and ``gate``."""
    d = _dir(root, name)
    _save(model, d / model_file)
    np.savez(d / "train.npz", x=train[0], y=train[1])
    np.savez(d / "eval.npz", x=test[0], y=test[1])
    data = {
        "calibration": _npz_ref(name, "train.npz", labels=None, samples=200),
        "evaluation": _npz_ref(name, "eval.npz"),
    }
    if steps is not None and any("fineTune" in s for s in steps):
        data["fineTune"] = _npz_ref(name, "train.npz")
    optimization = {
        "steps": steps or [{"type": "quantize", "quantize": {"mode": "int8"}}],
        "data": data,
        "metric": {"type": metric_name},
        "gate": gate,
    }
    inputs = {model.input_names[0]: test[0]}
    return Case(name, d / model_file, _spec(name, model_file, fmt, optimization), inputs, test[1], metric_name,
                _keras_metric(model, metric_name, inputs, test[1]))  # fmt: skip


def _keras_metric(model: Any, name: str, inputs: dict[str, Array], y: Array) -> float:
    arrays = [inputs[n] for n in model.input_names]
    pred = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0)
    return metric(name, y, np.asarray(pred))


def conv1d_waves(root: Path, keras: Any) -> Case:
    """Sine, square and triangle waves of random frequency, phase and amplitude, with noise."""
    name, rng = "conv1d-waves", np.random.default_rng(1)

    def waves(n: int) -> tuple[Array, Array]:
        t = np.linspace(0.0, 1.0, 64)
        y = rng.integers(0, 3, size=n)
        phase = 2 * np.pi * (rng.uniform(2, 6, size=(n, 1)) * t + rng.uniform(0, 1, size=(n, 1)))
        shapes = np.stack([np.sin(phase), np.sign(np.sin(phase)), 2 / np.pi * np.arcsin(np.sin(phase))], axis=1)
        x = shapes[np.arange(n), y] * rng.uniform(0.5, 1.5, size=(n, 1)) + rng.normal(0, 0.15, size=(n, 64))
        return x[..., None].astype(np.float32), y.astype(np.int64)

    x_tr, y_tr = waves(600)
    x_te, y_te = waves(240)
    L = keras.layers
    model = keras.Sequential(
        [
            L.Input((64, 1)),
            L.Conv1D(16, 5, activation="relu"),
            L.MaxPooling1D(2),
            L.Conv1D(32, 3, activation="relu"),
            L.GlobalMaxPooling1D(),
            L.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=12, batch_size=32, verbose=0)
    steps = [
        {"type": "prune", "prune": {"targetSparsity": 0.5}, "fineTune": {"epochs": 2, "learningRate": 1e-3}},
        {"type": "quantize", "quantize": {"mode": "int8"}},
    ]
    return _npz_case(root, name, model, "model.h5", "h5", (x_tr, y_tr), (x_te, y_te), "accuracy", {"maxDrop": 0.03},
                     steps)  # fmt: skip


def embedding_tokens(root: Path, keras: Any) -> Case:
    """Token-id sequences whose class shows in which half of the vocabulary most tokens come from."""
    name, rng = "embedding-tokens", np.random.default_rng(2)

    def tokens(n: int) -> tuple[Array, Array]:
        y = rng.integers(0, 2, size=n)
        own = rng.integers(1, 50, size=(n, 20)) + 49 * y[:, None]
        noise = rng.integers(1, 99, size=(n, 20))
        x = np.where(rng.uniform(size=(n, 20)) < 0.6, own, noise)
        return x.astype(np.int32), y.astype(np.int64)

    x_tr, y_tr = tokens(800)
    x_te, y_te = tokens(240)
    L = keras.layers
    model = keras.Sequential(
        [
            L.Input((20,), dtype="int32"),
            L.Embedding(100, 16),
            L.GlobalAveragePooling1D(),
            L.Dense(16, activation="relu"),
            L.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(x_tr, y_tr, epochs=8, batch_size=32, verbose=0)
    return _npz_case(root, name, model, "model.keras", "keras", (x_tr, y_tr), (x_te, y_te), "accuracy",
                     {"maxDrop": 0.02})  # fmt: skip


def residual_bn(root: Path, keras: Any) -> Case:
    """sklearn's 8x8 digits through a small residual CNN with batch normalization."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    name = "residual-bn"
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=3)
    L = keras.layers
    inp = L.Input((8, 8, 1), name="image")
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inp)))
    r = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(h)))
    r = L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(r))
    h = L.ReLU()(L.Add()([h, r]))
    out = L.Dense(10, activation="softmax", name="digit")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=12, batch_size=32, verbose=0)
    return _npz_case(root, name, model, "saved_model", "savedmodel", (x_tr, y_tr), (x_te, y_te), "accuracy",
                     {"maxDrop": 0.02})  # fmt: skip


def lstm_regression(root: Path, keras: Any) -> Case:
    """A noisy two-feature sequence; the target is the mean of the first feature over the last four steps
    plus half the last value of the second."""
    name, rng = "lstm-regression", np.random.default_rng(4)

    def sequences(n: int) -> tuple[Array, Array]:
        x = rng.normal(0, 1, size=(n, 16, 2)).astype(np.float32)
        y = x[:, -4:, 0].mean(axis=1) + 0.5 * x[:, -1, 1]
        return x, y.astype(np.float32).reshape(n, 1)

    x_tr, y_tr = sequences(800)
    x_te, y_te = sequences(120)
    L = keras.layers
    model = keras.Sequential([L.Input((16, 2)), L.LSTM(16), L.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x_tr, y_tr, epochs=15, batch_size=32, verbose=0)
    return _npz_case(root, name, model, "saved_model", "savedmodel", (x_tr, y_tr), (x_te, y_te), "mae",
                     {"maxDrop": 0.05})  # fmt: skip


def two_input_price(root: Path, keras: Any) -> Case:
    """A price from six numeric features and eight category tokens (each token has a hidden value); the data
    is a CSV whose columns num_* and tok_* are mapped to the inputs numeric and tokens by prefix."""
    name, rng = "two-input-price", np.random.default_rng(5)
    weights, token_value = rng.normal(size=6), rng.normal(size=30)

    def rows(n: int) -> tuple[Array, Array, Array]:
        num = rng.normal(size=(n, 6)).astype(np.float32)
        tok = rng.integers(0, 30, size=(n, 8)).astype(np.int32)
        y = num @ weights + token_value[tok].mean(axis=1)
        return num, tok, y.astype(np.float32).reshape(n, 1)

    train, test = rows(1000), rows(200)
    L = keras.layers
    numeric = L.Input((6,), name="numeric")
    tokens = L.Input((8,), dtype="int32", name="tokens")
    h = L.Concatenate()(
        [L.Dense(32, activation="relu")(numeric), L.GlobalAveragePooling1D()(L.Embedding(30, 8)(tokens))]
    )
    price = L.Dense(1, name="price")(L.Dense(32, activation="relu")(h))
    model = keras.Model([numeric, tokens], price)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit([train[0], train[1]], train[2], epochs=25, batch_size=32, verbose=0)
    d = _dir(root, name)
    _save(model, d / "model.keras")
    for split, (num, tok, y) in (("train", train), ("eval", test)):
        with (d / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*(f"num_{i}" for i in range(6)), *(f"tok_{i}" for i in range(8)), "price"])
            for a, b, c in zip(num, tok, y, strict=True):
                w.writerow([*(f"{v:.6g}" for v in a), *(str(int(v)) for v in b), f"{c[0]:.6g}"])
    mapping = {"numeric": "num_", "tokens": "tok_"}

    def ref(split: str, **extra: Any) -> dict[str, Any]:
        return {"uri": _uri(name, f"{split}.csv"), "format": "csv", "inputs": mapping, "labels": "price", **extra}

    optimization = {  # int8: the float and the integer input are both calibrated, from the same CSV rows
        "steps": [{"type": "quantize", "quantize": {"mode": "int8"}}],
        "data": {"calibration": ref("train", samples=300), "evaluation": ref("eval")},
        "metric": {"type": "mse"},
        "gate": {"maxDrop": 0.5, "dropType": "relative"},
    }
    # what a client sends: the CSV's values as written (rounded to 6 digits), like the optimizer reads them
    ev = np.loadtxt(d / "eval.csv", delimiter=",", skiprows=1, dtype=np.float64)
    inputs = {"numeric": ev[:, :6].astype(np.float32), "tokens": ev[:, 6:14].astype(np.int32)}
    y = ev[:, 14:].astype(np.float32)
    return Case(name, d / "model.keras", _spec(name, "model.keras", "keras", optimization), inputs, y, "mse",
                _keras_metric(model, "mse", inputs, y))  # fmt: skip


CASES: dict[str, Callable[[Path, Any], Case]] = {
    "conv1d-waves": conv1d_waves,
    "embedding-tokens": embedding_tokens,
    "residual-bn": residual_bn,
    "lstm-regression": lstm_regression,
    "two-input-price": two_input_price,
}
