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


class _FakeRegistry:
    """The registry's manifest and blobs (digests not checked: what ``pull`` makes of verified content is tested)."""

    layers: list[tuple[dict[str, Any], bytes]] = []

    def __init__(self, ref: Any, access: Any) -> None:
        pass

    def manifest(self) -> tuple[dict[str, Any], str]:
        return {"layers": [meta for meta, _ in self.layers]}, "sha256:" + "0" * 64

    def blob(self, layer: dict[str, Any], path: Path, *, max_bytes: int) -> None:
        path.write_bytes(self.layers[int(path.name)][1])  # pull names each blob by its layer's index


def _serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    """An artifact of a SavedModel directory layer ("tree") or of two file layers ("layers")."""
    if kind == "tree":
        src = tmp_path / "src" / "saved_model"
        (src / "variables").mkdir(parents=True)
        (src / "saved_model.pb").write_bytes(b"pulled")
        archive = tmp_path / "layer.tar.gz"
        from modelship.sources.paths import tar_gz_tree

        tar_gz_tree(src, archive)
        meta = {"mediaType": oci.DIR_LAYER_TYPE, "size": 1, "annotations": {oci.TITLE: "saved_model"}}
        layers = [(meta, archive.read_bytes())]
    else:
        layers = [({"mediaType": oci.FILE_LAYER_TYPE, "size": 1}, b"layer %d" % i) for i in range(2)]
    monkeypatch.setattr(_FakeRegistry, "layers", layers)
    monkeypatch.setattr(oci, "Registry", _FakeRegistry)


@pytest.mark.parametrize("kind", ["tree", "layers"])
def test_a_refused_pull_leaves_the_users_files_and_places_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Before, a SavedModel layer was unpacked into the user's own OUT/saved_model and then the whole directory was
    deleted for the digest mismatch; the layers of a multi-layer artifact stayed in OUT."""
    _serve(monkeypatch, tmp_path, kind)
    out = tmp_path / "proj"
    mine = out / "saved_model"
    (mine / "variables").mkdir(parents=True)
    (mine / "saved_model.pb").write_bytes(b"the user's own model")
    (mine / "variables" / "variables.index").write_bytes(b"the user's")
    before = sha256_path(out)
    assert main(["pull", UNREACHABLE, "--out", str(out), "--digest", "sha256:" + "ab" * 32]) == 1
    assert "digest mismatch" in capsys.readouterr().err
    assert sha256_path(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["saved_model"]


def test_a_pull_onto_other_content_refuses_and_one_onto_the_same_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The digest matches, but OUT/saved_model is the user's own model: refused, nothing changed. The same content
    there (the serving pod's init container run again in its emptyDir) is accepted and kept."""
    _serve(monkeypatch, tmp_path, "tree")
    good = sha256_path(tmp_path / "src" / "saved_model")
    out = tmp_path / "proj"
    mine = out / "saved_model"
    mine.mkdir(parents=True)
    (mine / "saved_model.pb").write_bytes(b"the user's own model")
    before = sha256_path(out)
    assert main(["pull", UNREACHABLE, "--out", str(out), "--digest", good]) == 1
    assert "already exists with other content; nothing was changed" in capsys.readouterr().err
    assert sha256_path(out) == before and sorted(p.name for p in out.iterdir()) == ["saved_model"]
    fresh = tmp_path / "models"
    for _ in range(2):
        assert main(["pull", UNREACHABLE, "--out", str(fresh), "--digest", good]) == 0
        assert capsys.readouterr().out.startswith(f"{fresh / 'saved_model'} (")
        assert sorted(p.name for p in fresh.iterdir()) == ["saved_model"]
        assert sha256_path(fresh / "saved_model") == good


def test_a_killed_pulls_staging_is_removed_by_the_next_pull_and_a_live_ones_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An init container OOM-killed mid-pull leaves its staging directory in the pod's emptyDir (its ``finally`` never
    runs); each restart would add another whole copy of the model. The next pull removes a staging nobody holds the
    lock of, and leaves one a live pull holds."""
    import fcntl
    import os

    _serve(monkeypatch, tmp_path, "layers")
    out = tmp_path / "models"
    out.mkdir()
    dead = out / ".modelship-pull-dead"
    (dead / "layer-0").mkdir(parents=True)
    (dead / "layer-0" / "weights").write_bytes(b"x" * 1024)
    (out / ".modelship-pull-dead.lock").write_bytes(b"")  # its process is gone: nobody holds it
    live = out / ".modelship-pull-live"
    live.mkdir()
    held = os.open(out / ".modelship-pull-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another pull, still running, holds its lock
    try:
        assert main(["pull", UNREACHABLE, "--out", str(out)]) == 0, capsys.readouterr().err
        left = sorted(p.name for p in out.iterdir())
    finally:
        os.close(held)
    assert ".modelship-pull-dead" not in left and ".modelship-pull-dead.lock" not in left
    assert ".modelship-pull-live" in left and ".modelship-pull-live.lock" in left
    assert not [n for n in left if n.startswith(".modelship-pull-") and "live" not in n], left  # its own: gone


def test_a_staging_lock_removed_before_it_was_held_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another pull's cleaner may remove a lock file between its creation and its flock: the lock then held is on a
    file no longer there, which would let that pull's staging be taken for a killed one's. Another is made."""
    import fcntl
    import os

    real = fcntl.flock
    removed: list[str] = []

    def flock(fd: int, op: int) -> None:
        if not removed:  # the first lock file: removed by a cleaner just before it is locked
            name = os.readlink(f"/proc/self/fd/{fd}")
            os.unlink(name)
            removed.append(name)
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    fd, name = oci._staging_lock(tmp_path)
    try:
        assert removed and name != removed[0] and os.path.exists(name)
        assert os.fstat(fd).st_ino == os.stat(name).st_ino
    finally:
        os.close(fd)
