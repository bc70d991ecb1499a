"""Resolve a model or data URI to a local path, and compute content digests.

No TensorFlow and no cloud SDK here: the operator and serving images import this module too. The clients live in
``modelship.sources`` (one module per kind of storage); this module picks one by scheme:

* plain paths and ``file://`` URIs: used in place;
* ``pvc://CLAIM/path``: ``<pvc_root>/CLAIM/path``, where the Jobs mount claims (default ``/mnt/pvc``);
* ``http://`` and ``https://``: streamed to disk, hashed while streaming;
* ``s3://bucket/key``: S3 or any S3-compatible endpoint (a key that is a prefix downloads every object under it,
  e.g. a SavedModel directory);
* ``oci://registry/repository:tag`` or ``@sha256:…``: a model artifact (``modelship push``), pulled by digest;
* ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``: a version in an MLflow model registry.

Every source has its own :class:`Access` (endpoint, extra CA, credentials as mounted files). Errors are
:class:`FetchError`: permanent (missing object, refused credentials, digest mismatch) or ``temporary`` (server
unreachable, timeouts, 5xx), which the optimizer reports as its failure kind (``api.report.FailureKind``).
Digests are ``sha256:<hex>``: of the bytes for a file; for a directory, of a deterministic stream over the sorted
relative paths and the contents of every regular file under it.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .sources import http, mlflow, oci, s3
from .sources.access import Access
from .sources.digest import iter_files, sha256_path, size_of
from .sources.errors import FetchError
from .sources.http import max_download_bytes

DEFAULT_PVC_ROOT = "/mnt/pvc"
SCHEMES = ("path", "file://", "pvc://", "http(s)://", "s3://", "oci://", "models:/")

__all__ = [
    "DEFAULT_PVC_ROOT",
    "Access",
    "FetchError",
    "Fetched",
    "Sources",
    "check_digest",
    "fetch",
    "iter_files",
    "local_path",
    "sha256_path",
    "size_of",
]


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
    resolved: str | None = None
    """What the URI resolved to where that is more than the content digest: an OCI reference pinned by manifest
    digest, an MLflow registered version and its artifact location."""
    format_hint: str | None = None
    """The model format the source declares (an OCI artifact's annotation), when it does."""


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
    access: Access | None = None,
    digest: str | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Fetched:
    """Resolve ``uri`` to a local path and compute its digest.

    Remote content goes to ``download_dir`` (a new temporary directory when None). A pinned ``digest`` is
    checked here, so a mismatch fails before anything else reads the content. ``access`` says how to reach the
    source; ``ca_bundle`` and ``endpoint`` are shorthands for an Access that reads credentials from the
    environment (the CLI).
    """
    if access is None:
        access = Access(endpoint=endpoint, ca_file=Path(ca_bundle) if ca_bundle is not None else None, environment=True)
    path = local_path(uri, pvc_root=pvc_root)
    if path is not None:
        if not path.exists():
            raise FetchError(f"{uri}: {path} does not exist")
        fetched = Fetched(uri=uri, path=path, digest=sha256_path(path), size=size_of(path), downloaded=False)
        check_digest(fetched, digest)
        return fetched
    dest = Path(download_dir) if download_dir is not None else Path(tempfile.mkdtemp(prefix="modelship-fetch-"))
    dest.mkdir(parents=True, exist_ok=True)
    limit = max_download_bytes()
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    resolved: str | None = None
    hint: str | None = None
    if scheme in ("http", "https"):
        got = _fetch_http(uri, dest, access, limit)
    elif scheme == "s3":
        got = s3.fetch(uri, dest, access, max_bytes=limit)
    elif scheme == "oci":
        pulled = oci.pull(uri, dest, access, max_bytes=limit)
        got, resolved, hint = pulled.path, oci.Reference.parse(uri).pinned(pulled.manifest_digest), pulled.model_format
    elif scheme == "models":
        found = mlflow.fetch(uri, dest, access, max_bytes=limit)
        got, resolved = found.path, f"{found.name} version {found.version} ({found.artifact_uri})"
    elif scheme == "gs":
        raise FetchError(
            f"{uri}: gs:// is not supported; use s3:// with endpoint https://storage.googleapis.com and an HMAC key "
            "(Cloud Storage's S3-compatible XML API)"
        )
    else:
        raise FetchError(f"{uri}: unsupported URI scheme {scheme!r} (use {', '.join(SCHEMES)})")
    fetched = Fetched(uri=uri, path=got, digest=sha256_path(got), size=size_of(got), downloaded=True,
                      resolved=resolved, format_hint=hint)  # fmt: skip
    check_digest(fetched, digest)
    return fetched


def _name_from_uri(uri: str, default: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)).name
    return name or default


def _fetch_http(uri: str, dest: Path, access: Access, limit: int) -> Path:
    target = dest / _name_from_uri(uri, "download")
    headers = {}
    token = access.secret("token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = http.request("GET", uri, access, headers=headers)
    if response.status != 200:
        raise http.status_error(response, http.redact(uri))
    response.save(target, max_bytes=limit)
    return target


ROLE_FIELDS: Mapping[str, str] = {
    "model": "spec.model",
    "evaluation": "spec.optimization.data.evaluation",
    "calibration": "spec.optimization.data.calibration",
    "fineTune": "spec.optimization.data.fineTune",
}


@dataclass(frozen=True)
class Sources:
    """The Access of each source role (model, evaluation, calibration, fineTune); errors name the spec field."""

    roles: Mapping[str, Access] = field(default_factory=dict)
    default: Access = field(default_factory=lambda: Access(environment=True))

    def access(self, role: str) -> Access:
        return self.roles.get(role, self.default)

    def fetch(
        self,
        role: str,
        uri: str,
        download_dir: Path,
        *,
        pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT,
        digest: str | None = None,
    ) -> Fetched:
        """fetch() with this role's Access; a FetchError names the field (``spec.model.uri: …``)."""
        where = ROLE_FIELDS.get(role, role)
        try:
            fetched = fetch(uri, download_dir, pvc_root=pvc_root, access=self.access(role))
        except FetchError as exc:
            raise exc.prefixed(f"{where}.uri") from None
        try:
            check_digest(fetched, digest)
        except FetchError as exc:
            raise exc.prefixed(f"{where}.digest") from None
        return fetched
