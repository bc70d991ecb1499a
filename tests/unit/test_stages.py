"""Each stage of controller/stages on its own: a Context in, a typed outcome out (no cluster, no plan())."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from modelship.api import Summary
from modelship.api.report import FailureKind
from modelship.api.status import ConditionType, ImageStatus, OptimizationStatus, Phase, Reason, SourceStatus, StageName
from modelship.config import OperatorConfig
from modelship.controller import revcache
from modelship.controller.observe import JobObservation, JobState, Observed
from modelship.controller.stages.build import build
from modelship.controller.stages.context import Context, Effects
from modelship.controller.stages.deploy import ServingTarget, deploy, target
from modelship.controller.stages.gate import GateVerdict, gate
from modelship.controller.stages.optimize import classify, optimize
from modelship.controller.stages.resolve import Known, known_results, remember, resolve
from modelship.resources.meta import build_job_name, export_job_name
from modelship.resources.revision import revision
from modelship.resources.serving import ServedArtifact
from tests.support.endpoints import routed
from tests.support.specs import valid_doc
from tests.unit.test_plan import CONFIG, DIGEST, IMAGE, NOW, deployment, job, make_md, summary


def ctx(md: Any = None, observed: Observed | None = None, now: Any = NOW, config: OperatorConfig = CONFIG) -> Context:
    md = md or make_md()
    return Context(md, revision(md.spec), observed or Observed(), config, now)


def conditions(effects: Effects) -> dict[ConditionType, tuple[bool | None, Reason, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in effects.conditions}


def result(**kw: Any) -> OptimizationStatus:
    return OptimizationStatus.from_summary(Summary.from_line(summary(**kw)), revision="r1", job="j", attempts=1,
                                           cached=False)  # fmt: skip


BUILT = json.dumps({"ok": True, "image": IMAGE, "digest": DIGEST, "platforms": ["linux/amd64"]})
PASSED = GateVerdict(True, Effects())
ARTIFACT_CONFIG = OperatorConfig(retry_base_seconds=10, max_job_attempts=3, artifact_repository="registry.local:5000")
"""Build-less revisions push to registry.local:5000/<namespace>/<name> (ARTIFACT_REF's repository for make_md)."""
ARTIFACT_REF = "oci://registry.local:5000/ml/digits@sha256:" + "0a" * 32


# ---- resolve ------------------------------------------------------------------------------------------


def test_results_recorded_in_status_for_this_revision_are_known() -> None:
    md = make_md()
    rev = revision(md.spec)
    status = {"optimization": {"revision": rev, "decision": "Optimized", "metric": "accuracy", "attempts": 2},
              "source": {"uri": "old://uri", "digest": "sha256:" + "cd" * 32, "sizeBytes": 9},
              "image": {"revision": rev, "reference": IMAGE, "attempts": 1}}  # fmt: skip
    known = known_results(ctx(make_md(status=status)))
    assert known.optimization is not None and known.optimization.attempts == 2
    assert known.source == SourceStatus(uri=md.spec.model.uri, digest="sha256:" + "cd" * 32, size_bytes=9)
    assert known.image is not None and known.image.reference == IMAGE and not known.image_from_cache
    # another revision's results are not this one's
    other = {"optimization": {**status["optimization"], "revision": "rother"}, "image": {"revision": "rother",
             "reference": IMAGE}}  # fmt: skip
    assert known_results(ctx(make_md(status=other))) == Known()


@pytest.mark.parametrize("old_format", [True, False])
def test_revision_cache_entries_are_known_in_both_formats(old_format: bool) -> None:
    md = make_md()
    line = summary()
    if old_format:
        raw = json.dumps({"summary": line, "image": IMAGE})
    else:
        opt = OptimizationStatus.from_summary(
            Summary.from_line(line), revision="x", job="j-1", attempts=3, cached=False
        )
        raw = revcache.entry(opt, SourceStatus.from_summary("pvc://elsewhere", Summary.from_line(line)), IMAGE, NOW)
        assert "j-1" not in raw  # another ModelDeployment's Job bookkeeping is not cached
    c = ctx(md, Observed(cached=revcache.parse(raw, md.spec.model.uri)))
    known = known_results(c)
    assert known.optimization is not None
    assert (known.optimization.revision, known.optimization.cached, known.optimization.attempts) == (
        c.revision,
        True,
        0,
    )
    assert known.optimization.job is None and known.optimization.size_ratio == "9.6x"
    assert known.source is not None and known.source.uri == md.spec.model.uri
    assert known.image == ImageStatus(revision=c.revision, reference=IMAGE, digest=DIGEST) and known.image_from_cache
    # nothing new to remember for the same image; a new image is remembered
    assert remember(c, known.optimization, known.source, IMAGE) is None
    assert remember(c, known.optimization, known.source, IMAGE.replace("ab", "cd")) is not None


def test_unreadable_cache_entry_is_refused() -> None:
    for raw in ("not json", "[1]", json.dumps({"summary": "Traceback"}), json.dumps({"optimization": {"x": 1}})):
        with pytest.raises(ValueError):
            revcache.parse(raw, "pvc://m/a.h5")


def test_resolved_condition_pinned_resolved_or_resolving() -> None:
    fetched = SourceStatus(uri="pvc://models/digits/cnn.h5", digest="sha256:" + "cd" * 32)
    assert conditions(resolve(ctx(), None).effects)[ConditionType.RESOLVED][:2] == (None, Reason.RESOLVING)
    got = resolve(ctx(), fetched)
    assert got.source == fetched
    assert conditions(got.effects)[ConditionType.RESOLVED][:2] == (True, Reason.DIGEST_RESOLVED)
    pinned = make_md(model={"uri": "pvc://models/digits/cnn.h5", "format": "h5", "digest": "sha256:" + "ee" * 32})
    got = resolve(ctx(pinned), None)
    assert got.source is not None and got.source.digest == "sha256:" + "ee" * 32
    assert conditions(got.effects)[ConditionType.RESOLVED][:2] == (True, Reason.DIGEST_PINNED)


# ---- optimize -----------------------------------------------------------------------------------------


def test_optimize_reads_the_summary_into_status_through_the_model() -> None:
    c = ctx()
    done = job("optimizer", c.revision, JobState.SUCCEEDED, msg=summary(), finished_at="2026-11-26T11:59:00Z")
    out = optimize(ctx(observed=Observed(jobs=[done])), Known())
    assert out.result is not None and out.result == out.status
    wire = out.status.wire()
    assert wire["metricDrop"] == 0.005 and wire["sizeRatio"] == "9.6x" and wire["completedAt"] == "2026-11-26T11:59:00Z"
    assert out.source is not None and out.source.size_bytes == 600000
    assert conditions(out.effects)[ConditionType.OPTIMIZED][:2] == (True, Reason.OPTIMIZED)


def test_missing_model_file_fails_the_stage_at_the_first_failure() -> None:
    """The optimizer explains a deterministic failure (exit 1, the Job failed by its podFailurePolicy): Stalled
    at once, with its words, and no new Job."""
    c = ctx()
    missing = Summary(ok=False, error="pvc://models/digits/cnn.h5: /mnt/pvc/models/digits/cnn.h5 does not exist",
                      failure=FailureKind.PERMANENT).to_line()  # fmt: skip
    failed = job("optimizer", c.revision, JobState.FAILED, msg=missing, reason="PodFailurePolicy",
                 finished_at=(NOW - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    out = optimize(ctx(observed=Observed(jobs=[failed])), Known())
    assert out.effects.create == () and out.effects.requeue_after is None
    assert out.effects.failure is not None
    assert out.effects.failure.stage == StageName.OPTIMIZE and out.effects.failure.reason == Reason.OPTIMIZATION_FAILED
    assert "does not exist" in out.effects.failure.message and "1 attempt" in out.effects.failure.message
    assert out.status.attempts == 1


def test_temporary_optimizer_failure_is_retried_with_backoff() -> None:
    c = ctx()
    flaky = Summary(ok=False, error="https://models.example.com/m.h5: HTTP 503 Service Unavailable",
                    failure=FailureKind.TEMPORARY).to_line()  # fmt: skip
    failed = job("optimizer", c.revision, JobState.FAILED, msg=flaky, reason="BackoffLimitExceeded",
                 finished_at=(NOW - timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    assert not classify(failed).permanent
    out = optimize(ctx(observed=Observed(jobs=[failed])), Known())
    assert out.effects.failure is None and out.effects.requeue_after == pytest.approx(6)
    assert conditions(out.effects)[ConditionType.OPTIMIZED][1] == Reason.RETRY_BACKOFF
    assert "HTTP 503" in conditions(out.effects)[ConditionType.OPTIMIZED][2]
    assert out.effects.progress is not None and out.effects.progress.phase == Phase.OPTIMIZING


@pytest.mark.parametrize(
    ("message", "job_reason", "permanent", "reason"),
    [
        (Summary(ok=False, error="bad").to_line(), "BackoffLimitExceeded", True, Reason.OPTIMIZATION_FAILED),
        (Summary(ok=False, error="x", failure=FailureKind.TEMPORARY).to_line(), "BackoffLimitExceeded", False,
         Reason.JOB_FAILED),
        ("OOMKilled", "BackoffLimitExceeded", False, Reason.JOB_FAILED),
        ("Traceback ...", "PodFailurePolicy", True, Reason.JOB_FAILED),
        (None, "DeadlineExceeded", False, Reason.JOB_FAILED),
    ],
)  # fmt: skip
def test_optimizer_failure_classification(message: str | None, job_reason: str, permanent: bool,
                                          reason: Reason) -> None:  # fmt: skip
    failure = classify(job("optimizer", "r1", JobState.FAILED, msg=message, reason=job_reason))
    assert (failure.permanent, failure.reason) == (permanent, reason)


# ---- gate ---------------------------------------------------------------------------------------------


def gated(on_fail: str = "Block", **optimization: Any) -> Any:
    """make_md() with the gate's onFail (and other optimization fields) set."""
    opt = copy.deepcopy(valid_doc()["spec"]["optimization"])
    opt["gate"]["onFail"] = on_fail
    opt.update(optimization)
    return make_md(optimization=opt)


@pytest.mark.parametrize(
    ("on_fail", "figures", "deployable", "status", "reason", "says"),
    [
        ("Block", {}, True, True, Reason.WITHIN_THRESHOLD, "drop 0.005"),
        ("DeployBaseline", dict(gate="Failed", decision="Baseline", candidate="baseline", value=0.979, drop=0.001),
         True, False, Reason.GATE_FAILED_DEPLOY_BASELINE, ""),
        ("DeployBestPassing", dict(gate="Failed", decision="BestPassing", candidate="prune"),
         True, False, Reason.GATE_FAILED_DEPLOY_BEST_PASSING, ""),
        ("Block", dict(gate="Failed", decision="Blocked", value=0.95, drop=0.98 - 0.95,
                       message="gate failed for prune+int8: drop 0.03 > maxDrop 0.01"),
         False, False, Reason.GATE_FAILED, "drop 0.03"),
    ],
)  # fmt: skip
def test_gate_verdicts(on_fail: str, figures: dict[str, Any], deployable: bool, status: bool, reason: Reason,
                       says: str) -> None:  # fmt: skip
    verdict = gate(ctx(gated(on_fail)), result(**figures))
    assert verdict.deployable is deployable
    assert conditions(verdict.effects)[ConditionType.GATE_PASSED][:2] == (status, reason)
    assert (verdict.effects.failure is not None) is (reason == Reason.GATE_FAILED)
    assert says in conditions(verdict.effects)[ConditionType.GATE_PASSED][2]
    if verdict.effects.failure is not None:
        assert verdict.effects.failure.stage == StageName.GATE and says in verdict.effects.failure.message


def test_gate_without_optimization_is_skipped() -> None:
    md = gated(enabled=False)
    verdict = gate(ctx(md), result(gate="Skipped", decision="Baseline", candidate="baseline"))
    assert verdict.deployable
    assert conditions(verdict.effects)[ConditionType.GATE_PASSED][:2] == (True, Reason.GATE_SKIPPED)


@pytest.mark.parametrize(
    ("on_fail", "figures", "says"),
    [
        ("Block", dict(value=0.96, drop=0.98 - 0.96), "drop 0.02 > maxDrop 0.01"),  # the forged Passed
        ("Block", dict(value=0.96, drop=0.005), "says drop 0.005, but baseline 0.98 and value 0.96 give 0.02"),
        ("Block", dict(gate="Skipped"), "the gate is on"),
        ("Block", dict(gate="Failed", decision="Baseline", candidate="baseline"), "onFail Block does not allow"),
        ("DeployBaseline", dict(gate="Failed", decision="BestPassing", candidate="prune"),
         "onFail DeployBaseline does not allow"),
        ("Block", dict(gate="Passed", decision="Baseline"), "decision is Baseline"),
        ("Block", dict(gate="Failed", decision="Optimized"), "never ships the optimized result"),
        ("Block", dict(candidate="cluster+int8"), "not a chain of spec.optimization.steps (prune+int8)"),
        ("DeployBestPassing", dict(gate="Failed", decision="BestPassing", candidate="prune+int8"),
         "the whole chain"),
        ("Block", dict(metric_name="mse"), "the spec's metric is 'accuracy'"),
        ("Block", dict(value=float("nan"), drop=None), "without finite baseline, value and drop"),
    ],
)  # fmt: skip
def test_a_report_that_contradicts_the_gate_is_refused(on_fail: str, figures: dict[str, Any], says: str) -> None:
    line = summary(**figures) if not any(isinstance(v, float) and v != v for v in figures.values()) else None
    res = result(**figures) if line else result().model_copy(update={"value": float("nan"), "metric_drop": None})
    verdict = gate(ctx(gated(on_fail)), res)
    assert not verdict.deployable
    status, reason, message = conditions(verdict.effects)[ConditionType.GATE_PASSED]
    assert (status, reason) == (False, Reason.GATE_REPORT_REFUSED)
    assert says in message, message
    assert verdict.effects.failure is not None and verdict.effects.failure.reason == Reason.GATE_REPORT_REFUSED


def test_gate_waits_for_the_optimization_result() -> None:
    verdict = gate(ctx(), None)
    assert not verdict.deployable
    assert conditions(verdict.effects)[ConditionType.GATE_PASSED][:2] == (None, Reason.PENDING)


# ---- build --------------------------------------------------------------------------------------------


def test_build_waits_for_the_gate_and_is_skipped_when_disabled() -> None:
    blocked = build(ctx(), GateVerdict(False, Effects()), Known(), None)
    assert not blocked.built and conditions(blocked.effects)[ConditionType.IMAGE_BUILT][1] == Reason.PENDING
    off = build(ctx(make_md(build=False)), PASSED, Known(), result())
    assert off.built and off.image is None and off.status is None and off.artifact is None  # no push: the claim
    assert conditions(off.effects)[ConditionType.IMAGE_BUILT][:2] == (True, Reason.BUILD_DISABLED)


def test_build_disabled_serves_the_artifact_the_optimization_job_pushed() -> None:
    pushed = result(artifact_ref=ARTIFACT_REF)
    out = build(ctx(make_md(build=False), config=ARTIFACT_CONFIG), PASSED, Known(), pushed)
    assert out.built and out.image is None and out.status is None and out.effects.create == ()
    assert out.artifact == ServedArtifact(ARTIFACT_REF, pushed.artifact_digest)
    built, reason, message = conditions(out.effects)[ConditionType.IMAGE_BUILT]
    assert (built, reason) == (True, Reason.BUILD_DISABLED) and ARTIFACT_REF in message
    # a built image never serves a pushed artifact
    assert build(ctx(), PASSED, Known(image=ImageStatus(revision="r", reference=IMAGE)), pushed).artifact is None


def test_build_known_image_is_not_rebuilt() -> None:
    c = ctx()
    recorded = ImageStatus(revision=c.revision, reference=IMAGE, digest=DIGEST)
    pushed = build(c, PASSED, Known(image=recorded), result())
    assert pushed.built and pushed.image == IMAGE and pushed.effects.create == ()
    assert conditions(pushed.effects)[ConditionType.IMAGE_BUILT][1] == Reason.PUSHED
    cached = build(c, PASSED, Known(image=recorded, image_from_cache=True), result())
    assert conditions(cached.effects)[ConditionType.IMAGE_BUILT][1] == Reason.CACHED


ARTIFACT = "sha256:" + "ef" * 32


def test_build_job_created_then_read() -> None:
    c = ctx()
    created = build(c, PASSED, Known(), result(artifact_digest=ARTIFACT))
    (manifest,) = created.effects.create
    assert manifest["metadata"]["name"] == build_job_name(c.md, c.revision)
    receive = manifest["spec"]["template"]["spec"]["initContainers"][0]
    assert receive["args"][receive["args"].index("--digest") + 1] == ARTIFACT  # the recorded digest, nothing else
    assert conditions(created.effects)[ConditionType.IMAGE_BUILT][1] == Reason.BUILD_JOB_CREATED
    assert created.effects.progress is not None and created.effects.progress.phase == Phase.BUILDING
    done = job("build", c.revision, JobState.SUCCEEDED, msg=BUILT, finished_at="2026-11-26T11:59:30Z")
    out = build(ctx(observed=Observed(jobs=[done])), PASSED, Known(), result(artifact_digest=ARTIFACT))
    assert out.built and out.image == IMAGE
    assert out.status is not None and out.status.wire() == {
        "revision": c.revision, "job": done.name, "attempts": 1, "reference": IMAGE, "digest": DIGEST,
        "platforms": ["linux/amd64"], "completedAt": "2026-11-26T11:59:30Z",
    }  # fmt: skip


def test_build_job_failed_by_its_context_step_is_permanent() -> None:
    c = ctx()
    failed = job("build", c.revision, JobState.FAILED, reason="PodFailurePolicy", msg="error: artifact missing",
                 message="Container context for pod x failed with exit code 1 matching FailJob rule at index 0",
                 finished_at=(NOW - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    out = build(ctx(observed=Observed(jobs=[failed])), PASSED, Known(), result(artifact_digest=ARTIFACT))
    assert out.effects.create == () and out.effects.failure is not None
    assert out.effects.failure.stage == StageName.BUILD and out.effects.failure.reason == Reason.JOB_FAILED
    assert "artifact missing" in out.effects.failure.message


def test_a_build_pod_waiting_for_its_artifact_gets_one_export_job() -> None:
    c = ctx()
    running = job("build", c.revision, JobState.ACTIVE, uid="0b9f6a1e-uid", receivers=(("p-build-abcde", "10.0.0.7"),))
    out = build(ctx(observed=Observed(jobs=[running])), PASSED, Known(), result(artifact_digest=ARTIFACT))
    (export,) = out.effects.create
    assert export["metadata"]["name"] == export_job_name(c.md, c.revision, "p-build-abcde")
    assert export["metadata"]["namespace"] == c.md.metadata.namespace  # the tenant's: the claim is there
    args = export["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["artifact", "send"]
    assert args[args.index("--to") + 1] == "http://10.0.0.7:8080/artifact"
    assert args[args.index("--token") + 1] == "0b9f6a1e-uid"
    assert out.effects.progress is not None and out.effects.progress.reason == Reason.BUILD_JOB_RUNNING
    # once it exists, no second one; a retried build pod gets its own
    sent = JobObservation(name=export["metadata"]["name"], stage="export", revision=c.revision, attempt=1,
                          state=JobState.SUCCEEDED, build_pod="p-build-abcde")  # fmt: skip
    for existing in (sent, replace(sent, name=f"digits-export-{c.revision}-abcde")):  # named by an earlier operator
        assert (
            build(
                ctx(observed=Observed(jobs=[running, existing])), PASSED, Known(), result(artifact_digest=ARTIFACT)
            ).effects.create
            == ()
        )
    retried = replace(running, receivers=(("p-build-fghij", "10.0.0.8"),))
    (again,) = build(
        ctx(observed=Observed(jobs=[retried, sent])), PASSED, Known(), result(artifact_digest=ARTIFACT)
    ).effects.create
    assert again["metadata"]["name"] == export_job_name(c.md, c.revision, "p-build-fghij")


# ---- deploy -------------------------------------------------------------------------------------------


def test_target_is_the_new_revision_once_built_else_the_previous_one() -> None:
    c = ctx()
    built = build(c, PASSED, Known(image=ImageStatus(revision=c.revision, reference=IMAGE)), result())
    assert target(c, built) == ServingTarget(c.revision, IMAGE)
    waiting = build(c, GateVerdict(False, Effects()), Known(), None)
    assert target(c, waiting) is None
    before = ctx(make_md(status={"servingRevision": "rold", "servingImage": "r@" + DIGEST}))
    assert target(before, waiting) == ServingTarget("rold", "r@" + DIGEST)
    pulled = ctx(make_md(build=False, status={"servingRevision": "rold", "servingArtifact": ARTIFACT_REF}))
    assert target(pulled, waiting) == ServingTarget("rold", None, ServedArtifact(ARTIFACT_REF))
    off = ctx(make_md(build=False), config=ARTIFACT_CONFIG)
    artifact = ServedArtifact(ARTIFACT_REF, "sha256:" + "ef" * 32)
    assert target(off, build(off, PASSED, Known(), result(artifact_ref=ARTIFACT_REF))) == ServingTarget(
        off.revision, None, artifact
    )


def test_deploy_rolls_out_then_is_available() -> None:
    c = ctx()
    rolling = deploy(c, ServingTarget(c.revision, IMAGE))
    assert [o["kind"] for o in rolling.effects.apply] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert conditions(rolling.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLING_OUT
    assert rolling.serving_revision is None and rolling.url is not None
    # the pods are available but the Service's EndpointSlices list one of them: still rolling out, in flight
    available = ctx(observed=Observed(deployment=deployment(c.revision, IMAGE), endpoints=routed((c.revision, 1))))
    waiting = deploy(available, ServingTarget(c.revision, IMAGE))
    assert waiting.serving_revision is None and waiting.effects.progress is not None
    assert conditions(waiting.effects)[ConditionType.DEPLOYED] == (
        False, Reason.ROLLING_OUT, f"2/2 replicas of {c.revision} available, 1/2 endpoints ready in Service digits"
    )  # fmt: skip
    up = ctx(observed=Observed(deployment=deployment(c.revision, IMAGE), endpoints=routed((c.revision, 2))))
    done = deploy(up, ServingTarget(c.revision, IMAGE))
    assert (done.serving_revision, done.serving_image) == (c.revision, IMAGE)
    assert conditions(done.effects)[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)
    assert done.effects.progress is None


def test_deploy_of_a_pushed_artifact_pulls_it_in_every_pod_and_records_it() -> None:
    c = ctx(make_md(build=False))
    artifact = ServedArtifact(ARTIFACT_REF, "sha256:" + "ef" * 32)
    rolling = deploy(c, ServingTarget(c.revision, None, artifact))
    dep = rolling.effects.apply[0]
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][:2] == ["pull", ARTIFACT_REF] and "sha256:" + "ef" * 32 in init["args"]
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    assert not any("persistentVolumeClaim" in v for v in volumes) and not rolling.effects.needs_artifact_claim
    assert (rolling.serving_revision, rolling.serving_artifact) == (None, None)
    up = ctx(make_md(build=False), Observed(deployment=deployment(c.revision, CONFIG.images.serving),
                                           endpoints=routed((c.revision, 2))))  # fmt: skip
    done = deploy(up, ServingTarget(c.revision, None, artifact))
    assert (done.serving_revision, done.serving_image, done.serving_artifact) == (c.revision, None, ARTIFACT_REF)
    # without a pushed artifact the pods mount the artifact claim, which the stage does not ask to be made: a claim
    # made afresh would not hold the artifact (a missing one holds the rollout: test_mount_check)
    from_claim = deploy(c, ServingTarget(c.revision, None)).effects
    assert not from_claim.needs_artifact_claim
    assert any("persistentVolumeClaim" in v for v in from_claim.apply[0]["spec"]["template"]["spec"]["volumes"])


def test_pods_confined_to_the_claims_node_say_so_with_a_multinode_condition() -> None:
    """Served from the ReadWriteOnce artifact claim, more than one pod (replicas, an HPA, a Canary candidate) must
    share one node: MultiNode False says why and what to set, on every outcome of the stage, and only then."""
    two = ctx(make_md(build=False))  # replicas 2
    for out in (
        deploy(two, ServingTarget(two.revision, None)),  # rolling out
        deploy(ctx(make_md(build=False), Observed(deployment=deployment(two.revision, CONFIG.images.serving))),
               ServingTarget(two.revision, None)),  # available
        deploy(two, ServingTarget("rold", None)),  # the previous revision serves
    ):  # fmt: skip
        status, reason, message = conditions(out.effects)[ConditionType.MULTI_NODE]
        assert (status, reason) == (False, Reason.ARTIFACT_CLAIM_READ_WRITE_ONCE)
        assert message.startswith("the serving pods (2 replicas) mount the ReadWriteOnce artifact claim digits-")
        assert "Multi-Attach" in message and "spec.build.repository" in message and "artifacts.repository" in message
    assert "Deployed" in {c.type for c in deploy(two, ServingTarget(two.revision, None)).effects.conditions}
    hpa = {"replicas": 1, "autoscaling": {"enabled": True, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}}
    scaled = ctx(make_md(build=False, serving=hpa))
    message = conditions(deploy(scaled, ServingTarget(scaled.revision, None)).effects)[ConditionType.MULTI_NODE][2]
    assert message.startswith("the serving pods (an HPA that scales to 4 replicas) mount")
    # one pod, or pods that pull their own copy or run a built image: nothing to say
    one = ctx(make_md(build=False, serving={"replicas": 1}))
    quiet = [
        deploy(one, ServingTarget(one.revision, None)),
        deploy(two, ServingTarget(two.revision, None, ServedArtifact(ARTIFACT_REF))),
        deploy(two, ServingTarget(two.revision, IMAGE)),
    ]
    assert all(ConditionType.MULTI_NODE not in conditions(out.effects) for out in quiet)


def test_deploy_keeps_the_previous_artifact_serving_while_the_new_revision_is_not_deployable() -> None:
    old = "oci://registry.local:5000/ml/digits@sha256:" + "01" * 32
    c = ctx(make_md(build=False, status={"servingRevision": "rold", "servingArtifact": old}))
    out = deploy(c, ServingTarget("rold", None, ServedArtifact(old)))
    assert (out.serving_revision, out.serving_image, out.serving_artifact) == ("rold", None, old)
    (init,) = out.effects.apply[0]["spec"]["template"]["spec"]["initContainers"]
    assert init["args"][:2] == ["pull", old]
    assert conditions(out.effects)[ConditionType.DEPLOYED][1] == Reason.PREVIOUS_REVISION_SERVING
    assert deploy(c, None).serving_artifact == old


def test_deploy_removes_what_the_spec_turned_off() -> None:
    c = ctx(observed=Observed(existing=frozenset({("HorizontalPodAutoscaler", "digits"), ("NetworkPolicy", "x")})))
    out = deploy(c, ServingTarget(c.revision, IMAGE))
    assert out.effects.delete == (("autoscaling/v2", "HorizontalPodAutoscaler", "digits"),)


def test_deploy_nothing_yet_is_pending() -> None:
    out = deploy(ctx(), None)
    assert out.effects.apply == () and out.url is None
    assert conditions(out.effects)[ConditionType.DEPLOYED][:2] == (None, Reason.PENDING)
