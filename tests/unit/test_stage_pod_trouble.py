"""A running stage Job whose pod cannot start says why in its stage's message: the pod not scheduled (the
scheduler's words), a container held waiting (image not pulled, a missing Secret key, its restart back-off); nothing
while it starts (ContainerCreating, PodInitializing) or runs. The pods below are recorded from a cluster (trimmed to
the fields read); pod text is untrusted: bounded, on one line, without what looks like a credential."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelship.api.status import Reason
from modelship.controller.observe import JobState, job_observation
from modelship.controller.podhealth import POD_TEXT_LIMIT
from tests.unit.test_jobstage import probe, run, the_condition

TEMPLATE = {"name": "optimize", "image": "modelship/optimizer:0.1.0", "args": ["optimize"]}
JOB: dict[str, Any] = {
    "metadata": {"name": "digits-opt-r1-x7k2p", "uid": "job-1",
                 "labels": {"app.kubernetes.io/component": "optimizer", "modelship.io/revision": "r1"}},
    "spec": {"template": {"spec": {"containers": [TEMPLATE]}}},
    "status": {"active": 1, "ready": 0, "startTime": "2026-11-30T02:10:00Z"},
}  # fmt: skip
SCHEDULER = ("0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are "
             "available: 1 Preemption is not helpful for scheduling.")  # fmt: skip


def pending_pod(name: str = "digits-opt-r1-x7k2p-q8zrt", **status: Any) -> dict[str, Any]:
    """A pod of JOB as the API server holds it while Pending (recorded; the status fields replaced by ``status``)."""
    return {
        "metadata": {"name": name, "namespace": "team-a",
                     "labels": {"batch.kubernetes.io/job-name": "digits-opt-r1-x7k2p", "modelship.io/revision": "r1"},
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "digits-opt-r1-x7k2p",
                                          "uid": "job-1", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"containers": [TEMPLATE], "restartPolicy": "Never"},
        "status": {"phase": "Pending", "qosClass": "BestEffort", **status},
    }  # fmt: skip


UNSCHEDULED = pending_pod(conditions=[
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHEDULER,
     "lastProbeTime": None, "lastTransitionTime": "2026-11-30T02:10:01Z"}])  # fmt: skip


def waiting(reason: str, message: str = "", phase: str = "Pending", **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return pending_pod(phase=phase, conditions=[
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T02:10:01Z"},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        containerStatuses=[{"name": "optimize", "image": "modelship/optimizer:0.1.0", "imageID": "", "ready": False,
                            "restartCount": 0, "started": False, "state": state, **extra}])  # fmt: skip


def stuck(*pods: dict[str, Any], job: dict[str, Any] = JOB) -> str:
    observed = job_observation(job, list(pods))
    return observed.stuck


def test_a_pod_the_scheduler_cannot_place_is_named_with_the_schedulers_words() -> None:
    assert stuck(UNSCHEDULED) == f"pod digits-opt-r1-x7k2p-q8zrt unschedulable: {SCHEDULER}"


@pytest.mark.parametrize("reason, message, expected", [
    ("ImagePullBackOff", 'Back-off pulling image "modelship/optimizer:0.1.0"',
     "pod digits-opt-r1-x7k2p-q8zrt: container optimize image modelship/optimizer:0.1.0 not pulled (ImagePullBackOff)"),
    ("ErrImagePull", "rpc error: code = NotFound desc = failed to pull and unpack image",
     "pod digits-opt-r1-x7k2p-q8zrt: container optimize image modelship/optimizer:0.1.0 not pulled (ImagePullBackOff)"),
    ("CreateContainerConfigError", 'couldn\'t find key token in Secret team-a/model-creds',
     "pod digits-opt-r1-x7k2p-q8zrt: container optimize waiting (CreateContainerConfigError): couldn't find key "
     "token in Secret team-a/model-creds"),
    ("RunContainerError", "", "pod digits-opt-r1-x7k2p-q8zrt: container optimize waiting (RunContainerError)"),
])  # fmt: skip
def test_a_container_held_waiting_is_named_with_its_reason(reason: str, message: str, expected: str) -> None:
    assert stuck(waiting(reason, message)) == expected


def test_a_waiting_reason_whose_words_change_at_each_retry_is_said_without_them() -> None:
    """CreateContainerError, RunContainerError ...: the kubelet's text names ids and deadlines that change at each
    retry; only the reason is said, so a stuck pod does not rewrite status at every retry. A missing Secret key
    (CreateContainerConfigError) keeps its words: they stay the same and name what to fix."""
    first = waiting("CreateContainerError", "context deadline exceeded")
    second = waiting("CreateContainerError", 'failed to reserve container name "optimize_x": reserved for "5f0c9e"')
    assert stuck(first) == stuck(second) == (
        "pod digits-opt-r1-x7k2p-q8zrt: container optimize waiting (CreateContainerError)"
    )


def test_what_changes_while_the_cause_stays_leaves_the_words_alone() -> None:
    """Restart counts, probe and transition times, the image id: none reaches the text (no write per look)."""
    later = copy.deepcopy(UNSCHEDULED)
    later["status"]["conditions"][0].update(lastProbeTime="2026-11-30T02:19:00Z",
                                            lastTransitionTime="2026-11-30T02:18:00Z")  # fmt: skip
    assert stuck(later) == stuck(UNSCHEDULED) != ""
    a = waiting("CreateContainerConfigError", "couldn't find key token in Secret team-a/c", restartCount=0)
    b = waiting("CreateContainerConfigError", "couldn't find key token in Secret team-a/c", restartCount=4,
                imageID="sha256:0f3a")  # fmt: skip
    assert stuck(a) == stuck(b) != ""


def test_the_back_and_forth_of_an_image_pull_reads_the_same() -> None:
    """The kubelet alternates ErrImagePull and ImagePullBackOff while it retries: one message, no write per turn."""
    assert stuck(waiting("ErrImagePull", "rpc error: a")) == stuck(waiting("ImagePullBackOff", "Back-off pulling"))


def test_a_restartable_container_in_its_restart_back_off_is_crash_looping() -> None:
    last = {"terminated": {"reason": "Error", "exitCode": 2, "message": "no module named x",
                           "finishedAt": "2026-11-30T02:11:00Z"}}  # fmt: skip
    pod = waiting("CrashLoopBackOff", "back-off 40s restarting failed container", phase="Running",
                  lastState=last, restartCount=3)
    assert stuck(pod) == ("pod digits-opt-r1-x7k2p-q8zrt: container optimize crash-looping (CrashLoopBackOff), last "
                          "terminated Error (exit code 2): no module named x")  # fmt: skip


@pytest.mark.parametrize("pod", [
    waiting("ContainerCreating"), waiting("PodInitializing"), pending_pod(),
    pending_pod(phase="Running", conditions=[{"type": "PodScheduled", "status": "True"}],
                containerStatuses=[{"name": "optimize", "state": {"running": {"startedAt": "2026-11-30T02:10:05Z"}}}]),
])  # fmt: skip
def test_a_pod_that_starts_or_runs_says_nothing(pod: dict[str, Any]) -> None:
    assert stuck(pod) == ""


def test_ended_deleted_and_foreign_pods_and_finished_jobs_say_nothing() -> None:
    failed, going, forged = copy.deepcopy(UNSCHEDULED), copy.deepcopy(UNSCHEDULED), copy.deepcopy(UNSCHEDULED)
    failed["status"]["phase"] = "Failed"
    going["metadata"]["deletionTimestamp"] = "2026-11-30T02:12:00Z"
    forged["spec"]["containers"] = [{**TEMPLATE, "image": "attacker/optimizer:1"}]  # not the Job's template
    assert stuck(failed) == stuck(going) == stuck(forged) == ""
    done = {**JOB, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert job_observation(done, [UNSCHEDULED]).state == JobState.FAILED
    assert stuck(UNSCHEDULED, job=done) == ""


def test_pod_text_is_bounded_on_one_line() -> None:
    forged = copy.deepcopy(UNSCHEDULED)  # a webhook or a forged status may write anything there
    forged["status"]["conditions"][0]["message"] = "0/1 nodes\n\u202eare available " + "x" * 5000
    text = stuck(forged)
    assert "\n" not in text and "\u202e" not in text
    assert text.startswith("pod digits-opt-r1-x7k2p-q8zrt unschedulable: 0/1 nodes are available x")
    assert len(text) < POD_TEXT_LIMIT + 60 and text.endswith("…")


def test_the_running_message_names_why_its_pod_does_not_progress() -> None:
    plain = probe(JobState.ACTIVE)
    expected = (False, Reason.BUILD_JOB_RUNNING, f"probe Job {plain.name} running (attempt 1)")
    assert the_condition(run([plain])) == expected
    held = probe(JobState.ACTIVE, stuck=f"pod p unschedulable: {SCHEDULER}")
    out = run([held])
    status, reason, message = the_condition(out)
    assert (status, reason) == (False, Reason.BUILD_JOB_RUNNING)  # the lifecycle is unchanged: only the words
    assert message == f"probe Job {held.name} running (attempt 1): pod p unschedulable: {SCHEDULER}"
    assert out.effects.progress is not None and out.effects.progress.message == message
    assert out.effects.create == () and out.effects.failure is None and out.effects.requeue_after is None


def test_words_that_look_like_a_credential_do_not_reach_status() -> None:
    secret = "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    out = run([probe(JobState.ACTIVE, stuck=f"pod p: container c waiting (RunContainerError): {secret}")])
    assert "eyJhbGciOiJSUzI1NiJ9" not in the_condition(out)[2]
