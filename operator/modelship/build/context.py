"""The model image's build context, rendered from an optimization output directory.

The output directory holds the artifact (``model.tflite``, or a ``saved_model/`` directory, which needs a base
image with TensorFlow) and ``report.json`` (``api/report.py: Report``).
``render_context`` checks them before anything is built: the report must parse, say the artifact ships,
name an artifact inside the directory that exists, and carry its sha256 (``artifact_digest``), which must
match the file's bytes. Then it writes::

    OUT/Dockerfile          FROM <serving runtime>, OCI + modelship.io labels, COPY, USER, ENTRYPOINT
    OUT/model/model.tflite  the verified artifact (mode 0644: root-owned, read-only to the server)
    OUT/model/report.json   the report, for whoever inspects the image

The Dockerfile has no RUN step, so a multi-platform build needs no emulation: each platform's image is the
runtime's image for that platform plus the same model layer. Same inputs, byte-identical context.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from ..api.errors import describe_validation_error
from ..api.report import Report, ShipDecision, Summary
from ..fetch import sha256_path

REPORT_FILE = "report.json"
MODEL_DIR = "/model"
DEFAULT_PORT = 8080
DEFAULT_NAME = "model"
RUN_AS = "65532:65532"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
LABEL_PREFIX = "modelship.io/"

# Summary fields that become modelship.io/<kebab-case> labels (besides revision and source-digest)
_SUMMARY_LABELS = (
    "artifact_digest",
    "source_bytes",
    "metric_name",
    "baseline",
    "value",
    "drop",
    "gate",
    "decision",
    "candidate",
    "original_bytes",
    "optimized_bytes",
    "original_gzip_bytes",
    "optimized_gzip_bytes",
    "compression_ratio",
    "latency_p50_ms",
    "baseline_latency_p50_ms",
)


class ContextError(ValueError):
    """The output directory cannot be built into an image (one readable line)."""


@dataclass(frozen=True)
class BuildContext:
    """A rendered build context."""

    path: Path
    """The context directory (holds the Dockerfile)."""
    base_image: str
    name: str
    revision: str | None
    artifact_digest: str
    model_path: str
    """Where the model is inside the image."""
    labels: dict[str, str] = field(default_factory=dict)
    summary: Summary | None = None

    @property
    def dockerfile(self) -> Path:
        return self.path / "Dockerfile"

    @property
    def is_savedmodel(self) -> bool:
        """The model is a SavedModel directory (its base image needs TensorFlow)."""
        return (self.path / "model" / PurePosixPath(self.model_path).name).is_dir()


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, or of a directory tree (the optimizer's own definition,
    ``modelship.fetch.sha256_path``: every regular file by sorted relative path, with its size)."""
    if path.is_dir():
        return sha256_path(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def load_output(src: Path) -> tuple[Report, Path]:
    """Verify an optimization output directory; return its report and the artifact's path.

    Raises ContextError (one readable line) for anything that must not be built."""
    if not src.is_dir():
        raise ContextError(f"{src}: not a directory (expected the optimizer's output: artifact + {REPORT_FILE})")
    report_path = src / REPORT_FILE
    if not report_path.is_file():
        raise ContextError(f"{src}: no {REPORT_FILE} (is this the optimizer's output directory?)")
    try:
        report = Report.model_validate_json(report_path.read_bytes())
    except ValidationError as exc:
        raise ContextError(f"{report_path}: not a Modelship report: {describe_validation_error(exc)}") from None
    except OSError as exc:
        raise ContextError(f"{report_path}: cannot read: {exc.strerror}") from None
    s = report.summary
    if not s.ok:
        raise ContextError(f"{report_path}: the optimization failed, nothing to build: {s.error or 'no error given'}")
    if s.decision == ShipDecision.BLOCKED:
        raise ContextError(
            f"{report_path}: the accuracy gate blocked this model, nothing ships: {s.message or ''}".rstrip(": ")
        )
    if not s.artifact:
        raise ContextError(f"{report_path}: summary.artifact is not set (which file ships?)")
    if not s.artifact_digest:
        raise ContextError(f"{report_path}: summary.artifact_digest is not set: refusing an unverifiable artifact")
    rel = Path(s.artifact)
    if rel.is_absolute() or ".." in rel.parts:
        raise ContextError(f"{report_path}: summary.artifact {s.artifact!r} must be a path inside {src}")
    artifact = src / rel
    if artifact.is_symlink() or not (artifact.is_file() or artifact.is_dir()):
        raise ContextError(f"{src}: the artifact {s.artifact} is missing")
    if artifact.is_dir():
        if not (artifact / "saved_model.pb").is_file():
            raise ContextError(f"{artifact}: a directory artifact must be a SavedModel (no saved_model.pb in it)")
        links = [p for p in artifact.rglob("*") if p.is_symlink()]
        if links:
            raise ContextError(f"{artifact}: symbolic link {links[0].relative_to(artifact)} in the artifact")
    actual = file_sha256(artifact)
    if actual != s.artifact_digest:
        raise ContextError(
            f"{artifact}: digest mismatch: the report says {s.artifact_digest}, the file is {actual} "
            "(artifact changed or corrupted after the optimizer wrote it)"
        )
    return report, artifact


def _label_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return " ".join(str(value).split())


def image_labels(
    report: Report, *, name: str, base_image: str, revision: str | None, model_path: str, created: str | None = None
) -> dict[str, str]:
    """OCI annotations (org.opencontainers.image.*) and modelship.io/* labels from the report's summary."""
    s = report.summary
    labels: dict[str, str] = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.description": f"{name}: TensorFlow Lite model served by Modelship",
        "org.opencontainers.image.vendor": "Modelship",
        "org.opencontainers.image.base.name": base_image,
        f"{LABEL_PREFIX}model-name": name,
        f"{LABEL_PREFIX}model-path": model_path,
    }
    if revision:
        labels["org.opencontainers.image.version"] = revision
        labels["org.opencontainers.image.revision"] = revision
        labels[f"{LABEL_PREFIX}revision"] = revision
    if created:
        labels["org.opencontainers.image.created"] = created
    if s.source_digest:
        labels[f"{LABEL_PREFIX}source-digest"] = s.source_digest
    for key in _SUMMARY_LABELS:
        value = getattr(s, key)
        if value is not None:
            labels[LABEL_PREFIX + key.replace("_", "-")] = _label_value(value)
    if report.model_format:
        labels[f"{LABEL_PREFIX}model-format"] = report.model_format
    return dict(sorted(labels.items()))


