"""Reading data files: each reader takes ``sources`` (input key -> array name, CSV column prefix or TFRecord
feature key) and the labels' name, and returns (input key -> rows, labels)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptimizeError, first_line

Array = np.ndarray[Any, Any]
Read = tuple[dict[str, Array], Array | None]


def _names(found: Any) -> str:
    return ", ".join(found) or "none"


def read_npz(path: Path, sources: dict[str, str], labels: str | None, where: str) -> Read:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        for src in [*sources.values(), *([labels] if labels is not None else [])]:
            if src not in keys:
                raise OptimizeError(f"{where}: no array named {src!r} in the .npz (it has {_names(keys)})")
        x = {key: np.asarray(z[src]) for key, src in sources.items()}
        y = np.asarray(z[labels]) if labels is not None else None
    return x, y


def read_npy(path: Path, sources: dict[str, str], labels: str | None, where: str) -> Read:
    arr = np.load(path, allow_pickle=False)
    names = arr.dtype.names
    if names is None:
        if len(sources) > 1:
            raise OptimizeError(
                f"{where}: a plain .npy array holds one input; several inputs need .npz or a structured array "
                f"with fields {', '.join(repr(s) for s in sources.values())}"
            )
        if labels is not None:
            wanted = next(iter(sources.values()))
            raise OptimizeError(
                f"{where}: a plain .npy array holds features only; labelled data needs .npz or a structured "
                f"array with fields {wanted!r} and {labels!r}"
            )
        return {next(iter(sources)): np.asarray(arr)}, None
    for src in [*sources.values(), *([labels] if labels is not None else [])]:
        if src not in names:
            raise OptimizeError(f"{where}: no field {src!r} in the structured array (it has {', '.join(names)})")
    x = {key: np.asarray(arr[src]) for key, src in sources.items()}
    return x, (np.asarray(arr[labels]) if labels is not None else None)


def _csv_columns(header: list[str], sources: dict[str, str], labels: str | None, where: str) -> dict[str, list[int]]:
    """Input key -> the columns whose name starts with its prefix (the longest prefix wins), in file order."""
    cols: dict[str, list[int]] = {key: [] for key in sources}
    for i, h in enumerate(header):
        if h == labels:
            continue
        matches = [(len(src), key) for key, src in sources.items() if h.startswith(src)]
        if matches:
            cols[max(matches)[1]].append(i)
    for key, src in sources.items():
        if not cols[key]:
            raise OptimizeError(f"{where}: no CSV column starts with {src!r} (columns: {', '.join(header)})")
    return cols


def read_csv(path: Path, sources: dict[str, str], labels: str | None, where: str) -> Read:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise OptimizeError(f"{where}: the CSV file is empty") from None
        cols = _csv_columns(header, sources, labels, where)
        label_col = None
        if labels is not None:
            if labels not in header:
                raise OptimizeError(f"{where}: no CSV column named {labels!r} (columns: {', '.join(header)})")
            label_col = header.index(labels)
        xs: dict[str, list[list[float]]] = {key: [] for key in sources}
        ys: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                for key, idx in cols.items():
                    xs[key].append([float(row[i]) for i in idx])
                if label_col is not None:
                    ys.append(float(row[label_col]))
            except (ValueError, IndexError):
                raise OptimizeError(f"{where}: line {line} has a missing or non-numeric value") from None
    x = {key: np.asarray(v, dtype=np.float32).reshape(len(v), len(cols[key])) for key, v in xs.items()}
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


def _stack(values: list[Array], what: str, where: str) -> Array:
    if len({a.shape for a in values}) != 1:
        raise OptimizeError(f"{where}: records have {what} of different shapes")
    return np.stack(values)


def read_tfrecord(path: Path, sources: dict[str, str], labels: str | None, where: str) -> Read:
    from . import tfenv

    tf = tfenv.load().tf
    wanted = [*sources.values(), *([labels] if labels is not None else [])]
    columns: dict[str, list[Array]] = {name: [] for name in wanted}
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(_tfrecord_files(path))):
            feats = tf.train.Example.FromString(record.numpy()).features.feature
            for name in wanted:
                if name not in feats:
                    raise OptimizeError(f"{where}: record {i} has no feature {name!r} (it has {_names(sorted(feats))})")
                columns[name].append(_feature_value(feats[name], tf))
    except OptimizeError:
        raise
    except Exception as exc:  # tf.errors.DataLossError and friends
        raise OptimizeError(f"{where}: cannot read TFRecord {path} ({first_line(exc)})") from None
    if not columns[wanted[0]]:
        empty = {key: np.zeros((0,), dtype=np.float32) for key in sources}
        return empty, (np.zeros((0,)) if labels is not None else None)
    x = {key: _stack(columns[src], "features", where) for key, src in sources.items()}
    y = None
    if labels is not None:
        y = _stack(columns[labels], "labels", where)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
    return x, y
