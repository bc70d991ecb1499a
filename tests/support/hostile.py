"""A hostile storage server on loopback: it answers S3 and OCI registry requests with whatever a test planted
(object listings with ``../`` keys, artifacts whose layer title or archive member leaves the download directory),
refuses objects to every access key but the one a test names, and records what each request carried. The fetch
tests (tests/optimize/test_fetch.py) and the attack suite (tests/integration/attacks/test_sources.py) plant their
attacks here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from modelship.sources import oci
from tests.support.servers import loopback_http

NO_SUCH_KEY = b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
ACCESS_DENIED = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


@dataclass
class Hostile:
    """The server's address and what it answers."""

    url: str
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """Request path (no query) -> (status, body); anything else is 404 NoSuchKey."""
    owners: dict[str, str] = field(default_factory=dict)
    """Request path -> the only access key id it is served to (others get 403 AccessDenied)."""
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, the SigV4 access key id it was signed with, or None) of every request, in order."""

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def keys_seen(self) -> set[str]:
        return {key for _, key in self.seen if key is not None}


@contextlib.contextmanager
def hostile_server() -> Iterator[Hostile]:
    state = Hostile(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            found = CREDENTIAL.search(self.headers.get("Authorization") or "")
            key = found.group(1) if found else None
            state.seen.append((path, key))
            status, body = state.routes.get(path, (404, NO_SUCH_KEY))
            if path in state.owners and key != state.owners[path]:
                status, body = 403, ACCESS_DENIED
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_http(Handler) as url:
        state.url = url
        yield state


def s3_listing(*keys: str) -> bytes:
    """A ListObjectsV2 answer naming ``keys`` (one page)."""
    items = "".join(f"<Contents><Key>{k}</Key><Size>1</Size></Contents>" for k in keys)
    return f"<ListBucketResult><IsTruncated>false</IsTruncated>{items}</ListBucketResult>".encode()


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A tar+gzip of regular files named exactly as given (``../x`` included)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def plant_oci_artifact(server: Hostile, repository: str, tag: str, *, title: str, blob: bytes, unpack: bool) -> None:
    """An OCI artifact as `modelship push` writes one (empty config, one layer), with the layer's title and content
    of the test's choosing; every digest is right, so only the names can be refused."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    empty = "sha256:" + hashlib.sha256(oci.EMPTY_BLOB).hexdigest()
    annotations = {oci.TITLE: title, **({oci.UNPACK: "true"} if unpack else {})}
    manifest = {
        "schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE, "artifactType": oci.ARTIFACT_TYPE,
        "config": {"mediaType": oci.EMPTY_TYPE, "digest": empty, "size": len(oci.EMPTY_BLOB)},
        "layers": [{"mediaType": oci.DIR_LAYER_TYPE if unpack else oci.FILE_LAYER_TYPE, "digest": digest,
                    "size": len(blob), "annotations": annotations}],
    }  # fmt: skip
    server.routes["/v2/"] = (200, b"{}")
    server.routes[f"/v2/{repository}/manifests/{tag}"] = (200, json.dumps(manifest).encode())
    server.routes[f"/v2/{repository}/blobs/{digest}"] = (200, blob)