def _quote(value: str) -> str:
    """A Dockerfile double-quoted word: backslash, quote and $ escaped, whitespace collapsed."""
    value = " ".join(value.split())
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def dockerfile_text(
    *, base_image: str, labels: dict[str, str], name: str, model_file: str, port: int = DEFAULT_PORT
) -> str:
    if any(c.isspace() for c in base_image) or not base_image:
        raise ContextError(f"base image {base_image!r} is not an image reference")
    model_path = f"{MODEL_DIR}/{model_file}"
    cmd = ["--model", model_path, "--name", name, "--port", str(port)]
    health = (
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/v2/health/ready', timeout=2).close()"
    )
    label_lines = " \\\n      ".join(f"{k}={_quote(v)}" for k, v in labels.items())
    return (
        "# Rendered by `modelship build context`: the Modelship serving runtime + one verified model.\n"
        f"FROM {base_image}\n"
        f"LABEL {label_lines}\n"
        f"COPY model/ {MODEL_DIR}/\n"
        f"ENV MODELSHIP_MODEL={model_path} MODELSHIP_NAME={_quote(name)}\n"
        f"USER {RUN_AS}\n"
        f"EXPOSE {port}\n"
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\\n"
        f"  CMD {json.dumps(['python3', '-c', health])}\n"
        'ENTRYPOINT ["modelship", "serve"]\n'
        f"CMD {json.dumps(cmd)}\n"
    )


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ContextError(f"{out}: exists and is not a directory")
        if any(out.iterdir()):
            raise ContextError(f"{out}: not empty (the build context goes into an empty directory)")
    else:
        out.mkdir(parents=True)


def render_context(
    src: Path | str,
    out: Path | str,
    *,
    base_image: str,
    name: str | None = None,
    revision: str | None = None,
    port: int = DEFAULT_PORT,
    created: str | None = None,
    expect_digest: str | None = None,
) -> BuildContext:
    """Verify ``src`` (see load_output) and write the build context into the empty (or new) directory ``out``.

    ``expect_digest``: the artifact digest recorded outside ``src`` (the operator's, from the optimization Job's
    summary); a report naming any other artifact is refused."""
    src, out = Path(src), Path(out)
    name = name or DEFAULT_NAME
    if not NAME_PATTERN.match(name):
        raise ContextError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 63, first alnum)")
    if not 1 <= port <= 65535:
        raise ContextError(f"port {port} is out of range")
    report, artifact = load_output(src)
    if expect_digest is not None and report.summary.artifact_digest != expect_digest:
        raise ContextError(
            f"{src}: the artifact is {report.summary.artifact_digest}, not {expect_digest} as recorded: refusing it"
        )
    revision = revision or report.revision
    model_file = artifact.name
    model_path = f"{MODEL_DIR}/{model_file}"
    labels = image_labels(
        report, name=name, base_image=base_image, revision=revision, model_path=model_path, created=created
    )
    text = dockerfile_text(base_image=base_image, labels=labels, name=name, model_file=model_file, port=port)
    try:
        digest = _write_context(out, src, artifact, report, text)
    except OSError as exc:  # a read-only or full disk: one line naming the directory, not a traceback
        raise ContextError(f"{out}: cannot write the build context there ({exc.strerror or exc})") from None
    return BuildContext(
        path=out,
        base_image=base_image,
        name=name,
        revision=revision,
        artifact_digest=digest,
        model_path=model_path,
        labels=labels,
        summary=report.summary,
    )


def _write_context(out: Path, src: Path, artifact: Path, report: Report, text: str) -> str:
    """Copy the artifact and the report into ``out``/model, check the copy, write the Dockerfile; its digest."""
    model_file = artifact.name
    _prepare_out(out)
    model_dir = out / "model"
    model_dir.mkdir(mode=0o755)
    os.chmod(model_dir, 0o755)
    if artifact.is_dir():  # a SavedModel (export savedmodel): needs TensorFlow in the base image
        shutil.copytree(artifact, model_dir / model_file, symlinks=False)
    else:
        shutil.copyfile(artifact, model_dir / model_file)
    shutil.copyfile(src / REPORT_FILE, model_dir / REPORT_FILE)
    for root, dirs, files in os.walk(model_dir):  # root-owned in the image, read-only to the server
        for d in dirs:
            os.chmod(Path(root) / d, 0o755)
        for f in files:
            os.chmod(Path(root) / f, 0o644)
    # the copy is what gets built: check it too (a short write or a racing writer must not ship)
    copied = file_sha256(model_dir / model_file)
    digest = report.summary.artifact_digest or ""
    if copied != digest:
        raise ContextError(f"{model_dir / model_file}: copy has digest {copied}, expected {digest}")
    (out / "Dockerfile").write_text(text)
    return digest
