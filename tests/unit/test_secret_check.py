"""A Secret a stage Job would mount that does not exist: the pure decision (controller/stages/secrets.py,
resources/secrets.py). No Job, the stage's condition False SecretNotFound naming the Secret, its field and the
namespace, Stalled with the same reason, one Warning Event per condition change, a backoff, and the Job once the
Secret exists."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelship.api import ModelDeployment
from modelship.config import OperatorConfig
from modelship.controller.observe import JobState, Observed
from modelship.controller.plan import plan
from modelship.controller.stages.secrets import RECHECK_MAX_SECONDS, RECHECK_MIN_SECONDS
from modelship.resources.build_job import build_job
from modelship.resources.optimize_job import optimize_job
from modelship.resources.revision import revision
from modelship.resources.secrets import mounted_secrets, secret_fields
from tests.support.specs import valid_doc
from tests.unit.test_plan import CONFIG, NOW, cond, job, make_md, summary

CREDS = {"secretRef": {"name": "model-creds"}}
DATA = {
    "calibration": {"uri": "s3://data/train.npz", "format": "npz", "credentials": {"secretRef": {"name": "shared"}}},
    "evaluation": {"uri": "s3://data/test.npz", "format": "npz", "credentials": {"secretRef": {"name": "shared"}}},
}


def sourced(**build: Any) -> ModelDeployment:
    """Model and both data sets behind Secrets (one shared by the two data sets)."""
    doc = valid_doc()
    doc["metadata"].update(namespace="ml", uid="u-1", generation=4)
    doc["spec"]["model"] = {"uri": "s3://models/cnn.h5", "format": "h5", "credentials": CREDS}
    doc["spec"]["optimization"]["data"] = DATA
    doc["spec"]["build"].update(build)
    return ModelDeployment.from_body(doc)


def written(md: ModelDeployment, status: dict[str, Any]) -> ModelDeployment:
    """``md`` as the API server has it once ``status`` is written."""
    return md.model_copy(update={"status": md.status.model_validate(status)})


def test_the_secrets_a_job_mounts_are_read_from_its_manifest_and_each_has_its_fields() -> None:
    md = sourced(pushSecretRef={"name": "push"})
    rev = revision(md.spec)
    assert mounted_secrets(optimize_job(md, rev, CONFIG)) == ("model-creds", "shared")  # an image is built: no push
    assert secret_fields(md) == {
        "model-creds": ("spec.model.credentials.secretRef.name",),
        "shared": (
            "spec.optimization.data.evaluation.credentials.secretRef.name",
            "spec.optimization.data.calibration.credentials.secretRef.name",
        ),
        "push": ("spec.build.pushSecretRef.name",),
    }
    # build-less with a repository: the optimization Job pushes the artifact with the push Secret
    unbuilt = sourced(enabled=False, pushSecretRef={"name": "push"})
    assert mounted_secrets(optimize_job(unbuilt, revision(unbuilt.spec), CONFIG)) == ("model-creds", "shared", "push")
    # the build Job in the tenant's namespace (no build namespace) mounts the tenant's push Secret
    digest = "sha256:" + "ef" * 32
    assert mounted_secrets(build_job(md, rev, digest, CONFIG)) == ("push",)
    # in the operator's build namespace it mounts the platform's, never the tenant's
    platform = OperatorConfig(build_namespace="builds", build_push_secrets={"registry.local:5000": "platform-push"})
    assert mounted_secrets(build_job(md, rev, digest, platform)) == ("platform-push",)
    assert mounted_secrets({"spec": {"template": {"spec": {"volumes": [
        {"name": "p", "projected": {"sources": [{"secret": {"name": "a"}}, {"configMap": {"name": "c"}}]}},
    ]}}}}) == ("a",)  # fmt: skip


def test_a_missing_source_secret_stalls_the_optimization_without_a_job() -> None:
    md = sourced()
    p = plan(md, Observed(missing_secrets=frozenset({("ml", "shared")})), CONFIG, NOW)
    assert p.create == []
    s = p.status
    optimized = cond(s, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "SecretNotFound")
    message = optimized["message"]
    assert 'Secret "shared"' in message and "namespace ml" in message
    assert "spec.optimization.data.calibration.credentials.secretRef.name" in message
    assert "spec.optimization.data.evaluation.credentials.secretRef.name" in message
    assert "model-creds" not in message  # only what is missing
    assert (cond(s, "Stalled")["status"], cond(s, "Stalled")["reason"]) == ("True", "SecretNotFound")
    assert cond(s, "Stalled")["message"] == message
    assert (cond(s, "Ready")["status"], cond(s, "Reconciling")["status"]) == ("False", "False")
    assert s["phase"] == "Failed"
    assert s["lastFailure"]["stage"] == "Optimize" and s["lastFailure"]["reason"] == "SecretNotFound"
    warnings = [e for e in p.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["OptimizedSecretNotFound", "ReadySecretNotFound"]
    assert p.requeue_after == RECHECK_MIN_SECONDS


def test_the_same_stall_posts_nothing_again_and_looks_again_later_and_later() -> None:
    md = sourced()
    missing = Observed(missing_secrets=frozenset({("ml", "model-creds")}))
    first = plan(md, missing, CONFIG, NOW)
    for waited, expected in ((40, 40.0), (2, RECHECK_MIN_SECONDS), (10_000, RECHECK_MAX_SECONDS)):
        stalled = written(md, first.status)  # what the first reconcile wrote
        again = plan(stalled, missing, CONFIG, NOW + timedelta(seconds=waited))
        assert again.create == [] and again.events == []
        assert again.requeue_after == expected
        assert (
            cond(again.status, "Optimized")["lastTransitionTime"]
            == cond(first.status, "Optimized")["lastTransitionTime"]
        )
    # the Secret exists now: the Job is created, the resource Reconciling again
    stalled = written(md, first.status)
    later = plan(stalled, Observed(), CONFIG, NOW + timedelta(seconds=60))
    assert [o["kind"] for o in later.create] == ["Job"]
    assert cond(later.status, "Optimized")["reason"] == "JobCreated"
    assert cond(later.status, "Stalled")["status"] == "False"


def test_a_missing_push_secret_stalls_the_build_after_the_optimization() -> None:
    md = sourced(pushSecretRef={"name": "push"})
    rev = revision(md.spec)
    done = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    p = plan(md, Observed(jobs=done, missing_secrets=frozenset({("ml", "push")})), CONFIG, NOW)
    assert p.create == []
    built = cond(p.status, "ImageBuilt")
    assert (built["status"], built["reason"]) == ("False", "SecretNotFound")
    assert 'Secret "push" (spec.build.pushSecretRef.name) not found in namespace ml' in built["message"]
    assert cond(p.status, "Optimized")["status"] == "True"
    assert p.status["lastFailure"]["stage"] == "Build"
    # a Secret of another namespace of that name says nothing about this one
    other = plan(md, Observed(jobs=done, missing_secrets=frozenset({("elsewhere", "push")})), CONFIG, NOW)
    assert [o["kind"] for o in other.create] == ["Job"]


def test_suspended_creates_nothing_and_asks_for_nothing() -> None:
    md = make_md(model={"uri": "s3://models/cnn.h5", "format": "h5", "credentials": CREDS}, suspend=True)
    p = plan(md, Observed(missing_secrets=frozenset({("ml", "model-creds")})), CONFIG, NOW)
    assert p.create == [] and p.status["phase"] == "Suspended"
    assert cond(p.status, "Optimized")["reason"] == "Suspended"
