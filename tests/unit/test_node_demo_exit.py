"""`make demo`'s exit path (modelship_dev.node_demo.main), without a node: every command the demo runs goes
through node_demo.sh, which a fake records, and hack/node/down through node_demo.node_down.

- `--keep`: the operator's helm release stays installed (no `helm uninstall`) and the node stays up (no down),
  also when the demo fails or is interrupted half-way; `make demo-down` ends both.
- without it: the release is uninstalled, then the node torn down, on success, on an error (which still surfaces:
  its message and exit status 1) and on Ctrl-C / SIGTERM.
- `--local-operator --keep`: the operator process keeps running and its pid is left where hack/node/down finds it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship_dev import node_demo as demo

HELM = "/fake/bin/helm"


class Machine:
    """What the demo did, in order: ("up",), ("helm", verb...), ("kubectl", verb...), ("down",)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def sh(self, *argv: str, input_text: str | None = None, check: bool = True) -> str:
        if argv[-1].endswith("install-helm"):
            return f"installing nothing\n{HELM}\n"
        if argv[0] == str(demo.NODE / "up"):
            self.events.append(("up", *argv[1:]))
            return ""
        if argv[0] == HELM:
            verb = [a for a in argv[1:] if not a.startswith("--kubeconfig")][2:]  # drop -n <namespace>
            self.events.append(("helm", *verb[:2]))
            return ""
        if argv[0] == demo.KUBECTL[0]:
            args = argv[2:]
            self.events.append(("kubectl", *args[:2]))
            if args[:2] == ("get", "crd"):
                return json.dumps({"status": {"conditions": [{"type": "Established", "status": "True"}]}})
            if args[0] == "logs":
                return "operator log line\n"
            return ""
        self.events.append((Path(argv[0]).name, *argv[1:3]))  # ctr images tag/push
        return ""

    def down(self) -> None:
        self.events.append(("down",))

    def helm_verbs(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "helm"]

    def index(self, event: tuple[str, ...]) -> int:
        return next(i for i, e in enumerate(self.events) if e[: len(event)] == event)


def _ready(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"applyToReadySeconds": 1.0, "url": f"http://{name}.default"}}


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Machine]:
    m = Machine()
    monkeypatch.setenv("MODELSHIP_NODE_BUILDKIT_SYS_ADMIN", "0")  # prepare_node sets it when unset
    monkeypatch.setattr(demo, "sh", m.sh)
    monkeypatch.setattr(demo, "node_down", m.down)
    monkeypatch.setattr(demo, "DEMO", tmp_path / "demo")
    monkeypatch.setitem(demo.ENV, "NODE_RUN", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    monkeypatch.setattr(demo, "prepare_storage", lambda digits=False: tmp_path / "models")
    monkeypatch.setattr(demo, "report", lambda md, models: print("REPORT", md["metadata"]["name"]))
    monkeypatch.setattr(demo, "report_digits", lambda md: print("REPORT", md["metadata"]["name"]))
    monkeypatch.setattr(demo, "watch_many", lambda timeout, names: {n: _ready(n) for n in names})
    term = signal.getsignal(signal.SIGTERM)  # main() installs its own SIGTERM handler
    yield m
    signal.signal(signal.SIGTERM, term)


def _fail_at_watch(exc: BaseException) -> Callable[[float, tuple[str, ...]], dict[str, Any]]:
    def watch_many(timeout: float, names: tuple[str, ...]) -> dict[str, Any]:
        raise exc

    return watch_many


OUTCOMES = {
    # outcome: (how watch_many ends, the exit status, what the output must say)
    "ready": (None, 0, "REPORT linear-regression"),
    "error": (RuntimeError("linear-regression stalled: the gate failed"), 1,
              "FAILED: linear-regression stalled: the gate failed"),
    "interrupted": (KeyboardInterrupt(), 130, "interrupted"),
}  # fmt: skip


def _demo(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], outcome: str, *argv: str) -> str:
    """Run the demo to ``outcome`` (OUTCOMES): its exit status and message checked -> its output."""
    exc, rc, said = OUTCOMES[outcome]
    if exc is not None:
        monkeypatch.setattr(demo, "watch_many", _fail_at_watch(exc))
    assert demo.main(list(argv)) == rc
    out = capsys.readouterr().out
    assert said in out
    return out


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_keep_leaves_the_operator_installed_and_the_node_up(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], outcome: str
) -> None:
    out = _demo(monkeypatch, capsys, outcome, "--keep")
    assert machine.events[0] == ("up", "--registry")
    assert machine.helm_verbs() == ["upgrade"]  # installed, never uninstalled
    assert ("down",) not in machine.events
    assert "operator: helm release modelship-system/modelship left installed" in out
    assert "`make demo-down` ends both" in out


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_without_keep_the_operator_is_uninstalled_then_the_node_torn_down(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], outcome: str
) -> None:
    out = _demo(monkeypatch, capsys, outcome, "--no-wait")
    assert machine.helm_verbs() == ["upgrade", "uninstall"]
    # the operator's log is saved and its release uninstalled while the API server still runs, then the node goes
    assert machine.index(("kubectl", "logs")) < machine.index(("helm", "uninstall")) < machine.index(("down",))
    assert machine.events[-1] == ("down",) and machine.events.count(("down",)) == 1
    assert (demo.DEMO / "operator.log").read_text() == "operator log line\n"
    assert "left installed" not in out


