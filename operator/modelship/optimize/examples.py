"""Small deterministic example models and data for demos, tests and benchmarks (no downloads).

* ``linear``: the seed's y = 2x - 1, a Dense(1) model trained on x in [-1, 4]; held-out evaluation data in the same
  range, calibration data over [-1, 4], and a "wide" evaluation set reaching x = 10 that shows the calibration trap.
* ``digits-mlp`` / ``digits-cnn``: sklearn's bundled 8x8 digits (ships in the wheel), stratified 80/20 split; without
  scikit-learn (the ``examples`` extra) they, and ``two-inputs``, fail with an OptimizeError saying what to install.
* ``two-inputs``: a functional model with two inputs and two outputs, saved as ``.keras``: ``first`` takes the top
  half of a digit (4x8 pixels), ``second`` the bottom half; ``digit`` is the class (softmax), ``parity`` whether it
  is odd (sigmoid). The data names its arrays ``top``, ``bottom``, ``y`` (and ``odd``), mapped to the inputs with
  ``DataRef.inputs``; the metric reads ``digit``.

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
from .errors import OptimizeError

NAMES = ("linear", "digits-mlp", "digits-cnn", "two-inputs")
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

    def data_ref(
        self,
        role: str,
        *,
        labels: str | None = "y",
        samples: int | None = None,
        inputs: dict[str, str] | None = None,
    ) -> DataRef:
        return DataRef(
            uri=self.uri(self.files[role]), format=DataFormat.NPZ, labels=labels, samples=samples, inputs=inputs
        )


def _dir(root: Path, claim: str, name: str) -> Path:
    d = Path(root) / claim / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save(model: Any, path: Path) -> None:
    options = {} if path.suffix == ".keras" else {"include_optimizer": False}  # .keras: the optimizer is not saved
    with tfenv.quiet_native_stderr():
        model.save(str(path), **options)


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


SKLEARN_EXTRA = "examples"
"""The extra of pyproject.toml that carries scikit-learn (the digits examples' data)."""


def _require_sklearn(example: str) -> None:
    """Fail early, before TensorFlow loads, with what to install when scikit-learn is not there."""
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise OptimizeError(
            f"the {example} example trains on scikit-learn's bundled digits, and scikit-learn is not installed "
            f"({exc}): install the {SKLEARN_EXTRA!r} extra, e.g. pip install 'modelship[{SKLEARN_EXTRA}]'"
        ) from None


def _digits(seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=seed)
    return x_tr, x_te, y_tr, y_te


def _prune_then_int8(sparsity: float, *, epochs: int) -> list[OptimizationStep]:
    """Magnitude pruning fine-tuned at a learning rate of 1e-3, then full int8."""
    return [
        OptimizationStep(
            type=StepType.PRUNE,
            prune=PruneParams(target_sparsity=sparsity),
            fine_tune=FineTune(epochs=epochs, learning_rate=1e-3),
        ),
        OptimizationStep(type=StepType.QUANTIZE, quantize=QuantizeParams(mode=QuantizeMode.INT8)),
    ]


def digits(
    root: Path, kind: str = "mlp", *, claim: str = DEFAULT_CLAIM, seed: int = 0, epochs: int | None = None
) -> Example:
    """Train a digits MLP (64-256-128-10) or CNN (Conv32-Conv64-Pool-Dense128-10); write model.h5 and .npz splits."""
    if kind not in ("mlp", "cnn"):
        raise ValueError("kind is mlp or cnn")
    _require_sklearn(f"digits-{kind}")
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
        steps=_prune_then_int8(0.8, epochs=4),
        data=OptimizationData(
            calibration=ex.data_ref("calibration", labels=None),
            evaluation=ex.data_ref("eval"),
            fine_tune=ex.data_ref("train"),
        ),
        metric=Metric(type=MetricType.ACCURACY),
        gate=Gate(max_drop=0.01),
    )
    return Example(name=name, root=ex.root, claim=claim, model=model_path, files=files, optimization=opt)


TWO_INPUTS = {"first": "top", "second": "bottom"}
"""The two-input example's DataRef.inputs: model input -> npz array."""


def two_inputs(root: Path, *, claim: str = DEFAULT_CLAIM, seed: int = 0, epochs: int = 30) -> Example:
    """Train the two-input, two-output digits model (top and bottom halves -> digit and parity); write
    model.keras and train/eval/calibration .npz with arrays top, bottom, y, odd."""
    _require_sklearn("two-inputs")
    t = tfenv.load()
    keras = t.keras
    keras.utils.set_random_seed(seed)
    d = _dir(root, claim, "two-inputs")
    x_tr, x_te, y_tr, y_te = _digits(seed)
    layers = keras.layers
    first = layers.Input((32,), name="first")
    second = layers.Input((32,), name="second")
    h = layers.Concatenate()([layers.Dense(64, activation="relu")(first), layers.Dense(64, activation="relu")(second)])
    h = layers.Dense(128, activation="relu")(h)
    digit = layers.Dense(10, activation="softmax", name="digit")(h)
    parity = layers.Dense(1, activation="sigmoid", name="parity")(h)
    model = keras.Model([first, second], [digit, parity], name="two_inputs")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"digit": "sparse_categorical_crossentropy", "parity": "binary_crossentropy"},
    )
    model.fit(
        [x_tr[:, :32], x_tr[:, 32:]],
        {"digit": y_tr, "parity": (y_tr % 2).astype(np.float32)},
        epochs=epochs,
        batch_size=32,
        shuffle=True,
        verbose=0,
    )
    model_path = d / "model.keras"
    _save(model, model_path)
    files = {"train": d / "train.npz", "eval": d / "eval.npz", "calibration": d / "calibration.npz"}
    for role, x, y in (("train", x_tr, y_tr), ("eval", x_te, y_te)):
        np.savez(files[role], top=x[:, :32], bottom=x[:, 32:], y=y, odd=y % 2)
    np.savez(files["calibration"], top=x_tr[:300, :32], bottom=x_tr[:300, 32:])
    ex = Example(name="two-inputs", root=Path(root), claim=claim, model=model_path, files=files)
    opt = Optimization(
        steps=_prune_then_int8(0.5, epochs=3),
        data=OptimizationData(
            calibration=ex.data_ref("calibration", labels=None, inputs=TWO_INPUTS),
            evaluation=ex.data_ref("eval", inputs=TWO_INPUTS),
            fine_tune=ex.data_ref("train", inputs=TWO_INPUTS),
        ),
        metric=Metric(type=MetricType.ACCURACY, output="digit"),
        gate=Gate(max_drop=0.02),
    )
    return Example(name=ex.name, root=ex.root, claim=claim, model=model_path, files=files, optimization=opt)


def make(name: str, root: Path, *, claim: str = DEFAULT_CLAIM, seed: int = 0) -> Example:
    """One of NAMES."""
    if name == "linear":
        return linear(root, claim=claim, seed=seed)
    if name in ("digits-mlp", "digits-cnn"):
        return digits(root, name.split("-", 1)[1], claim=claim, seed=seed)
    if name == "two-inputs":
        return two_inputs(root, claim=claim, seed=seed)
    raise ValueError(f"unknown example {name!r}; choose from {', '.join(NAMES)}")
