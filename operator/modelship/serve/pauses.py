"""Pauses of the whole server: how late the event loop runs (measured by :class:`modelship.serve.http.HttpServer`)
and how long each garbage collection stops the interpreter (every thread waits: the collector holds the GIL).

A collection of the oldest generation walks every object the process tracks, the loaded model's and the
libraries' included; under a flood of connections (many objects that live a little while) those collections come
every few seconds and each stops everything for as long as the walk takes. :func:`freeze_heap` moves what exists
once the model is loaded and warm out of the collector's way (``gc.freeze``), so a collection walks only what
serving allocated since.

A thread waiting for the GIL is paused too: while another thread runs Python, it waits up to the interpreter's
switch interval (5 ms by default) before the holder is asked to let go, and the event loop and the workers hand
the GIL to each other on every request. :func:`switch_interval` shortens that wait for the server's lifetime.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric

PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Pauses:
    """A histogram of pause lengths (seconds) without a metrics library's locks: written by one thread at a time
    (the loop's, or whichever holds the GIL), read by the metrics thread."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(PAUSE_BUCKETS) + 1)  # the last one: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(PAUSE_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, observations at or below it) per bucket, ``+Inf`` last (Prometheus' form)."""
        out: list[tuple[str, float]] = []
        seen = 0
        for bound, n in zip((*map(str, PAUSE_BUCKETS), "+Inf"), self.counts, strict=True):
            seen += n
            out.append((bound, float(seen)))
        return out


class GcPauses:
    """Times every garbage collection, by generation, while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.generations = {g: Pauses() for g in range(3)}
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self.generations[int(info.get("generation", 2))].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def metric(self) -> Metric:
        family = HistogramMetricFamily(
            "modelship_gc_pause_seconds",
            "How long each garbage collection stopped the server (all threads wait for it), by generation.",
            labels=["generation"],
        )
        for gen, pauses in self.generations.items():
            family.add_metric([str(gen)], pauses.cumulative(), pauses.total)
        return family


def freeze_heap() -> int:
    """Collect once, then move every object alive now (the model, the libraries) to the collector's permanent
    generation: later collections do not walk them. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def switch_interval(seconds: float) -> Iterator[float]:
    """Run the block with the interpreter's GIL switch interval set to ``seconds`` (``sys.setswitchinterval``),
    then put the previous one back. Yields the previous interval."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield previous
    finally:
        sys.setswitchinterval(previous)
