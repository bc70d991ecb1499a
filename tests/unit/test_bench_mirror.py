"""bench/mirror.py's report (pure): the cost of mirroring from paired rounds, in words whose sign is right."""

from __future__ import annotations

import argparse
from typing import Any

from bench.mirror import Round, change, render, round_order, verdict


def run(throughput: float, p99: float = 2.0, cpu: float = 200.0) -> dict[str, Any]:
    return {"throughput": throughput, "p99_ms": p99, "cpu_us_per_request": cpu, "bad": 0, "errors": 0}


def test_change_says_higher_or_lower() -> None:
    assert change(1.261) == "26.1% higher"  # mirroring on ran faster: not "-26.1% lower"
    assert change(0.949) == "5.1% lower"
    assert change(1.0) == change(1.0004) == "unchanged"


def test_rounds_alternate_which_setting_runs_first() -> None:
    assert [round_order(i, 20) for i in range(4)] == [(0, 20), (20, 0), (0, 20), (20, 0)]


def test_the_verdict_is_the_median_of_the_paired_ratios() -> None:
    # the load drifts a lot between rounds; each round's own pair shows the cost: 2%, 4%, 30% (a spike), 3%
    rounds = [Round(run(4000), run(3920)), Round(run(2500), run(2400)), Round(run(3000), run(2100)),
              Round(run(3800), run(3686))]  # fmt: skip
    text = verdict(8, 20, rounds)
    assert "throughput is 3.5% lower than without (median of 4 paired rounds" in text
    assert "range from 30.0% lower to 2.0% lower" in text and "met (3 of 4 rounds within it)" in text
    faster = verdict(1, 20, [Round(run(2500), run(3152.5))])
    assert "throughput is 26.1% higher than without" in faster and "-26" not in faster
    costly = verdict(1, 20, [Round(run(1000), run(850)), Round(run(1000), run(880))])
    assert "13.5% lower" in costly and "NOT met (0 of 2" in costly


def test_the_table_gives_medians_with_their_range() -> None:
    args = argparse.Namespace(percent=20, rounds=3, duration=3.0)
    rounds = {8: [Round(run(100, 1.0), run(90, 1.5)), Round(run(200, 2.0), run(190, 2.5)),
                  Round(run(300, 3.0), run(330, 2.0))]}  # fmt: skip
    text = render(rounds, {}, args, 2, 10.0, 1.0, 1.0)
    assert "| 8 | 0% | 200 (100-300) | 2.00 (1.00-3.00) | 1.000x |" in text
    assert "| 8 | 20% | 190 (90-330) | 2.00 (1.50-2.50) | 0.950x (0.900-1.100) | 1.25x (0.67-1.50) |" in text
