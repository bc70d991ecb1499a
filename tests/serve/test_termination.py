"""The server's fatal startup errors leave one bounded line in the termination log (the file the kubelet copies into
the container's last termination), and the operator's crash-loop message carries that line as it is."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from modelship.api.status import ConditionType
from modelship.controller.podhealth import POD_TEXT_LIMIT, printable
from modelship.serve import cli, termination
from modelship.serve.config import ENV_VARS
from tests.unit.test_serving_pod_health import crashing, health, judged, md_of, new_rollout, pod, status
from tests.unit.test_stages import conditions

from .conftest import PY, json_lines, serve_cmd, serve_env


def _served_on(model: Path, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_cmd("--model", str(model), "--port", "0", "--host", "127.0.0.1"),
        env=serve_env(**{termination.ENV: str(log)}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_corrupt_model_exits_1_with_its_cause_in_the_termination_log(tmp_path: Path) -> None:
    """The server started on a corrupt model file exits 1 and leaves one line naming the cause, the exception's
    class and its first line; the operator's Deployed message (the kubelet's lastState.terminated.message read
    through podhealth's sanitiser) shows that line unchanged."""
    model = tmp_path / "model.tflite"
    model.write_bytes(bytes(4) + b"TFL3" + bytes(range(256)) * 8)  # the identifier (bytes 4-8), then no flatbuffer
    log = tmp_path / "termination-log"
    proc = _served_on(model, log)
    assert proc.returncode == 1, proc.stderr
    failure = [e for e in json_lines(proc.stderr) if e["msg"] == "model failed to load"]
    assert failure, proc.stderr
    line = log.read_text()
    error = str(failure[0]["error"])
    assert line == f"model failed to load: {error.splitlines()[0]}"[: termination.LIMIT], (line, error)
    assert line.startswith("model failed to load: ValueError: ") and "\n" not in line
    assert len(line) <= termination.LIMIT
    # what the operator makes of it: the kubelet copies the file into the crash-looping container's status
    out = judged(md_of(status(("False", "RollingOut", 5))), new_rollout(),
                 health(pod("digits-5f7-a", crashing(message=line))))  # fmt: skip
    message = conditions(out.effects)[ConditionType.DEPLOYED][2]
    assert message.endswith(f"last terminated Error (exit code 1): {line}"), message


def test_a_missing_model_path_is_told_in_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    proc = _served_on(tmp_path / "missing.tflite", log)
    assert proc.returncode == 1
    assert log.read_text() == f"model failed to load: FileNotFoundError: model path {tmp_path / 'missing.tflite'} " \
        "does not exist"[: termination.LIMIT]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "head"),
    [("cnn.h5", b"\x89HDF\r\n\x1a\n" + bytes(64)), ("cnn.keras", b"PK\x03\x04" + bytes(64)),
     ("report.json", b'{"revision": "r1", "summary": {"ok": true}}')],
)  # fmt: skip
def test_a_file_that_is_not_tflite_is_told_in_one_line(tmp_path: Path, name: str, head: bytes) -> None:
    """Before, `modelship serve --model cnn.h5` (or a report.json) ended in LiteRT's 'The model is not a valid
    Flatbuffer buffer'; the line now says what serve takes and what to do with a Keras model."""
    model = tmp_path / name
    model.write_bytes(head)
    log = tmp_path / "termination-log"
    proc = _served_on(model, log)
    assert proc.returncode == 1, proc.stderr
    told = (
        f"{model} is not a TFLite model: modelship serve takes a .tflite file or a SavedModel directory "
        "(optimize a Keras .h5/.keras model first: modelship optimize)"
    )
    assert log.read_text() == termination.cause("model failed to load", ValueError(told))
    assert "is not a TFLite model: modelship serve takes a .tflite file or a SavedModel directory" in log.read_text()
    assert "Flatbuffer" not in proc.stderr


def test_the_line_is_one_bounded_line_whatever_the_error_says() -> None:
    """An exception's text is the model's to influence: only its first non-blank line is kept, control, bidi and
    separator characters become spaces, and the line is cut to LIMIT characters with an ellipsis."""
    first = "\x1b[2J\x1b[31mFAKE\tReady=True\x00\u202egnirts\x7f" + "A" * 50_000
    hostile = ValueError(f"\n  \n{first}\u2028second line")
    line = termination.cause("model failed to load", hostile)
    assert line.startswith("model failed to load: ValueError: [2J [31mFAKE Ready=True gnirts AAA"), line
    assert len(line) == termination.LIMIT and line.endswith("…") and "second" not in line
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e\u2028" for ch in line)
    assert termination.cause("model failed to load", MemoryError()) == "model failed to load: MemoryError"


