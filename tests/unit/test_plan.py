"""The operator's decisions, as a pure function: observed state in, actions and status out."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelship.api import ModelDeployment, Summary
from modelship.config import OperatorConfig
from modelship.controller.mergepatch import apply_merge_patch
from modelship.controller.observe import DeploymentObservation, JobObservation, JobState, Observed
from modelship.controller.plan import plan
from modelship.controller.stages.build import parse_build_result
from modelship.resources.meta import uid_token
from modelship.resources.revision import revision
from tests.support.endpoints import routed
from tests.support.specs import valid_doc

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig(retry_base_seconds=10, max_job_attempts=3)
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.local:5000/models/digits@" + DIGEST


def make_md(build: bool = True, status: dict[str, Any] | None = None, **spec: Any) -> ModelDeployment:
    doc = valid_doc()
    doc["metadata"].update(namespace="ml", uid="u-1", generation=4)
    if not build:
        del doc["spec"]["build"]
    for key, value in spec.items():
        doc["spec"][key] = value
    if status:
        doc["status"] = status
    return ModelDeployment.from_body(doc)


TOKEN = uid_token(make_md())
"""The uid token in make_md's stage Jobs' names (resources/meta.py)."""


def summary(**kw: Any) -> str:
    base: dict[str, Any] = dict(
        ok=True, source_digest="sha256:" + "cd" * 32, source_bytes=600000, artifact="model.tflite",
        artifact_digest="sha256:" + "ef" * 32, metric_name="accuracy", baseline=0.98, value=0.975, drop=0.005,
        gate="Passed", decision="Optimized", candidate="prune+int8", original_bytes=560000,
        optimized_bytes=161000, original_gzip_bytes=520000, optimized_gzip_bytes=54000, compression_ratio=9.6,
        latency_p50_ms=0.01, message="accuracy 0.98 -> 0.975 (drop 0.005 <= 0.01 absolute)",
    )  # fmt: skip
    base.update(kw)
    return Summary(**base).to_line()


def job(stage: str, rev: str, state: JobState, attempt: int = 1, msg: str | None = None, **kw: Any) -> JobObservation:
    name = f"digits-{'opt' if stage == 'optimizer' else 'build'}-{rev}-{TOKEN}" + (f"-{attempt}" if attempt > 1 else "")
    return JobObservation(name=name, stage=stage, revision=rev, attempt=attempt, state=state,
                          termination_message=msg, **kw)  # fmt: skip


def deployment(rev: str, image: str, replicas: int = 2, available: int = 2, **kw: Any) -> DeploymentObservation:
    base: dict[str, Any] = dict(name="digits", revision=rev, image=image, generation=2, observed_generation=2,
                                replicas=replicas, status_replicas=replicas, ready_replicas=available,
                                updated_replicas=replicas, available_replicas=available,
                                progress_deadline_exceeded=False)  # fmt: skip
    base.update(kw)
    return DeploymentObservation(**base)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [o["kind"] for o in objs]


def test_fresh_resource_starts_the_optimization_job() -> None:
    md = make_md()
    rev = revision(md.spec)
    p = plan(md, Observed(), CONFIG, NOW)
    assert kinds(p.create) == ["Job"]
    assert p.create[0]["metadata"]["name"] == f"digits-opt-{rev}-{TOKEN}"
    assert kinds(p.apply) == ["PersistentVolumeClaim"]
    s = p.status
    assert s["observedGeneration"] == 4 and s["revision"] == rev and s["phase"] == "Optimizing"
    assert cond(s, "Ready")["status"] == "False"
    assert cond(s, "Reconciling")["status"] == "True"
    assert cond(s, "Stalled")["status"] == "False"
    assert cond(s, "Optimized")["reason"] == "JobCreated"
    assert cond(s, "Resolved")["status"] == "Unknown"
    assert (
        s["selector"] == "app.kubernetes.io/name=modelship-server,app.kubernetes.io/instance=digits,"
        "modelship.io/modeldeployment=digits"
    )
    assert all(c["observedGeneration"] == 4 for c in s["conditions"])


def test_running_job_is_waited_for_not_duplicated() -> None:
    md = make_md()
    rev = revision(md.spec)
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.ACTIVE)]), CONFIG, NOW)
    assert p.create == []
    assert cond(p.status, "Optimized")["reason"] == "JobRunning"
    assert p.status["phase"] == "Optimizing"


def test_finished_optimization_then_serving_without_build() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary(), finished_at="2026-11-26T11:59:00Z")])
    p = plan(md, obs, CONFIG, NOW)
    assert p.create == []
    # the claim the optimization Job wrote to is not made afresh for the pods (it would not hold the artifact)
    assert kinds(p.apply) == ["Deployment", "Service", "PodDisruptionBudget"]
    dep = p.apply[0]
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    s = p.status
    assert s["optimization"]["decision"] == "Optimized" and s["optimization"]["sizeRatio"] == "9.6x"
    assert s["optimization"]["metricDrop"] == 0.005
    assert s["source"]["digest"] == "sha256:" + "cd" * 32
    assert cond(s, "Resolved")["reason"] == "DigestResolved"
    assert cond(s, "GatePassed")["status"] == "True"
    assert cond(s, "ImageBuilt")["reason"] == "BuildDisabled"
    assert cond(s, "Deployed")["reason"] == "RollingOut"
    assert s["phase"] == "Deploying" and "servingRevision" not in s
    assert s["url"] == "http://digits.ml.svc.cluster.local:8080/v2/models/digits/infer"
    # the Deployment becomes available, but the Service routes to none of its pods yet (or to another
    # revision's): not Ready, still Reconciling, with what is missing
    md2 = make_md(build=False, status=s)
    for endpoints, have in ((None, 0), (routed(("rother", 2)), 0), (routed((rev, 1), ("rother", 1)), 1)):
        obs1 = Observed(jobs=obs.jobs, deployment=deployment(rev, CONFIG.images.serving), endpoints=endpoints,
                        existing=frozenset({("PersistentVolumeClaim", "digits-artifacts")}))  # fmt: skip
        p1 = plan(md2, obs1, CONFIG, NOW)
        message = f"2/2 replicas of {rev} available, {have}/2 endpoints ready in Service digits"
        assert (cond(p1.status, "Ready")["status"], cond(p1.status, "Ready")["message"]) == ("False", message)
        assert cond(p1.status, "Reconciling")["status"] == "True"
        assert cond(p1.status, "Deployed")["reason"] == "RollingOut"
        assert p1.status["phase"] == "Deploying" and "servingRevision" not in p1.status
    # its EndpointSlices list both pods as ready: Ready
    obs2 = Observed(jobs=obs.jobs, deployment=deployment(rev, CONFIG.images.serving), endpoints=routed((rev, 2)),
                    existing=frozenset({("PersistentVolumeClaim", "digits-artifacts")}))  # fmt: skip
    p2 = plan(md2, obs2, CONFIG, NOW)
    assert cond(p2.status, "Ready")["status"] == "True"
    assert cond(p2.status, "Reconciling")["status"] == "False"
    assert p2.status["phase"] == "Ready" and p2.status["servingRevision"] == rev
    assert p2.status["readyReplicas"] == 2
    assert "PersistentVolumeClaim" not in kinds(p2.apply)
    assert any(e.reason == "ReadyAvailable" for e in p2.events)


def test_results_in_status_mean_no_new_job_and_replica_changes_keep_the_revision() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    first = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]), CONFIG, NOW)
    # the Job is gone (TTL), only status remembers: still no new Job
    scaled = make_md(build=False, status=first.status, serving={"replicas": 5})
    assert revision(scaled.spec) == rev
    p = plan(scaled, Observed(), CONFIG, NOW)
    assert p.create == []
    dep = next(o for o in p.apply if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 5


def test_failed_job_backs_off_then_retries_then_stalls() -> None:
    md = make_md()
    rev = revision(md.spec)
    failed_at = (NOW - timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = "Job has reached the specified backoff limit"
    j1 = job("optimizer", rev, JobState.FAILED, reason="BackoffLimitExceeded", message=limit,
             finished_at=failed_at)  # fmt: skip
    p = plan(md, Observed(jobs=[j1]), CONFIG, NOW)
    assert p.create == [] and p.requeue_after == pytest.approx(7, abs=0.01)
    assert cond(p.status, "Optimized")["reason"] == "RetryBackoff"
    assert cond(p.status, "Stalled")["status"] == "False"
    later = NOW + timedelta(seconds=10)
    p = plan(md, Observed(jobs=[j1]), CONFIG, later)
    assert [o["metadata"]["name"] for o in p.create] == [f"digits-opt-{rev}-{TOKEN}-2"]
    j2 = job(
        "optimizer",
        rev,
        JobState.FAILED,
        attempt=2,
        reason="DeadlineExceeded",
        message="too slow",
        finished_at=failed_at,
    )
    j3 = job("optimizer", rev, JobState.FAILED, attempt=3, reason="BackoffLimitExceeded",
             message="Job has reached the specified backoff limit", finished_at=failed_at)  # fmt: skip
    p = plan(md, Observed(jobs=[j1, j2, j3]), CONFIG, later)
    assert p.create == []
    s = p.status
    assert cond(s, "Stalled")["status"] == "True" and cond(s, "Stalled")["reason"] == "JobFailed"
    assert "BackoffLimitExceeded" in cond(s, "Stalled")["message"] or "backoff limit" in cond(s, "Stalled")["message"]
    assert "3 attempt" in cond(s, "Stalled")["message"]
    assert s["phase"] == "Failed" and s["lastFailure"]["stage"] == "Optimize"
    assert cond(s, "Reconciling")["status"] == "False"


def test_optimizer_reported_error_stalls_at_once_with_its_message() -> None:
    md = make_md()
    rev = revision(md.spec)
    bad = Summary(ok=False, error="/mnt/pvc/models/digits/cnn.h5: not an HDF5 file (truncated?)").to_line()
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.FAILED, msg=bad, reason="BackoffLimitExceeded",
                                    finished_at="2026-11-26T11:00:00Z")]), CONFIG, NOW)  # fmt: skip
    assert p.create == []
    stalled = cond(p.status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "OptimizationFailed"
    assert "not an HDF5 file" in stalled["message"]


@pytest.mark.parametrize("message", ["", "Traceback (most recent call last):\n  boom", '{"ok": "maybe"}'])
def test_unreadable_summary_is_a_readable_condition(message: str) -> None:
    md = make_md()
    rev = revision(md.spec)
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=message)]), CONFIG, NOW)
    stalled = cond(p.status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSummary"
    assert f"digits-opt-{rev}-{TOKEN}" in stalled["message"]
    assert p.create == [] and not any(o["kind"] == "Deployment" for o in p.apply)


def test_gate_block_keeps_previous_revision_serving() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    prev_status = {"servingRevision": "rold", "servingImage": "registry.local:5000/models/digits@sha256:" + "11" * 32}
    md = make_md(build=False, status=prev_status)
    blocked = summary(gate="Failed", decision="Blocked", value=0.9, drop=0.08,
                      message="accuracy 0.98 -> 0.9 (drop 0.08 > 0.01 absolute)")  # fmt: skip
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=blocked)]), CONFIG, NOW)
    s = p.status
    assert cond(s, "GatePassed")["reason"] == "GateFailed"
    assert cond(s, "Stalled")["status"] == "True" and "drop 0.08 > 0.01" in cond(s, "Stalled")["message"]
    dep = next(o for o in p.apply if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == "rold"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == prev_status["servingImage"]
    assert s["servingRevision"] == "rold" and s["revision"] == rev
    assert cond(s, "Deployed")["reason"] == "PreviousRevisionServing"


@pytest.mark.parametrize(("decision", "reason"), [("Baseline", "GateFailedDeployBaseline"),
                                                  ("BestPassing", "GateFailedDeployBestPassing")])  # fmt: skip
def test_gate_fail_with_fallback_deploys(decision: str, reason: str) -> None:
    on_fail = {"Baseline": "DeployBaseline", "BestPassing": "DeployBestPassing"}[decision]
    optimization = {**valid_doc()["spec"]["optimization"], "gate": {"maxDrop": 0.01, "onFail": on_fail}}
    md = make_md(build=False, optimization=optimization)
    rev = revision(md.spec)
    line = summary(gate="Failed", decision=decision, candidate="baseline" if decision == "Baseline" else "prune")
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=line)]), CONFIG, NOW)
    assert cond(p.status, "GatePassed")["reason"] == reason
    assert cond(p.status, "Stalled")["status"] == "False"
    assert any(o["kind"] == "Deployment" for o in p.apply)


def test_suspend_scales_to_zero_and_starts_nothing() -> None:
    md = make_md(build=False, suspend=True)
    p = plan(md, Observed(), CONFIG, NOW)
    assert p.create == []
    assert p.status["phase"] == "Suspended"
    assert cond(p.status, "Ready")["reason"] == "Suspended"
    rev = revision(md.spec)
    md2 = make_md(build=False, suspend=True, status={"servingRevision": rev})
    p2 = plan(md2, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]), CONFIG, NOW)
    dep = next(o for o in p2.apply if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 0
    assert not any(o["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget") for o in p2.apply)


def test_rollout_stuck_is_stalled_and_says_who_serves() -> None:
    md = make_md(build=False, status={"servingRevision": "rold"})
    rev = revision(md.spec)
    obs = Observed(
        jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())],
        # the old revision's two pods still run beside the new template's one (not available)
        deployment=deployment(rev, CONFIG.images.serving, available=2, progress_deadline_exceeded=True,
                              status_replicas=3, updated_replicas=1,
                              progress_message='ReplicaSet "digits-abc" has timed out progressing.'),
    )  # fmt: skip
    p = plan(md, obs, CONFIG, NOW)
    stalled = cond(p.status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "RolloutStalled"
    assert "rold keeps serving" in stalled["message"]
    assert cond(p.status, "Ready")["status"] == "False"
    # no pod of the old template left (the Deployment counts only updated pods, none available): nothing serves
    assert obs.deployment is not None
    gone = replace(obs.deployment, status_replicas=2, updated_replicas=2, available_replicas=0)
    message = cond(plan(md, replace(obs, deployment=gone), CONFIG, NOW).status, "Stalled")["message"]
    assert message.endswith("; nothing serves now") and "rold" not in message, message


def test_crashing_pods_are_never_ready() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())],
                   deployment=deployment(rev, CONFIG.images.serving, available=0))  # fmt: skip
    p = plan(md, obs, CONFIG, NOW)
    assert cond(p.status, "Ready")["status"] == "False"
    assert cond(p.status, "Reconciling")["status"] == "True"
    assert "0/2 replicas" in cond(p.status, "Deployed")["message"]


def test_hpa_turned_off_is_deleted() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())],
                   existing=frozenset({("HorizontalPodAutoscaler", "digits")}))  # fmt: skip
    p = plan(md, obs, CONFIG, NOW)
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", "digits") in p.delete


def test_last_transition_time_kept_while_status_unchanged() -> None:
    md = make_md()
    rev = revision(md.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.ACTIVE)])
    first = plan(md, obs, CONFIG, NOW)
    again = plan(make_md(status=first.status), obs, CONFIG, NOW + timedelta(minutes=5))
    assert cond(again.status, "Ready")["lastTransitionTime"] == cond(first.status, "Ready")["lastTransitionTime"]
    assert again.events == []


def test_build_result_parsing() -> None:
    repo, platforms = "registry.local:5000/models/digits", ["linux/amd64"]
    line = json.dumps({"ok": True, "image": IMAGE, "digest": DIGEST, "platforms": platforms})
    ok = parse_build_result(line, repo, platforms)
    assert ok.image == IMAGE and ok.platforms == platforms
    kaniko = parse_build_result(DIGEST + "\n", repo, platforms)  # Kaniko's --digest-file: the bare digest
    assert kaniko.image == IMAGE
    for bad, why in [("", "no result"), ("oops", "log ends with"), ('{"ok": true, "image": "repo:tag"}', "not valid")]:
        with pytest.raises(ValueError, match=why):
            parse_build_result(bad, repo, platforms)


def test_spec_is_never_in_the_plan() -> None:
    md = make_md()
    before = copy.deepcopy(md.spec.wire())
    p = plan(md, Observed(), CONFIG, NOW)
    assert "spec" not in p.status
    assert md.spec.wire() == before


def test_resolved_digest_survives_later_reconciles() -> None:
    md = make_md(build=False)
    rev = revision(md.spec)
    first = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]), CONFIG, NOW)
    again = plan(make_md(build=False, status=first.status), Observed(), CONFIG, NOW)
    assert cond(again.status, "Resolved")["status"] == "True"
    assert again.status["source"]["digest"] == "sha256:" + "cd" * 32


@pytest.mark.parametrize("watch_catches_up_meanwhile", [False, True])
def test_restart_with_an_empty_store_never_duplicates_a_job(watch_catches_up_meanwhile: bool) -> None:
    """After a restart the watch may not have listed the Jobs yet: the reconciler asks the API server before
    creating one, and plans again with what it finds."""
    from modelship.controller.reconcile import Reconciler
    from modelship.controller.store import Store

    md = make_md()
    rev = revision(md.spec)
    first = plan(md, Observed(), CONFIG, NOW)  # what the operator did before it was killed
    (job,) = first.create
    body = {**valid_doc(), "status": first.status}
    body["metadata"].update(namespace="ml", uid="u-1", generation=4, resourceVersion="7")
    running = {**job, "metadata": {**job["metadata"], "resourceVersion": "8"}, "status": {"active": 1}}

    class LiveKube:
        created: list[str] = []
        patched: list[dict[str, Any]] = []

        def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
            assert f"modelship.io/modeldeployment={md.metadata.name}" in label_selector
            if watch_catches_up_meanwhile and kind == "Job":
                store.put("Job", running)  # the watch delivers the Job between the plan and this check
            return [running] if kind == "Job" else []

        def create(self, obj: dict[str, Any]) -> dict[str, Any]:
            self.created.append(obj["metadata"]["name"])
            return obj

        def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
            return obj

        def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
            self.patched.append(status)
            return {**body, "status": apply_merge_patch(body.get("status"), status)}

        def event(self, *args: Any) -> None:
            pass

    store = Store()
    store.put("ModelDeployment", body)  # the ModelDeployment arrived first; its Job not yet
    kube = LiveKube()
    Reconciler(kube, store, CONFIG).reconcile("ml", "digits")  # type: ignore[arg-type]
    assert kube.created == []
    assert store.get("Job", "ml", f"digits-opt-{rev}-{TOKEN}") is not None
    optimized = next(c for c in kube.patched[-1]["conditions"] if c["type"] == "Optimized")
    assert optimized["reason"] == "JobRunning"


def test_under_an_hpa_ready_waits_for_min_replicas() -> None:
    """A new Deployment under an HPA starts at 1 replica: not Ready until the HPA raised it to minReplicas."""
    auto = {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}
    md = make_md(build=False, serving=auto)
    rev = revision(md.spec)
    done = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    at_one = plan(md, Observed(jobs=done, deployment=deployment(rev, CONFIG.images.serving, 1, 1)), CONFIG, NOW)
    assert "replicas" not in next(o for o in at_one.apply if o["kind"] == "Deployment")["spec"]  # the HPA's field
    assert cond(at_one.status, "Ready")["status"] == "False"
    assert "1/2 replicas" in cond(at_one.status, "Deployed")["message"]
    assert "minReplicas 2" in cond(at_one.status, "Deployed")["message"]
    at_two = plan(md, Observed(jobs=done, deployment=deployment(rev, CONFIG.images.serving, 2, 2),
                               endpoints=routed((rev, 2))), CONFIG, NOW)  # fmt: skip
    assert cond(at_two.status, "Ready")["status"] == "True"
    scaled_up = plan(md, Observed(jobs=done, deployment=deployment(rev, CONFIG.images.serving, 3, 3),
                                  endpoints=routed((rev, 2))), CONFIG, NOW)  # fmt: skip
    assert cond(scaled_up.status, "Deployed")["message"].startswith("3/3 replicas")
    assert "2/3 endpoints ready" in cond(scaled_up.status, "Ready")["message"]  # the HPA's third pod: not yet


def test_complete_job_whose_pod_status_has_not_arrived_is_awaited_not_failed() -> None:
    """The Job's Complete condition and its pod's terminated status are separate watch events: a Complete Job
    seen first (no terminated pod yet) is looked at again shortly, and only counts as "no summary" after a grace."""
    from modelship.controller.observe import termination_message

    md = make_md()
    rev = revision(md.spec)
    just = (NOW - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    early = job("optimizer", rev, JobState.SUCCEEDED, msg=None, finished_at=just)
    p = plan(md, Observed(jobs=[early]), CONFIG, NOW)
    assert cond(p.status, "Optimized")["reason"] == "JobRunning"
    assert cond(p.status, "Stalled")["status"] == "False" and "lastFailure" not in p.status
    assert p.requeue_after == pytest.approx(1.0) and p.create == []
    long_ago = (NOW - timedelta(seconds=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = job("optimizer", rev, JobState.SUCCEEDED, msg=None, finished_at=long_ago)
    p = plan(md, Observed(jobs=[late]), CONFIG, NOW)
    assert cond(p.status, "Optimized")["reason"] == "InvalidSummary"
    # a pod that terminated without a message is "" (the API omits it), not "not seen yet"
    running = {"status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}
    done = {"status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]}}
    assert termination_message([running], want_success=True) is None
    assert termination_message([running, done], want_success=True) == ""
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg="", finished_at=just)]), CONFIG, NOW)
    assert cond(p.status, "Optimized")["reason"] == "InvalidSummary"


def test_build_less_revision_serves_the_pushed_artifact_and_keeps_it_while_a_new_one_fails() -> None:
    """Build disabled with an artifact repository: the optimization Job pushes the artifact, serving pods pull it
    by digest (no claim), status records it; a later revision that fails leaves the pulled artifact serving."""
    config = OperatorConfig(retry_base_seconds=10, max_job_attempts=3, artifact_repository="registry.local:5000/art")
    md = make_md(build=False)
    rev = revision(md.spec)
    (opt_job,) = plan(md, Observed(), config, NOW).create
    args = opt_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--push-to") + 1] == f"oci://registry.local:5000/art/ml/digits:{rev}"
    ref = "oci://registry.local:5000/art/ml/digits@sha256:" + "0a" * 32
    done = job("optimizer", rev, JobState.SUCCEEDED, msg=summary(artifact_ref=ref), finished_at="2026-11-26T11:59:00Z")
    p = plan(md, Observed(jobs=[done]), config, NOW)
    assert p.status["optimization"]["artifactRef"] == ref and ref in cond(p.status, "ImageBuilt")["message"]
    dep = next(o for o in p.apply if o["kind"] == "Deployment")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][:2] == ["pull", ref] and "--digest" in init["args"]
    assert not any("persistentVolumeClaim" in v for v in dep["spec"]["template"]["spec"]["volumes"])
    up = Observed(jobs=[done], deployment=deployment(rev, config.images.serving), endpoints=routed((rev, 2)),
                  existing=frozenset({("PersistentVolumeClaim", "digits-artifacts")}))  # fmt: skip
    ready = plan(make_md(build=False, status=p.status), up, config, NOW).status
    assert ready["phase"] == "Ready" and ready["servingRevision"] == rev and ready["servingArtifact"] == ref
    assert "servingImage" not in ready
    # a new revision whose optimization fails for good: the pushed artifact of the old one keeps serving
    changed = make_md(build=False, status=ready, model={**valid_doc()["spec"]["model"], "digest": "sha256:" + "9" * 64})
    new_rev = revision(changed.spec)
    assert new_rev != rev
    failed = job("optimizer", new_rev, JobState.FAILED, reason="PodFailurePolicy", finished_at="2026-11-26T11:59:59Z",
                 msg=Summary(ok=False, error="spec.model.digest: digest mismatch").to_line())  # fmt: skip
    out = plan(changed, Observed(jobs=[done, failed], deployment=up.deployment, existing=up.existing), config, NOW)
    assert cond(out.status, "Stalled")["status"] == "True" and out.status["lastFailure"]["revision"] == new_rev
    assert (out.status["servingRevision"], out.status["servingArtifact"]) == (rev, ref)
    dep = next(o for o in out.apply if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["args"][:2] == ["pull", ref]
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
