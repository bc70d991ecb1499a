"""Pauses of the whole server: the garbage collector's, timed per generation, and the heap frozen out of its way;
the GIL switch interval the server runs with."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from modelship.serve import server
from modelship.serve.config import config_from
from modelship.serve.pauses import PAUSE_BUCKETS, GcPauses, Pauses, freeze_heap, switch_interval


def test_pauses_are_counted_in_cumulative_buckets() -> None:
    p = Pauses()
    for seconds in (0.0001, 0.003, 0.003, 2.0, -1.0):  # a negative lag (a timer run early) counts as none
        p.observe(seconds)
    cumulative = dict(p.cumulative())
    assert list(cumulative) == [*map(str, PAUSE_BUCKETS), "+Inf"]
    assert cumulative["0.0005"] == 2 and cumulative["0.0025"] == 2 and cumulative["0.005"] == 4
    assert cumulative["1.0"] == 4 and cumulative["+Inf"] == 5
    assert abs(p.total - 2.0061) < 1e-9


def test_every_collection_is_timed_by_generation_while_installed() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # idempotent: counted once
    try:
        gc.collect()
        gc.collect(0)
        full = dict(pauses.generations[2].cumulative())["+Inf"]
        young = dict(pauses.generations[0].cumulative())["+Inf"]
        assert full >= 1 and young >= 1
        samples = {s.labels["generation"]: s.value for s in pauses.metric().samples if s.name.endswith("_count")}
        assert samples["2"] == full
    finally:
        pauses.uninstall()
    gc.collect()
    assert dict(pauses.generations[2].cumulative())["+Inf"] == full  # no longer installed: not counted
    assert pauses._callback not in gc.callbacks


def test_freezing_the_heap_takes_what_exists_out_of_later_collections() -> None:
    try:
        frozen = freeze_heap()
        assert frozen > 0 and gc.get_freeze_count() == frozen
        kept = [object() for _ in range(10)]  # allocated after the freeze: still collected normally
        assert gc.get_freeze_count() == frozen and kept
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_switch_interval_is_set_for_the_block_and_restored() -> None:
    before = sys.getswitchinterval()
    with switch_interval(0.0005) as previous:
        assert previous == before
        assert abs(sys.getswitchinterval() - 0.0005) < 1e-9
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), switch_interval(0.002):
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before  # restored on the way out of an error too


def test_the_server_runs_with_the_configured_switch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    async def load(self: server.Server, freeze: bool = False) -> None:
        seen.append(sys.getswitchinterval())
        raise FileNotFoundError("no model")  # serve() exits 1 without serving

    monkeypatch.setattr(server.Server, "load", load)
    before = sys.getswitchinterval()
    cfg = config_from({"model": "m", "port": 0, "metrics_port": 0, "host": "127.0.0.1"}, {})
    assert cfg.switch_interval_us == 500
    assert asyncio.run(server.serve(cfg)) == 1
    assert seen == [pytest.approx(0.0005)]
    cfg = config_from({"model": "m", "port": 0, "metrics_port": 0, "host": "127.0.0.1"},
                      {"MODELSHIP_SWITCH_INTERVAL_US": "2000"})  # fmt: skip
    assert asyncio.run(server.serve(cfg)) == 1
    assert seen[1] == pytest.approx(0.002)
    assert sys.getswitchinterval() == before


def test_a_switch_interval_out_of_range_is_refused() -> None:
    for bad in ("0", "20", "200000"):
        with pytest.raises(ValueError, match="switch interval"):
            config_from({"model": "m"}, {"MODELSHIP_SWITCH_INTERVAL_US": bad})
