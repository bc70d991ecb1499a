"""`modelship optimize --out DIR` that cannot be written: the path's own fault is permanent (exit 1), a file system
that is full, failing or stale is temporary (exit 75: the optimization Job's podFailurePolicy retries it)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from modelship.cli import main


@pytest.mark.parametrize(
    ("name", "code", "failure"),
    [
        ("EROFS", 1, "Permanent"),
        ("EACCES", 1, "Permanent"),
        ("ENOTDIR", 1, "Permanent"),
        ("ENOSPC", 75, "Temporary"),
        ("EIO", 75, "Temporary"),
        ("ESTALE", 75, "Temporary"),
        ("EDQUOT", 75, "Temporary"),
    ],
)
def test_why_out_cannot_be_written_decides_permanent_or_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, code: int,
    failure: str,
) -> None:  # fmt: skip
    """Before, every OSError of the check was exit 1, so a full artifact claim failed the Job for good."""
    number = getattr(errno, name)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    out, term = tmp_path / "out", tmp_path / "term.log"
    argv = ["optimize", "--model", str(tmp_path / "absent.h5"), "--optimization-json", "{}", "--out", str(out),
            "--termination-log", str(term)]  # fmt: skip
    assert main(argv) == code
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write there ({os.strerror(number)})" in err
    assert "absent.h5" not in err  # refused before the model is looked for
    assert json.loads(term.read_text())["failure"] == failure
