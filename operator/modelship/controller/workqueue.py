"""A work queue like controller-runtime's: a key is queued at most once, processed by one worker at a time,
and can be re-queued after a delay (retry backoff, waiting Jobs)."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self, handler: Callable[[Key], float | None], workers: int = 4) -> None:
        self._handler = handler
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
            elif key not in self._queued:
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
            except Exception:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                requeue = min(60.0, 0.5 * 2**n)
            finally:
                with self._cond:
                    self._processing.discard(key)
                    if key in self._dirty:
                        self._dirty.discard(key)
                        if key not in self._queued:
                            self._queued.add(key)
                            self._queue.append(key)
                            self._cond.notify_all()  # the timer thread waits on this condition too
            if requeue is not None:
                self.add_after(key, requeue)
