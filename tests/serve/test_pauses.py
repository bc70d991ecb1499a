"""Pauses of the whole server: the garbage collector's, timed per generation, and the heap frozen out of its way."""

from __future__ import annotations

import gc

from modelship.serve.pauses import PAUSE_BUCKETS, GcPauses, Pauses, freeze_heap


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
