"""The work queue: each key once in the queue, never processed twice at once, re-queued after a delay; errors
logged with the key, counted, retried, and given up after a bounded number of tries."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from modelship.controller.workqueue import Retry, WorkQueue


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


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_errors_are_logged_counted_and_given_up_after_bounded_tries(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    gave_up: list[tuple[tuple[str, str], Exception, int]] = []

    class Broken(ValueError):
        pass

    def handler(key: tuple[str, str]) -> None:
        calls.append(time.monotonic())
        raise Broken("kaniko builds one platform per run")

    errors_before = sample("modelship_reconcile_errors_total", error="Broken")
    give_ups_before = sample("modelship_reconcile_give_ups_total")
    q = WorkQueue(handler, workers=1, retry=Retry(max_tries=3, base_seconds=0.05), give_up=lambda *a: gave_up.append(a))
    q.start()
    try:
        with caplog.at_level(logging.ERROR, logger="modelship.workqueue"):
            q.add(("team-a", "digits"))
            wait_until(lambda: len(gave_up) == 1)
            time.sleep(0.5)  # given up: not retried by itself any more
        assert len(calls) == 3 and len(gave_up) == 1
        key, error, tries = gave_up[0]
        assert key == ("team-a", "digits") and isinstance(error, Broken) and tries == 3
        assert calls[1] - calls[0] >= 0.1 and calls[2] - calls[1] >= 0.2  # exponential backoff between tries
        failures = [r for r in caplog.records if "team-a/digits" in r.getMessage()]
        assert len(failures) == 3 and all(r.exc_info and r.exc_info[0] is Broken for r in failures)
        assert sample("modelship_reconcile_errors_total", error="Broken") - errors_before == 3
        assert sample("modelship_reconcile_give_ups_total") - give_ups_before == 1
        # a change (or the resync) tries again; still failing, it is given up again at once
        q.add(("team-a", "digits"))
        wait_until(lambda: len(gave_up) == 2)
        assert gave_up[1][2] == 4
    finally:
        q.stop()


def test_transient_errors_are_retried_and_a_success_resets_the_count() -> None:
    outcomes = [OSError("connection reset")] * 4 + [None, RuntimeError("bug"), None]
    calls = 0
    gave_up: list[object] = []

    def handler(key: tuple[str, str]) -> None:
        nonlocal calls
        outcome = outcomes[calls]
        calls += 1
        if outcome is not None:
            raise outcome

    q = WorkQueue(handler, workers=1, retry=Retry(max_tries=2, base_seconds=0.01),
                  give_up=lambda *a: gave_up.append(a), transient=lambda e: isinstance(e, OSError))  # fmt: skip
    q.start()
    try:
        q.add(("ns", "a"))
        wait_until(lambda: calls == 5)  # four transient failures, more than max_tries, then a success
        q.add(("ns", "a"))
        wait_until(lambda: calls == 7)  # one failure after the success is the first of a new count: retried
        time.sleep(0.2)
        assert gave_up == []
    finally:
        q.stop()
