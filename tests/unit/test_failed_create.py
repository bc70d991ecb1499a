"""A stage Job whose pod the Job controller cannot create (a ResourceQuota exceeded, Pod Security admission, a
LimitRange) has no pod to read: the controller says why only in a FailedCreate Warning Event on the Job. The stage's
message names it (the tenant's namespace: the controller's words; the build namespace: the reason alone), read only
for a Job that runs without a pod for a few seconds, at most every few seconds, and only from the Job controller.
The Events below are recorded from the integration control plane (Kubernetes 1.34), trimmed to the fields read."""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.controller.failedcreate import (
    EVENTS_BYTES,
    EVENTS_LIMIT,
    LOOK_SECONDS,
    MESSAGE_CHARS,
    PODLESS_GRACE_SECONDS,
    REQUEUE_SECONDS,
    failed_create,
    kept,
    newest_pod_time,
    podless,
)
from modelship.controller.joblook import JobLook
from modelship.controller.observe import JobState, job_observation
from modelship.controller.stages.jobs import PLATFORM_WORDS
from tests.unit.test_build_namespace import md as md_in
from tests.unit.test_jobstage import probe, run, the_condition
from tests.unit.test_plan import NOW
from tests.unit.test_stage_pod_trouble import JOB, UNSCHEDULED, pending_pod

UID = "job-1"
QUOTA = "exceeded quota: q, requested: limits.memory=2Gi, used: limits.memory=0, limited: limits.memory=1Mi"
QUOTA_SAID = "exceeded quota: q, requested: limits.memory=2Gi, limited: limits.memory=1Mi"
"""What is said of it: what the quota has used changes as other pods come and go."""


