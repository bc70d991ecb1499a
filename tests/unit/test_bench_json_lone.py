"""bench/json_lone.py's summary: per tree, the median over rounds, and each tree against the first."""

from __future__ import annotations

from bench.json_lone import summary


def _res(cpu: float, rest: float) -> dict[str, float]:
    return {"cpu_ms": cpu, "outside_native_ms": rest}


def test_summary_medians_per_tree_in_their_order() -> None:
    rows = [
        ("/main", _res(3.6, 0.6)),
        ("/tree", _res(3.5, 0.5)),
        ("/main", _res(4.4, 1.0)),
        ("/tree", _res(4.0, 0.8)),
        ("/main", _res(3.7, 0.7)),
        ("/tree", _res(3.3, 0.4)),
    ]
    lines = summary(rows)
    assert lines == [
        "/main: 3 rounds, CPU 3.700 ms, outside libmsjson 0.700 ms",
        "/tree: 3 rounds, CPU 3.500 ms, outside libmsjson 0.500 ms (-0.200 / -0.200 ms vs the first tree)",
    ]


def test_summary_of_one_tree_compares_nothing() -> None:
    assert summary([("/t", _res(2.0, 0.25)), ("/t", _res(4.0, 0.75))]) == [
        "/t: 2 rounds, CPU 3.000 ms, outside libmsjson 0.500 ms"
    ]
