"""Resolve a model or data URI to a local path, and compute content digests.

No TensorFlow here: the operator image imports this module too.

Schemes:

* plain paths and ``file://`` URIs: used in place;
* ``pvc://CLAIM/path``: ``<pvc_root>/CLAIM/path``, where the operator mounts claims (default ``/mnt/pvc``);
* ``http://`` and ``https://``: streamed to disk with urllib (optional PEM CA bundle), hashed while streaming;
* ``s3://bucket/key`` and ``gs://bucket/key``: through boto3 / google-cloud-storage when importable (a key that is a
  prefix downloads every object under it, e.g. a SavedModel directory).

Digests are ``sha256:<hex>``: of the bytes for a file; for a directory, of a deterministic stream over the sorted
relative paths and the contents of every regular file under it (see :func:`sha256_path`).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_PVC_ROOT = "/mnt/pvc"
CHUNK = 1 << 20
HTTP_TIMEOUT_SECONDS = 60.0


class FetchError(Exception):
    """A URI could not be resolved or downloaded; the message is meant for people.

    ``temporary``: the store or the network failed (a retry may succeed), rather than the URI naming nothing."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class Fetched:
    """A resolved URI."""

    uri: str
    """The URI as given."""
    path: Path
    """Local file or directory."""
    digest: str
    """sha256:<hex> of the content (see sha256_path for directories)."""
    size: int
    """Bytes (sum over files for a directory)."""
    downloaded: bool
    """True when the content was copied from remote storage into the download directory."""


def _iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under root as (posix relative path, path), sorted by relative path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    yield from found


