"""`modelship push` / `modelship pull`: what is refused before a registry is asked, and what a refused pull leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelship.cli import main
from modelship.fetch import sha256_path
from modelship.sources import oci

UNREACHABLE = "oci://127.0.0.1:1/m/digits:1"  # nothing listens: a check that asks the registry fails differently


@pytest.mark.parametrize("what", ["empty-file", "not-a-savedmodel"])
def test_push_refuses_what_cannot_be_a_model(tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    if what == "empty-file":
        path = tmp_path / "model.h5"
        path.write_bytes(b"")
        message = f"{path}: the file is empty"
    else:
        path = tmp_path / "export"
        path.mkdir()
        (path / "README").write_text("not a model")
        message = f"{path}: not a SavedModel directory (no saved_model.pb in it)"
    assert main(["push", str(path), UNREACHABLE, "--plain-http"]) == 1
    assert capsys.readouterr().err == f"modelship push: error: {message}\n"


def test_pull_checks_the_digest_argument_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", UNREACHABLE, "--out", str(tmp_path / "o"), "--plain-http", "--digest", "abc"]) == 1
    assert capsys.readouterr().err == "modelship pull: error: --digest abc: expected sha256:<64 hex digits>\n"


def _place(dest: Path, kind: str) -> Path:
    """What a pull places: a model file or a SavedModel tree."""
    if kind == "file":
        path = dest / "model.h5"
        path.write_bytes(b"tampered")
    else:
        path = dest / "saved_model"
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"tampered")
    return path


@pytest.mark.parametrize("kind", ["file", "tree"])
def test_a_pull_refused_for_its_digest_leaves_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Before, the refused content stayed at OUT/<name>, where the server looks for its model."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")

    def fake_pull(uri: str, dest: Path, access: Any, *, max_bytes: int) -> oci.Pulled:
        return oci.Pulled(path=_place(dest, kind), manifest_digest="sha256:" + "0" * 64, model_format=None)

    monkeypatch.setattr(oci, "pull", fake_pull)
    assert main(["pull", UNREACHABLE, "--out", str(out), "--digest", "sha256:" + "ab" * 32]) == 1
    assert "digest mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # the right digest keeps it
    (tmp_path / "probe").mkdir()
    good = sha256_path(_place(tmp_path / "probe", kind))
    assert main(["pull", UNREACHABLE, "--out", str(out), "--digest", good]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "model.h5" if kind == "file" else "saved_model"]
