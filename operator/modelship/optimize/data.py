"""Calibration, evaluation and fine-tuning data from .npz, .npy, CSV and TFRecord files.

Conventions (``DataRef.features`` or ``DataRef.inputs``, and ``DataRef.labels`` name the parts):

* npz: arrays named ``features`` (default x) and ``labels``; several inputs: one array per input;
* npy: a plain array holds features only (unlabelled, e.g. calibration); a structured array has fields named
  ``features`` and ``labels`` (or one field per input);
* CSV: a header row; every column whose name starts with ``features`` is an input (in file order), the column
  named ``labels`` is the label; several inputs: each takes the columns that start with its prefix (the longest
  matching prefix wins);
* TFRecord: ``tf.train.Example`` records (a file, or a directory of files) with a float/int64 list, or a
  ``tf.io.serialize_tensor`` bytes value, under the ``features`` (or each input's) and ``labels`` keys.

:func:`conform` then matches the data to the model's inputs (by name when ``inputs`` maps them; a one-input model
takes ``features``), reshapes each to its input's shape when the element count per sample matches, and casts
floats to the input's dtype.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.optimization import DEFAULT_FEATURES, DataFormat, DataRef, MetricType
from . import datafiles
from .errors import OptimizeError, first_line
from .signature import Features, TensorInfo, count

Array = np.ndarray[Any, Any]

READERS = {
    DataFormat.NPZ: datafiles.read_npz,
    DataFormat.NPY: datafiles.read_npy,
    DataFormat.CSV: datafiles.read_csv,
    DataFormat.TFRECORD: datafiles.read_tfrecord,
}


@dataclass
class Dataset:
    """Inputs (and labels) of one data set, as arrays."""

    role: str
    """calibration, evaluation or fineTune (the field of spec.optimization.data)."""
    uri: str
    inputs: Features
    """Input name -> rows. Before :func:`conform`: keyed by ``DataRef.inputs``' names, or by the features name."""
    y: Array | None = None
    notes: list[str] = field(default_factory=list)
    mapped: bool = False
    """The inputs were named by ``DataRef.inputs`` (otherwise one ``features`` array for a one-input model)."""

    def __len__(self) -> int:
        return count(self.inputs)

    @property
    def label(self) -> str:
        return f"{self.role} data {self.uri}"

    @property
    def field(self) -> str:
        """The DataRef's field path in the optimization."""
        return f"data.{self.role}"

    def what(self, name: str) -> str:
        """How messages name one input's values: "features", or "input NAME" when several are mapped."""
        return f"input {name}" if self.mapped else "features"


def sources(ref: DataRef) -> dict[str, str]:
    """Input key -> array name, column prefix or feature key."""
    if ref.inputs is not None:
        return dict(ref.inputs)
    name = ref.features or DEFAULT_FEATURES
    return {name: name}


def load(role: str, ref: DataRef, path: Path, *, needs_labels: bool) -> Dataset:
    """Read a data set; raise OptimizeError with the role and URI on any problem."""
    where = f"{role} data {ref.uri}"
    if not path.exists():
        raise OptimizeError(f"{where}: {path} does not exist")
    labels = ref.labels if needs_labels else None
    if needs_labels and ref.labels is None:
        raise OptimizeError(f"{where}: {role} data needs labels (set labels in the data reference)")
    try:
        x, y = READERS[ref.format](path, sources(ref), labels, where)
    except OptimizeError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise OptimizeError(f"{where}: cannot read {ref.format.value} file {path} ({first_line(exc)})") from None
    ds = Dataset(role=role, uri=ref.uri, inputs=x, y=y, mapped=ref.inputs is not None)
    _check_rows(ds, ref.samples)
    return ds


def _check_rows(ds: Dataset, samples: int | None) -> None:
    """Numeric, finite, equally many rows in every input and the labels (cut to ``samples``), at least one."""
    where = ds.label
    for name, a in ds.inputs.items():
        if a.dtype.kind not in "fiub":
            raise OptimizeError(f"{where}: {ds.what(name)} must be numeric, found dtype {a.dtype}")
    if samples is not None:
        ds.inputs = {name: a[:samples] for name, a in ds.inputs.items()}
        ds.y = ds.y[:samples] if ds.y is not None else None
    n = {name: len(a) for name, a in ds.inputs.items()}
    first = next(iter(n))
    if n[first] == 0:
        raise OptimizeError(f"{where}: the data set holds no samples")
    for name, rows in n.items():
        if rows != n[first]:
            raise OptimizeError(f"{where}: input {name} has {rows} rows but input {first} has {n[first]}")
    if ds.y is not None and len(ds.y) != n[first]:
        raise OptimizeError(f"{where}: {n[first]} feature rows but {len(ds.y)} labels")
    for name, a in ds.inputs.items():
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise OptimizeError(f"{where}: {ds.what(name)} contain NaN or infinite values")


def conform(ds: Dataset, inputs: Sequence[TensorInfo]) -> None:
    """Match the data to the model's inputs and fit each to its shape and dtype, or raise a clear error."""
    names = [t.name for t in inputs]
    if not ds.mapped:
        if len(inputs) != 1:
            example = ", ".join(f"{n}: ..." for n in names)
            raise OptimizeError(
                f"{ds.label}: the model has {len(inputs)} inputs ({', '.join(names)}); map each to its data with "
                f"{ds.field}.inputs ({{{example}}}) instead of features"
            )
        matched = {names[0]: next(iter(ds.inputs.values()))}
    else:
        unknown = [k for k in ds.inputs if k not in names]
        missing = [n for n in names if n not in ds.inputs]
        if unknown or missing:
            problem = (
                f"names {', '.join(unknown)}, not an input of the model"
                if unknown
                else f"has no entry for the model input {', '.join(missing)}"
            )
            raise OptimizeError(f"{ds.label}: {ds.field}.inputs {problem} (the model's inputs: {', '.join(names)})")
        matched = {n: ds.inputs[n] for n in names}
    ds.inputs = {t.name: _fit(ds, t, matched[t.name]) for t in inputs}