def event(pod: str = "digits-opt-r1-x7k2p-mts8s", message: str = "", at: str = "2026-11-30T06:13:54Z",
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A FailedCreate Event as the Job controller writes it (one per try: the generated pod name differs)."""
    return {
        "metadata": {"name": f"digits-opt-r1-x7k2p.{pod[-5:]}", "namespace": "team-a", "creationTimestamp": at},
        "reason": "FailedCreate", "type": "Warning",
        "message": message or f'Error creating: pods "{pod}" is forbidden: {QUOTA}',
        "source": {"component": "job-controller"}, "reportingComponent": "job-controller", "reportingInstance": "",
        "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": "digits-opt-r1-x7k2p",
                           "namespace": "team-a", "uid": UID},
        "count": 1, "firstTimestamp": at, "lastTimestamp": at, "eventTime": None, "series": None, **extra,
    }  # fmt: skip


NO_POD_JOB: dict[str, Any] = {
    **copy.deepcopy(JOB),
    "metadata": {**JOB["metadata"], "namespace": "team-a",
                 "creationTimestamp": (NOW - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")},
    "status": {"active": 0, "ready": 0, "startTime": "2026-11-30T02:10:00Z"},
}  # fmt: skip
SAYS = f"the pod is forbidden: {QUOTA_SAID}"


def test_the_job_controllers_words_without_the_generated_pod_name() -> None:
    """Each try names another generated pod: the text is the same for all, so status is not rewritten per try."""
    assert failed_create([event()], UID) == SAYS
    assert failed_create([event("digits-opt-r1-x7k2p-82pbw", at="2026-11-30T06:13:55Z")], UID) == SAYS
    folded = event(message=f'(combined from similar events): Error creating: pods "x-lzrx9" is forbidden: {QUOTA}')
    assert failed_create([folded], UID) == SAYS


def test_the_newest_event_says_it() -> None:
    older = event(message='Error creating: pods "p-1" is forbidden: exceeded quota: q, requested: pods=1')
    newer = event(at="2026-11-30T06:20:00Z", message='Error creating: pods "p-2" is forbidden: violates '
                  'PodSecurity "restricted:latest": allowPrivilegeEscalation != false')  # fmt: skip
    assert failed_create([newer, older], UID) == failed_create([older, newer], UID) == (
        'the pod is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
    )


@pytest.mark.parametrize("forged", [
    {"source": {"component": "tenant"}, "reportingComponent": "tenant"},
    {"source": {"component": "job-controller"}, "reportingComponent": "kubectl"},
    {"source": {}, "reportingComponent": ""},
    {"involvedObject": {"kind": "Job", "name": "digits-opt-r1-x7k2p", "uid": "another-job"}},
    {"involvedObject": {"kind": "Pod", "name": "digits-opt-r1-x7k2p", "uid": UID}},
    {"type": "Normal"},
    {"reason": "SuccessfulCreate"},
])  # fmt: skip
def test_only_the_job_controllers_failedcreate_about_the_job_is_read(forged: dict[str, Any]) -> None:
    """A tenant may create Events in their namespace: one the Job controller did not report about this Job says
    nothing (a newer forged one does not hide the controller's)."""
    assert failed_create([event(at="2026-11-30T07:00:00Z", **forged)], UID) is None
    real = event()
    assert failed_create([real, event(at="2026-11-30T07:00:00Z", message="pay here", **forged)], UID) == SAYS


def test_event_text_is_bounded_on_one_line() -> None:
    said = failed_create([event(message="Error creating: quota\n\u202eq " + "x" * 5000)], UID)
    assert said is not None and "\n" not in said and "\u202e" not in said and len(said) <= 240


def test_a_job_without_a_pod() -> None:
    assert podless(NO_POD_JOB, [])
    assert not podless(JOB, [])  # status counts an active pod: the watch will bring it
    assert not podless(NO_POD_JOB, [UNSCHEDULED])  # a live pod says why itself
    ended = copy.deepcopy(UNSCHEDULED)
    ended["status"]["phase"] = "Failed"
    assert podless(NO_POD_JOB, [ended])  # its replacement is what is missing
    done = {**NO_POD_JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failing = {**NO_POD_JOB, "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}
    suspended = {**NO_POD_JOB, "spec": {**NO_POD_JOB["spec"], "suspend": True}}
    assert not podless(done, []) and not podless(failing, []) and not podless(suspended, [])


def test_the_stage_message_names_the_quota_and_looks_again() -> None:
    observed = job_observation(NO_POD_JOB, [], no_pod=SAYS)
    assert observed.stuck == f"no pod created (FailedCreate): {SAYS}" and observed.podless
    out = run([probe(JobState.ACTIVE, stuck=observed.stuck, podless=True)])
    status, _reason, message = the_condition(out)
    assert message.endswith(f"running (attempt 1): no pod created (FailedCreate): {SAYS}") and status is False
    assert out.effects.requeue_after == REQUEUE_SECONDS  # an Event wakes nothing: the stage looks again
    assert out.effects.create == () and out.effects.failure is None


def test_a_build_job_says_the_reason_alone() -> None:
    observed = job_observation(NO_POD_JOB, [], platform=True, no_pod=SAYS)
    assert observed.stuck == "no pod created (FailedCreate)" and observed.said.endswith(QUOTA_SAID)
    out = run([probe(JobState.ACTIVE, stuck=observed.stuck, podless=True, platform=True)])
    message = the_condition(out)[2]
    assert message.endswith(f"no pod created (FailedCreate); {PLATFORM_WORDS}") and "quota" not in message


def test_credentials_in_the_controllers_words_do_not_reach_status() -> None:
    token = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    said = failed_create([event(message=f'Error creating: webhook "x" denied: Authorization: {token}')], UID)
    out = run([probe(JobState.ACTIVE, stuck=job_observation(NO_POD_JOB, [], no_pod=said).stuck, podless=True)])
    assert "eyJhbGciOiJSUzI1NiJ9" not in the_condition(out)[2]


class Events:
    """A Kube that answers the Events list from a list, counting the asks."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.asked: list[tuple[str, str, int, int]] = []
        self.error: Exception | None = None

    def list_events(self, namespace: str, field_selector: str, limit: int, max_bytes: int) -> list[dict[str, Any]]:
        self.asked.append((namespace, field_selector, limit, max_bytes))
        if self.error is not None:
            raise self.error
        return self.events


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_events_are_asked_only_for_a_podless_job_past_its_grace_and_not_at_every_pass() -> None:
    kube, clock = Events([event()]), Clock()
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    young = {**NO_POD_JOB, "metadata": {**NO_POD_JOB["metadata"], "creationTimestamp": NOW.strftime(
        "%Y-%m-%dT%H:%M:%SZ")}}  # fmt: skip
    assert look.no_pod(young, [], NOW + timedelta(seconds=PODLESS_GRACE_SECONDS - 1)) is None
    assert look.no_pod(JOB, [], NOW) is None and look.no_pod(NO_POD_JOB, [UNSCHEDULED], NOW) is None
    assert kube.asked == []
    assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS
    assert kube.asked == [("team-a", f"involvedObject.uid={UID},reason=FailedCreate,source=job-controller,type=Warning",
                           EVENTS_LIMIT, EVENTS_BYTES)]  # fmt: skip
    clock.now += LOOK_SECONDS - 1
    assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS and len(kube.asked) == 1  # said again, not asked again
    clock.now += 2
    kube.events = []
    assert look.no_pod(NO_POD_JOB, [], NOW) is None and len(kube.asked) == 2
    assert LOOK_SECONDS < REQUEUE_SECONDS  # the stage's look again finds the last ask old enough to ask anew


def test_a_failed_list_is_logged_once_and_keeps_what_was_said(caplog: pytest.LogCaptureFixture) -> None:
    kube, clock = Events([event()]), Clock()
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS
    kube.error = ApiException(status=403, reason="Forbidden")
    with caplog.at_level(logging.WARNING, logger="modelship.joblook"):
        for _ in range(3):
            clock.now += LOOK_SECONDS
            assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS
    assert len(caplog.records) == 1 and "403" in caplog.records[0].getMessage()


def test_a_job_that_got_its_pod_is_forgotten() -> None:
    kube, clock = Events([event()]), Clock()
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS
    assert look.no_pod(NO_POD_JOB, [pending_pod()], NOW) is None
    kube.events = []
    assert look.no_pod(NO_POD_JOB, [], NOW) is None and len(kube.asked) == 2  # asked anew, not the old words


def test_what_the_quota_has_used_is_not_said() -> None:
    """Other pods come and go: the quota's ``used:`` changes without the cause changing (a status write each)."""
    two = ("exceeded quota: q, requested: limits.memory=2Gi,requests.cpu=1, used: limits.memory={},requests.cpu={}, "
           "limited: limits.memory=3Gi,requests.cpu=2")  # fmt: skip
    said = [failed_create([event(message=f'Error creating: pods "p" is forbidden: {two.format(m, c)}')], UID)
            for m, c in (("0", "0"), ("2Gi", "1500m"))]  # fmt: skip
    assert said[0] == said[1] == (
        "the pod is forbidden: exceeded quota: q, requested: limits.memory=2Gi,requests.cpu=1, limited: "
        "limits.memory=3Gi,requests.cpu=2"
    )


def ended_pod(created: str, finished: str) -> dict[str, Any]:
    """The Job's pod, run and OOMKilled: the Job controller is to replace it."""
    pod = pending_pod()
    pod["metadata"]["creationTimestamp"] = created
    pod["status"] = {"phase": "Failed", "containerStatuses": [{"name": "optimize", "state": {"terminated": {
        "reason": "OOMKilled", "exitCode": 137, "finishedAt": finished}}}]}  # fmt: skip
    return pod


def test_a_failedcreate_older_than_the_jobs_newest_pod_is_not_said() -> None:
    """The quota was full at the start (FailedCreate), then the pod was created, ran and was OOMKilled: while the
    Job controller waits to replace it the Job has no pod, and the old Event (Events live an hour) is not why."""
    oom = ended_pod("2026-11-30T06:20:00Z", "2026-11-30T06:25:00Z")
    assert newest_pod_time([oom]) == NOW.replace(year=2026, month=11, day=30, hour=6, minute=25, second=0)
    assert podless(NO_POD_JOB, [oom])
    kube, clock = Events([event(at="2026-11-30T06:13:54Z")]), Clock()
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    assert look.no_pod(NO_POD_JOB, [oom], NOW) is None and len(kube.asked) == 1
    assert failed_create(kube.events, UID, newest_pod_time([oom])) is None
    # the replacement is refused in turn: that Event (at or after the pod ended) is said
    psa = 'violates PodSecurity "restricted:latest": privileged'
    kube.events = [event(at="2026-11-30T06:13:54Z"),
                   event("p-2", at="2026-11-30T06:25:00Z", message=f'Error creating: pods "p-2" is forbidden: {psa}')]
    clock.now += LOOK_SECONDS
    assert look.no_pod(NO_POD_JOB, [oom], NOW) == f"the pod is forbidden: {psa}"
    series = event(at="2026-11-30T06:13:54Z", series={"lastObservedTime": "2026-11-30T06:26:00.123456Z"})
    assert failed_create([series], UID, newest_pod_time([oom])) == SAYS  # an Event seen again since counts


def test_what_was_said_before_a_pod_came_and_went_is_not_said_again() -> None:
    kube, clock = Events([event()]), Clock()
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    assert look.no_pod(NO_POD_JOB, [], NOW) == SAYS
    oom = ended_pod("2026-11-30T06:20:00Z", "2026-11-30T06:25:00Z")
    assert look.no_pod(NO_POD_JOB, [oom], NOW) is None and len(kube.asked) == 2  # asked anew, within LOOK_SECONDS


def test_a_refused_list_is_not_asked_again_at_every_pass(caplog: pytest.LogCaptureFixture) -> None:
    """Without the list on Events (rbac.create false, the Role not updated) each pass would ask and be refused."""
    kube, clock = Events([event()]), Clock()
    kube.error = ApiException(status=403, reason="Forbidden")
    look = JobLook(kube, clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="modelship.joblook"):
        for _ in range(5):
            assert look.no_pod(NO_POD_JOB, [], NOW) is None
        assert len(kube.asked) == 1
        clock.now += LOOK_SECONDS
        assert look.no_pod(NO_POD_JOB, [], NOW) is None and len(kube.asked) == 2
    assert len(caplog.records) == 1


def test_what_is_kept_of_an_event_is_bounded() -> None:
    big = event(message="Error creating: " + "q" * 100_000, managedFields=[{"manager": "x" * 10_000}])
    small = kept(big)
    assert len(small["message"]) == MESSAGE_CHARS and "managedFields" not in small
    assert failed_create([small], UID) == failed_create([big], UID)
    assert kept(event()) and failed_create([kept(event())], UID) == SAYS


def test_a_pod_that_does_not_run_the_jobs_template_does_not_hide_why_the_job_has_none() -> None:
    """A pod someone else made naming the Job its controller (not running the Job's template) is not the Job's pod:
    the Job is podless for the Events look as it is for its observation, and the controller's words are said."""
    kube = Events([event()])
    look = JobLook(kube, Clock())  # type: ignore[arg-type]
    forged = pending_pod("digits-opt-r1-x7k2p-forge")
    forged["spec"]["containers"] = [{**forged["spec"]["containers"][0], "image": "someone/else:1"}]
    observed = look.observe(md_in("team-a"), NO_POD_JOB, [forged])
    assert observed.podless and observed.stuck == f"no pod created (FailedCreate): {SAYS}"
    assert len(kube.asked) == 1
