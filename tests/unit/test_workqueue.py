"""The work queue: each key once in the queue, never processed twice at once, re-queued after a delay."""

from __future__ import annotations

import threading
import time

from modelship.controller.workqueue import WorkQueue


def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_every_add_is_processed_even_with_the_timer_waiting() -> None:
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def handler(key: tuple[str, str]) -> None:
        with lock:
            seen.append(key)

    q = WorkQueue(handler, workers=2)
    q.start()
    try:
        for i in range(60):
            # one key at a time into an idle queue: the wake-up must reach a worker, not the timer thread
            q.add(("ns", f"k{i}"))
            wait_until(lambda i=i: len(seen) == i + 1, timeout=0.5)
        assert seen == [("ns", f"k{i}") for i in range(60)]
    finally:
        q.stop()


def test_same_key_never_runs_concurrently_and_is_rerun_when_dirty() -> None:
    running = 0
    overlap = False
    runs = 0
    gate = threading.Event()

    def handler(key: tuple[str, str]) -> None:
        nonlocal running, overlap, runs
        running += 1
        overlap = overlap or running > 1
        gate.wait(2)
        runs += 1
        running -= 1

    q = WorkQueue(handler, workers=4)
    q.start()
    try:
        q.add(("ns", "a"))
        wait_until(lambda: running == 1)
        for _ in range(5):
            q.add(("ns", "a"))  # while processing: marks it dirty, queued once more afterwards
        gate.set()
        wait_until(lambda: runs == 2)
        time.sleep(0.1)
        assert runs == 2 and not overlap
    finally:
        q.stop()


def test_requeue_after_delay_and_retry_on_error() -> None:
    calls: list[float] = []

    def handler(key: tuple[str, str]) -> float | None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 0.2
        if len(calls) == 2:
            raise RuntimeError("API down")
        return None

    q = WorkQueue(handler, workers=1)
    q.start()
    try:
        q.add(("ns", "a"))
        wait_until(lambda: len(calls) == 3)
        assert calls[1] - calls[0] >= 0.2
        assert calls[2] - calls[1] >= 0.5  # error backoff
    finally:
        q.stop()
