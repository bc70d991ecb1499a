"""BuildResult: the one-line build summary in the termination message."""

from __future__ import annotations

import json

import pytest

from modelship.api.build_result import BuildResult
from modelship.api.report import TERMINATION_MESSAGE_LIMIT

DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.local:5000/models/digits@" + DIGEST


def test_round_trip_and_the_documented_shape() -> None:
    r = BuildResult(ok=True, image=IMAGE, digest=DIGEST, platforms=["linux/amd64", "linux/arm64"])
    line = r.to_line()
    assert "\n" not in line
    assert json.loads(line) == {
        "ok": True,
        "image": IMAGE,
        "digest": DIGEST,
        "platforms": ["linux/amd64", "linux/arm64"],
    }
    assert BuildResult.from_line(line) == r
    assert BuildResult.from_line("  " + line + "\n") == r
    assert r.repository == "registry.local:5000/models/digits"


def test_the_shell_wrappers_line_parses() -> None:
    # exactly what the BuildKit wrapper's printf writes
    line = f'{{"ok":true,"image":"{IMAGE}","digest":"{DIGEST}","platforms":["linux/amd64"]}}\n'
    r = BuildResult.from_line(line)
    assert r.ok and r.digest == DIGEST and r.platforms == ["linux/amd64"]


def test_kaniko_bare_digest_is_completed() -> None:
    r = BuildResult.from_termination_message(DIGEST + "\n", "registry.local:5000/models/digits", ["linux/arm64"])
    assert r == BuildResult(ok=True, image=IMAGE, digest=DIGEST, platforms=["linux/arm64"])
    # a JSON line is taken as is
    line = BuildResult(ok=True, image=IMAGE, digest=DIGEST).to_line()
    assert BuildResult.from_termination_message(line, "ignored", []).image == IMAGE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty termination message"),
        ("   \n", "empty termination message"),
        ("error: failed to solve: base image not found\n", "log ends with: error: failed to solve"),
        ('{"ok":true}', "needs image and digest"),
        ('{"ok":true,"image":"r/x@sha256:' + "00" * 32 + '","digest":"' + DIGEST + '"}', "does not end with"),
        ('{"ok":true,"image":"x@sha256:12","digest":"sha256:12"}', "not valid"),
        ('{"ok":false,"bogus":1}', "not valid"),
        ("{not json", "not valid"),
    ],
)
def test_invalid_messages_are_readable_value_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        BuildResult.from_line(text)


def test_failure_and_long_errors_fit_the_limit() -> None:
    r = BuildResult(ok=False, error="x" * 1024)
    assert len(r.to_line().encode()) <= TERMINATION_MESSAGE_LIMIT
    assert BuildResult.from_line(r.to_line()).ok is False
