"""Comparing the stable and the candidate's answers to one mirrored request, row by row: the largest output at the
same index (Top1, classifiers) or every value within ``atol + rtol * |stable|`` (Tolerance, regression); Auto picks
Top1 for outputs with more than one value per row."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


def outputs(doc: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The output tensors of an answer, by name: v2 ``outputs`` (data reshaped to shape), v1 ``predictions``
    (row format: a list of rows, or of {name: value} objects) or ``outputs`` (columnar)."""
    if not isinstance(doc, dict):
        raise ValueError("the answer is not a JSON object")
    if "predictions" in doc:
        preds = doc["predictions"]
        if preds and isinstance(preds, list) and isinstance(preds[0], dict):
            return {k: np.asarray([row[k] for row in preds], dtype=np.float64) for k in preds[0]}
        return {"": np.asarray(preds, dtype=np.float64)}
    outs = doc.get("outputs")
    if isinstance(outs, list):
        result = {}
        for o in outs:
            arr = np.asarray(o["data"], dtype=np.float64)
            result[str(o.get("name", ""))] = arr.reshape(o["shape"]) if "shape" in o else arr
        return result
    if isinstance(outs, dict):
        return {k: np.asarray(v, dtype=np.float64) for k, v in outs.items()}
    if outs is not None:
        return {"": np.asarray(outs, dtype=np.float64)}
    raise ValueError("the answer has no outputs or predictions")


SMALL = 1024
"""Outputs of at most this many values are compared in plain Python (cheaper than numpy at this size)."""


def compare(stable: bytes, candidate: bytes, comparison: str, rtol: float, atol: float) -> tuple[int, int]:
    """(rows that agree, rows) of two answers to one request. Answers that cannot be matched (another set of
    outputs, other shapes, not a tensor answer) disagree on every row."""
    try:
        want_doc = orjson.loads(stable)
        small = _small_outputs(want_doc)
        want = small if small is not None else outputs(want_doc)
    except (ValueError, KeyError, TypeError):
        return 0, 0  # this server's own answer is not comparable: nothing to judge
    rows = max((_rows(a) for a in want.values()), default=0)
    if candidate == stable:
        return rows, rows
    try:
        got_doc = orjson.loads(candidate)
        got = _small_outputs(got_doc) if small is not None else outputs(got_doc)
    except (ValueError, KeyError, TypeError):
        return 0, rows
    if got is None or set(got) != set(want):
        return 0, rows
    if small is not None:
        return _compare_small(small, got, rows, comparison, rtol, atol)  # type: ignore[arg-type]
    agree = np.ones(rows, dtype=bool)
    for name, a in want.items():
        b = got[name]
        if a.shape != b.shape:  # type: ignore[union-attr]
            return 0, rows
        a2 = a.reshape(rows, -1) if rows else a.reshape(0, 0)  # type: ignore[union-attr]
        b2 = b.reshape(rows, -1) if rows else b.reshape(0, 0)  # type: ignore[union-attr]
        top1 = comparison == "top1" or (comparison == "auto" and a2.shape[1] > 1)
        if top1:
            agree &= np.argmax(a2, axis=1) == np.argmax(b2, axis=1)
        else:
            agree &= np.all(np.abs(a2 - b2) <= atol + rtol * np.abs(a2), axis=1)
    return int(agree.sum()), rows


Small = tuple[tuple[int, ...], list[float]]
"""A small v2 output: (shape, flat data)."""


def _rows(a: Any) -> int:
    if isinstance(a, tuple):
        return a[0][0] if a[0] else 1
    return int(a.shape[0]) if a.ndim else 1


def _small_outputs(doc: Any) -> dict[str, Small] | None:
    """A v2 answer's outputs as plain lists when they are small and flat, else None (numpy's turn)."""
    outs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outs, list):
        return None
    result: dict[str, Small] = {}
    for o in outs:
        data, shape = o.get("data"), o.get("shape")
        if not isinstance(data, list) or not isinstance(shape, list) or len(data) > SMALL:
            return None
        if data and isinstance(data[0], list):
            return None
        result[str(o.get("name", ""))] = (tuple(shape), data)
    return result


def _compare_small(
    want: dict[str, Small], got: dict[str, Small], rows: int, comparison: str, rtol: float, atol: float
) -> tuple[int, int]:
    agree = [True] * rows
    for name, (shape, a) in want.items():
        shape_b, b = got[name]
        if shape != shape_b or len(a) != len(b) or not rows or len(a) % rows:
            return 0, rows
        width = len(a) // rows
        top1 = comparison == "top1" or (comparison == "auto" and width > 1)
        for r in range(rows):
            ra, rb = a[r * width : (r + 1) * width], b[r * width : (r + 1) * width]
            if top1:
                ok = ra.index(max(ra)) == rb.index(max(rb)) if width else True
            else:
                ok = all(abs(x - y) <= atol + rtol * abs(x) for x, y in zip(ra, rb, strict=True))
            agree[r] = agree[r] and ok
    return sum(agree), rows
