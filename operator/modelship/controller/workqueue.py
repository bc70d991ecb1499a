"""A work queue like controller-runtime's: a key is queued at most once, processed by one worker at a time,
and can be re-queued after a delay (retry backoff, waiting Jobs).

A handler that raises is never silent: the error is logged with the key and counted
(``modelship_reconcile_errors_total``), and the key is retried with exponential backoff. A transient error (the
API server unreachable or overloaded) is retried as long as it lasts; any other error ``Retry.max_tries`` times
in a row, then ``give_up`` has the last word (the operator marks the resource Stalled with the error) and the
key waits for the next change or resync.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics

log = logging.getLogger("modelship.workqueue")

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Retry:
    """How a failing key is retried."""

    max_tries: int = 5
    """Tries in a row before giving up (transient errors excepted)."""
    base_seconds: float = 0.5
    cap_seconds: float = 60.0

    def delay(self, tries: int) -> float:
        return float(min(self.cap_seconds, self.base_seconds * 2.0**tries))


class WorkQueue:
    def __init__(
        self,
        handler: Callable[[Key], float | None],
        workers: int = 4,
        *,
        retry: Retry | None = None,
        give_up: Callable[[Key, Exception, int], None] | None = None,
        transient: Callable[[Exception], bool] = lambda _: False,
    ) -> None:
        self._handler = handler
        self._retry = retry or Retry()
        self._give_up = give_up
        self._transient = transient
        self._cond = threading.Condition()
        self._queue: list[Key] = []
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()  # added again while processing: run once more afterwards
        self._delayed: list[tuple[float, Key]] = []
        self._failures: dict[Key, int] = {}
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True) for i in range(workers)
        ]
        self._timer = threading.Thread(target=self._tick, name="requeue-timer", daemon=True)

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self._timer.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def add(self, key: Key) -> None:
        with self._cond:
            if key in self._processing:
                self._dirty.add(key)
            else:
                self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        """Queue ``key`` unless it is queued already (the caller holds the lock)."""
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._cond.notify_all()  # the timer thread waits on this condition too

    def add_after(self, key: Key, seconds: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + max(0.0, seconds), key))
            self._cond.notify_all()

    def _tick(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = []
                while self._delayed and self._delayed[0][0] <= now:
                    due.append(heapq.heappop(self._delayed)[1])
                wait = (self._delayed[0][0] - now) if self._delayed else 1.0
            for key in due:
                self.add(key)
            with self._cond:
                if not self._stopped:
                    self._cond.wait(timeout=min(max(wait, 0.01), 1.0))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._queue.pop(0)
                self._queued.discard(key)
                self._processing.add(key)
            requeue: float | None = None
            try:
                requeue = self._handler(key)
                self._failures.pop(key, None)
            except Exception as exc:
                requeue = self._failed(key, exc)
            finally:
                with self._cond:
                    self._processing.discard(key)
                    if key in self._dirty:
                        self._dirty.discard(key)
                        self._enqueue(key)
            if requeue is not None:
                self.add_after(key, requeue)

    def _failed(self, key: Key, exc: Exception) -> float | None:
        """Log, count and schedule the retry of a failed key; None once it is given up."""
        namespace, name = key
        tries = self._failures.get(key, 0) + 1
        self._failures[key] = tries
        metrics.RECONCILES.labels("error").inc()
        metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
        if self._transient(exc):
            log.warning(
                "reconcile of %s/%s failed (try %d, transient: retried): %s: %s",
                namespace,
                name,
                tries,
                type(exc).__name__,
                exc,
            )
            return self._retry.delay(tries)
        log.error(
            "reconcile of %s/%s failed (try %d of %d)", namespace, name, tries, self._retry.max_tries, exc_info=exc
        )
        if tries < self._retry.max_tries:
            return self._retry.delay(tries)
        metrics.RECONCILE_GIVE_UPS.inc()
        if self._give_up is not None:
            try:
                self._give_up(key, exc, tries)
            except Exception:
                log.exception("could not report the failure of %s/%s", namespace, name)
        return None
