"""A build (or export) Job runs in the operator's build namespace, not the tenant's: what the scheduler and the
kubelet say about its pod names the platform (its taints, node pools, the Secrets of the build namespace). The
tenant's status says the reason alone and points at the operator's log, which has the words in full (once per
change); a Job in the tenant's own namespace (the optimization) keeps them in its message."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from modelship.api.modeldeployment import ModelDeployment
from modelship.controller.joblook import JobLook
from modelship.controller.observe import job_observation
from modelship.controller.podhealth import Cause, Trouble
from modelship.controller.stages.jobs import PLATFORM_WORDS
from tests.unit.test_jobstage import probe, run, the_condition
from tests.unit.test_plan import make_md
from tests.unit.test_stage_pod_trouble import JOB, pending_pod, waiting

BUILDS = "modelship-builds"
TAINT_WORDS = ("0/3 nodes are available: 2 node(s) had untolerated taint {platform.example.com/builders: "
               "reserved}, 1 node(s) didn't match Pod's node affinity/selector (pool=gpu-a100-private).")  # fmt: skip
PLATFORM_SECRET = "couldn't find key .dockerconfigjson in Secret modelship-builds/registry-push-prod"
LEAKS = ("platform.example.com", "reserved", "gpu-a100-private", "registry-push-prod", ".dockerconfigjson",
         "0/3 nodes")  # fmt: skip


def in_builds(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"]["namespace"] = BUILDS
    return pod


BUILD_JOB: dict[str, Any] = {**copy.deepcopy(JOB), "metadata": {**JOB["metadata"], "namespace": BUILDS}}
UNSCHEDULED = in_builds(pending_pod(conditions=[
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": TAINT_WORDS}]))  # fmt: skip
NO_SECRET_KEY = in_builds(waiting("CreateContainerConfigError", PLATFORM_SECRET))
NOT_PULLED = in_builds(waiting("ImagePullBackOff", 'Back-off pulling image "registry.platform.internal/buildkit"'))
NOT_PULLED["status"]["containerStatuses"][0]["image"] = "registry.platform.internal/buildkit:v0.18"
CRASHING = in_builds(waiting("CrashLoopBackOff", "back-off 40s", phase="Running", restartCount=2, lastState={
    "terminated": {"reason": "OOMKilled", "exitCode": 137, "message": "node pool gpu-a100-private out of memory",
                   "finishedAt": "2026-11-30T02:11:00Z"}}))  # fmt: skip


@pytest.mark.parametrize("pod, says", [
    (UNSCHEDULED, "pod digits-opt-r1-x7k2p-q8zrt unschedulable (Unschedulable)"),
    (NO_SECRET_KEY, "pod digits-opt-r1-x7k2p-q8zrt: container optimize waiting (CreateContainerConfigError)"),
    (NOT_PULLED, "pod digits-opt-r1-x7k2p-q8zrt: container optimize image not pulled (ImagePullBackOff)"),
    (CRASHING, "pod digits-opt-r1-x7k2p-q8zrt: container optimize crash-looping (CrashLoopBackOff), last terminated "
               "OOMKilled (exit code 137)"),
])  # fmt: skip
def test_a_build_namespace_pod_is_named_by_its_reason_alone(pod: dict[str, Any], says: str) -> None:
    observed = job_observation(BUILD_JOB, [pod], platform=True)
    assert observed.stuck == says
    assert not [w for w in (*LEAKS, "registry.platform.internal") if w in observed.stuck]
    assert observed.said == job_observation(JOB, [pod]).stuck != ""  # the words in full, for the operator's log


def test_the_same_pod_in_the_tenants_namespace_keeps_its_words() -> None:
    observed = job_observation(JOB, [UNSCHEDULED])
    assert observed.stuck == f"pod digits-opt-r1-x7k2p-q8zrt unschedulable: {TAINT_WORDS}" and observed.said == ""
    assert PLATFORM_SECRET in job_observation(JOB, [NO_SECRET_KEY]).stuck


def test_the_build_message_says_the_reason_and_where_the_words_are() -> None:
    observed = job_observation(BUILD_JOB, [UNSCHEDULED], platform=True)
    held = probe(observed.state, stuck=observed.stuck, platform=True, said=observed.said)
    _status, _reason, message = the_condition(run([held]))
    assert message == (f"probe Job {held.name} running (attempt 1): pod digits-opt-r1-x7k2p-q8zrt unschedulable "
                       f"(Unschedulable); {PLATFORM_WORDS}")  # fmt: skip
    assert not [w for w in LEAKS if w in message]


def md_in(namespace: str) -> ModelDeployment:
    md = make_md()
    return md.model_copy(update={"metadata": md.metadata.model_copy(update={"namespace": namespace})})


class NoEvents:
    def list_events(self, namespace: str, field_selector: str, limit: int) -> list[dict[str, Any]]:
        raise AssertionError("a Job with a pod needs no Events")


def test_the_operators_log_has_the_build_pods_words_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    look = JobLook(NoEvents())  # type: ignore[arg-type]
    md = md_in("team-a")
    with caplog.at_level(logging.WARNING, logger="modelship.joblook"):
        for _ in range(3):
            look.observe(md, BUILD_JOB, [UNSCHEDULED])
        look.observe(md, BUILD_JOB, [NO_SECRET_KEY])
        look.observe(md, BUILD_JOB, [NO_SECRET_KEY])
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, logged
    assert TAINT_WORDS in logged[0] and f"build Job {BUILDS}/{JOB['metadata']['name']}" in logged[0]
    assert PLATFORM_SECRET in logged[1] and "team-a/" in logged[1]


def test_a_job_in_the_tenants_namespace_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    look = JobLook(NoEvents())  # type: ignore[arg-type]
    job = {**JOB, "metadata": {**JOB["metadata"], "namespace": "team-a"}}
    with caplog.at_level(logging.WARNING, logger="modelship.joblook"):
        observed = look.observe(md_in("team-a"), job, [UNSCHEDULED])
    assert not observed.platform and TAINT_WORDS in observed.stuck
    assert not caplog.records


@pytest.mark.parametrize("state, now", [
    ("CrashLoopBackOff", "crash-looping (CrashLoopBackOff)"),
    ("running", "running again after a crash"),
    ("", "crashed"),
])  # fmt: skip
def test_a_crashed_build_container_is_said_as_it_is_now(state: str, now: str) -> None:
    cause = Cause(Trouble.CRASH_LOOP, "p", "build", ("OOMKilled", 137, "node pool gpu-a100-private"), state=state)
    assert cause.reason_only() == f"pod p: container build {now}, last terminated OOMKilled (exit code 137)"
    assert cause.describe().startswith(f"pod p: container build {now}, ")
