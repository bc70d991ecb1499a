"""The artifact hand-off (modelship.build.handoff) over real loopback HTTP: one authenticated, bounded upload, accepted
only with the digest the operator recorded; a wrong digest, a hostile tar, an oversized or unauthenticated upload
never lands; nothing arriving is a temporary failure. The CLI's exit codes are what the Jobs' failure rules expect."""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship.build.handoff import UPLOAD_PATH, Accepted, HandoffError, receive, send
from tests.integration.operator_harness import free_port
from tests.optimize.conftest import cli_env

from .support import sha256, write_output

TOKEN = "3d1f0a7e-9b0c-4d7e-8f00-123456789abc"
CONTENT = b"TFL3 the optimized model"


class Receiver:
    def __init__(self, out: Path, digest: str, max_bytes: int = 10_000_000, timeout: float = 20) -> None:
        self.port = free_port()
        self.result: Accepted | HandoffError | None = None
        self.thread = threading.Thread(target=self._run, args=(out, digest, max_bytes, timeout), daemon=True)
        self.thread.start()
        self._wait_listening()

    def _run(self, out: Path, digest: str, max_bytes: int, timeout: float) -> None:
        try:
            self.result = receive(out, digest=digest, token=TOKEN, port=self.port, timeout=timeout,
                                  max_bytes=max_bytes)  # fmt: skip
        except HandoffError as exc:
            self.result = exc

    def _wait_listening(self) -> None:
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                threading.Event().wait(0.05)
        raise AssertionError("the receiver never listened")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{UPLOAD_PATH}"

    def finish(self) -> Accepted | HandoffError | None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.result


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(digest: str, **kw: Any) -> Receiver:
        r = Receiver(tmp_path / "received", digest, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.thread.join(timeout=30)


def put(url: str, body: bytes, token: str = TOKEN) -> tuple[int, str]:
    port = int(url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", UPLOAD_PATH, body=body, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_the_recorded_artifact_is_accepted(tmp_path: Path, receiver: Callable[..., Receiver]) -> None:
    src = write_output(tmp_path / "claim" / "r1", CONTENT)
    r = receiver(sha256(CONTENT))
    answer = send(src, r.url, token=TOKEN, timeout=10)
    assert answer.startswith("accepted model.tflite")
    result = r.finish()
    assert isinstance(result, Accepted) and result.size == len(CONTENT)
    received = tmp_path / "received"
    assert (received / "model.tflite").read_bytes() == CONTENT and (received / "report.json").is_file()


def test_an_artifact_other_than_the_recorded_one_is_refused(tmp_path: Path, receiver: Callable[..., Receiver]) -> None:
    """The tenant rewrote the claim (artifact and report agree with each other): not what the optimization Job
    reported, so nothing is built."""
    src = write_output(tmp_path / "claim" / "r1", b"TFL3 a model the tenant swapped in")
    r = receiver(sha256(CONTENT))
    with pytest.raises(HandoffError) as err:
        send(src, r.url, token=TOKEN, timeout=10)
    assert not err.value.temporary and "422" in str(err.value) and "refusing to build it" in str(err.value)
    result = r.finish()
    assert isinstance(result, HandoffError) and not result.temporary


def test_a_report_that_lies_about_its_file_is_refused(tmp_path: Path, receiver: Callable[..., Receiver]) -> None:
    src = write_output(tmp_path / "claim" / "r1", b"other bytes", digest=sha256(CONTENT))  # report claims CONTENT
    r = receiver(sha256(CONTENT))
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(src / "report.json", arcname="report.json")
        tar.add(src / "model.tflite", arcname="model.tflite")
    status, text = put(r.url, archive.getvalue())
    assert status == 422 and "digest mismatch" in text
    assert isinstance(r.finish(), HandoffError)


@pytest.mark.parametrize(
    "member",
    [
        ("../escape.tflite", tarfile.REGTYPE),
        ("/abs/model.tflite", tarfile.REGTYPE),
        ("link.tflite", tarfile.SYMTYPE),
        ("dev", tarfile.CHRTYPE),
    ],
)
def test_hostile_tar_members_never_land(
    tmp_path: Path, receiver: Callable[..., Receiver], member: tuple[str, bytes]
) -> None:
    r = receiver(sha256(CONTENT))
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(member[0])
        info.type = member[1]
        if member[1] == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        data = b"" if member[1] != tarfile.REGTYPE else CONTENT
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    status, text = put(r.url, archive.getvalue())
    assert status == 422, text
    assert isinstance(r.finish(), HandoffError)
    assert not (tmp_path / "escape.tflite").exists()


def test_unauthenticated_uploads_are_ignored_and_oversized_ones_refused(
    tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    src = write_output(tmp_path / "claim" / "r1", CONTENT)
    r = receiver(sha256(CONTENT), max_bytes=100_000)
    assert put(r.url, b"junk", token="guess")[0] == 401  # the receiver keeps waiting
    assert send(src, r.url, token=TOKEN, timeout=10).startswith("accepted")
    assert isinstance(r.finish(), Accepted)
    r2 = Receiver(tmp_path / "received2", sha256(CONTENT), max_bytes=100)
    status, _ = put(r2.url, b"x" * 1000)
    assert status == 413
    assert isinstance(r2.finish(), HandoffError)


def test_nothing_arriving_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(HandoffError) as err:
        receive(tmp_path / "out", digest=sha256(CONTENT), token=TOKEN, port=free_port(), timeout=1.5, max_bytes=100)
    assert err.value.temporary and "no artifact arrived" in str(err.value)


def test_cli_exit_codes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    base = [sys.executable, "-m", "modelship", "artifact"]
    proc = subprocess.run([*base, "receive", "--out", str(tmp_path / "o"), "--digest", sha256(CONTENT), "--token-file",
                           str(token), "--port", str(free_port()), "--timeout", "1", "--max-bytes", "100"],
                          capture_output=True, text=True, env=cli_env(), timeout=60)  # fmt: skip
    assert proc.returncode == 75 and "no artifact arrived" in proc.stderr
    proc = subprocess.run([*base, "send", "--from", str(tmp_path / "missing"), "--to", "http://127.0.0.1:9/artifact",
                           "--token", TOKEN], capture_output=True, text=True, env=cli_env(), timeout=60)  # fmt: skip
    assert proc.returncode == 1 and "not a directory" in proc.stderr
    src = write_output(tmp_path / "claim" / "r1", CONTENT)
    proc = subprocess.run([*base, "send", "--from", str(src), "--to", f"http://127.0.0.1:{free_port()}/artifact",
                           "--token", TOKEN, "--timeout", "5"], capture_output=True, text=True, env=cli_env(),
                          timeout=60)  # fmt: skip
    assert proc.returncode == 75 and "upload to 127.0.0.1" in proc.stderr
