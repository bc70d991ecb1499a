"""Model artifacts in OCI registries (registry HTTP API v2), following the OCI artifact guidance and ORAS.

An artifact is an OCI image manifest with ``artifactType`` ``application/vnd.modelship.model.v1``, the empty
config (``application/vnd.oci.empty.v1+json``, ``{}``) and one layer: the model file as is, or a directory (a
SavedModel) as a deterministic tar+gzip with ORAS's ``io.deis.oras.content.unpack`` annotation, so ``oras pull``
gives back the same file or directory. Each layer's ``org.opencontainers.image.title`` is its name; the manifest's
``io.modelship.model.format`` annotation carries the model format.

Pulls resolve a tag to its manifest digest once and verify the manifest and every blob against their digests.
Credentials: a ``.dockerconfigjson`` key (a kubernetes.io/dockerconfigjson Secret) or ``username`` and
``password`` keys; the registry's Basic or Bearer-token challenge decides how they are sent.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import http
from .access import Access
from .digest import sha256_file
from .errors import FetchError
from .paths import extract_tar_gz, safe_relative, tar_gz_tree

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ARTIFACT_TYPE = "application/vnd.modelship.model.v1"
FILE_LAYER_TYPE = "application/vnd.modelship.model.layer.v1"
DIR_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
CONTENT_DIGEST = "io.deis.oras.content.digest"
FORMAT_ANNOTATION = "io.modelship.model.format"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
BLOBS_DIR = ".modelship-blobs"
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    """``oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]``."""

    host: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, uri: str) -> Reference:
        text = uri[len("oci://") :] if uri.startswith("oci://") else uri
        host, _, rest = text.partition("/")
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not DIGEST_RE.match(digest):
                raise FetchError(f"{uri}: the digest must be sha256:<64 hex digits>")
        tag = None
        if ":" in rest.rsplit("/", 1)[-1]:
            rest, tag = rest.rsplit(":", 1)
            if not TAG_RE.match(tag):
                raise FetchError(f"{uri}: invalid tag {tag!r}")
        if not host or not rest or not REPO_RE.match(rest):
            raise FetchError(f"{uri}: expected oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]")
        return cls(host=host, repository=rest, tag=tag if tag or digest else "latest", digest=digest)

    @property
    def reference(self) -> str:
        """What the manifest is requested by: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        return f"oci://{self.host}/{self.repository}@{digest}"


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in ("localhost", "127.0.0.1", "[::1]")


