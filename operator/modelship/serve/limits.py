"""Server-wide memory bounds: a budget of request bytes in flight and one of decoded tensor bytes, sized from the
container's memory limit unless set, and what each request holds in them.

A request reserves its body's declared size when its headers arrive (429 with ``Retry-After`` when the budget is
spent, 413 when it could never fit), then what decoding it will take (a JSON body costs several times its size
while parsed), shrunk to the tensors it keeps once decoded. Nothing is admitted that the budgets do not cover,
so a flood of large bodies is refused instead of OOM-killing the pod. Small requests (a health check, an
ordinary inference call) may also use a reserve that large ones cannot, so a flood of large bodies does not
starve them.

All budget operations run on the event loop thread.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("modelship.serve.limits")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

#: requests at most this large may use a budget's reserve
SMALL_REQUEST_BYTES = 256 * KiB
#: largest per-request limit chosen automatically (the old fixed default)
MAX_AUTO_REQUEST_BYTES = 64 * MiB
#: caps of the automatic budgets (a host without a memory limit)
MAX_AUTO_INFLIGHT_BYTES = 1 * GiB
MAX_AUTO_DECODED_BYTES = 2 * GiB
#: floors of the automatic budgets (a very small memory limit still serves small requests)
MIN_AUTO_INFLIGHT_BYTES = 4 * MiB
MIN_AUTO_DECODED_BYTES = 8 * MiB
#: the automatic per-request limit lets a JSON body this many times its size be decoded within the budget
JSON_HEADROOM_FACTOR = 8


class Budget:
    """A byte budget shared by all requests; ``reserve`` bytes of it are kept for small requests."""

    __slots__ = ("limit", "name", "peak", "refused", "reserve", "used")

    def __init__(self, name: str, limit: int, reserve: int | None = None) -> None:
        self.name = name
        self.limit = limit
        self.reserve = limit // 8 if reserve is None else reserve
        self.used = 0
        self.peak = 0
        self.refused = 0

    def fits_ever(self, n: int) -> bool:
        """Whether a request of ``n`` bytes could be held when nothing else is (else: 413, not 429)."""
        return n <= self.limit - (0 if n <= SMALL_REQUEST_BYTES else self.reserve)

    def take(self, n: int, total: int | None = None) -> bool:
        """Take ``n`` more bytes for a request that then holds ``total`` (default ``n``), if they fit now. Only a
        request whose total is small may dip into the reserve."""
        if n <= 0:
            return True
        small = (n if total is None else total) <= SMALL_REQUEST_BYTES
        room = self.limit - self.used - (0 if small else self.reserve)
        if n > room:
            self.refused += 1
            return False
        self.used += n
        if self.used > self.peak:
            self.peak = self.used
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)

    def resize(self, limit: int) -> None:
        """A new limit (bytes already held stay held)."""
        self.limit = limit
        self.reserve = limit // 8


class Hold:
    """What one request holds in the budgets. Released once the response is written (or the client left) and no
    thread still works on its data (``pin``/``unpin`` around decoding and inference)."""

    __slots__ = ("_closed", "_decoded", "_pins", "body", "decoded", "inflight")

    def __init__(self, inflight: Budget, decoded: Budget) -> None:
        self.inflight = inflight
        self.decoded = decoded
        self.body = 0
        self._decoded = 0
        self._pins = 0
        self._closed = False

    @property
    def decoded_bytes(self) -> int:
        return self._decoded

    def take_body(self, n: int) -> bool:
        if not self.inflight.take(n, self.body + n):
            return False
        self.body += n
        return True

    def drop_body(self) -> None:
        """The body is no longer referenced (decoded into arrays of its own)."""
        self.inflight.give(self.body)
        self.body = 0

    def set_decoded(self, n: int) -> bool:
        """Hold exactly ``n`` decoded bytes (growing may fail; shrinking always works)."""
        delta = n - self._decoded
        if delta > 0 and not self.decoded.take(delta, n):
            return False
        if delta < 0:
            self.decoded.give(-delta)
        self._decoded = n
        return True

    def pin(self) -> None:
        self._pins += 1

    def unpin(self) -> None:
        self._pins -= 1
        if self._pins <= 0 and self._closed:
            self._release()

    def close(self) -> None:
        """The response is written or dropped; memory returns now, or when the last pin goes."""
        self._closed = True
        if self._pins <= 0:
            self._release()

    def _release(self) -> None:
        self.drop_body()
        self.set_decoded(0)


# ---------------------------------------------------------------------------------------------
# sizing


@dataclass(frozen=True)
class MemoryPlan:
    """The byte limits in force and where they came from."""

    limit: int | None
    """The memory limit the budgets were sized from (None: no limit found, caps apply)."""
    source: str
    """"cgroup", "configured" or "none"."""
    baseline: int
    """Resident bytes of the server when sized (model loaded and warm)."""
    inflight: int
    decoded: int
    max_request: int
    requested_max_request: int = 0
    """An explicit per-request limit that was lowered to what the in-flight budget can hold (0: not lowered)."""


def plan_memory(
    *,
    limit: int | None,
    source: str,
    baseline: int,
    max_request: int = 0,
    inflight: int = 0,
    decoded: int = 0,
) -> MemoryPlan:
    """Budgets from the memory limit; explicit (non-zero) values win.

    What the server holds beyond its baseline is split between request bytes in flight (2/5) and decoded tensors
    (3/5), after a safety margin of 20% of the limit (at least 64 MiB) for everything not counted (buffers of
    responses, the kernel's socket buffers, allocator slack and fragmentation; a 512Mi pod under bench/abuse.py
    peaked at 478 MiB with a 10% margin). The per-request limit lets four maximal bodies be in flight at once and a
    JSON body of that size be decoded within the decoded budget.
    """
    if limit is None:
        headroom = MAX_AUTO_INFLIGHT_BYTES + MAX_AUTO_DECODED_BYTES
    else:
        safety = max(64 * MiB, limit // 5)
        headroom = max(0, limit - baseline - safety)
    auto_inflight = max(MIN_AUTO_INFLIGHT_BYTES, min(MAX_AUTO_INFLIGHT_BYTES, headroom * 2 // 5))
    auto_decoded = max(MIN_AUTO_DECODED_BYTES, min(MAX_AUTO_DECODED_BYTES, headroom * 3 // 5))
    inflight = inflight or auto_inflight
    decoded = decoded or auto_decoded
    lowered = 0
    if not max_request:
        max_request = min(MAX_AUTO_REQUEST_BYTES, inflight // 4, decoded // JSON_HEADROOM_FACTOR)
        max_request = max(64 * KiB, max_request)
    elif max_request > inflight - inflight // 8:  # a body that large could never be admitted
        lowered, max_request = max_request, inflight - inflight // 8
    return MemoryPlan(limit, source, baseline, inflight, decoded, max_request, lowered)


def resident_bytes() -> int:
    """Resident set size of this process (0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")
