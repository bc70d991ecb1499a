"""A process-wide "first time?" memory: what the operator says once per process (a warning a Role's refusal would
repeat on every reconcile, an INFO that turns to DEBUG after its first time), not once per reconcile.

The work queue runs reconciles in several threads, so asking is atomic: of concurrent callers with the same key,
exactly one hears "first". The memory is bounded: past ``capacity`` keys the one asked about longest ago is
forgotten (so said again if it comes up again), and a process never grows it without end however many distinct
keys (field paths, kinds) come up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

ONCE_CAPACITY = 1024
"""Keys kept per memory: far more than the kinds and field paths a process says something about once."""


class Once:
    """Which keys have come up before in this process."""

    def __init__(self, capacity: int = ONCE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._seen: OrderedDict[Hashable, None] = OrderedDict()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` comes up (say it), False while it is remembered."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True

    def forget(self, key: Hashable) -> None:
        """``key`` is new again: the next ``first(key)`` is True (what it said no longer holds)."""
        with self._lock:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
