"""node_demo.routed: the e2e tier's and the demo's calls through a Service wait, with a deadline, until kube-proxy
routes its address (a ModelDeployment turns Ready a moment before kube-proxy programs the ready endpoints), on
real sockets over loopback: refused connections are retried until something listens, then the wait is said; a
deadline ends it with the address and the last error; other errors are not retried."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from modelship_dev import node_demo as demo


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


def _listen_later(port: int, after: float, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen()
            stop.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_refused_connections_are_retried_until_the_address_answers(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    thread = _listen_later(closed_port, 0.6, stop)
    try:
        waited = demo.routed("127.0.0.1", closed_port, deadline=10)
    finally:
        stop.set()
        thread.join()
    assert 0.5 <= waited < 10
    said = capsys.readouterr().out
    assert f"127.0.0.1:{closed_port}: routed by kube-proxy after {waited:.2f}s" in said
    assert "connections turned away" in said


def test_an_address_that_answers_at_once_is_not_waited_for(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", closed_port))
        srv.listen()
        waited = demo.routed("127.0.0.1", closed_port, deadline=10)
    assert waited < 1
    assert "routed by kube-proxy" not in capsys.readouterr().out


def test_the_deadline_names_the_address_and_the_last_error(closed_port: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{closed_port} not routed after 0\.\d+s \(last: .*refused"):
        demo.routed("127.0.0.1", closed_port, deadline=0.5)
    assert time.monotonic() - t0 < 3


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    def refuse_by_policy(address: tuple[str, int], timeout: float) -> socket.socket:
        calls.append(address)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(demo.socket, "create_connection", refuse_by_policy)
    with pytest.raises(PermissionError):
        demo.routed("10.96.0.20", 8080, deadline=10)
    assert calls == [("10.96.0.20", 8080)]
