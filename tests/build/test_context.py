"""The model image's build context: verified before anything is built, rendered deterministically."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from modelship.build.context import ContextError, file_sha256, render_context

from .support import sha256, write_output

BASE = "modelship/serving:0.1.0"


def render(src: Path, out: Path, **kw: object) -> str:
    render_context(src, out, base_image=BASE, name="digits", **kw)  # type: ignore[arg-type]
    return (out / "Dockerfile").read_text()


def test_context_layout_and_verified_copy(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt", b"model bytes")
    ctx = render_context(src, tmp_path / "ctx", base_image=BASE, name="digits")
    assert sorted(p.relative_to(ctx.path).as_posix() for p in ctx.path.rglob("*")) == [
        "Dockerfile",
        "model",
        "model/model.tflite",
        "model/report.json",
    ]
    assert (ctx.path / "model/model.tflite").read_bytes() == b"model bytes"
    assert file_sha256(ctx.path / "model/model.tflite") == sha256(b"model bytes") == ctx.artifact_digest
    assert stat.S_IMODE(os.stat(ctx.path / "model/model.tflite").st_mode) == 0o644
    assert ctx.model_path == "/model/model.tflite"
    assert ctx.revision == "r0123456789"  # from the report when not given


def test_dockerfile_runs_modelship_serve_as_non_root(tmp_path: Path) -> None:
    text = render(write_output(tmp_path / "opt"), tmp_path / "ctx", port=8080)
    lines = text.splitlines()
    assert lines[1] == f"FROM {BASE}"
    assert "COPY model/ /model/" in lines
    assert "USER 65532:65532" in lines
    assert "EXPOSE 8080" in lines
    assert 'ENTRYPOINT ["modelship", "serve"]' in lines
    assert 'CMD ["--model", "/model/model.tflite", "--name", "digits", "--port", "8080"]' in lines
    assert "/v2/health/ready" in text and "HEALTHCHECK" in text
    assert "RUN " not in text  # no RUN: multi-platform builds need no emulation


def _labels(dockerfile: str) -> dict[str, str]:
    """Parse the LABEL instruction back the way Docker does (double-quoted words, backslash escapes)."""
    block = dockerfile.split("LABEL ", 1)[1].split("\nCOPY", 1)[0].replace("\\\n", " ")
    out = {}
    for m in re.finditer(r'([\w./-]+)="((?:[^"\\]|\\.)*)"', block):
        out[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return out


def test_labels_carry_oci_and_summary_fields(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt", b"abc", source_digest="sha256:" + "11" * 32)
    labels = _labels(render(src, tmp_path / "ctx", revision="rfeedbeef00"))
    assert labels["org.opencontainers.image.title"] == "digits"
    assert labels["org.opencontainers.image.version"] == "rfeedbeef00"
    assert labels["org.opencontainers.image.base.name"] == BASE
    assert labels["modelship.io/revision"] == "rfeedbeef00"
    assert labels["modelship.io/source-digest"] == "sha256:" + "11" * 32
    assert labels["modelship.io/artifact-digest"] == sha256(b"abc")
    assert labels["modelship.io/metric-name"] == "accuracy"
    assert labels["modelship.io/value"] == "0.975"
    assert labels["modelship.io/baseline"] == "0.98"
    assert labels["modelship.io/gate"] == "Passed"
    assert labels["modelship.io/decision"] == "Optimized"
    assert labels["modelship.io/optimized-bytes"] == "3"
    assert labels["modelship.io/compression-ratio"] == "3.5"
    assert "org.opencontainers.image.created" not in labels  # reproducible unless asked


def test_label_values_are_escaped(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt", candidate='prune "80%" + int8 $HOME\\x\nnext')
    labels = _labels(render(src, tmp_path / "ctx"))
    assert labels["modelship.io/candidate"] == 'prune "80%" + int8 $HOME\\x next'
    text = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "\\$HOME" in text


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    a = render(src, tmp_path / "a")
    b = render(src, tmp_path / "b")
    assert a == b


def test_bare_model_name_default_and_validation(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    ctx = render_context(src, tmp_path / "ctx", base_image=BASE)
    assert ctx.name == "model"
    with pytest.raises(ContextError, match="model name"):
        render_context(src, tmp_path / "ctx2", base_image=BASE, name="../etc")
    with pytest.raises(ContextError, match="not an image reference"):
        render_context(src, tmp_path / "ctx3", base_image="two words")


# --- refusals: each one before anything is written or built ---------------------------------------------


def _refused(src: Path, out: Path, match: str) -> None:
    with pytest.raises(ContextError, match=match) as info:
        render_context(src, out, base_image=BASE, name="digits")
    assert "\n" not in str(info.value)
    assert not out.exists() or not any(out.iterdir()), "nothing may be written for a refused context"


def test_missing_artifact_is_refused(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    (src / "model.tflite").unlink()
    _refused(src, tmp_path / "ctx", "the artifact model.tflite is missing")


def test_digest_mismatch_is_refused(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt", b"original")
    (src / "model.tflite").write_bytes(b"tampered")
    _refused(src, tmp_path / "ctx", "digest mismatch: the report says sha256:")


def test_report_without_digest_is_refused(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    data = json.loads((src / "report.json").read_text())
    del data["summary"]["artifactDigest"]
    (src / "report.json").write_text(json.dumps(data))
    _refused(src, tmp_path / "ctx", "artifact_digest is not set")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.unlink(), "no report.json"),
        (lambda d: d.write_text("{not json"), "not a Modelship report"),
        (lambda d: d.write_text('{"summary": {"ok": "maybe"}}'), "not a Modelship report: summary.ok"),
    ],
    ids=["no-report", "not-json", "bad-summary"],
)
def test_broken_report_is_refused(tmp_path: Path, mutate: object, match: str) -> None:
    src = write_output(tmp_path / "opt")
    mutate(src / "report.json")  # type: ignore[operator]
    _refused(src, tmp_path / "ctx", match)


def test_failed_blocked_and_escaping_outputs_are_refused(tmp_path: Path) -> None:
    _refused(write_output(tmp_path / "a", ok=False, error="OOM"), tmp_path / "ca", "optimization failed.*OOM")
    _refused(write_output(tmp_path / "b", decision="Blocked"), tmp_path / "cb", "gate blocked")
    _refused(write_output(tmp_path / "c", artifact="../model.tflite"), tmp_path / "cc", "must be a path inside")
    _refused(write_output(tmp_path / "d", artifact=None), tmp_path / "cd", "summary.artifact is not set")
    _refused(tmp_path / "nowhere", tmp_path / "ce", "not a directory")


def test_non_empty_out_is_refused(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "stale").write_text("x")
    with pytest.raises(ContextError, match="not empty"):
        render_context(src, out, base_image=BASE)


def _saved_model_output(root: Path) -> Path:
    from modelship.fetch import sha256_path

    src = root / "opt"
    sm = src / "saved_model"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"graph")
    (sm / "variables" / "variables.index").write_bytes(b"index")
    return write_output(src, b"unused", artifact="saved_model", digest=sha256_path(sm))


def test_saved_model_directory_artifact(tmp_path: Path) -> None:
    src = _saved_model_output(tmp_path)
    ctx = render_context(src, tmp_path / "ctx", base_image="modelship/optimizer:0.1.0", name="digits")
    assert ctx.model_path == "/model/saved_model"
    assert (ctx.path / "model/saved_model/variables/variables.index").read_bytes() == b"index"
    assert stat.S_IMODE(os.stat(ctx.path / "model/saved_model/variables").st_mode) == 0o755
    assert '"--model", "/model/saved_model"' in (ctx.path / "Dockerfile").read_text()


def test_saved_model_directory_refusals(tmp_path: Path) -> None:
    src = _saved_model_output(tmp_path / "a")
    (src / "saved_model" / "variables" / "variables.index").write_bytes(b"changed")
    _refused(src, tmp_path / "ca", "digest mismatch")
    src = _saved_model_output(tmp_path / "b")
    (src / "saved_model" / "saved_model.pb").unlink()
    _refused(src, tmp_path / "cb", "must be a SavedModel")
    src = _saved_model_output(tmp_path / "c")
    (src / "saved_model" / "link").symlink_to("/etc/hostname")
    _refused(src, tmp_path / "cc", "symbolic link")
