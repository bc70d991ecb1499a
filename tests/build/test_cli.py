"""`modelship build`: the CLI contract (one readable error line, exit 1) without a Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelship.build.context import ContextError
from modelship.build.local import BuildError, build_local, load_into_kind
from modelship.cli import main

from .support import write_output

REPO_ROOT = Path(__file__).resolve().parents[2]


class NoEngine:
    """A docker client stand-in that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was contacted ({name}) before the context was verified")


def test_context_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_output(tmp_path / "opt", b"weights")
    rc = main(["build", "context", "--from", str(src), "--out", str(tmp_path / "ws"), "--name", "digits",
               "--base-image", "reg/serving:1", "--revision", "rabc"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith(f"build context in {tmp_path / 'ws'}: FROM reg/serving:1")
    assert "revision rabc" in out
    dockerfile = (tmp_path / "ws" / "Dockerfile").read_text()
    assert "FROM reg/serving:1" in dockerfile and '"--name", "digits"' in dockerfile


def test_context_default_base_image_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIP_SERVING_IMAGE", "reg/serving@sha256:" + "ee" * 32)
    src = write_output(tmp_path / "opt")
    assert main(["build", "context", "--from", str(src), "--out", str(tmp_path / "ws")]) == 0
    assert f"FROM reg/serving@sha256:{'ee' * 32}\n" in (tmp_path / "ws" / "Dockerfile").read_text()


def test_digest_mismatch_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_output(tmp_path / "opt", b"a")
    (src / "model.tflite").write_bytes(b"b")
    assert main(["build", "context", "--from", str(src), "--out", str(tmp_path / "ws")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modelship build: error: ") and "digest mismatch" in err
    assert err.count("\n") == 1
    # the local build refuses the same way, before the engine is contacted
    assert main(["build", "--from", str(src), "--tag", "local/digits:1"]) == 1
    assert "digest mismatch" in capsys.readouterr().err
    with pytest.raises(ContextError, match="digest mismatch"):
        build_local(src, "local/digits:1", base_image="x", client=NoEngine())


def test_no_traceback_from_the_real_entry_point(tmp_path: Path) -> None:
    src = write_output(tmp_path / "opt")
    (src / "model.tflite").unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")}
    proc = subprocess.run(
        [sys.executable, "-m", "modelship", "build", "context", "--from", str(src), "--out", str(tmp_path / "ws")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"modelship build: error: {src}: the artifact model.tflite is missing"]


def _savedmodel_output(out: Path) -> Path:
    from modelship.build.context import file_sha256

    (out / "saved_model" / "variables").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    src = write_output(out, artifact_name="saved_model.pb")  # a report to rewrite: it names the directory
    (src / "saved_model.pb").unlink()
    report = json.loads((src / "report.json").read_text())
    report["summary"].update(artifact="saved_model", artifactDigest=file_sha256(src / "saved_model"))
    (src / "report.json").write_text(json.dumps(report))
    return src


def test_a_savedmodel_is_built_on_the_tensorflow_capable_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serving image (LiteRT, no TensorFlow) cannot run a SavedModel: a build FROM it looked fine and the
    container exited at start ('serving a SavedModel needs TensorFlow'). A SavedModel's default base is the
    TensorFlow-capable runtime ($MODELSHIP_SERVING_TENSORFLOW_IMAGE, else the optimizer image); a .tflite's stays
    the serving image; a base image the user names wins."""
    for name in ("MODELSHIP_SERVING_IMAGE", "MODELSHIP_SERVING_TENSORFLOW_IMAGE", "MODELSHIP_OPTIMIZER_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    built: list[str] = []

    def fake_build(source: str, tag: str, **kw: Any) -> Any:
        built.append(kw["base_image"])
        context = SimpleNamespace(name=kw["name"], artifact_digest="sha256:x", revision=None)
        return SimpleNamespace(tag=tag, image_id="sha256:built", size=0, context=context)

    monkeypatch.setattr("modelship.build.local.build_local", fake_build)
    sm = _savedmodel_output(tmp_path / "opt")
    tfl = write_output(tmp_path / "tfl")

    def build(src: Path, *extra: str) -> str:
        built.clear()
        assert main(["build", "--from", str(src), "--tag", "local/digits:1", *extra]) == 0, capsys.readouterr().err
        (base,) = built
        return base

    assert build(sm) == "modelship/optimizer:0.1.0"
    assert build(tfl) == "modelship/serving:0.1.0"
    monkeypatch.setenv("MODELSHIP_SERVING_IMAGE", "reg/serving:2")  # the LiteRT runtime: never a SavedModel's
    monkeypatch.setenv("MODELSHIP_OPTIMIZER_IMAGE", "reg/optimizer:2")
    assert (build(sm), build(tfl)) == ("reg/optimizer:2", "reg/serving:2")
    monkeypatch.setenv("MODELSHIP_SERVING_TENSORFLOW_IMAGE", "reg/tf-serving:2")
    assert (build(sm), build(tfl)) == ("reg/tf-serving:2", "reg/serving:2")
    assert build(sm, "--base-image", "reg/mine:1") == "reg/mine:1"
    # the in-cluster form (the build Job passes --base-image; without it, the same default)
    assert main(["build", "context", "--from", str(sm), "--out", str(tmp_path / "ws")]) == 0
    assert "FROM reg/tf-serving:2\n" in (tmp_path / "ws" / "Dockerfile").read_text()


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_a_context_directory_it_cannot_write_is_one_line(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the OSError of the first mkdir went up as a traceback."""
    src = write_output(tmp_path / "opt")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "ws" if where == "under-a-file" else Path("/proc/modelship-ws")
    assert main(["build", "context", "--from", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"modelship build: error: {out}: cannot write the build context there (") and err.count(
        "\n"
    ) == 1, err


def test_ctrl_c_says_interrupted(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(_args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("modelship.build.cli._run_build", interrupted)
    assert main(["build", "--from", "/x", "--tag", "local/digits:1"]) == 130
    assert capsys.readouterr().err == "modelship build: interrupted\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build"], "nothing to do"),
        (["build", "--from", "/x"], "--tag is required"),
        (["build", "--from", "/x", "--tag", "Not/Valid:Tag"], "not a valid image reference"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_load_kind_without_kind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no kind here
    assert main(["build", "--load-kind", "dev", "--tag", "local/digits:1"]) == 1
    err = capsys.readouterr().err
    assert "kind is not installed" in err and err.count("\n") == 1


def _fake_kind(tmp_path: Path, rc: int) -> Path:
    kind = tmp_path / "kind"
    kind.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/kind-argv\necho "ERROR: no nodes found for cluster" >&2\nexit {rc}\n'
    )
    kind.chmod(0o755)
    return kind


def test_load_kind_shells_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_kind(tmp_path, 0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    lines: list[str] = []
    load_into_kind("local/digits:1", "dev", lines.append)
    assert (tmp_path / "kind-argv").read_text().split() == ["load", "docker-image", "local/digits:1", "--name", "dev"]
    assert lines[0] == "loading local/digits:1 into kind cluster dev"


def test_load_kind_failure_is_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_kind(tmp_path, 1)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(BuildError, match="failed: ERROR: no nodes found for cluster"):
        load_into_kind("local/digits:1", "dev")


def test_engine_unreachable_is_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    src = write_output(tmp_path / "opt")
    with pytest.raises(BuildError, match="cannot reach the Docker engine"):
        build_local(src, "local/digits:1", base_image="x")


class NoBaseImage:
    """A docker client stand-in whose engine has no base image and cannot pull one (no registry)."""

    def __init__(self) -> None:
        import docker.errors

        def missing(name: str) -> Any:
            raise docker.errors.ImageNotFound(f"No such image: {name}")

        def build(**_: Any) -> Any:
            yield {"error": "pull access denied for modelship/serving, repository does not exist"}

        self.images = SimpleNamespace(get=missing)
        self.api = SimpleNamespace(build=build)


def test_a_missing_base_image_says_which_image_and_both_ways_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MODELSHIP_SERVING_IMAGE", raising=False)
    monkeypatch.setattr("modelship.build.local.docker_client", NoBaseImage)
    src = write_output(tmp_path / "opt")
    assert main(["build", "--from", str(src), "--tag", "local/digits:1"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress lines, the one error line
    assert err.startswith("modelship build: error: ")
    assert "pull access denied" in err  # the engine's own words stay
    assert "modelship/serving:" in err and "the modelship serving runtime" in err  # which image
    # both ways: the repository's script (a wheel user has none, so it is named as a checkout's) or one's own image
    assert "from a checkout of the modelship repository (hack/images/build-all serving)" in err
    assert "--base-image IMAGE or MODELSHIP_SERVING_IMAGE=IMAGE" in err


def test_a_missing_savedmodel_base_image_names_the_tensorflow_runtime() -> None:
    from modelship.build.local import missing_base_image_advice

    text = missing_base_image_advice("modelship/optimizer:1", savedmodel=True)
    assert "TensorFlow" in text and "hack/images/build-all optimizer" in text
    assert "MODELSHIP_SERVING_TENSORFLOW_IMAGE=IMAGE" in text and "MODELSHIP_SERVING_IMAGE" not in text