class Registry:
    """One repository on one registry, authenticated once per client."""

    def __init__(self, ref: Reference, access: Access, *, push: bool = False, plain_http: bool = False) -> None:
        self.ref = ref
        self.access = access
        if access.endpoint:
            self.base = access.endpoint.rstrip("/")
        else:
            self.base = f"{'http' if plain_http or _loopback(ref.host) else 'https'}://{ref.host}"
        self.scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self.auth: str | None = None
        self._authenticated = False

    # -- authentication --------------------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str] | None:
        config = self.access.secret(".dockerconfigjson")
        if config is None and self.access.environment:
            config = _docker_config(self.access)
        if config:
            try:
                auths = json.loads(config).get("auths", {})
            except (ValueError, AttributeError):
                raise FetchError("the registry credentials (.dockerconfigjson) are not valid JSON") from None
            entry = (
                auths.get(self.ref.host)
                or auths.get(f"https://{self.ref.host}")
                or auths.get(f"http://{self.ref.host}")
            )
            if isinstance(entry, dict):
                if entry.get("auth"):
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                    return user, password
                if entry.get("username"):
                    return str(entry["username"]), str(entry.get("password", ""))
        name = self.access.secret("username")
        return (name, self.access.secret("password") or "") if name else None

    def _authenticate(self) -> None:
        if self._authenticated:
            return
        self._authenticated = True
        response = http.request("GET", f"{self.base}/v2/", self.access)
        if response.status == 200:
            response.close()
            return
        if response.status != 401:
            raise http.status_error(response, f"registry {self.ref.host}")
        challenge = response.header("www-authenticate") or ""
        response.close()
        creds = self._credentials()
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if creds is None:
                raise FetchError(
                    f"registry {self.ref.host} asks for credentials and none were given (credentials.secretRef: "
                    ".dockerconfigjson, or username and password)"
                )
            self.auth = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return
        if scheme.lower() != "bearer":
            raise FetchError(f"registry {self.ref.host}: unsupported authentication {scheme or challenge!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm")
        if not realm:
            raise FetchError(f"registry {self.ref.host}: a Bearer challenge without realm")
        query = {"scope": self.scope}
        if fields.get("service"):
            query["service"] = fields["service"]
        headers = {}
        if creds is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        token_response = http.request("GET", f"{realm}?{urllib.parse.urlencode(query)}", self.access, headers=headers)
        if token_response.status != 200:
            raise http.status_error(token_response, f"registry {self.ref.host}: token")
        body = token_response.json(limit=1024 * 1024)
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise FetchError(f"registry {self.ref.host}: the token service returned no token")
        self.auth = f"Bearer {token}"

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        absolute: str | None = None,
    ) -> http.Response:
        self._authenticate()
        sent = dict(headers or {})
        if self.auth:
            sent["Authorization"] = self.auth
        url = absolute or f"{self.base}/v2/{self.ref.repository}{path}"
        return http.request(method, url, self.access, headers=sent, body=body)

    # -- pull ------------------------------------------------------------------------------------------------------

    def manifest(self) -> tuple[dict[str, Any], str]:
        """(manifest, its digest) of the reference, the digest computed over the bytes received."""
        accept = ", ".join((MANIFEST_TYPE, DOCKER_MANIFEST_TYPE, *INDEX_TYPES))
        response = self.call("GET", f"/manifests/{self.ref.reference}", headers={"Accept": accept})
        where = f"oci://{self.ref.host}/{self.ref.repository}:{self.ref.reference}".replace(":sha256", "@sha256")
        if response.status != 200:
            raise http.status_error(response, where, _registry_errors, missing="no such artifact (manifest unknown)")
        data = response.read_document(limit=MAX_MANIFEST_BYTES)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise FetchError(f"{where}: digest mismatch: the registry sent a manifest with digest {digest}")
        try:
            manifest = json.loads(data)
        except ValueError:
            raise FetchError(f"{where}: the manifest is not JSON") from None
        media = manifest.get("mediaType") or response.header("content-type")
        if media in INDEX_TYPES:
            raise FetchError(f"{where}: an image index, not a model artifact (push one with `modelship push`)")
        if not isinstance(manifest.get("layers"), list) or not manifest["layers"]:
            raise FetchError(f"{where}: the manifest has no layers")
        return manifest, digest

    def blob(self, descriptor: dict[str, Any], target: Path, *, max_bytes: int) -> None:
        digest = str(descriptor.get("digest", ""))
        size = descriptor.get("size")
        if not DIGEST_RE.match(digest) or not isinstance(size, int) or size < 0:
            raise FetchError(f"oci://{self.ref.host}/{self.ref.repository}: a layer has no valid digest and size")
        if size > max_bytes:
            raise FetchError(f"layer {digest} is {size} bytes, more than the {max_bytes}-byte download limit")
        response = self.call("GET", f"/blobs/{digest}")
        if response.status != 200:
            raise http.status_error(response, f"oci://{self.ref.host}/{self.ref.repository} blob {digest}",
                                    _registry_errors)  # fmt: skip
        got, got_size = response.save(target, max_bytes=size)
        if got != digest or got_size != size:
            raise FetchError(f"layer digest mismatch: expected {digest} ({size} bytes), received {got} ({got_size})")

    # -- push ------------------------------------------------------------------------------------------------------

    def _has_blob(self, digest: str) -> bool:
        response = self.call("HEAD", f"/blobs/{digest}")
        response.close()
        return response.status == 200

    def upload(self, path: Path | None, data: bytes | None, digest: str, size: int) -> None:
        if self._has_blob(digest):
            return
        response = self.call("POST", "/blobs/uploads/")
        location = response.header("location")
        if response.status != 202 or not location:
            raise http.status_error(response, f"{self.ref.host}/{self.ref.repository}: starting an upload",
                                    _registry_errors)  # fmt: skip
        response.close()
        url = urllib.parse.urljoin(self.base + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if data is not None:
            response = self.call("PUT", "", headers=headers, body=data, absolute=url)
        else:
            assert path is not None
            with path.open("rb") as f:
                response = self.call("PUT", "", headers=headers, body=f, absolute=url)
        if response.status != 201:
            raise http.status_error(response, f"{self.ref.host}/{self.ref.repository}: uploading {digest}",
                                    _registry_errors)  # fmt: skip
        response.close()


def _registry_errors(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ""


def _docker_config(access: Access) -> str | None:
    folder = access.env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = Path(folder) / "config.json"
    try:
        return path.read_text() if path.is_file() else None
    except OSError:
        return None


@dataclass(frozen=True)
class Pulled:
    path: Path
    """The model file or directory."""
    manifest_digest: str
    model_format: str | None
    """The manifest's io.modelship.model.format annotation, when present."""


def pull(uri: str, dest: Path, access: Access, *, max_bytes: int) -> Pulled:
    """Pull an artifact by digest (a tag is resolved once) into ``dest`` (``dest/<layer title>``); every digest is
    verified before its content is placed."""
    ref = Reference.parse(uri)
    registry = Registry(ref, access)
    manifest, digest = registry.manifest()
    tree = dest
    blobs = dest / BLOBS_DIR
    tree.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    layers = manifest["layers"]
    total = sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))
    if total > max_bytes:
        raise FetchError(f"{uri}: {total} bytes of layers, more than the {max_bytes}-byte download limit")
    placed: list[Path] = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise FetchError(f"{uri}: layer {i} is not an object")
        annotations = layer.get("annotations") or {}
        title = annotations.get(TITLE) or (f"layer-{i}" if len(layers) > 1 else "model")
        rel = safe_relative(str(title), what=f"layer title of {uri}")
        if rel.parts[0] == BLOBS_DIR:
            raise FetchError(f"{uri}: refusing the layer title {title!r}")
        blob = blobs / str(i)
        registry.blob(layer, blob, max_bytes=max_bytes)
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if layer.get("mediaType") == DIR_LAYER_TYPE or str(annotations.get(UNPACK, "")).lower() == "true":
            extract_tar_gz(blob, target, max_bytes=max_bytes)
            blob.unlink()
        else:
            shutil.move(str(blob), target)
        placed.append(target)
    shutil.rmtree(blobs, ignore_errors=True)
    fmt = (manifest.get("annotations") or {}).get(FORMAT_ANNOTATION)
    return Pulled(path=placed[0] if len(placed) == 1 else tree, manifest_digest=digest, model_format=fmt)