def sha256_path(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, or of a directory.

    For a directory the hash runs over every regular file, sorted by its relative POSIX path; each contributes
    ``path UTF-8, NUL, size as 8 bytes big-endian, content``. Renaming, moving or editing any file changes the
    digest; file times, permissions and empty directories do not.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for rel, file in _iter_files(p):
            h.update(rel.encode("utf-8"))
            h.update(b"\0")
            h.update(file.stat().st_size.to_bytes(8, "big"))
            _hash_file_into(file, h)
    elif p.is_file():
        _hash_file_into(p, h)
    else:
        raise FetchError(f"{p} does not exist")
    return f"sha256:{h.hexdigest()}"


def _hash_file_into(path: Path, h: Any) -> None:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def size_of(path: str | os.PathLike[str]) -> int:
    """Bytes of a file, or the sum over the regular files of a directory."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for _, f in _iter_files(p))
    return p.stat().st_size


def check_digest(fetched: Fetched, expected: str | None) -> None:
    """Raise FetchError when a pinned digest does not match the fetched content."""
    if expected is None:
        return
    if expected.strip().lower() != fetched.digest:
        raise FetchError(
            f"digest mismatch for {fetched.uri}: the spec pins {expected} but the content is {fetched.digest}"
        )


def local_path(uri: str, *, pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT) -> Path | None:
    """The local path a URI names without downloading (plain path, file://, pvc://), or None for remote URIs."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return Path(uri).expanduser()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError(f"{uri}: file:// URIs must name a local path (file:///path)")
        return Path(urllib.parse.unquote(parsed.path))
    if scheme == "pvc":
        claim = parsed.netloc
        rel = urllib.parse.unquote(parsed.path).lstrip("/")
        if not claim or not rel:
            raise FetchError(f"{uri}: pvc:// URIs must be pvc://CLAIM-NAME/path/inside/the/claim")
        root = Path(pvc_root)
        target = (root / claim / rel).resolve()
        claim_dir = (root / claim).resolve()
        if claim_dir != target and claim_dir not in target.parents:
            raise FetchError(f"{uri}: the path leaves the claim {claim!r}")
        return target
    return None


def fetch(
    uri: str,
    download_dir: str | os.PathLike[str] | None = None,
    *,
    pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT,
    ca_bundle: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    digest: str | None = None,
) -> Fetched:
    """Resolve ``uri`` to a local path and compute its digest.

    Remote content goes to ``download_dir`` (a new temporary directory when None). A pinned ``digest`` is
    checked here, so a mismatch fails before anything else reads the content.
    """
    path = local_path(uri, pvc_root=pvc_root)
    if path is not None:
        if not path.exists():
            raise FetchError(f"{uri}: {path} does not exist")
        fetched = Fetched(uri=uri, path=path, digest=sha256_path(path), size=size_of(path), downloaded=False)
        check_digest(fetched, digest)
        return fetched
    dest = Path(download_dir) if download_dir is not None else Path(tempfile.mkdtemp(prefix="modelship-fetch-"))
    dest.mkdir(parents=True, exist_ok=True)
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        fetched = _fetch_http(uri, dest, ca_bundle=ca_bundle)
    elif scheme == "s3":
        fetched = _fetch_s3(uri, dest, endpoint=endpoint, ca_bundle=ca_bundle)
    elif scheme == "gs":
        fetched = _fetch_gs(uri, dest)
    elif scheme == "oci":
        raise FetchError(f"{uri}: oci:// models are pulled by the operator, not by the optimizer; pass a path")
    else:
        raise FetchError(
            f"{uri}: unsupported URI scheme {scheme!r} (use a path, file://, pvc://, http(s)://, s3://, gs://)"
        )
    check_digest(fetched, digest)
    return fetched


def _name_from_uri(uri: str, default: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)).name
    return name or default


def _fetch_http(uri: str, dest: Path, *, ca_bundle: str | os.PathLike[str] | None) -> Fetched:
    context = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle is not None else None
    target = dest / _name_from_uri(uri, "download")
    h = hashlib.sha256()
    size = 0
    request = urllib.request.Request(uri, headers={"User-Agent": "modelship-optimizer"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS, context=context) as response:
            with target.open("wb") as out:
                size = _stream(response, out, h)
            expected = response.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        temporary = exc.code >= 500 or exc.code in (408, 429)
        raise FetchError(f"{uri}: HTTP {exc.code} {exc.reason}", temporary=temporary) from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{uri}: cannot download: {exc.reason}", temporary=True) from None
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"{uri}: cannot download: {exc}", temporary=True) from None
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise FetchError(f"{uri}: download truncated ({size} of {expected} bytes)", temporary=True)
    return Fetched(uri=uri, path=target, digest=f"sha256:{h.hexdigest()}", size=size, downloaded=True)


def _stream(src: BinaryIO | Any, out: BinaryIO, h: Any) -> int:
    size = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    bucket, key = parsed.netloc, urllib.parse.unquote(parsed.path).lstrip("/")
    if not bucket:
        raise FetchError(f"{uri}: expected {parsed.scheme}://BUCKET/KEY")
    return bucket, key


def _finish_tree(uri: str, dest: Path, keys: list[tuple[str, Path]]) -> Fetched:
    """A single object downloads to a file; several (a prefix) to a directory named after the prefix."""
    if not keys:
        raise FetchError(f"{uri}: no object found")
    single = len(keys) == 1 and keys[0][1].is_file() and keys[0][1].parent == dest
    path = keys[0][1] if single else dest / "tree"
    return Fetched(uri=uri, path=path, digest=sha256_path(path), size=size_of(path), downloaded=True)


def _fetch_s3(uri: str, dest: Path, *, endpoint: str | None, ca_bundle: str | os.PathLike[str] | None) -> Fetched:
    try:
        import boto3  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise FetchError(f"{uri}: s3:// needs boto3, which is not installed (pip install boto3)") from None
    bucket, key = _bucket_key(uri)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        verify=str(ca_bundle) if ca_bundle is not None else None,
    )
    try:
        objects = [
            obj["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]
        if key in objects:
            target = dest / Path(key).name
            client.download_file(bucket, key, str(target))
            return _finish_tree(uri, dest, [(key, target)])
        prefix = key if key.endswith("/") or not key else key + "/"
        got: list[tuple[str, Path]] = []
        for name in objects:
            if not name.startswith(prefix):
                continue
            target = dest / "tree" / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, name, str(target))
            got.append((name, target))
    except FetchError:
        raise
    except Exception as exc:  # botocore raises many unrelated types
        raise FetchError(f"{uri}: cannot download from S3: {exc}", temporary=True) from None
    return _finish_tree(uri, dest, got)


def _fetch_gs(uri: str, dest: Path) -> Fetched:
    try:
        from google.cloud import storage  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise FetchError(
            f"{uri}: gs:// needs google-cloud-storage, which is not installed (pip install google-cloud-storage)"
        ) from None
    bucket_name, key = _bucket_key(uri)
    try:
        bucket = storage.Client().bucket(bucket_name)
        blob = bucket.blob(key)
        if key and blob.exists():
            target = dest / Path(key).name
            blob.download_to_filename(str(target))
            return _finish_tree(uri, dest, [(key, target)])
        prefix = key if key.endswith("/") or not key else key + "/"
        got: list[tuple[str, Path]] = []
        for item in bucket.list_blobs(prefix=prefix):
            if item.name.endswith("/"):
                continue
            target = dest / "tree" / item.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            item.download_to_filename(str(target))
            got.append((item.name, target))
    except Exception as exc:  # google-cloud raises many unrelated types
        raise FetchError(f"{uri}: cannot download from GCS: {exc}", temporary=True) from None
    return _finish_tree(uri, dest, got)
