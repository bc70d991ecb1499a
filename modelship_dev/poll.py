"""Poll until something is so, with a deadline: the demo's and the benchmarks' waits on the real node (a CRD
Established, the operator healthy, a Service address routed).

The same semantics as the tests' ``wait_for`` helpers (tests/integration/cluster.py), which this package cannot
import: the probe is called at once, then every ``interval`` seconds (never sleeping past the deadline) until it
returns something truthy, which is returned; an exception the caller names as "not yet" is retried, any other
propagates at once; past the deadline, TimeoutError names what was awaited and the last error (or value).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Retry = tuple[type[Exception], ...] | Callable[[Exception], bool]
"""The exceptions of the probe that mean "not yet": these types, or those the predicate accepts."""


class NotYet(Exception):
    """Raised by a probe to say "not yet" with a reason, which TimeoutError quotes as the last word if the
    deadline passes. Always retried."""


def until(
    probe: Callable[[], T | None],
    *,
    pending: str,
    timeout: float,
    interval: float = 0.5,
    retry: Retry = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    ``pending`` says what is awaited as not yet so ("crd/x not Established", "10.96.0.20:80 not routed"): past
    ``timeout`` seconds the TimeoutError reads "<pending> after <seconds>s (last: <last error or value>)".
    ``retry``: the probe's exceptions that mean "not yet" (``NotYet`` always does); any other is raised at once.
    ``clock`` and ``sleep`` are the monotonic clock and the wait (a test's fake clock)."""
    start = clock()
    last: object = None
    while True:
        try:
            value = probe()
        except NotYet as exc:
            last = exc
        except Exception as exc:
            if not _retried(exc, retry):
                raise
            last = exc
        else:
            if value:
                return value
            last = repr(value)
        waited = clock() - start
        if waited >= timeout:
            error = TimeoutError(f"{pending} after {waited:.1f}s (last: {last})")
            if isinstance(last, BaseException):
                raise error from last
            raise error
        sleep(min(interval, timeout - waited))


def _retried(exc: Exception, retry: Retry) -> bool:
    if isinstance(retry, tuple):
        return isinstance(exc, retry)
    return retry(exc)
