"""The reconcile decision for one ModelDeployment, as a pure function of what was observed.

Stages: Resolve+Optimize (one Job: fetch, verify, optimize, evaluate) -> Gate -> Build (Job) -> Deploy.
A stage whose result for the current revision is known (in status or in the namespace's revision cache) is
skipped. Nothing here talks to the API server; ``controller.reconcile`` carries the plan out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.build_result import BuildResult
from ..api.modeldeployment import ModelDeployment
from ..api.report import ShipDecision, Summary
from ..api.status import ConditionType, Phase
from ..config import OperatorConfig
from ..resources.kinds import PRUNED
from ..resources.meta import artifact_claim_name, selector_labels, serving_name
from ..resources.optimize_job import artifact_dir, optimize_job
from ..resources.plan import serving_plan
from ..resources.revision import revision as compute_revision
from ..resources.serving import service_url
from ..resources.volumes import artifact_claim
from .conditions import ConditionSet, rfc3339
from .observe import DeploymentObservation, JobObservation, JobState, Observed

CONDITION_ORDER = [t.value for t in ConditionType]
OPTIMIZER = "optimizer"
BUILDER = "build"  # component label of build Jobs (resources/build_job.py)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What to do: objects to create (Jobs) or apply (everything else), delete, the status to write."""

    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)
    """(apiVersion, kind, name)."""
    events: list[Event] = field(default_factory=list)
    cache_put: tuple[str, str] | None = None
    """(revision, JSON) for the namespace's revision cache."""
    requeue_after: float | None = None


def parse_build_result(text: str | None, repository: str, platforms: list[str]) -> BuildResult:
    """The builder's termination message (BuildKit's JSON line or Kaniko's bare digest); ValueError with a
    readable reason when it is neither."""
    return BuildResult.from_termination_message(text or "", repository, platforms)


@dataclass
class _Stage:
    """Outcome of looking at a Job-backed stage."""

    kind: str  # create | running | waiting | succeeded | failed
    attempt: int = 1
    job: JobObservation | None = None
    wait: float = 0.0


POD_STATUS_GRACE_SECONDS = 60.0
"""How long a Complete Job may wait for its pod's terminated status to reach the watch before it counts as
"no summary written"."""


