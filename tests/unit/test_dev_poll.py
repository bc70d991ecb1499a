"""modelship_dev.poll.until, the demo's and the benchmarks' "poll until so, with a deadline": on a fake clock
(the probe's answers, the sleeps and the deadline exactly) and on loopback (a real listener that appears later);
node_demo's waits (apply_crds, the local operator's health) through it."""

from __future__ import annotations

import errno
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelship_dev import node_demo as demo
from modelship_dev import poll
from tests.unit.test_node_demo_routed import closed_port  # noqa: F401 (a loopback port nothing listens on)


class FakeClock:
    """A monotonic clock that moves only when slept on (and by what each probe call costs)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds


def answers(clock: FakeClock, *script: Any, cost: float = 0.0) -> Callable[[], Any]:
    """A probe that gives the scripted answers in turn (an exception is raised), each call taking ``cost``."""
    left = list(script)

    def probe() -> Any:
        clock.now += cost
        answer = left.pop(0) if len(left) > 1 else left[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return probe


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_the_first_truthy_answer_is_returned_without_sleeping(clock: FakeClock) -> None:
    got = poll.until(answers(clock, {"ready": 1}), pending="x not ready", timeout=5, clock=clock, sleep=clock.sleep)
    assert got == {"ready": 1} and clock.slept == []


def test_falsy_answers_and_named_errors_are_retried_every_interval(clock: FakeClock) -> None:
    probe = answers(clock, None, ConnectionRefusedError(errno.ECONNREFUSED, "refused"), poll.NotYet("no"), [], "ok")
    got = poll.until(probe, pending="x", timeout=10, interval=0.25, retry=(ConnectionRefusedError,),
                     clock=clock, sleep=clock.sleep)  # fmt: skip
    assert got == "ok" and clock.slept == [0.25] * 4


def test_past_the_deadline_it_names_what_was_awaited_and_the_last_error(clock: FakeClock) -> None:
    last = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    probe = answers(clock, None, poll.NotYet("conditions []"), last)
    with pytest.raises(TimeoutError) as caught:
        poll.until(probe, pending="10.0.0.1:80 not routed", timeout=2, interval=0.5, retry=(OSError,),
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    assert str(caught.value) == "10.0.0.1:80 not routed after 2.0s (last: [Errno 111] Connection refused)"
    assert caught.value.__cause__ is last
    assert clock.slept == [0.5] * 4 and clock.now == 1002.0  # the last probe at the deadline, no sleep after it


def test_the_last_falsy_value_is_quoted_when_no_error_came_last(clock: FakeClock) -> None:
    with pytest.raises(TimeoutError, match=r"^crd not Established after 1\.0s \(last: \[\]\)$") as caught:
        poll.until(answers(clock, []), pending="crd not Established", timeout=1, clock=clock, sleep=clock.sleep)
    assert caught.value.__cause__ is None


def test_it_never_sleeps_past_the_deadline(clock: FakeClock) -> None:
    with pytest.raises(TimeoutError, match=r"^x after 1\.2s"):
        poll.until(answers(clock, None, cost=0.2), pending="x", timeout=1, interval=0.5, clock=clock,
                   sleep=clock.sleep)  # fmt: skip
    # probes end at 0.2, 0.9 and 1.2: after the second only 0.1 s of the deadline is left, so 0.1 is slept, not 0.5
    assert clock.slept == pytest.approx([0.5, 0.1])


@pytest.mark.parametrize("error", [RuntimeError("operator exited 1"), PermissionError(errno.EACCES, "denied")])
def test_an_error_not_named_is_raised_at_once(clock: FakeClock, error: Exception) -> None:
    calls: list[float] = []

    def probe() -> bool:
        calls.append(clock.now)
        raise error

    with pytest.raises(type(error)) as caught:
        poll.until(probe, pending="x", timeout=10, retry=(ConnectionRefusedError,), clock=clock, sleep=clock.sleep)
    assert caught.value is error and len(calls) == 1 and clock.slept == []


def test_a_predicate_chooses_which_errors_mean_not_yet(clock: FakeClock) -> None:
    def refused(exc: Exception) -> bool:
        return isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED

    probe = answers(clock, ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True)
    assert poll.until(probe, pending="x", timeout=5, retry=refused, clock=clock, sleep=clock.sleep) is True
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    with pytest.raises(OSError) as caught:
        poll.until(answers(clock, unreachable), pending="x", timeout=5, retry=refused, clock=clock, sleep=clock.sleep)
    assert caught.value is unreachable


# ---------------------------------------------------------------------------- loopback, the real clock
def test_on_loopback_refusals_are_retried_until_a_listener_answers(closed_port: int) -> None:  # noqa: F811
    listening = threading.Event()
    stop = threading.Event()

    def listen_after_a_refusal() -> None:
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", closed_port))
            refused.wait(10)  # not listening until the probe has been turned away once
            srv.listen()
            listening.set()
            stop.wait(10)

    refused = threading.Event()
    tries: list[str] = []

    def connects() -> bool:
        try:
            socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()
        except ConnectionRefusedError:
            tries.append("refused")
            refused.set()
            raise
        tries.append("accepted")
        return True

    thread = threading.Thread(target=listen_after_a_refusal, daemon=True)
    thread.start()
    try:
        assert poll.until(connects, pending="loopback not listening", timeout=10, interval=0.05,
                          retry=(ConnectionRefusedError,)) is True  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert listening.is_set() and tries[0] == "refused" and tries[-1] == "accepted"


def test_on_loopback_the_deadline_ends_a_wait_nothing_answers(closed_port: int) -> None:  # noqa: F811
    def connects() -> bool:
        socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()
        return True

    with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{closed_port} closed after 0\.\d+s \(last: .*refused"):
        poll.until(connects, pending=f"127.0.0.1:{closed_port} closed", timeout=0.3, interval=0.05,
                   retry=(ConnectionRefusedError,))  # fmt: skip


# ---------------------------------------------------------------------------- node_demo's waits through it
def test_apply_crds_waits_for_established_and_names_the_conditions_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[tuple[str, ...]] = []
    crd: dict[str, Any] = {"status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}}

    def kc(*args: str, **_: Any) -> str:
        ran.append(args)
        return ""

    def kjson(*args: str) -> Any:
        ran.append(args)
        return crd

    monkeypatch.setattr(demo, "kc", kc)
    monkeypatch.setattr(demo, "kjson", kjson)
    awaited = r"crd/modeldeployments\.modelship\.io not Established after 0\.\ds \(last: conditions .*NamesAccepted"
    with pytest.raises(TimeoutError, match=awaited):
        demo.apply_crds(timeout=0.2)
    assert ran[0][0] == "apply" and len(ran) >= 2  # applied once, asked more than once
    crd["status"]["conditions"].append({"type": "Established", "status": "True"})
    ran.clear()
    demo.apply_crds(timeout=5)
    assert [a[0] for a in ran] == ["apply", "get"]


def test_the_local_operator_that_exits_is_said_at_once_not_waited_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(demo, "DEMO", tmp_path)
    monkeypatch.setattr(demo, "kc", lambda *args, **_: "")
    monkeypatch.setattr(sys, "executable", "false")  # the operator process exits 1 at once
    op = demo.Operator()
    with pytest.raises(RuntimeError, match=r"operator exited 1: see .*operator\.log"):
        op.start()
