"""fetch: URI resolution, digests, http streaming, optional cloud extras (no TensorFlow)."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelship import fetch


def test_file_digest_is_sha256_of_bytes(tmp_path: Path) -> None:
    p = tmp_path / "m.h5"
    p.write_bytes(b"model bytes" * 1000)
    assert fetch.sha256_path(p) == "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def _tree(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 100)
    return root


def test_directory_digest_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = _tree(tmp_path / "b")
    os.utime(b / "saved_model.pb", (1, 1))  # times do not count
    assert fetch.sha256_path(a) == fetch.sha256_path(b)
    (b / "variables" / "variables.index").write_bytes(b"indeX")
    assert fetch.sha256_path(a) != fetch.sha256_path(b)
    c = _tree(tmp_path / "c")
    (c / "variables" / "variables.index").rename(c / "variables" / "renamed.index")
    assert fetch.sha256_path(a) != fetch.sha256_path(c)
    assert fetch.size_of(a) == 5 + 5 + 100


def test_local_file_and_pvc_uris(tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "models"
    claim.mkdir(parents=True)
    (claim / "m.h5").write_bytes(b"x")
    for uri in (str(claim / "m.h5"), f"file://{claim / 'm.h5'}", "pvc://models/m.h5"):
        got = fetch.fetch(uri, pvc_root=tmp_path / "pvc")
        assert got.path.resolve() == (claim / "m.h5").resolve()
        assert not got.downloaded
        assert got.size == 1


def test_pvc_path_cannot_leave_the_claim(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="leaves the claim"):
        fetch.local_path("pvc://models/../other/secret", pvc_root=tmp_path)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="does not exist"):
        fetch.fetch(str(tmp_path / "nope.h5"))


def test_digest_mismatch_fails(tmp_path: Path) -> None:
    p = tmp_path / "m.h5"
    p.write_bytes(b"abc")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(fetch.FetchError, match="digest mismatch") as exc:
        fetch.fetch(str(p), digest=wrong)
    assert wrong in str(exc.value) and fetch.sha256_path(p) in str(exc.value)
    assert fetch.fetch(str(p), digest=fetch.sha256_path(p)).path == p


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_http_download_streams_and_hashes(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    payload = os.urandom(3 * fetch.CHUNK + 123)
    (root / "model.tflite").write_bytes(payload)
    got = fetch.fetch(f"{base}/model.tflite", tmp_path / "dl")
    assert got.downloaded and got.path.read_bytes() == payload
    assert got.digest == "sha256:" + hashlib.sha256(payload).hexdigest() == fetch.sha256_path(got.path)
    assert got.size == len(payload)


def test_http_error_is_readable(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_root
    with pytest.raises(fetch.FetchError, match="HTTP 404"):
        fetch.fetch(f"{base}/missing.h5", tmp_path / "dl")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize(
    ("uri", "module", "package"),
    [
        ("s3://bucket/model.h5", "boto3", "boto3"),
        ("gs://bucket/model.h5", "google.cloud.storage", "google-cloud-storage"),
    ],
)
def test_cloud_schemes_name_the_missing_extra(uri: str, module: str, package: str, tmp_path: Path) -> None:
    if _installed(module):
        pytest.skip(f"{package} is installed")
    with pytest.raises(fetch.FetchError, match=f"pip install {package}"):
        fetch.fetch(uri, tmp_path)


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match="unsupported URI scheme"):
        fetch.fetch("ftp://host/model.h5", tmp_path)