def pull_into(uri: str, dest: Path, access: Access, *, digest: str | None, max_bytes: int) -> Pulled:
    """:func:`pull` for ``modelship pull`` (the serving pods' init container, or a user's ``--out``): ``digest`` (the
    content digest the optimizer reported) must match what was pulled. The pull lands in a staging directory under
    ``dest`` (``.modelship-pull-*``, same file system) and is moved into place only once it is accepted; refused
    content, or content whose name in ``dest`` is already taken by something else, removes only the staging
    directory: what ``dest`` held is never merged into, replaced or deleted. A name already holding the very same
    content (the init container run again in its pod's emptyDir) is kept as it is."""
    dest.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stagings(dest)
    held, lock_name = _staging_lock(dest)  # this pull's staging is alive while it is held (dropped at exit or kill)
    staging = Path(lock_name[: -len(LOCK_SUFFIX)])
    try:
        staging.mkdir()
        pulled = pull(uri, staging, access, max_bytes=max_bytes)
        if digest is not None:
            from .digest import sha256_path

            got = sha256_path(pulled.path)
            if got != digest:
                raise FetchError(f"{uri}: digest mismatch: the artifact's content is {got}, expected {digest}")
        names = sorted(p.name for p in staging.iterdir())
        placed = [n for n in names if not _same_content(staging / n, dest / n)]
        for name in placed:
            if os.path.lexists(dest / name):
                raise FetchError(
                    f"{uri}: {dest / name} already exists with other content; nothing was changed (remove it, or "
                    "pull into another --out)"
                )
        for name in placed:
            os.rename(staging / name, dest / name)  # same file system: each lands whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        Path(lock_name).unlink(missing_ok=True)
        os.close(held)
    path = dest / pulled.path.relative_to(staging) if pulled.path != staging else dest
    return Pulled(path=path, manifest_digest=pulled.manifest_digest, model_format=pulled.model_format)


