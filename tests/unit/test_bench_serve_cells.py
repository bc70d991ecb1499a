"""bench/serve_cells.py's summary: per tree and cell, the median and range of the cell's own figure."""

from __future__ import annotations

from typing import Any

from bench.serve_cells import summary


def _row(tree: str, cell: str, value: float, load: float) -> dict[str, Any]:
    return {"tree": tree, "cell": cell, "ratio" if cell == "json1" else "cpu_share": value, "load": load}


def test_summary_per_tree_and_cell_in_the_order_seen() -> None:
    rows = [
        _row("main", "binary64", 0.86, 2.0),
        _row("main", "json1", 3.3, 2.1),
        _row("new", "binary64", 0.87, 3.0),
        _row("new", "json1", 3.1, 3.2),
        _row("new", "binary64", 0.89, 4.0),
        _row("main", "binary64", 0.84, 1.5),
        _row("main", "binary64", 0.88, 2.5),
    ]
    assert summary(rows) == [
        "main binary64: cpu_share median 0.8600, 0.8400-0.8800 over 3 runs (load 1.5-2.5)",
        "main json1: ratio median 3.3000, 3.3000-3.3000 over 1 runs (load 2.1-2.1)",
        "new binary64: cpu_share median 0.8800, 0.8700-0.8900 over 2 runs (load 3.0-4.0)",
        "new json1: ratio median 3.1000, 3.1000-3.1000 over 1 runs (load 3.2-3.2)",
    ]


def test_a_cell_without_its_figure_is_left_out() -> None:
    assert summary([{"tree": "old", "cell": "binary64", "load": 1.0}]) == []
