"""The one Job-stage piece (controller/stages/jobs.py), driven by a made-up stage: it knows attempts, backoff,
the pod-status grace, permanent vs temporary failures and Job creation, and nothing about optimizing or
building."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from modelship.api.status import ConditionType, Phase, Reason, StageName
from modelship.controller.observe import JobObservation, JobState, Observed
from modelship.controller.stages.context import Context, Manifest
from modelship.controller.stages.jobs import (
    POD_STATUS_GRACE_SECONDS,
    JobFailure,
    JobOutcome,
    JobStage,
    Step,
    decide,
    failure_text,
    run_job_stage,
)
from modelship.resources.revision import revision
from tests.unit.test_plan import CONFIG, NOW, make_md


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def made(ctx: Context, attempt: int) -> Manifest:
    return {"kind": "Job", "metadata": {"name": f"probe-{ctx.revision}-{attempt}"}}


def read(ctx: Context, job: JobObservation) -> int:
    if not (job.termination_message or "").isdigit():
        raise ValueError(f"no number in {job.termination_message!r}")
    return int(job.termination_message or "0")


def classify(job: JobObservation) -> JobFailure:
    return JobFailure(job.termination_message == "fatal", Reason.JOB_FAILED, failure_text(job))


PROBE: JobStage[int] = JobStage(
    stage=StageName.BUILD, component="probe", condition=ConditionType.IMAGE_BUILT, label="probe Job",
    phase=Phase.BUILDING, created=Reason.BUILD_JOB_CREATED, running=Reason.BUILD_JOB_RUNNING,
    invalid_result=Reason.INVALID_BUILD_RESULT, make=made, read=read, classify=classify,
)  # fmt: skip


def run(jobs: list[JobObservation], recorded: int = 0, status: dict[str, Any] | None = None,
        suspend: bool = False) -> JobOutcome[int]:  # fmt: skip
    md = make_md(status=status, suspend=suspend)
    return run_job_stage(Context(md, revision(md.spec), Observed(jobs=jobs), CONFIG, NOW), PROBE, recorded)


REV = revision(make_md().spec)


def probe(state: JobState, attempt: int = 1, msg: str | None = None, **kw: Any) -> JobObservation:
    return JobObservation(name=f"probe-{REV}-{attempt}", stage="probe", revision=REV, attempt=attempt, state=state,
                          termination_message=msg, **kw)  # fmt: skip


def the_condition(out: JobOutcome[int]) -> tuple[bool | None, Reason, str]:
    (c,) = out.effects.conditions
    assert c.type == ConditionType.IMAGE_BUILT
    return c.status, c.reason, c.message


def test_first_attempt_is_created_with_the_claim_and_in_flight() -> None:
    out = run([])
    (job,) = out.effects.create
    assert job["metadata"]["name"] == f"probe-{REV}-1" and out.job == job["metadata"]["name"]
    assert out.attempts == 1 and out.result is None
    assert the_condition(out)[:2] == (False, Reason.BUILD_JOB_CREATED)
    assert out.effects.needs_artifact_claim and out.effects.failure is None
    assert out.effects.progress is not None and out.effects.progress.phase == Phase.BUILDING


def test_suspended_creates_nothing() -> None:
    out = run([], suspend=True)
    assert out.effects.create == () and out.effects.progress is None
    assert the_condition(out)[1] == Reason.SUSPENDED


def test_running_job_is_waited_for_by_the_watch() -> None:
    out = run([probe(JobState.ACTIVE)])
    assert out.effects.create == () and out.effects.requeue_after is None
    assert the_condition(out)[1] == Reason.BUILD_JOB_RUNNING


def test_succeeded_job_is_read_once_its_pod_status_arrived() -> None:
    early = run([probe(JobState.SUCCEEDED, msg=None, finished_at=stamp(3))])
    assert early.result is None and early.effects.requeue_after == 1.0 and early.effects.failure is None
    assert run([probe(JobState.SUCCEEDED, msg="42", finished_at=stamp(3))]).result == 42
    late = run([probe(JobState.SUCCEEDED, msg=None, finished_at=stamp(POD_STATUS_GRACE_SECONDS + 1))])
    assert late.effects.failure is not None and late.effects.failure.reason == Reason.INVALID_BUILD_RESULT
    assert f"probe Job probe-{REV}-1: no number" in late.effects.failure.message


def test_job_failed_by_its_pod_failure_policy_waits_for_the_pod_status() -> None:
    out = run([probe(JobState.FAILED, msg=None, reason="PodFailurePolicy", finished_at=stamp(2))])
    assert out.effects.failure is None and out.effects.requeue_after == 1.0 and out.effects.create == ()


def test_temporary_failure_backs_off_exponentially_then_retries() -> None:
    first = probe(JobState.FAILED, msg="flaky", reason="BackoffLimitExceeded", finished_at=stamp(4))
    waiting = run([first])
    assert the_condition(waiting)[1] == Reason.RETRY_BACKOFF and waiting.effects.requeue_after == pytest.approx(6)
    assert waiting.effects.create == ()
    retried = run([probe(JobState.FAILED, msg="flaky", reason="BackoffLimitExceeded", finished_at=stamp(11))])
    assert [j["metadata"]["name"] for j in retried.effects.create] == [f"probe-{REV}-2"] and retried.attempts == 2
    second = probe(JobState.FAILED, attempt=2, msg="flaky", reason="BackoffLimitExceeded", finished_at=stamp(11))
    assert run([first, second]).effects.requeue_after == pytest.approx(9)  # 10 s * 2 for the second retry


def test_temporary_failure_stalls_after_max_attempts_and_permanent_at_once() -> None:
    jobs = [probe(JobState.FAILED, attempt=a, msg="flaky", reason="BackoffLimitExceeded", finished_at=stamp(100))
            for a in (1, 2, 3)]  # fmt: skip
    exhausted = run(jobs)
    assert exhausted.effects.failure is not None and exhausted.effects.create == ()
    assert "3 attempt(s)" in exhausted.effects.failure.message and "flaky" in exhausted.effects.failure.message
    fatal = run([probe(JobState.FAILED, msg="fatal", reason="BackoffLimitExceeded", finished_at=stamp(1))])
    assert fatal.effects.failure is not None and fatal.effects.create == () and fatal.attempts == 1
    assert fatal.effects.failure.stage == StageName.BUILD


def test_failed_stage_stays_failed_after_its_jobs_are_gone() -> None:
    failure = {"stage": "Build", "reason": "JobFailed", "message": "probe Job x failed after 3 attempt(s): flaky",
               "revision": REV, "time": "2026-11-26T10:00:00Z"}  # fmt: skip
    out = run([], recorded=3, status={"lastFailure": failure})
    assert out.effects.failure is not None and out.effects.create == ()
    assert (out.effects.failure.reason, out.effects.failure.message) == (Reason.JOB_FAILED, failure["message"])
    anonymous = run([], recorded=3)
    assert anonymous.effects.failure is not None and "3 attempt(s)" in anonymous.effects.failure.message
    # fewer attempts than allowed on record: the next attempt (deleting a failed Job retries it)
    assert [j["metadata"]["name"] for j in run([], recorded=1).effects.create] == [f"probe-{REV}-2"]


def test_decide_is_the_whole_state_machine() -> None:
    def step(jobs: list[JobObservation], recorded: int = 0) -> tuple[Step, int]:
        d = decide(jobs, recorded, CONFIG, NOW, classify)
        return d.step, d.attempt

    assert step([]) == (Step.CREATE, 1)
    assert step([], 2) == (Step.CREATE, 3)
    assert step([], 3) == (Step.FAILED, 3)
    assert step([probe(JobState.ACTIVE, attempt=2)]) == (Step.RUNNING, 2)
    assert step([probe(JobState.SUCCEEDED, msg="1", finished_at=stamp(1))]) == (Step.SUCCEEDED, 1)
    assert step([probe(JobState.FAILED, msg="x", finished_at=stamp(1))], 2) == (Step.WAITING, 2)
    assert step([probe(JobState.FAILED, msg="x", finished_at=stamp(100))], 2) == (Step.CREATE, 3)


def mounting(ctx: Context, attempt: int) -> Manifest:
    pod = {"volumes": [{"name": "creds", "secret": {"secretName": "creds"}}]}
    return {"kind": "Job", "metadata": {"name": f"probe-{ctx.revision}-{attempt}", "namespace": "ml"},
            "spec": {"template": {"spec": pod}}}  # fmt: skip


MOUNTING: JobStage[int] = replace(PROBE, make=mounting)


def held(recorded: int, missing: bool = True) -> JobOutcome[int]:
    md = make_md()
    absent = frozenset({("Secret", "ml", "creds")}) if missing else frozenset()
    ctx = Context(md, revision(md.spec), Observed(missing_mounts=absent), CONFIG, NOW)
    return run_job_stage(ctx, MOUNTING, recorded)


def test_waiting_for_a_mounted_object_uses_up_no_attempt() -> None:
    """Each look while the Secret is missing records the attempts made so far (none), however many looks there
    are: once it exists, attempt 1 is created (a user who takes longer than max_job_attempts looks to create it
    must not find the stage failed)."""
    recorded = 0
    for _ in range(CONFIG.max_job_attempts + 2):
        out = held(recorded)
        assert out.effects.create == () and out.effects.failure is not None
        assert out.effects.failure.reason == Reason.SECRET_NOT_FOUND
        recorded = out.attempts
    assert recorded == 0
    created = held(recorded, missing=False)
    assert [j["metadata"]["name"] for j in created.effects.create] == [f"probe-{REV}-1"] and created.attempts == 1


def test_a_retry_held_for_a_mounted_object_keeps_the_attempts_made() -> None:
    failed = probe(JobState.FAILED, msg="flaky", reason="BackoffLimitExceeded", finished_at=stamp(60))
    md = make_md()
    ctx = Context(md, revision(md.spec), Observed(jobs=[failed], missing_mounts=frozenset({("Secret", "ml", "creds")})),
                  CONFIG, NOW)  # fmt: skip
    out = run_job_stage(ctx, MOUNTING, 1)
    assert out.effects.create == () and out.attempts == 1


def test_a_suspended_stage_uses_up_no_attempt() -> None:
    recorded = 0
    for _ in range(CONFIG.max_job_attempts + 2):
        out = run([], recorded, suspend=True)
        assert the_condition(out)[1] == Reason.SUSPENDED and out.effects.create == ()
        recorded = out.attempts
    assert recorded == 0
    resumed = run([], recorded)
    assert [j["metadata"]["name"] for j in resumed.effects.create] == [f"probe-{REV}-1"] and resumed.attempts == 1
