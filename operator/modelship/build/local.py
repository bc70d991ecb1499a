"""Build a model image against the local Docker engine (docker SDK) and load it into a kind cluster.

The build context is rendered and verified first (``context.render_context``): a missing artifact or a
digest mismatch is refused before the engine is even contacted. The engine's build log is streamed to a
callback line by line (the CLI shows it with rich on a terminal, plainly otherwise).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .context import DEFAULT_PORT, BuildContext, render_context

LineSink = Callable[[str], None]


class BuildError(RuntimeError):
    """The local build or the kind load failed (one readable line)."""


@dataclass(frozen=True)
class LocalImage:
    """A model image in the local engine."""

    tag: str
    image_id: str
    size: int
    labels: dict[str, str]
    context: BuildContext


def _ignore(_: str) -> None:
    return None


def docker_client() -> Any:
    """A client for the local engine (DOCKER_HOST or the default socket), API version negotiated."""
    try:
        import docker
    except ImportError:
        raise BuildError("the docker SDK is not installed: pip install 'modelship[build]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise BuildError(
            f"cannot reach the Docker engine ({_first_line(exc)}): is dockerd running? (hack/images/ensure-docker)"
        ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def stream_build(api: Any, context_dir: Path, tag: str, on_line: LineSink) -> str:
    """Run a build through the low-level API, forwarding its log; return the image id."""
    image_id = ""
    chunks: Iterator[dict[str, Any]] = api.build(
        path=str(context_dir), tag=tag, rm=True, forcerm=True, decode=True, pull=False
    )
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(detail.get("message") or chunk["error"]).strip()
            raise BuildError(f"the engine failed to build {tag}: {message.splitlines()[-1] if message else '?'}")
        if "stream" in chunk:
            for line in str(chunk["stream"]).splitlines():
                if line.strip():
                    on_line(line.rstrip())
        elif "status" in chunk:  # pulling the base image
            on_line(" ".join(str(chunk[k]) for k in ("status", "id", "progress") if chunk.get(k)))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    return image_id


def missing_base_image_advice(base_image: str, savedmodel: bool) -> str:
    """What to do when the base image is neither in the local engine nor pullable: which image it is, and both ways
    to get one (a wheel user has no ``hack/``: the checkout's script is one way, naming an image one has the other)."""
    if savedmodel:
        kind, script, env = (
            "a TensorFlow-capable serving runtime (a SavedModel needs TensorFlow; the optimizer image carries it)",
            "optimizer",
            "MODELSHIP_SERVING_TENSORFLOW_IMAGE",
        )
    else:
        kind, script, env = "the modelship serving runtime", "serving", "MODELSHIP_SERVING_IMAGE"
    return (
        f"the base image {base_image} is not in the local engine and was not pulled: it is {kind}; "
        f"build it from a checkout of the modelship repository (hack/images/build-all {script}), "
        f"or name an image you have with --base-image IMAGE or {env}=IMAGE"
    )


def build_local(
    source: Path | str,
    tag: str,
    *,
    base_image: str,
    name: str | None = None,
    revision: str | None = None,
    port: int = DEFAULT_PORT,
    on_line: LineSink = _ignore,
    client: Any = None,
) -> LocalImage:
    """Verify ``source`` (an optimization output dir), render its context and build ``tag`` locally."""
    with tempfile.TemporaryDirectory(prefix="modelship-build-") as tmp:
        ctx = render_context(
            source, Path(tmp) / "context", base_image=base_image, name=name, revision=revision, port=port
        )
        on_line(f"context verified: {ctx.model_path} {ctx.artifact_digest} FROM {base_image}")
        client = client or docker_client()
        import docker.errors

        base_missing = False
        try:
            client.images.get(base_image)
        except docker.errors.ImageNotFound:
            base_missing = True
            on_line(f"base image {base_image} is not in the local engine: the engine will try to pull it")
        try:
            image_id = stream_build(client.api, ctx.path, tag, on_line)
        except BuildError as exc:
            if base_missing:
                raise BuildError(f"{exc} ({missing_base_image_advice(base_image, ctx.is_savedmodel)})") from None
            raise
        except docker.errors.APIError as exc:
            raise BuildError(f"the engine refused the build of {tag}: {_first_line(exc)}") from None
        image = client.images.get(tag)
        labels = dict(image.labels or {})
        ctx_digest = labels.get("modelship.io/artifact-digest")
        if ctx_digest != ctx.artifact_digest:
            raise BuildError(
                f"built {tag} but its artifact-digest label is {ctx_digest}, expected {ctx.artifact_digest}"
            )
        return LocalImage(
            tag=tag,
            image_id=image_id or str(image.id),
            size=int(image.attrs.get("Size") or 0),
            labels=labels,
            context=ctx,
        )


def load_into_kind(tag: str, cluster: str, on_line: LineSink = _ignore) -> None:
    """``kind load docker-image TAG --name CLUSTER``; a readable error when kind is missing or fails."""
    kind = shutil.which("kind")
    if kind is None:
        raise BuildError(
            "kind is not installed (not on PATH): install it (go install sigs.k8s.io/kind@latest) "
            f"or load the image yourself: docker save {tag} | <your runtime's import>"
        )
    on_line(f"loading {tag} into kind cluster {cluster}")
    proc = subprocess.run(
        [kind, "load", "docker-image", tag, "--name", cluster],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            on_line(line.rstrip())
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
        raise BuildError(f"kind load docker-image {tag} --name {cluster} failed: {lines[-1].strip()}")