def _fit(ds: Dataset, tensor: TensorInfo, x: Array) -> Array:
    """One input reshaped to the model's per-sample shape (same element count) and cast to its float dtype."""
    expected = tensor.shape[1:]
    what = ds.what(tensor.name)
    if x.ndim == 1:
        x = x.reshape(len(x), 1)
    got = x.shape[1:]
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not fits:
        known = all(e is not None for e in expected)
        if known and math.prod(got) == math.prod(e for e in expected if e is not None):
            x = x.reshape((len(x), *(int(e) for e in expected if e is not None)))
            ds.notes.append(f"{ds.label}: {what} reshaped from {_fmt(got)} to {_fmt(x.shape[1:])} per sample")
        else:
            verb = "have" if what == "features" else "has"
            raise OptimizeError(
                f"{ds.label}: {what} {verb} shape {_fmt(got)} per sample but the model expects {_fmt(expected)}"
            )
    return _cast(ds, tensor, x)


def _cast(ds: Dataset, tensor: TensorInfo, x: Array) -> Array:
    """Floats to the input's float dtype; whole numbers to an integer input's dtype (token ids from a CSV)."""
    want = np.dtype(tensor.dtype)
    if want.kind == "f":
        return x.astype(want, copy=False)
    if want.kind not in "iu" or x.dtype == want:
        return x
    if x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
        raise OptimizeError(
            f"{ds.label}: {ds.what(tensor.name)} must be whole numbers (the model's input {tensor.name} is {want.name})"
        )
    info = np.iinfo(want)
    if x.size and (x.min() < info.min or x.max() > info.max):
        raise OptimizeError(f"{ds.label}: {ds.what(tensor.name)} has values outside the range of {want.name}")
    return x.astype(want)


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def check_labels(ds: Dataset, output_shape: tuple[int | None, ...], metric: MetricType) -> None:
    """Validate (and normalize) labels against the model output for the metric; raise a clear error otherwise."""
    if ds.y is None:
        raise OptimizeError(f"{ds.label}: labels are missing")
    y = ds.y
    out = output_shape[1:]
    width = out[-1] if out else 1
    if metric in (MetricType.ACCURACY, MetricType.TOP_K):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim == 1:
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise OptimizeError(f"{ds.label}: {metric.value} needs integer class labels, found fractional values")
            y = y.astype(np.int64)
            classes = width if width and width > 1 else 2
            if y.min() < 0 or y.max() >= classes:
                raise OptimizeError(
                    f"{ds.label}: class labels span {int(y.min())}..{int(y.max())} but the model outputs "
                    f"{classes} classes (shape {_fmt(out)})"
                )
        elif y.ndim == 2 and width is not None and y.shape[1] == width:
            pass  # one-hot
        else:
            raise OptimizeError(
                f"{ds.label}: labels have shape {_fmt(y.shape[1:])} per sample but the model outputs {_fmt(out)} "
                "(expected class ids or one-hot rows)"
            )
    elif metric in (MetricType.MSE, MetricType.MAE):
        per = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
        size = math.prod(d for d in out if d is not None) if all(d is not None for d in out) else None
        if size is not None and per != size:
            raise OptimizeError(
                f"{ds.label}: labels have shape {_fmt(y.shape[1:])} per sample but the model outputs {_fmt(out)}"
            )
        if size is not None:
            y = y.reshape((len(y), *(int(d) for d in out if d is not None))).astype(np.float32)
    ds.y = y


def coverage_warning(calibration: Dataset, evaluation: Dataset) -> str | None:
    """A warning when evaluation inputs fall outside the calibration range (of each input, by name).

    The converter quantizes the input tensor per tensor, so the range that matters is the global min/max; a value
    beyond it is clipped (the y=2x-1 model calibrated on [-1, 4] predicts 7 for x=10).
    """
    several = len(evaluation.inputs) > 1
    parts = []
    for name, ev in evaluation.inputs.items():
        cal = calibration.inputs.get(name)
        if cal is None or ev.dtype.kind != "f":  # integer inputs (token ids) are not quantized
            continue
        span = _outside(cal.astype(np.float64), ev.astype(np.float64))
        if span is not None:
            parts.append((f"input {name}: " if several else "") + span)
    if not parts:
        return None
    return "; ".join(parts) + (
        ", and int8/int16x8 quantization clips them; calibrate on data that covers production inputs"
    )


def _outside(cal: Array, ev: Array) -> str | None:
    lo, hi = float(cal.min()), float(cal.max())
    elo, ehi = float(ev.min()), float(ev.max())
    tol = 0.01 * max(hi - lo, 1e-12)
    if elo >= lo - tol and ehi <= hi + tol:
        return None
    outside = np.any((ev < lo - tol) | (ev > hi + tol), axis=tuple(range(1, ev.ndim)))
    frac = float(np.mean(outside))
    return (
        f"calibration inputs span [{lo:.4g}, {hi:.4g}] but evaluation inputs span [{elo:.4g}, {ehi:.4g}]: "
        f"{frac:.1%} of evaluation samples fall outside the calibration range"
    )
