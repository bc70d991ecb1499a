"""An MLflow model registry as a source: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

The tracking server is the source's endpoint (``credentials.endpoint``; ``MLFLOW_TRACKING_URI`` for the CLI). The
registered version is resolved through MLflow's REST API (``model-versions/get-download-uri``; an alias through
``registered-models/alias``) and its artifacts are downloaded through the server's artifact proxy
(``mlflow-artifacts:`` locations: ``mlflow server`` serves artifacts by default). Nothing of the mlflow package is
needed. Credentials: ``MLFLOW_TRACKING_TOKEN`` (Bearer) or ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (Basic).

When the artifact is an MLflow model directory (it has an ``MLmodel`` file), the model inside it is used: the one
``.keras``/``.h5``/``.tflite`` file or SavedModel directory it holds.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import http
from .access import Access
from .errors import FetchError
from .paths import inside

URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_.-]+))$")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".tflite")
MAX_FILES = 10_000


@dataclass(frozen=True)
class Resolved:
    path: Path
    name: str
    version: str
    artifact_uri: str


def _detail(body: bytes) -> str:
    try:
        import json

        data = json.loads(body)
        return f"{data.get('error_code', '')}: {data.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return ""


class Tracking:
    """One MLflow tracking server."""

    def __init__(self, access: Access) -> None:
        endpoint = access.endpoint or (access.env.get("MLFLOW_TRACKING_URI") if access.environment else None)
        if not endpoint or not endpoint.startswith(("http://", "https://")):
            raise FetchError(
                "models:/ URIs need the MLflow tracking server's URL in credentials.endpoint "
                "(MLFLOW_TRACKING_URI for the CLI)"
            )
        self.base = endpoint.rstrip("/")
        self.access = access
        self.headers: dict[str, str] = {}
        token = access.secret("MLFLOW_TRACKING_TOKEN")
        user = access.secret("MLFLOW_TRACKING_USERNAME")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            password = access.secret("MLFLOW_TRACKING_PASSWORD") or ""
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(self, path: str, params: dict[str, str], what: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        response = http.request("GET", url, self.access, headers=self.headers)
        if response.status != 200:
            raise http.status_error(response, what, _detail, missing="not found")
        return response.json()

    def download_uri(self, name: str, version: str | None, alias: str | None, uri: str) -> tuple[str, str]:
        """(version, artifact URI) of a registered model version."""
        if alias is not None:
            got = self.get("/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": alias}, uri)
            version = str((got.get("model_version") or {}).get("version") or "")
            if not version:
                raise FetchError(f"{uri}: the tracking server returned no version for alias {alias!r}")
        assert version is not None
        got = self.get("/api/2.0/mlflow/model-versions/get-download-uri", {"name": name, "version": version}, uri)
        artifact = got.get("artifact_uri") if isinstance(got, dict) else None
        if not artifact:
            raise FetchError(f"{uri}: the tracking server returned no artifact_uri for version {version}")
        return version, str(artifact)

    def _artifact_path(self, artifact_uri: str) -> str:
        parsed = urllib.parse.urlsplit(artifact_uri)
        if parsed.scheme != "mlflow-artifacts":
            raise FetchError(
                f"the model version's artifacts are at {artifact_uri}, which the tracking server does not proxy: "
                "run `mlflow server` with artifact serving (the default), or point spec.model.uri at the artifact "
                "store directly"
            )
        return urllib.parse.unquote(parsed.path).strip("/")

    def download(self, artifact_uri: str, dest: Path, *, max_bytes: int) -> Path:
        """Download a file or a directory of artifacts through the proxy into ``dest``."""
        root = self._artifact_path(artifact_uri)
        listing = self.get("/api/2.0/mlflow-artifacts/artifacts", {"path": root}, artifact_uri).get("files")
        name = root.rsplit("/", 1)[-1] or "model"
        if not listing:
            target = dest / name
            self._file(root, target, max_bytes)
            return target
        tree = dest / name
        tree.mkdir(parents=True, exist_ok=True)
        total, count = 0, 0
        pending = [("", listing)]
        while pending:
            rel_dir, files = pending.pop()
            for entry in files:
                rel = f"{rel_dir}{entry.get('path', '').rsplit('/', 1)[-1]}"
                target = inside(tree, rel, what=f"artifact {rel!r} of {artifact_uri}")
                count += 1
                if count > MAX_FILES:
                    raise FetchError(f"{artifact_uri}: more than {MAX_FILES} artifact files")
                if entry.get("is_dir"):
                    target.mkdir(parents=True, exist_ok=True)
                    sub = self.get("/api/2.0/mlflow-artifacts/artifacts", {"path": f"{root}/{rel}"}, artifact_uri)
                    pending.append((f"{rel}/", sub.get("files") or []))
                    continue
                total += int(entry.get("file_size") or 0)
                if total > max_bytes:
                    raise FetchError(f"{artifact_uri}: more than the {max_bytes}-byte download limit")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._file(f"{root}/{rel}", target, max_bytes)
        return tree

    def _file(self, path: str, target: Path, max_bytes: int) -> None:
        url = f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(path)}"
        response = http.request("GET", url, self.access, headers=self.headers)
        if response.status != 200:
            raise http.status_error(response, f"mlflow-artifacts:/{path}", _detail)
        response.save(target, max_bytes=max_bytes)


def model_in(path: Path) -> Path:
    """The model inside an MLflow model directory (one with an MLmodel file); other paths unchanged."""
    if not (path.is_dir() and (path / "MLmodel").is_file()):
        return path
    found: list[Path] = []
    for candidate in sorted(path.rglob("*")):
        is_file_model = candidate.is_file() and candidate.suffix.lower() in MODEL_SUFFIXES
        if is_file_model or (candidate.is_dir() and (candidate / "saved_model.pb").is_file()):
            found.append(candidate)
    found = [p for p in found if not any(q != p and q in p.parents for q in found)]
    if len(found) != 1:
        names = ", ".join(str(p.relative_to(path)) for p in found) or "none"
        raise FetchError(
            f"the MLflow model directory must hold exactly one .keras/.h5/.tflite file or SavedModel; found: {names}"
        )
    return found[0]


def fetch(uri: str, dest: Path, access: Access, *, max_bytes: int) -> Resolved:
    match = URI_RE.match(uri)
    if match is None:
        raise FetchError(f"{uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    name = urllib.parse.unquote(match["name"])
    tracking = Tracking(access)
    version, artifact = tracking.download_uri(name, match["version"], match["alias"], uri)
    downloaded = tracking.download(artifact, dest, max_bytes=max_bytes)
    return Resolved(path=model_in(downloaded), name=name, version=version, artifact_uri=artifact)