def _seconds_since(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    return (now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


def _job_stage(jobs: list[JobObservation], recorded_attempts: int, config: OperatorConfig, now: datetime) -> _Stage:
    if not jobs:
        if recorded_attempts >= config.max_job_attempts:
            return _Stage("failed", attempt=recorded_attempts)  # failed Jobs already cleaned up by their TTL
        return _Stage("create", attempt=recorded_attempts + 1 if recorded_attempts else 1)
    last = jobs[-1]
    if last.state == JobState.ACTIVE:
        return _Stage("running", attempt=last.attempt, job=last)
    if last.state == JobState.SUCCEEDED:
        if last.termination_message is None and _seconds_since(last.finished_at, now) < POD_STATUS_GRACE_SECONDS:
            # The Job says Complete but the watch has not yet delivered its pod's final status (the two objects
            # arrive as separate events): the summary is in that pod. Look again shortly.
            return _Stage("running", attempt=last.attempt, job=last, wait=1.0)
        return _Stage("succeeded", attempt=last.attempt, job=last)
    attempts = max(last.attempt, recorded_attempts)
    if attempts >= config.max_job_attempts:
        return _Stage("failed", attempt=attempts, job=last)
    delay = config.retry_base_seconds * (2 ** (attempts - 1))
    if last.finished_at:
        remaining = delay - _seconds_since(last.finished_at, now)
        if remaining > 0:
            return _Stage("waiting", attempt=attempts, job=last, wait=remaining)
    return _Stage("create", attempt=attempts + 1, job=last)


def _job_failure_text(job: JobObservation) -> str:
    detail = ": ".join(p for p in (job.reason, job.message) if p)
    if job.termination_reason and job.termination_reason not in ("Completed", "Error"):
        detail = f"{detail} (container {job.termination_reason})" if detail else f"container {job.termination_reason}"
    if job.termination_message:
        try:
            summary = Summary.from_line(job.termination_message)
            if summary.error:
                return f"{detail}: {summary.error}" if detail else summary.error
        except ValueError:
            tail = job.termination_message.strip().splitlines()[-1:] or [""]
            return f"{detail}: {tail[0][:300]}"
    return detail


def _deterministic_failure(job: JobObservation) -> str | None:
    """An optimizer that said ok=false explained itself: retrying the same input cannot help."""
    if not job.termination_message:
        return None
    try:
        summary = Summary.from_line(job.termination_message)
    except ValueError:
        return None
    if summary.ok:
        return None
    return summary.error or "the optimizer reported failure"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _optimization_status(summary: Summary, rev: str, job: str | None, attempts: int, cached: bool) -> dict[str, Any]:
    ratio = summary.compression_ratio
    status = {
        "revision": rev,
        "job": job,
        "attempts": attempts,
        "cached": cached,
        "metric": summary.metric_name,
        "baseline": summary.baseline,
        "value": summary.value,
        "metricDrop": summary.drop,
        "gate": summary.gate.value if summary.gate else None,
        "decision": summary.decision.value if summary.decision else None,
        "candidate": summary.candidate,
        "originalBytes": summary.original_bytes,
        "optimizedBytes": summary.optimized_bytes,
        "compressionRatio": ratio,
        "sizeRatio": f"{ratio:.1f}x" if ratio else None,
        "latencyP50Ms": summary.latency_p50_ms,
        "artifact": summary.artifact,
        "artifactDigest": summary.artifact_digest,
        "message": summary.message,
    }
    return {k: v for k, v in status.items() if v is not None}


def _wanted_replicas(md: ModelDeployment, desired: dict[str, Any], dep: DeploymentObservation | None) -> int:
    """Replicas the rollout must reach: the spec's, or under an HPA the Deployment's count but never fewer than
    minReplicas (a new Deployment starts at 1; the HPA controller raises it to minReplicas)."""
    if "replicas" in desired["spec"]:
        return int(desired["spec"]["replicas"])
    current = dep.replicas if dep else 1
    auto = md.spec.serving.autoscaling
    return max(current, auto.min_replicas) if auto.enabled else current


def _rollout_complete(
    md: ModelDeployment, dep: DeploymentObservation | None, desired: dict[str, Any], rev: str
) -> bool:
    if dep is None or dep.revision != rev:
        return False
    spec = desired["spec"]
    want_image = spec["template"]["spec"]["containers"][0]["image"]
    want = _wanted_replicas(md, desired, dep)
    return (
        dep.image == want_image
        and dep.replicas == want
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas == want
        and dep.status_replicas == want
        and dep.available_replicas >= want
    )


def plan(md: ModelDeployment, observed: Observed, config: OperatorConfig, now: datetime) -> Plan:
    """Decide the next actions and the status for ``md``."""
    gen = md.metadata.generation
    prev = md.status.wire()
    rev = compute_revision(md.spec)
    conds = ConditionSet(prev.get("conditions", []), gen, now)
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "revision": rev,
        "selector": ",".join(f"{k}={v}" for k, v in selector_labels(md).items()),
    }
    for key in ("servingRevision", "servingImage", "source", "lastFailure"):
        if key in prev:
            status[key] = prev[key]
    out = Plan(status=status)
    suspended = md.spec.suspend
    stalled: tuple[str, str] | None = None
    progress: tuple[str, str] | None = None  # (reason, message) of work in flight
    phase = Phase.PENDING

    def fail(stage: str, reason: str, message: str) -> None:
        nonlocal stalled
        stalled = (reason, message)
        failure = {"stage": stage, "reason": reason, "message": message[:2000], "revision": rev}
        old = prev.get("lastFailure") or {}
        same = all(old.get(k) == failure[k] for k in failure)
        status["lastFailure"] = {**failure, "time": old["time"] if same and "time" in old else rfc3339(now)}

    def requeue(seconds: float) -> None:
        out.requeue_after = seconds if out.requeue_after is None else min(out.requeue_after, seconds)

    need_claim = not md.spec.build.enabled

    # ---- Resolve + Optimize -------------------------------------------------------------------------
    summary: Summary | None = None
    prev_opt = prev.get("optimization") or {}
    if prev_opt.get("revision") == rev and prev_opt.get("decision"):
        status["optimization"] = prev_opt
        summary = _summary_from_status(prev_opt, prev.get("source") or {})
    elif observed.cached_optimization:
        try:
            summary = Summary.from_line(observed.cached_optimization)
            status["optimization"] = _optimization_status(summary, rev, None, 0, cached=True)
        except ValueError:
            summary = None
    if summary is None:
        jobs = observed.jobs_for(OPTIMIZER, rev)
        recorded = int(prev_opt.get("attempts", 0)) if prev_opt.get("revision") == rev else 0
        stage = _job_stage(jobs, recorded, config, now)
        opt_status: dict[str, Any] = {"revision": rev, "attempts": max(stage.attempt, recorded)}
        if stage.job:
            opt_status["job"] = stage.job.name
        status["optimization"] = opt_status
        if stage.kind == "succeeded" and stage.job:
            try:
                summary = Summary.from_line(stage.job.termination_message or "")
                if not summary.ok:
                    raise ValueError(summary.error or "the optimizer reported failure")
            except ValueError as exc:
                summary = None
                conds.set(ConditionType.OPTIMIZED, False, "InvalidSummary", str(exc))
                fail("Optimize", "InvalidSummary", f"Job {stage.job.name}: {exc}")
            if summary is not None:
                status["optimization"] = {
                    **_optimization_status(summary, rev, stage.job.name, stage.attempt, cached=False),
                    "completedAt": stage.job.finished_at,
                }
        elif stage.kind == "failed" or (
            stage.job and stage.job.state == JobState.FAILED and _deterministic_failure(stage.job)
        ):
            failed_job = stage.job
            assert failed_job is not None
            text = _deterministic_failure(failed_job) or _job_failure_text(failed_job)
            reason = "OptimizationFailed" if _deterministic_failure(failed_job) else "JobFailed"
            msg = f"Job {failed_job.name} failed after {opt_status['attempts']} attempt(s): {text}"
            conds.set(ConditionType.OPTIMIZED, False, reason, msg)
            fail("Optimize", reason, msg)
        elif stage.kind == "waiting":
            assert stage.job is not None
            progress = ("RetryBackoff", f"Job {stage.job.name} failed ({_job_failure_text(stage.job)}); retrying")
            conds.set(ConditionType.OPTIMIZED, False, "RetryBackoff", progress[1])
            requeue(stage.wait)
            phase = Phase.OPTIMIZING
        elif stage.kind == "create" and not suspended:
            new_job = optimize_job(md, rev, config, stage.attempt)
            out.create.append(new_job)
            need_claim = True
            job_name = new_job["metadata"]["name"]
            opt_status.update(job=job_name, attempts=stage.attempt)
            progress = ("JobCreated", f"optimization Job {job_name} created (attempt {stage.attempt})")
            conds.set(ConditionType.OPTIMIZED, False, "JobCreated", progress[1])
            phase = Phase.OPTIMIZING
        elif stage.kind == "running" and stage.job:
            progress = ("JobRunning", f"optimization Job {stage.job.name} running (attempt {stage.attempt})")
            conds.set(ConditionType.OPTIMIZED, False, "JobRunning", progress[1])
            phase = Phase.OPTIMIZING
            if stage.wait:
                requeue(stage.wait)
        else:
            conds.set(ConditionType.OPTIMIZED, False, "Suspended", "suspended: no new Jobs are started")

    if md.spec.model.digest:
        conds.set(ConditionType.RESOLVED, True, "DigestPinned", f"model pinned to {md.spec.model.digest}")
        status["source"] = {"uri": md.spec.model.uri, "digest": md.spec.model.digest}
    if summary is not None and summary.source_digest:
        status["source"] = {"uri": md.spec.model.uri, "digest": summary.source_digest}
        if summary.source_bytes is not None:
            status["source"]["sizeBytes"] = summary.source_bytes
        if not md.spec.model.digest:
            conds.set(ConditionType.RESOLVED, True, "DigestResolved", f"model resolved to {summary.source_digest}")
    elif not md.spec.model.digest:
        conds.set(
            ConditionType.RESOLVED, None, "Resolving", "the optimization Job fetches the model and pins its digest"
        )

    # ---- Gate ---------------------------------------------------------------------------------------
    deployable = False
    if summary is not None:
        opt_message = (
            f"{summary.metric_name or 'metric'} {_fmt(summary.baseline)} -> {_fmt(summary.value)}, "
            f"size {summary.original_bytes} -> {summary.optimized_bytes} bytes"
        )
        conds.set(ConditionType.OPTIMIZED, True, "Optimized" if md.spec.optimization.enabled else "Converted",
                  summary.message or opt_message)  # fmt: skip
        decision = summary.decision
        gate_msg = summary.message or opt_message
        if summary.gate is None or summary.gate.value == "Skipped":
            conds.set(ConditionType.GATE_PASSED, True, "GateSkipped", "optimization disabled: no gate")
            deployable = True
        elif summary.gate.value == "Passed":
            conds.set(ConditionType.GATE_PASSED, True, "WithinThreshold", gate_msg)
            deployable = True
        elif decision in (ShipDecision.BASELINE, ShipDecision.BEST_PASSING):
            reason = "GateFailedDeployBaseline" if decision == ShipDecision.BASELINE else "GateFailedDeployBestPassing"
            conds.set(ConditionType.GATE_PASSED, False, reason, gate_msg)
            deployable = True
        else:
            conds.set(ConditionType.GATE_PASSED, False, "GateFailed", gate_msg)
            fail("Gate", "GateFailed", f"accuracy gate blocked revision {rev}: {gate_msg}")
    elif not stalled:
        conds.set(ConditionType.GATE_PASSED, None, "Pending", "waiting for the optimization result")

    # ---- Build --------------------------------------------------------------------------------------
    image: str | None = None
    built = False
    if deployable:
        if not md.spec.build.enabled:
            conds.set(
                ConditionType.IMAGE_BUILT, True, "BuildDisabled", "served from the artifact volume by the stock runtime"
            )
            built = True
            status.pop("image", None)
        else:
            image, built, phase_b = _build_stage(
                md, rev, prev, observed, config, now, conds, status, out, fail, requeue
            )
            if phase_b is not None:
                phase = phase_b
                building = conds.get(ConditionType.IMAGE_BUILT) or {}
                progress = (building.get("reason", "Building"), building.get("message", ""))
            if built and image and summary is not None and observed.cached_image != image:
                out.cache_put = (rev, json.dumps({"summary": summary.to_line(), "image": image}, sort_keys=True))
    elif not stalled:
        conds.set(ConditionType.IMAGE_BUILT, None, "Pending", "waiting for the gate")

    # ---- Deploy -------------------------------------------------------------------------------------
    dep = observed.deployment
    serve_rev: str | None = None
    serve_image: str | None = None
    if built:
        serve_rev, serve_image = rev, image
    elif status.get("servingRevision"):
        # the new revision is not ready to ship: keep the previous good one serving, with the current
        # serving settings (replicas, resources), until the new one is available
        serve_rev, serve_image = status["servingRevision"], status.get("servingImage")
    if serve_rev is not None:
        if serve_image is None:
            need_claim = True
        sp = serving_plan(md, serve_rev, config, serve_image)
        out.apply.extend(sp.objects())
        name = serving_name(md)
        optional = sp.optional()
        for pruned in PRUNED:
            if optional[pruned.kind] is None and (pruned.kind, name) in observed.existing:
                out.delete.append((pruned.api_version, pruned.kind, name))
        complete = _rollout_complete(md, dep, sp.deployment, serve_rev)
        status["url"] = service_url(md, config)
        if serve_rev == rev and complete:
            status["servingRevision"] = rev
            if image:
                status["servingImage"] = image
            else:
                status.pop("servingImage", None)
        if serve_rev == rev:
            if complete:
                want = _wanted_replicas(md, sp.deployment, dep)
                conds.set(ConditionType.DEPLOYED, True, "Available", f"{want}/{want} replicas of {rev} available")
            elif dep is not None and dep.progress_deadline_exceeded and dep.revision == rev:
                msg = f"rollout of {rev} made no progress: {dep.progress_message}"
                if status.get("servingRevision") and status["servingRevision"] != rev:
                    msg += f"; revision {status['servingRevision']} keeps serving"
                conds.set(ConditionType.DEPLOYED, False, "RolloutStalled", msg)
                fail("Deploy", "RolloutStalled", msg)
            else:
                have = dep.available_replicas if dep and dep.revision == rev else 0
                want = _wanted_replicas(md, sp.deployment, dep)
                progress = ("RollingOut", f"{have}/{want} replicas of {rev} available")
                if dep is not None and dep.replicas < want:
                    progress = (progress[0], f"{progress[1]} (the HPA raises the Deployment to minReplicas {want})")
                conds.set(ConditionType.DEPLOYED, False, "RollingOut", progress[1])
                phase = Phase.DEPLOYING
        else:
            conds.set(ConditionType.DEPLOYED, False, "PreviousRevisionServing",
                      f"revision {serve_rev} serves while {rev} is not deployable")  # fmt: skip
    elif not stalled:
        conds.set(ConditionType.DEPLOYED, None, "Pending", "nothing to deploy yet")
    if need_claim and ("PersistentVolumeClaim", artifact_claim_name(md)) not in observed.existing:
        out.apply.insert(0, artifact_claim(md, config))

    if dep is not None:
        status.update(
            replicas=dep.status_replicas,
            readyReplicas=dep.ready_replicas,
            updatedReplicas=dep.updated_replicas if dep.revision == rev else 0,
            availableReplicas=dep.available_replicas,
        )
    else:
        status.update(replicas=0, readyReplicas=0, updatedReplicas=0, availableReplicas=0)

    # ---- kstatus --------------------------------------------------------------------------------------
    deployed = conds.get(ConditionType.DEPLOYED) or {}
    ready = deployed.get("status") == "True" and not suspended and stalled is None
    if suspended:
        phase = Phase.SUSPENDED
        conds.set(ConditionType.READY, False, "Suspended", "suspended: scaled to zero, nothing removed")
        conds.set(ConditionType.RECONCILING, False, "Suspended", "")
        conds.set(ConditionType.STALLED, False, "Suspended", "")
    elif stalled is not None:
        phase = Phase.FAILED
        conds.set(ConditionType.READY, False, stalled[0], stalled[1])
        conds.set(ConditionType.RECONCILING, False, stalled[0], "")
        conds.set(ConditionType.STALLED, True, stalled[0], stalled[1])
    elif ready:
        phase = Phase.READY
        status.pop("lastFailure", None)
        conds.set(ConditionType.READY, True, "Available", deployed.get("message", ""))
        conds.set(ConditionType.RECONCILING, False, "Idle", "")
        conds.set(ConditionType.STALLED, False, "Healthy", "")
    else:
        reason, message = progress or ("Progressing", "working")
        conds.set(ConditionType.READY, False, reason, message)
        conds.set(ConditionType.RECONCILING, True, reason, message)
        conds.set(ConditionType.STALLED, False, "Healthy", "")
    status["phase"] = phase.value
    status["conditions"] = conds.as_list(CONDITION_ORDER)
    for new, _old in conds.changes():
        if new["type"] in (ConditionType.RECONCILING, ConditionType.STALLED):
            continue
        warning = new["status"] == "False" and new["reason"] not in (
            "JobCreated", "JobRunning", "RollingOut", "Progressing", "Pending", "Suspended", "BuildJobCreated",
            "BuildJobRunning",
        )  # fmt: skip
        message = new["message"] or f"{new['type']} is {new['status']}"
        out.events.append(Event("Warning" if warning else "Normal", f"{new['type']}{new['reason']}"[:128], message))
    return out


def _summary_from_status(opt: dict[str, Any], source: dict[str, Any]) -> Summary:
    return Summary(
        ok=True,
        source_digest=source.get("digest"),
        source_bytes=source.get("sizeBytes"),
        metric_name=opt.get("metric"),
        baseline=opt.get("baseline"),
        value=opt.get("value"),
        drop=opt.get("metricDrop"),
        gate=opt.get("gate"),
        decision=opt.get("decision"),
        candidate=opt.get("candidate"),
        original_bytes=opt.get("originalBytes"),
        optimized_bytes=opt.get("optimizedBytes"),
        compression_ratio=opt.get("compressionRatio"),
        latency_p50_ms=opt.get("latencyP50Ms"),
        artifact=opt.get("artifact"),
        artifact_digest=opt.get("artifactDigest"),
        message=opt.get("message"),
    )


def _build_stage(
    md: ModelDeployment,
    rev: str,
    prev: dict[str, Any],
    observed: Observed,
    config: OperatorConfig,
    now: datetime,
    conds: ConditionSet,
    status: dict[str, Any],
    out: Plan,
    fail: Any,
    requeue: Any,
) -> tuple[str | None, bool, Phase | None]:
    """(image, built, phase while building)."""
    from ..resources.build_job import build_job

    prev_image = prev.get("image") or {}
    if prev_image.get("revision") == rev and prev_image.get("reference"):
        status["image"] = prev_image
        conds.set(ConditionType.IMAGE_BUILT, True, "Pushed", f"image {prev_image['reference']}")
        return prev_image["reference"], True, None
    if observed.cached_image:
        status["image"] = {
            "revision": rev,
            "reference": observed.cached_image,
            "digest": observed.cached_image.rsplit("@", 1)[-1],
        }
        conds.set(ConditionType.IMAGE_BUILT, True, "Cached", f"image {observed.cached_image} (built before)")
        return observed.cached_image, True, None
    jobs = observed.jobs_for(BUILDER, rev)
    recorded = int(prev_image.get("attempts", 0)) if prev_image.get("revision") == rev else 0
    stage = _job_stage(jobs, recorded, config, now)
    img_status: dict[str, Any] = {"revision": rev, "attempts": max(stage.attempt, recorded)}
    if stage.job:
        img_status["job"] = stage.job.name
    status["image"] = img_status
    if stage.kind == "succeeded" and stage.job:
        try:
            result = parse_build_result(
                stage.job.termination_message,
                md.spec.build.repository or "",
                [p.value for p in md.spec.build.platforms],
            )
            if not result.ok:
                raise ValueError(result.error or "the build reported failure")
        except ValueError as exc:
            conds.set(ConditionType.IMAGE_BUILT, False, "InvalidBuildResult", str(exc))
            fail("Build", "InvalidBuildResult", f"Job {stage.job.name}: {exc}")
            return None, False, None
        assert result.image is not None
        img_status.update(
            reference=result.image,
            digest=result.digest or result.image.rsplit("@", 1)[-1],
            platforms=list(result.platforms),
            completedAt=stage.job.finished_at,
        )
        img_status = {k: v for k, v in img_status.items() if v is not None}
        status["image"] = img_status
        conds.set(ConditionType.IMAGE_BUILT, True, "Pushed", f"image {result.image}")
        return result.image, True, None
    if stage.kind == "failed":
        why = _job_failure_text(stage.job) if stage.job else "attempts exhausted"
        msg = f"build Job {stage.job.name if stage.job else ''} failed after {img_status['attempts']} attempt(s): {why}"
        conds.set(ConditionType.IMAGE_BUILT, False, "JobFailed", msg)
        fail("Build", "JobFailed", msg)
        return None, False, None
    if stage.kind == "waiting" and stage.job:
        conds.set(ConditionType.IMAGE_BUILT, False, "RetryBackoff",
                  f"build Job {stage.job.name} failed ({_job_failure_text(stage.job)}); retrying")  # fmt: skip
        requeue(stage.wait)
        return None, False, Phase.BUILDING
    if stage.kind == "create" and not md.spec.suspend:
        job = build_job(md, rev, artifact_dir(config, rev), config, stage.attempt)
        out.create.append(job)
        img_status.update(job=job["metadata"]["name"], attempts=stage.attempt)
        conds.set(ConditionType.IMAGE_BUILT, False, "BuildJobCreated",
                  f"build Job {job['metadata']['name']} created (attempt {stage.attempt})")  # fmt: skip
        return None, False, Phase.BUILDING
    if stage.kind == "running" and stage.job:
        conds.set(ConditionType.IMAGE_BUILT, False, "BuildJobRunning", f"build Job {stage.job.name} running")
        if stage.wait:
            requeue(stage.wait)
        return None, False, Phase.BUILDING
    conds.set(ConditionType.IMAGE_BUILT, False, "Suspended", "suspended: no new Jobs are started")
    return None, False, None
