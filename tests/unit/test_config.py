"""OperatorConfig from the environment (what the chart sets), and the build defaults it gives the specs that leave
spec.build.repository / spec.build.engine out (resources.defaults), through revision, Job, reconcile and render."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelship.api import ModelDeployment
from modelship.api.build import BuildEngine
from modelship.config import ENV, Images, OperatorConfig
from modelship.resources.build_job import build_job
from modelship.resources.defaults import InvalidSpec, with_operator_defaults
from modelship.resources.revision import revision
from tests.support.specs import valid_doc

REPO = Path(__file__).resolve().parents[2]
UID = "6f1f2c7e-1111-4222-8333-944445555666"
REGISTRY = "registry.example.com/models"


def md(build: dict[str, Any] | None = None, *, name: str = "digits", namespace: str = "team-a") -> ModelDeployment:
    doc = copy.deepcopy(valid_doc(name))
    doc["metadata"].update(namespace=namespace, uid=UID, generation=1)
    if build is not None:
        doc["spec"]["build"] = build
    return ModelDeployment.from_body(doc)


# ---------------------------------------------------------------------------- environment
def test_nothing_set_is_the_defaults() -> None:
    assert OperatorConfig.from_env({}) == OperatorConfig()
    assert OperatorConfig.from_env({name: "" for name in ENV}) == OperatorConfig()  # empty: unset


def test_every_variable_reaches_its_field() -> None:
    env = {
        "MODELSHIP_OPERATOR_IMAGE": "r/op@sha256:" + "1" * 64,
        "MODELSHIP_KANIKO_IMAGE": "r/kaniko:2",
        "MODELSHIP_MAX_JOB_ATTEMPTS": "5",
        "MODELSHIP_RETRY_BASE_SECONDS": "0",
        "MODELSHIP_BUILD_REGISTRY": REGISTRY + "/",
        "MODELSHIP_BUILD_ENGINE": "kaniko",
    }
    cfg = OperatorConfig.from_env(env)
    assert cfg.images == Images(operator="r/op@sha256:" + "1" * 64, kaniko="r/kaniko:2")
    assert (cfg.max_job_attempts, cfg.retry_base_seconds) == (5, 0.0)
    assert cfg.build_registry == REGISTRY  # the trailing slash is dropped
    assert cfg.build_engine is BuildEngine.KANIKO


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("MODELSHIP_MAX_JOB_ATTEMPTS", "0", "must be at least 1"),
        ("MODELSHIP_JOB_TTL_SECONDS", "1h", "not an integer"),
        ("MODELSHIP_RETRY_BASE_SECONDS", "-1", "must be at least 0"),
        ("MODELSHIP_RESYNC_SECONDS", "0", "must be more than 0"),
        ("MODELSHIP_RESYNC_SECONDS", "nan", "must be more than 0"),
        ("MODELSHIP_BUILD_REGISTRY", "https://registry.example.com", "not a registry host"),
        ("MODELSHIP_BUILD_REGISTRY", "Registry.Example/models", "not a registry host"),
        ("MODELSHIP_BUILD_ENGINE", "docker", "not one of buildkit, kaniko"),
    ],
)
def test_an_unusable_value_names_the_variable(name: str, value: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}='{value}': {why}"):
        OperatorConfig.from_env({name: value})


# ---------------------------------------------------------------------------- build defaults
def test_a_spec_that_says_it_all_is_left_alone() -> None:
    explicit = md({"repository": "other.example/x/y", "engine": "buildkit"})
    cfg = OperatorConfig(build_registry=REGISTRY, build_engine=BuildEngine.KANIKO)
    assert with_operator_defaults(explicit, cfg) is explicit


def test_left_out_repository_goes_to_the_default_registry_by_namespace_and_name() -> None:
    cfg = OperatorConfig(build_registry=REGISTRY)
    effective = with_operator_defaults(md({}), cfg)
    assert effective.spec.build.repository == f"{REGISTRY}/team-a/digits"
    job = build_job(effective, "r1", "sha256:" + "ab" * 32, cfg)
    assert job["metadata"]["annotations"]["modelship.io/image"] == f"{REGISTRY}/team-a/digits:r1"
    # another namespace, another repository: tenants never share one
    other = with_operator_defaults(md({}, namespace="team-b"), cfg)
    assert other.spec.build.repository == f"{REGISTRY}/team-b/digits"


def test_left_out_engine_is_the_default_engine() -> None:
    cfg = OperatorConfig(build_engine=BuildEngine.KANIKO, images=Images(kaniko="r/kaniko:9"))
    left_out = with_operator_defaults(md({"repository": "r.example/x/y"}), cfg)
    assert left_out.spec.build.engine is BuildEngine.KANIKO
    container = build_job(left_out, "r1", "sha256:" + "ab" * 32, cfg)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "r/kaniko:9"
    said = with_operator_defaults(md({"repository": "r.example/x/y", "engine": "buildkit"}), cfg)
    assert said.spec.build.engine is BuildEngine.BUILDKIT


def test_revision_is_of_the_effective_spec() -> None:
    """Spelling the defaults out or leaving them to the operator is the same revision; changing a default
    changes the revision of exactly the specs that rely on it."""
    cfg = OperatorConfig(build_registry=REGISTRY)
    left_out = revision(with_operator_defaults(md({}), cfg).spec)
    spelled = md({"repository": f"{REGISTRY}/team-a/digits", "engine": "buildkit"})
    assert revision(with_operator_defaults(spelled, cfg).spec) == left_out
    moved = OperatorConfig(build_registry="registry.example.com/elsewhere")
    assert revision(with_operator_defaults(md({}), moved).spec) != left_out
    assert revision(with_operator_defaults(spelled, moved).spec) == left_out
    kaniko = OperatorConfig(build_registry=REGISTRY, build_engine=BuildEngine.KANIKO)
    assert revision(with_operator_defaults(md({}), kaniko).spec) != left_out
    # the chart's defaults change nothing: a stored spec's revision is what it was before defaults existed
    stored = md()
    assert revision(with_operator_defaults(stored, OperatorConfig()).spec) == revision(stored.spec)


def test_no_repository_and_no_default_registry_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match=r"^spec\.build\.repository: required .* no default registry"):
        with_operator_defaults(md({}), OperatorConfig())
    disabled = md({"enabled": False})
    assert with_operator_defaults(disabled, OperatorConfig()).spec.build.repository is None


def test_default_kaniko_with_two_platforms_is_an_invalid_spec() -> None:
    two = {"platforms": ["linux/amd64", "linux/arm64"]}
    cfg = OperatorConfig(build_registry=REGISTRY, build_engine=BuildEngine.KANIKO)
    with pytest.raises(InvalidSpec, match=r"^spec\.build\.platforms: kaniko"):
        with_operator_defaults(md(two), cfg)
    assert with_operator_defaults(md({**two, "engine": "buildkit"}), cfg).spec.build.engine is BuildEngine.BUILDKIT


def test_a_default_repository_too_long_is_an_invalid_spec() -> None:
    cfg = OperatorConfig(build_registry="registry.example.com/" + "a" * 200)
    with pytest.raises(InvalidSpec, match="at most 255 characters"):
        with_operator_defaults(md({}, namespace="n" * 60), cfg)


def test_the_reconciler_stalls_an_unbuildable_spec_and_creates_nothing() -> None:
    from modelship.controller.reconcile import Reconciler
    from modelship.controller.store import Store

    body = copy.deepcopy(valid_doc())
    del body["spec"]["build"]["repository"]
    body["metadata"].update(namespace="ml", uid=UID, generation=2, resourceVersion="5")

    class Kube:
        writes: list[Any] = []

        def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
            self.writes.append(status)
            return {}

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"an invalid spec must not touch the cluster ({name})")

    store = Store()
    store.put("ModelDeployment", body)
    kube = Kube()
    assert Reconciler(kube, store, OperatorConfig()).reconcile("ml", "digits") is None  # type: ignore[arg-type]
    (status,) = kube.writes
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"].startswith("spec.build.repository: required")
    assert status["lastFailure"]["reason"] == "InvalidSpec"


def _render(doc: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run([sys.executable, "-m", "modelship", "render", "-f", str(path), "-n", "team-a"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=REPO)  # fmt: skip


def test_render_applies_the_same_defaults(tmp_path: Path) -> None:
    import os

    doc = copy.deepcopy(valid_doc())
    del doc["spec"]["build"]["repository"]
    base = {k: v for k, v in os.environ.items() if k not in ENV}
    proc = _render(doc, tmp_path, {**base, "MODELSHIP_BUILD_REGISTRY": REGISTRY, "MODELSHIP_BUILD_ENGINE": "kaniko"})
    assert proc.returncode == 0, proc.stderr
    (job,) = [o for o in yaml.safe_load_all(proc.stdout) if o["kind"] == "Job" and "build" in o["metadata"]["name"]]
    assert job["metadata"]["annotations"]["modelship.io/image"].startswith(f"{REGISTRY}/team-a/digits:r")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == OperatorConfig().images.kaniko
    refused = _render(doc, tmp_path, base)
    assert refused.returncode == 1 and "spec.build.repository: required" in refused.stderr, refused.stderr
