"""Inspect the build's base image before anything is built: a base image whose config carries ``ONBUILD`` triggers is
refused. The Dockerfile frontend (BuildKit's and Kaniko's alike) runs a base image's ONBUILD instructions as part of
``FROM``: its author's ``RUN`` steps would run inside the platform's build pod, with the platform's push credentials
mounted. The model Dockerfile itself has no RUN step; this keeps it that way.

The config is read from the registry (HTTP API v2, the same registry BuildKit pulls from): the manifest (an index is
resolved to each platform being built), then the config blob, both bounded in bytes and time and the blob checked
against its digest. Credentials: the build namespace's docker config (``$DOCKER_CONFIG/config.json``), Basic or
Bearer as the registry's challenge asks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
TIMEOUT_SECONDS = 30.0
DOCKER_HUB = "registry-1.docker.io"


class BaseImageError(ValueError):
    """The base image cannot be used (ONBUILD triggers) or cannot be inspected; one readable line. ``temporary``:
    the registry could not be reached or failed (a retry may succeed)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class ImageRef:
    host: str
    repository: str
    reference: str
    """Tag or sha256 digest."""

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        name, _, digest = image.partition("@")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:
            host, path = "docker.io", name
        tag = ""
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if host == "docker.io" and "/" not in path:
            path = f"library/{path}"
        if not path or not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", path):
            raise BaseImageError(f"base image {image!r} is not an image reference")
        return cls(host, path, digest or tag or "latest")


def _auth_for(host: str, docker_config: Path | None) -> tuple[str, str] | None:
    if docker_config is None:
        return None
    try:
        auths = json.loads((docker_config / "config.json").read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    hub = ["https://index.docker.io/v1/"] if host == "docker.io" else []
    keys = [host, f"https://{host}", f"http://{host}", *hub]
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode(errors="replace").partition(":")
            return user, password
        if isinstance(entry, dict) and entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


class _Client:
    def __init__(self, ref: ImageRef, *, plain_http: bool, docker_config: Path | None) -> None:
        self.ref = ref
        host = DOCKER_HUB if ref.host == "docker.io" else ref.host
        self.base = f"{'http' if plain_http else 'https'}://{host}/v2/{ref.repository}"
        self.creds = _auth_for(ref.host, docker_config)
        self.auth: str | None = None

    def get(self, path: str, accept: tuple[str, ...] = ()) -> tuple[bytes, str]:
        for attempt in (1, 2):
            headers = {"Accept": ", ".join(accept)} if accept else {}
            if self.auth:
                headers["Authorization"] = self.auth
            request = urllib.request.Request(self.base + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                    data = response.read(MAX_DOCUMENT_BYTES + 1)
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise BaseImageError(f"{self.base}{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
                    return data, str(response.headers.get("Content-Type", "")).split(";")[0]
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    self._authenticate(exc.headers.get("WWW-Authenticate", ""))
                    continue
                message = f"{self._where()}: the registry answered {exc.code} for {path}"
                raise BaseImageError(message, temporary=exc.code >= 500 or exc.code == 429) from None
            except (urllib.error.URLError, OSError) as exc:
                raise BaseImageError(f"{self._where()}: cannot reach the registry ({exc})", temporary=True) from None
        raise BaseImageError(f"{self._where()}: the registry refused the credentials")

    def _where(self) -> str:
        return f"base image {self.ref.host}/{self.ref.repository}:{self.ref.reference}".replace(":sha256", "@sha256")

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        basic = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode() if self.creds else None
        if scheme.lower() == "basic":
            if basic is None:
                raise BaseImageError(f"{self._where()}: the registry asks for credentials and none were given")
            self.auth = f"Basic {basic}"
            return
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if scheme.lower() != "bearer" or not fields.get("realm"):
            raise BaseImageError(f"{self._where()}: unsupported registry authentication {challenge!r}")
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if fields.get("service"):
            query["service"] = fields["service"]
        request = urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")
        if basic:
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                body = json.loads(response.read(1024 * 1024))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            message = f"{self._where()}: the registry's token service failed ({exc})"
            raise BaseImageError(message, temporary=True) from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise BaseImageError(f"{self._where()}: the registry's token service returned no token")
        self.auth = f"Bearer {token}"


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise BaseImageError(f"{what} is not JSON") from None


def image_configs(image: str, platforms: list[str], *, plain_http: bool = False,
                  docker_config: Path | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The image config of ``image`` for each of ``platforms`` (os/arch), read from its registry."""
    ref = ImageRef.parse(image)
    client = _Client(ref, plain_http=plain_http, docker_config=docker_config)
    data, _ = client.get(f"/manifests/{ref.reference}", MANIFEST_TYPES)
    if ref.reference.startswith("sha256:") and "sha256:" + hashlib.sha256(data).hexdigest() != ref.reference:
        raise BaseImageError(f"{client._where()}: the registry sent a manifest with another digest")
    document = _json(data, "the manifest")
    manifests: dict[str, dict[str, Any]] = {}
    if "manifests" in document:  # an index: one manifest per platform
        for platform in platforms:
            os_, _, arch = platform.partition("/")
            entry = next((m for m in document["manifests"] if (m.get("platform") or {}).get("os") == os_
                          and (m.get("platform") or {}).get("architecture") == arch), None)  # fmt: skip
            if entry is None:
                raise BaseImageError(f"{client._where()} has no {platform} image")
            body, _ = client.get(f"/manifests/{entry['digest']}", MANIFEST_TYPES)
            manifests[platform] = _json(body, f"the {platform} manifest")
    else:
        manifests = {platform: document for platform in platforms}
    configs: dict[str, dict[str, Any]] = {}
    for platform, manifest in manifests.items():
        digest = str((manifest.get("config") or {}).get("digest", ""))
        if not digest.startswith("sha256:"):
            raise BaseImageError(f"{client._where()}: the {platform} manifest names no config")
        blob, _ = client.get(f"/blobs/{digest}")
        if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
            raise BaseImageError(f"{client._where()}: the {platform} config does not match its digest")
        configs[platform] = _json(blob, f"the {platform} config")
    return configs


def refuse_onbuild(image: str, platforms: list[str], *, plain_http: bool = False,
                   docker_config: Path | None = None) -> None:  # fmt: skip
    """BaseImageError when ``image`` carries ONBUILD triggers for any of ``platforms``."""
    for platform, config in image_configs(image, platforms, plain_http=plain_http, docker_config=docker_config).items():
        triggers = (config.get("config") or {}).get("OnBuild") or []
        if triggers:
            shown = "; ".join(str(t) for t in triggers[:3])
            raise BaseImageError(
                f"base image {image} ({platform}) has ONBUILD triggers ({shown}): they would run its author's build "
                "steps in the build pod; use a base image without them"
            )