def test_a_failure_before_the_operator_starts_still_tears_down_and_keeps_nothing_it_did_not_start(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def up_fails(*argv: str, input_text: str | None = None, check: bool = True) -> str:
        if argv[0] == str(demo.NODE / "up"):
            raise RuntimeError("hack/node/up exited 1: kubelet exited")
        return Machine.sh(machine, *argv, input_text=input_text, check=check)

    monkeypatch.setattr(demo, "sh", up_fails)
    assert demo.main(["--keep"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: hack/node/up exited 1: kubelet exited" in out
    assert "operator: not installed" in out and "left installed" not in out
    assert machine.helm_verbs() == [] and ("down",) not in machine.events

    machine.events.clear()
    assert demo.main(["--no-wait"]) == 1
    assert "FAILED: hack/node/up exited 1" in capsys.readouterr().out
    assert machine.events[-1] == ("down",)


def test_sigterm_while_the_demo_waits_tears_down_with_success(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --no-wait the demo sleeps until Ctrl-C; a SIGTERM (e.g. `timeout make demo`) ends it the same way."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        time.sleep(30)  # interrupted by the handler main() installed, which raises KeyboardInterrupt

    fake_time = types.SimpleNamespace(monotonic=time.monotonic, time_ns=time.time_ns, sleep=sleep)
    monkeypatch.setattr(demo, "time", fake_time)
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "The demo is up. Ctrl-C tears it down." in out and "interrupted" in out
    assert slept == [3600]
    assert machine.helm_verbs() == ["upgrade", "uninstall"] and machine.events[-1] == ("down",)


class _LocalOperator(demo.Operator):
    """demo.Operator with a stand-in process (the real one needs an API server): a long sleep in its own session."""

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)


@pytest.mark.parametrize("keep", [True, False])
def test_local_operator_kept_runs_on_with_its_pid_where_down_finds_it(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep: bool
) -> None:
    started: list[_LocalOperator] = []

    def make() -> _LocalOperator:
        started.append(_LocalOperator())
        return started[-1]

    monkeypatch.setattr(demo, "Operator", make)
    try:
        assert demo.main(["--local-operator", "--no-wait", *(["--keep"] if keep else [])]) == 0
        (op,) = started
        assert op.proc is not None
        pid_file = Path(demo.ENV["NODE_RUN"], "operator.pid")
        out = capsys.readouterr().out
        if keep:
            assert op.proc.poll() is None  # still running
            assert pid_file.read_text() == f"{op.proc.pid}\n"  # hack/node/down: stop_pid operator
            assert f"operator: left running (pid {op.proc.pid}" in out
            assert ("down",) not in machine.events
        else:
            assert op.proc.returncode is not None and op.proc.returncode != 0  # terminated by stop()
            assert not pid_file.exists()
            assert machine.events[-1] == ("down",)
        assert machine.helm_verbs() == []
    finally:
        for op in started:
            if op.proc is not None and op.proc.poll() is None:
                os.kill(op.proc.pid, signal.SIGKILL)
                op.proc.wait()
