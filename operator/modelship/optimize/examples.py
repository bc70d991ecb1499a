"""Small deterministic example models and data for demos, tests and benchmarks (no downloads).

* ``linear``: the seed's y = 2x - 1, a Dense(1) model trained on x in [-1, 4]; held-out evaluation data in the same
  range, calibration data over [-1, 4], and a "wide" evaluation set reaching x = 10 that shows the calibration trap.
* ``digits-mlp`` / ``digits-cnn``: sklearn's bundled 8x8 digits (ships in the wheel), stratified 80/20 split.

Each example is written under ``ROOT/CLAIM/NAME/`` so it can be addressed as ``pvc://CLAIM/NAME/...`` with
``--pvc-root ROOT`` (data URIs in the API need a scheme), and comes with a ready :class:`Optimization`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.optimization import (
    DataFormat,
    DataRef,
    FineTune,
    Gate,
    Metric,
    MetricType,
    Optimization,
    OptimizationData,
    OptimizationStep,
    PruneParams,
    QuantizeMode,
    QuantizeParams,
    StepType,
)
from . import tfenv

NAMES = ("linear", "digits-mlp", "digits-cnn")
DEFAULT_CLAIM = "examples"


@dataclass(frozen=True)
class Example:
    """An example model with its data files and a default optimization."""

    name: str
    root: Path
    """The --pvc-root these files live under."""
    claim: str
    model: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Data files by role: train, eval, calibration (and eval_wide for linear)."""
    optimization: Optimization = field(default_factory=lambda: Optimization(enabled=False))

    @property
    def model_uri(self) -> str:
        return self.uri(self.model)

    def uri(self, path: Path) -> str:
        return f"pvc://{self.claim}/{path.relative_to(self.root / self.claim).as_posix()}"

    def data_ref(self, role: str, *, labels: str | None = "y", samples: int | None = None) -> DataRef:
        return DataRef(uri=self.uri(self.files[role]), format=DataFormat.NPZ, labels=labels, samples=samples)


def _dir(root: Path, claim: str, name: str) -> Path:
    d = Path(root) / claim / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save(model: Any, path: Path) -> None:
    with tfenv.quiet_native_stderr():
        model.save(str(path), include_optimizer=False)


def linear(root: Path, *, claim: str = DEFAULT_CLAIM, seed: int = 0, epochs: int = 60) -> Example:
    """Train y = 2x - 1 (Dense(1), SGD) on x in [-1, 4]; write model.h5, train/eval/calibration/eval_wide .npz."""
    t = tfenv.load()
    keras = t.keras
    keras.utils.set_random_seed(seed)
    d = _dir(root, claim, "linear")
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 4.0, 200, dtype=np.float32).reshape(-1, 1)
    y = 2 * x - 1
    model = keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)], name="linear")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=16, shuffle=True, verbose=0)
    model_path = d / "model.h5"
    _save(model, model_path)
    x_eval = rng.uniform(-1.0, 4.0, size=(100, 1)).astype(np.float32)
    x_wide = np.concatenate([x_eval, rng.uniform(4.0, 10.0, size=(20, 1)).astype(np.float32)])
    files = {
        "train": d / "train.npz",
        "eval": d / "eval.npz",
        "calibration": d / "calibration.npz",
        "eval_wide": d / "eval_wide.npz",
    }
    np.savez(files["train"], x=x, y=y)
    np.savez(files["eval"], x=x_eval, y=2 * x_eval - 1)
    np.savez(files["calibration"], x=np.linspace(-1.0, 4.0, 64, dtype=np.float32).reshape(-1, 1))
    np.savez(files["eval_wide"], x=x_wide, y=2 * x_wide - 1)
    ex = Example(name="linear", root=Path(root), claim=claim, model=model_path, files=files)
    opt = Optimization(
        steps=[OptimizationStep(type=StepType.QUANTIZE, quantize=QuantizeParams(mode=QuantizeMode.INT8))],
        data=OptimizationData(calibration=ex.data_ref("calibration", labels=None), evaluation=ex.data_ref("eval")),
        metric=Metric(type=MetricType.MAE),
        gate=Gate(max_drop=0.05),
    )
    return Example(name=ex.name, root=ex.root, claim=claim, model=model_path, files=files, optimization=opt)


def _digits(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=seed)
    return x_tr, x_te, y_tr, y_te


def digits(
    root: Path, kind: str = "mlp", *, claim: str = DEFAULT_CLAIM, seed: int = 0, epochs: int | None = None
) -> Example:
    """Train a digits MLP (64-256-128-10) or CNN (Conv32-Conv64-Pool-Dense128-10); write model.h5 and .npz splits."""
    if kind not in ("mlp", "cnn"):
        raise ValueError("kind is mlp or cnn")
    t = tfenv.load()
    keras = t.keras
    keras.utils.set_random_seed(seed)
    name = f"digits-{kind}"
    d = _dir(root, claim, name)
    x_tr, x_te, y_tr, y_te = _digits(seed)
    layers = keras.layers
    if kind == "mlp":
        model = keras.Sequential(
            [
                layers.Input((64,)),
                layers.Dense(256, activation="relu"),
                layers.Dense(128, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ],
            name="digits_mlp",
        )
        epochs = 40 if epochs is None else epochs
    else:
        x_tr, x_te = x_tr.reshape(-1, 8, 8, 1), x_te.reshape(-1, 8, 8, 1)
        model = keras.Sequential(
            [
                layers.Input((8, 8, 1)),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.Conv2D(64, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(128, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ],
            name="digits_cnn",
        )
        epochs = 25 if epochs is None else epochs
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    model_path = d / "model.h5"
    _save(model, model_path)
    files = {"train": d / "train.npz", "eval": d / "eval.npz", "calibration": d / "calibration.npz"}
    np.savez(files["train"], x=x_tr, y=y_tr)
    np.savez(files["eval"], x=x_te, y=y_te)
    np.savez(files["calibration"], x=x_tr[:300])
    ex = Example(name=name, root=Path(root), claim=claim, model=model_path, files=files)
    opt = Optimization(
        steps=[
            OptimizationStep(
                type=StepType.PRUNE,
                prune=PruneParams(target_sparsity=0.8),
                fine_tune=FineTune(epochs=4, learning_rate=1e-3),
            ),
            OptimizationStep(type=StepType.QUANTIZE, quantize=QuantizeParams(mode=QuantizeMode.INT8)),
        ],
        data=OptimizationData(
            calibration=ex.data_ref("calibration", labels=None),
            evaluation=ex.data_ref("eval"),
            fine_tune=ex.data_ref("train"),
        ),
        metric=Metric(type=MetricType.ACCURACY),
        gate=Gate(max_drop=0.01),
    )
    return Example(name=name, root=ex.root, claim=claim, model=model_path, files=files, optimization=opt)


def make(name: str, root: Path, *, claim: str = DEFAULT_CLAIM, seed: int = 0) -> Example:
    """One of NAMES."""
    if name == "linear":
        return linear(root, claim=claim, seed=seed)
    if name in ("digits-mlp", "digits-cnn"):
        return digits(root, name.split("-", 1)[1], claim=claim, seed=seed)
    raise ValueError(f"unknown example {name!r}; choose from {', '.join(NAMES)}")
