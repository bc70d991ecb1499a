"""Running a stage as a Kubernetes Job: the one piece the optimization and build stages share.

One Job per attempt (``<name>-<stage>-<revision>-<uid token>[-<attempt>]``, ``resources/meta.py``: a namesake
ModelDeployment never gets its predecessor's names), never updated. What happens next is read from the
Jobs of the current revision and the attempts status recorded:

- no Job yet: create attempt 1 (or the next attempt, when the failed ones are gone by their TTL);
- a Job running: wait (the watch wakes the reconcile when it finishes);
- a Job finished but its pod's final status not yet seen: look again shortly, for a grace period;
- succeeded: the stage reads its result from the pod's termination message (``JobStage.read``);
- failed: the stage classifies the failure (``JobStage.classify``), as kopf splits ``PermanentError`` from
  ``TemporaryError``: a permanent one fails the stage at once; a temporary one is retried with exponential
  backoff until ``max_job_attempts``, then fails the stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

from ...api.redact import redact
from ...api.status import ConditionType, Phase, Reason, StageName
from ...config import OperatorConfig
from ..conditions import seconds_since
from ..failedcreate import REQUEUE_SECONDS
from ..observe import JobObservation, JobState
from .context import Context, Effects, Failure, Manifest, Progress, condition
from .mounts import held, missing_mounts

R = TypeVar("R")

POD_STATUS_GRACE_SECONDS = 60.0
"""How long a finished Job may wait for its pod's terminated status to reach the watch before the stage
decides without it (the Job and its pod arrive as separate watch events)."""

POD_FAILURE_POLICY = "PodFailurePolicy"
"""Reason of a Job failed by a FailJob rule of its podFailurePolicy: an exit code the stage declared final."""


PLATFORM_WORDS = "it runs in the platform's build namespace: the operator's log says more"
"""What a running message adds to the reason of a stuck Job in the build namespace (its pod's and Events' words
go to the operator's log, not to the tenant's status)."""


class RefusedResult(ValueError):
    """A result that reads well but that the operator refuses (e.g. an image outside the spec's repository),
    with its own reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Step(StrEnum):
    """What a Job stage does in this reconcile."""

    CREATE = "Create"
    RUNNING = "Running"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class JobFailure(NamedTuple):
    """A failed Job, classified by its stage: ``permanent`` when retrying the same input cannot help (kopf's
    PermanentError), else a retry may (TemporaryError)."""

    permanent: bool
    reason: Reason
    text: str


@dataclass(frozen=True)
class Decision:
    step: Step
    attempt: int
    job: JobObservation | None = None
    wait: float = 0.0
    failure: JobFailure | None = None


def _awaiting_pod_status(job: JobObservation, now: datetime) -> bool:
    """The Job finished (Complete, or failed by an exit code) but its pod's terminated status is not seen yet, and
    it finished less than ``POD_STATUS_GRACE_SECONDS`` ago (a finish without a readable time gets no grace)."""
    finished = job.state == JobState.SUCCEEDED or (job.state == JobState.FAILED and job.reason == POD_FAILURE_POLICY)
    if job.foreign_pods:
        return False  # the Job counted a pod that does not run its template: nothing to wait for
    if not finished or job.termination_message is not None:
        return False
    waited = seconds_since(job.finished_at, now)
    return waited is not None and waited < POD_STATUS_GRACE_SECONDS


def decide(
    jobs: list[JobObservation],
    recorded_attempts: int,
    config: OperatorConfig,
    now: datetime,
    classify: Callable[[JobObservation], JobFailure],
) -> Decision:
    """The next step of a Job stage from its Jobs (oldest attempt first) and the attempts status recorded."""
    if not jobs:
        if recorded_attempts >= config.max_job_attempts:
            return Decision(Step.FAILED, recorded_attempts)  # the failed Jobs are gone by their TTL
        return Decision(Step.CREATE, recorded_attempts + 1)
    last = jobs[-1]
    if last.state == JobState.ACTIVE:
        return Decision(Step.RUNNING, last.attempt, last)
    if _awaiting_pod_status(last, now):
        return Decision(Step.RUNNING, last.attempt, last, wait=1.0)
    if last.state == JobState.SUCCEEDED:
        return Decision(Step.SUCCEEDED, last.attempt, last)
    attempts = max(last.attempt, recorded_attempts)
    failure = classify(last)
    if failure.permanent or attempts >= config.max_job_attempts:
        return Decision(Step.FAILED, attempts, last, failure=failure)
    waited = seconds_since(last.finished_at, now)  # None: no readable finish to count a back-off from
    remaining = config.retry_base_seconds * (2 ** (attempts - 1)) - (waited or 0.0)
    if waited is not None and remaining > 0:
        return Decision(Step.WAITING, attempts, last, wait=remaining, failure=failure)
    return Decision(Step.CREATE, attempts + 1, last)


def failure_text(job: JobObservation) -> str:
    """Why a Job failed, for people: the Job's reason and message, the container's, and the stage's own words
    (the ``error`` of a JSON result line, else the last line its container left), without anything that looks like
    a credential (``api.redact``: the pod's words go to status and Events)."""
    return redact(_failure_text(job))


def _failure_text(job: JobObservation) -> str:
    detail = ": ".join(p for p in (job.reason, job.message) if p)
    if job.termination_reason and job.termination_reason not in ("Completed", "Error"):
        detail = f"{detail} (container {job.termination_reason})" if detail else f"container {job.termination_reason}"
    message = (job.termination_message or "").strip()
    if not message:
        return detail
    try:
        result = json.loads(message)
    except ValueError:
        result = None
    if isinstance(result, dict):
        error = result.get("error")
        words = str(error) if error else ""
    else:
        words = message.splitlines()[-1][:300]
    if not words:
        return detail
    return f"{detail}: {words}" if detail else words


def classify_by_job(job: JobObservation) -> JobFailure:
    """The Job's own verdict: failed by a FailJob rule (an exit code the stage declared final) is permanent;
    anything else (backoff limit, deadline, OOM) is temporary."""
    return JobFailure(job.reason == POD_FAILURE_POLICY, Reason.JOB_FAILED, failure_text(job))


@dataclass(frozen=True)
class JobStage(Generic[R]):
    """What differs between two Job-backed stages: names, reasons, and how to make, read and judge a Job."""

    stage: StageName
    component: str
    """The Jobs' component label (resources/meta.py)."""
    condition: ConditionType
    phase: Phase
    label: str
    """How messages name the Job: "optimization Job", "build Job"."""
    created: Reason
    running: Reason
    invalid_result: Reason
    make: Callable[[Context, int], Manifest]
    """The Job manifest of an attempt."""
    read: Callable[[Context, JobObservation], R]
    """The result of a succeeded Job; ValueError with a readable reason when it has none."""
    classify: Callable[[JobObservation], JobFailure]


@dataclass(frozen=True)
class JobOutcome(Generic[R]):
    result: R | None
    """Set when the stage succeeded for this revision."""
    attempts: int
    """Jobs started for this revision."""
    job: str | None
    """Name of the current Job."""
    finished_at: str | None
    effects: Effects


def run_job_stage(ctx: Context, stage: JobStage[R], recorded_attempts: int) -> JobOutcome[R]:
    """One reconcile's worth of a Job stage for ``ctx.revision``. A succeeded outcome carries no condition: the
    stage says what its result means."""
    jobs = ctx.observed.jobs_for(stage.component, ctx.revision)
    d = decide(jobs, recorded_attempts, ctx.config, ctx.now, stage.classify)
    # an attempt counts once its Job is created: a stage held back (suspended, or an object its pod mounts missing)
    # records the attempts made so far, so that waiting for the object never uses up the stage's attempts
    attempts = max(d.attempt - 1 if d.step == Step.CREATE else d.attempt, recorded_attempts)
    job = d.job
    name = job.name if job else None
    finished = job.finished_at if job else None

    def settled(reason: Reason, message: str, failure: Failure | None = None) -> JobOutcome[R]:
        effects = Effects((condition(stage.condition, False, reason, message),), failure=failure)
        return JobOutcome(None, attempts, name, finished, effects)

    def in_flight(reason: Reason, message: str, wait: float | None = None) -> JobOutcome[R]:
        effects = Effects(
            (condition(stage.condition, False, reason, message),),
            progress=Progress(reason, message, stage.phase),
            requeue_after=wait,
        )
        return JobOutcome(None, attempts, name, finished, effects)

    if d.step == Step.SUCCEEDED and job is not None and job.termination_message is None and job.foreign_pods:
        message = (
            f"{stage.label} {job.name} finished with pod(s) {', '.join(job.foreign_pods)} that do not run the Job's "
            "template (a forged controller reference): their results are never read"
        )
        return settled(Reason.FOREIGN_POD, message, Failure(stage.stage, Reason.FOREIGN_POD, message))
    if d.step == Step.SUCCEEDED and job is not None:
        try:
            return JobOutcome(stage.read(ctx, job), attempts, name, finished, Effects())
        except ValueError as exc:
            reason = exc.reason if isinstance(exc, RefusedResult) else stage.invalid_result
            words = redact(str(exc))
            return settled(reason, words, Failure(stage.stage, reason, f"{stage.label} {job.name}: {words}"))
    if d.step == Step.FAILED:
        failure = _final_failure(ctx, stage, d, attempts)
        return settled(failure.reason, failure.message, failure)
    if d.step == Step.WAITING and job is not None and d.failure is not None:
        return in_flight(Reason.RETRY_BACKOFF, f"{stage.label} {job.name} failed ({d.failure.text}); retrying", d.wait)
    if d.step == Step.RUNNING and job is not None:
        message = f"{stage.label} {job.name} running (attempt {d.attempt})"
        if job.stuck:  # its pod is not scheduled, a container is held waiting, or it has none: the user sees why
            message += f": {redact(job.stuck)}"
            if job.platform:  # the reason alone: the scheduler's, kubelet's or admission's words name the platform
                message += f"; {PLATFORM_WORDS}"
        wait = d.wait or None
        if job.podless:  # the Job controller's words about a pod it cannot create are in an Event: not watched
            wait = min(wait or REQUEUE_SECONDS, REQUEUE_SECONDS)
        return in_flight(stage.running, message, wait)
    if ctx.suspended:
        return settled(Reason.SUSPENDED, "suspended: no new Jobs are started")
    manifest = stage.make(ctx, d.attempt)
    absent = missing_mounts(ctx, manifest, stage.label)
    if absent is not None:  # its pod would wait in ContainerCreating or Pending: no Job until the object exists
        return JobOutcome(None, attempts, name, finished, held(ctx, stage.stage, stage.condition, absent))
    name = manifest["metadata"]["name"]
    message = f"{stage.label} {name} created (attempt {d.attempt})"
    effects = Effects(
        (condition(stage.condition, False, stage.created, message),),
        create=(manifest,),
        progress=Progress(stage.created, message, stage.phase),
        needs_artifact_claim=True,
    )
    return JobOutcome(None, d.attempt, name, None, effects)


def _final_failure(ctx: Context, stage: JobStage[R], d: Decision, attempts: int) -> Failure:
    if d.job is None:
        # the failed Jobs are gone (TTL): what status recorded when the stage failed still holds
        last = ctx.prev.last_failure
        if last is not None and last.stage == stage.stage and last.revision == ctx.revision:
            reason = Reason(last.reason) if last.reason in set(Reason) else Reason.JOB_FAILED
            return Failure(stage.stage, reason, last.message)
        return Failure(stage.stage, Reason.JOB_FAILED, f"{stage.label}s failed {attempts} attempt(s)")
    failure = d.failure or stage.classify(d.job)
    message = f"{stage.label} {d.job.name} failed after {attempts} attempt(s): {failure.text}"
    return Failure(stage.stage, failure.reason, message)
