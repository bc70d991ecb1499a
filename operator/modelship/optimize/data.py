"""Calibration, evaluation and fine-tuning data from .npz, .npy, CSV and TFRecord files.

Conventions (``DataRef.features`` / ``DataRef.labels`` name the parts):

* npz: arrays named ``features`` and ``labels``;
* npy: a plain array holds features only (unlabelled, e.g. calibration); a structured array has fields named
  ``features`` and ``labels``;
* CSV: a header row; every column whose name starts with ``features`` is an input (in file order), the column
  named ``labels`` is the label;
* TFRecord: ``tf.train.Example`` records (a file, or a directory of files) with a float/int64 list, or a
  ``tf.io.serialize_tensor`` bytes value, under the ``features`` and ``labels`` keys.

Features are reshaped to the model's input shape when the element count per sample matches.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.optimization import DataFormat, DataRef, MetricType
from .errors import OptimizeError, first_line

Array = np.ndarray[Any, Any]


@dataclass
class Dataset:
    """Features (and labels) of one data set, as arrays."""

    role: str
    """calibration, evaluation or fineTune."""
    uri: str
    x: Array
    y: Array | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def label(self) -> str:
        return f"{self.role} data {self.uri}"


def load(role: str, ref: DataRef, path: Path, *, needs_labels: bool) -> Dataset:
    """Read a data set; raise OptimizeError with the role and URI on any problem."""
    where = f"{role} data {ref.uri}"
    if not path.exists():
        raise OptimizeError(f"{where}: {path} does not exist")
    labels = ref.labels if needs_labels else None
    if needs_labels and ref.labels is None:
        raise OptimizeError(f"{where}: {role} data needs labels (set labels in the data reference)")
    try:
        if ref.format == DataFormat.NPZ:
            x, y = _load_npz(path, ref.features, labels, where)
        elif ref.format == DataFormat.NPY:
            x, y = _load_npy(path, ref.features, labels, where)
        elif ref.format == DataFormat.CSV:
            x, y = _load_csv(path, ref.features, labels, where)
        else:
            x, y = _load_tfrecord(path, ref.features, labels, where)
    except OptimizeError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise OptimizeError(f"{where}: cannot read {ref.format.value} file {path} ({first_line(exc)})") from None
    if x.dtype.kind not in "fiub":
        raise OptimizeError(f"{where}: features must be numeric, found dtype {x.dtype}")
    if ref.samples is not None:
        x = x[: ref.samples]
        y = y[: ref.samples] if y is not None else None
    if len(x) == 0:
        raise OptimizeError(f"{where}: the data set holds no samples")
    if y is not None and len(y) != len(x):
        raise OptimizeError(f"{where}: {len(x)} feature rows but {len(y)} labels")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise OptimizeError(f"{where}: features contain NaN or infinite values")
    return Dataset(role=role, uri=ref.uri, x=x, y=y)


def _load_npz(path: Path, features: str, labels: str | None, where: str) -> tuple[Array, Array | None]:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        if features not in keys:
            raise OptimizeError(
                f"{where}: no array named {features!r} in the .npz (it has {', '.join(keys) or 'none'})"
            )
        x = np.asarray(z[features])
        y = None
        if labels is not None:
            if labels not in keys:
                raise OptimizeError(f"{where}: no array named {labels!r} in the .npz (it has {', '.join(keys)})")
            y = np.asarray(z[labels])
    return x, y


def _load_npy(path: Path, features: str, labels: str | None, where: str) -> tuple[Array, Array | None]:
    arr = np.load(path, allow_pickle=False)
    names = arr.dtype.names
    if names is None:
        if labels is not None:
            raise OptimizeError(
                f"{where}: a plain .npy array holds features only; labelled data needs .npz or a structured "
                f"array with fields {features!r} and {labels!r}"
            )
        return np.asarray(arr), None
    if features not in names:
        raise OptimizeError(f"{where}: no field {features!r} in the structured array (it has {', '.join(names)})")
    x = np.asarray(arr[features])
    y = None
    if labels is not None:
        if labels not in names:
            raise OptimizeError(f"{where}: no field {labels!r} in the structured array (it has {', '.join(names)})")
        y = np.asarray(arr[labels])
    return x, y


def _load_csv(path: Path, features: str, labels: str | None, where: str) -> tuple[Array, Array | None]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise OptimizeError(f"{where}: the CSV file is empty") from None
        cols = [i for i, h in enumerate(header) if h.startswith(features) and h != labels]
        if not cols:
            raise OptimizeError(f"{where}: no CSV column starts with {features!r} (columns: {', '.join(header)})")
        label_col = None
        if labels is not None:
            if labels not in header:
                raise OptimizeError(f"{where}: no CSV column named {labels!r} (columns: {', '.join(header)})")
            label_col = header.index(labels)
        xs: list[list[float]] = []
        ys: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                xs.append([float(row[i]) for i in cols])
                if label_col is not None:
                    ys.append(float(row[label_col]))
            except (ValueError, IndexError):
                raise OptimizeError(f"{where}: line {line} has a missing or non-numeric value") from None
    x = np.asarray(xs, dtype=np.float32).reshape(len(xs), len(cols))
    y = None
    if label_col is not None:
        yv = np.asarray(ys)
        y = yv.astype(np.int64) if np.all(yv == np.round(yv)) else yv.astype(np.float32)
    return x, y


def _tfrecord_files(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise OptimizeError(f"{path}: no TFRecord files in the directory")
        return files
    return [str(path)]


def _feature_value(feature: Any, tf: Any) -> Array:
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return np.asarray(feature.float_list.value, dtype=np.float32)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, dtype=np.int64)
    if kind == "bytes_list" and len(feature.bytes_list.value) == 1:
        raw = feature.bytes_list.value[0]
        for dtype in (tf.float32, tf.int64, tf.int32, tf.float64, tf.uint8):
            try:
                return np.asarray(tf.io.parse_tensor(raw, out_type=dtype).numpy())
            except Exception:  # wrong dtype guess: try the next one
                continue
        raise ValueError("a bytes feature that is not a tf.io.serialize_tensor value")
    raise ValueError(f"unsupported feature kind {kind}")


def _load_tfrecord(path: Path, features: str, labels: str | None, where: str) -> tuple[Array, Array | None]:
    from . import tfenv

    tf = tfenv.load().tf
    xs: list[Array] = []
    ys: list[Array] = []
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(_tfrecord_files(path))):
            example = tf.train.Example.FromString(record.numpy())
            feats = example.features.feature
            if features not in feats:
                raise OptimizeError(
                    f"{where}: record {i} has no feature {features!r} (it has {', '.join(sorted(feats)) or 'none'})"
                )
            xs.append(_feature_value(feats[features], tf))
            if labels is not None:
                if labels not in feats:
                    raise OptimizeError(f"{where}: record {i} has no feature {labels!r}")
                ys.append(_feature_value(feats[labels], tf))
    except OptimizeError:
        raise
    except Exception as exc:  # tf.errors.DataLossError and friends
        raise OptimizeError(f"{where}: cannot read TFRecord {path} ({first_line(exc)})") from None
    if not xs:
        return np.zeros((0,), dtype=np.float32), (np.zeros((0,)) if labels is not None else None)
    if len({a.shape for a in xs}) != 1:
        raise OptimizeError(f"{where}: records have features of different shapes")
    x = np.stack(xs)
    y = None
    if labels is not None:
        y = np.stack(ys)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
    return x, y


def conform(ds: Dataset, input_shape: tuple[int | None, ...], dtype: str = "float32") -> None:
    """Reshape features to the model's per-sample input shape, or raise a clear shape error."""
    expected = input_shape[1:]
    x = ds.x
    if x.ndim == 1:
        x = x.reshape(len(x), 1)
    got = x.shape[1:]
    fits = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not fits:
        known = all(e is not None for e in expected)
        if known and math.prod(got) == math.prod(e for e in expected if e is not None):
            x = x.reshape((len(x), *(int(e) for e in expected if e is not None)))
            ds.notes.append(f"{ds.label}: features reshaped from {_fmt(got)} to {_fmt(x.shape[1:])} per sample")
        else:
            raise OptimizeError(
                f"{ds.label}: features have shape {_fmt(got)} per sample but the model expects {_fmt(expected)}"
            )
    want = np.dtype(dtype)
    ds.x = x.astype(want, copy=False) if want.kind == "f" else x


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
    """A warning when evaluation inputs fall outside the calibration range.

    The converter quantizes the input tensor per tensor, so the range that matters is the global min/max; a value
    beyond it is clipped (the y=2x-1 model calibrated on [-1, 4] predicts 7 for x=10).
    """
    cal = calibration.x.astype(np.float64)
    ev = evaluation.x.astype(np.float64)
    lo, hi = float(cal.min()), float(cal.max())
    elo, ehi = float(ev.min()), float(ev.max())
    tol = 0.01 * max(hi - lo, 1e-12)
    if elo >= lo - tol and ehi <= hi + tol:
        return None
    outside = np.any((ev < lo - tol) | (ev > hi + tol), axis=tuple(range(1, ev.ndim)))
    frac = float(np.mean(outside))
    return (
        f"calibration inputs span [{lo:.4g}, {hi:.4g}] but evaluation inputs span [{elo:.4g}, {ehi:.4g}]: "
        f"{frac:.1%} of evaluation samples fall outside the calibration range, and int8/int16x8 quantization "
        "clips them; calibrate on data that covers production inputs"
    )