STAGING_PREFIX = ".modelship-pull-"
LOCK_SUFFIX = ".lock"


def _staging_lock(dest: Path) -> tuple[int, str]:
    """A new lock file under ``dest``, flock'd: (its descriptor, its path). Between its creation and the lock, another
    pull's ``_remove_abandoned_stagings`` may take it for a killed pull's and remove it: then the lock held is on a
    file no longer there, and another is made."""
    for _ in range(8):
        fd, name = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=LOCK_SUFFIX, dir=dest)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(name).st_ino:
                return fd, name
        except OSError:
            pass
        os.close(fd)
    raise FetchError(f"{dest}: no staging lock could be held (another pull keeps removing them)")


def _remove_abandoned_stagings(dest: Path) -> None:
    """Remove the staging directories of pulls that were killed (an init container OOM-killed mid-pull: each restart
    would leave another whole copy of the model in the pod's emptyDir): those whose lock file no process holds. The
    lock is held here until the directory and the lock file are gone, and a pull makes its staging directory only
    once it holds a lock file that is still there (``_staging_lock``), so a live pull's staging is never removed."""
    for lock in dest.glob(f"{STAGING_PREFIX}*{LOCK_SUFFIX}"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live pull holds it
            shutil.rmtree(dest / lock.name[: -len(LOCK_SUFFIX)], ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _same_content(staged: Path, there: Path) -> bool:
    """``there`` (not a symlink) is the same kind of thing as ``staged`` with the same content."""
    from .digest import sha256_path

    if there.is_symlink() or not there.exists() or staged.is_dir() != there.is_dir():
        return False
    return sha256_path(staged) == sha256_path(there)


def push(path: Path, uri: str, access: Access, *, model_format: str | None = None, plain_http: bool = False) -> str:
    """Push a model file or directory as an artifact to ``uri`` (its tag); return ``oci://…@sha256:…``."""
    ref = Reference.parse(uri)
    if ref.digest:
        raise FetchError(f"{uri}: push to a tag, not a digest (the digest is the result)")
    if not path.exists():
        raise FetchError(f"{path}: no such file or directory")
    registry = Registry(ref, access, push=True, plain_http=plain_http)
    with tempfile.TemporaryDirectory(prefix="modelship-push-") as tmp:
        if path.is_dir():
            blob = Path(tmp) / "layer.tar.gz"
            tar_digest = tar_gz_tree(path, blob)
            annotations = {TITLE: path.name, UNPACK: "true", CONTENT_DIGEST: tar_digest}
            media = DIR_LAYER_TYPE
        else:
            blob = path
            annotations = {TITLE: path.name}
            media = FILE_LAYER_TYPE
        layer_digest = sha256_file(blob)
        layer_size = blob.stat().st_size
        registry.upload(blob, None, layer_digest, layer_size)
        empty_digest = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()
        registry.upload(None, EMPTY_BLOB, empty_digest, len(EMPTY_BLOB))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": empty_digest, "size": len(EMPTY_BLOB), "data": "e30="},
        "layers": [{"mediaType": media, "digest": layer_digest, "size": layer_size, "annotations": annotations}],
    }
    if model_format:
        manifest["annotations"] = {FORMAT_ANNOTATION: model_format}
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    response = registry.call("PUT", f"/manifests/{ref.tag}", headers={"Content-Type": MANIFEST_TYPE}, body=body)
    if response.status != 201:
        raise http.status_error(response, f"{uri}: pushing the manifest", _registry_errors)
    response.close()
    return ref.pinned(digest)
