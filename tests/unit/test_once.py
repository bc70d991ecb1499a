"""The process-wide "first time?" memory (controller/once.py): exactly one of concurrent callers hears "first",
forget makes a key new again, and the memory stays within its capacity."""

from __future__ import annotations

import threading

import pytest

from modelship.controller.once import Once


def race(once: Once, key: str, threads: int = 16, asks: int = 50) -> list[bool]:
    """What ``threads`` threads hear, asking about ``key`` ``asks`` times each, all starting at the same moment."""
    start = threading.Barrier(threads)
    answers: list[bool] = []
    answers_lock = threading.Lock()

    def ask() -> None:
        start.wait()
        said = [once.first(key) for _ in range(asks)]
        with answers_lock:
            answers.extend(said)

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
    return answers


def test_of_concurrent_callers_with_one_key_exactly_one_hears_first() -> None:
    for round_ in range(20):  # each round a fresh memory raced by every thread at once
        answers = race(Once(), f"Secret-{round_}")
        assert answers.count(True) == 1 and len(answers) == 16 * 50


def test_a_forgotten_key_is_first_again_and_others_are_kept() -> None:
    once = Once()
    assert once.first("ConfigMap") and once.first("Secret")
    assert not once.first("ConfigMap") and not once.first("Secret")
    once.forget("ConfigMap")
    once.forget("never-seen")  # nothing to forget: no error
    assert once.first("ConfigMap") and not once.first("Secret")


def test_the_memory_is_bounded_and_forgets_the_key_asked_about_longest_ago() -> None:
    once = Once(capacity=3)
    for key in ("a", "b", "c"):
        assert once.first(key)
    assert not once.first("a")  # asked again: now the most recent
    assert once.first("d") and len(once) == 3  # "b" (asked longest ago) is forgotten to make room
    assert not once.first("a") and not once.first("c") and not once.first("d")
    assert once.first("b")
    for i in range(1000):
        once.first(i)
    assert len(once) == 3
    with pytest.raises(ValueError):
        Once(capacity=0)