def test_writing_the_line_never_fails_the_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that cannot be written is skipped (False); the kubelet's default path is written only when it exists
    (outside a pod nothing is created under /dev); a path given by the environment is created; a line passed in
    unbounded is bounded on the way out."""
    assert termination.write("x", {termination.ENV: str(tmp_path / "no-such-dir" / "log")}) is False
    assert termination.write("x", {termination.ENV: str(tmp_path)}) is False  # a directory
    default = tmp_path / "termination-log"
    monkeypatch.setattr(termination, "DEFAULT_PATH", str(default))
    assert termination.write("x", {}) is False and not default.exists()
    default.write_text("an older, longer message")
    assert termination.write("model failed to load: x", {}) is True
    assert default.read_text() == "model failed to load: x"
    given = tmp_path / "given"
    assert termination.write("a\nb" + "c" * 1000, {termination.ENV: str(given)}) is True
    text = given.read_text()
    assert text.startswith("a b") and len(text) == termination.LIMIT


def test_an_invalid_configuration_is_told_in_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(log))
    ns = argparse.Namespace(**dict.fromkeys(ENV_VARS), func=cli.run)
    ns.model = "m"
    ns.max_batch_size = -1
    assert cli.run(ns) == 2
    assert log.read_text().startswith("invalid configuration: ValueError: ") and "max batch size" in log.read_text()


@pytest.mark.parametrize("which", ["inference", "metrics"])
def test_a_port_that_is_taken_is_told_in_the_termination_log(tmp_path: Path, which: str) -> None:
    """Listening fails (the port is another process's): exit 1 with the cause logged and in the termination log,
    not a traceback, naming which port (inference or metrics) at which address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ["--port", str(port), "--metrics-port", "0"] if which == "inference" else ["--port", "0",
                                                                                            "--metrics-port", str(port)]
        log = tmp_path / "termination-log"
        proc = subprocess.run(
            serve_cmd("--model", str(tmp_path / "m.tflite"), *ports, "--host", "127.0.0.1"),
            env=serve_env(**{termination.ENV: str(log)}),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    told = [e for e in json_lines(proc.stderr) if e["msg"] == "could not listen"]
    assert told and told[0]["address"] == f"127.0.0.1:{port}" and told[0]["listener"] == which, proc.stderr
    assert log.read_text().startswith(f"could not listen on 127.0.0.1:{port} ({which}): OSError: "), log.read_text()
    assert "Traceback" not in proc.stderr


def test_a_fifo_no_one_reads_does_not_hold_the_exit(tmp_path: Path) -> None:
    """A FIFO at the termination log's path with no reader: the write is skipped (False) at once; an open for
    writing without O_NONBLOCK would wait for a reader for ever. In a process of its own, so a hang fails the
    test at its deadline instead of holding the suite."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = "from modelship.serve import termination as t; print(t.write('model failed to load: x'))"
    proc = subprocess.run([PY, "-c", code], env=serve_env(**{termination.ENV: str(fifo)}),
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


HOSTILE = [
    "".join(map(chr, range(0x00, 0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0))),
    "a\u202ab\u202bc\u202dd\u202ee\u2066f\u2067g\u2068h\u2069i\u200bj\u200ek\u200fl\ufeffm\u061cn",
    "lone \ud800 surrogates \udfff and pairs \ud83d\ude00, private \ue000\U000f0000",
    "one\u2028line\u2029para\x85nel\x0bvt\x0cff\r\ncrlf",
    "\xa0nbsp\u3000ideographic\u2003em  \t  runs\u00a0\u00a0of space ",
    "combining e\u0301 and \U0001f600 emoji and wide \u4e2d\u6587",
    "x" * 10_000,
    ("\u202e" + "y" * 9 + "\n") * 1_000,
    "z" * (termination.LIMIT - 1) + "\u2028" + "z" * 5,
    "",
]


def test_the_writer_bounds_as_the_operator_reads() -> None:
    """The line the server writes reaches status unchanged: the writer's bound is the operator's (LIMIT characters
    is podhealth's POD_TEXT_LIMIT), and what the writer keeps of a hostile text is left as it is by the operator's
    own cleaning (podhealth.printable), so the two sanitisers cannot drift apart unnoticed."""
    assert termination.LIMIT == POD_TEXT_LIMIT
    for text in HOSTILE:
        line = termination.one_line(text)
        assert printable(line) == line, repr(text[:40])
        assert len(line) <= termination.LIMIT


def test_another_start_up_error_is_told_in_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError of a start-up step other than listening (the mirror's configuration unreadable, say) exits 1
    with its cause in the termination log, not a traceback, and is not called a listen failure."""
    from modelship.serve import server as srv
    from modelship.serve.config import ServeConfig

    async def refused(self: srv.Server, *args: object) -> int:
        raise PermissionError(13, "Permission denied", "/etc/modelship/mirror.json")

    log = tmp_path / "termination-log"
    monkeypatch.setenv(termination.ENV, str(log))
    monkeypatch.setattr(srv.Server, "start", refused)
    cfg = ServeConfig(model="-", host="127.0.0.1", port=0, workers=1, threads=1, drain_seconds=0)
    assert asyncio.run(srv._serve(cfg)) == 1
    told = "could not start: PermissionError: [Errno 13] Permission denied: '/etc/modelship/mirror.json'"
    assert log.read_text() == told
