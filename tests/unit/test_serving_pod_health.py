"""A serving revision whose pods crash-loop says why and stalls: the pure parts (the pods reduced and judged, the
ContainerHealthy clock that a ready-then-crash flap does not reset, Deployed's messages, the below-minReplicas
clock with it and with a maxUnavailable above 0)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelship.api.status import ConditionType, LastFailure, Reason, StageName
from modelship.controller import kstatus
from modelship.controller.conditions import rfc3339
from modelship.controller.observe import JobState, Observed, last_scale_time
from modelship.controller.plan import plan
from modelship.controller.podhealth import (
    POD_TEXT_LIMIT,
    RECOVERY_SECONDS,
    Trouble,
    cause,
    crash_looping,
    newest_template_hash,
    of_deployment,
    pod_health,
    printable,
    serving_pods_health,
)
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages.context import Failure
from modelship.controller.stages.deploy import ServingTarget, deploy, pods_wanted
from modelship.controller.stages.pod_causes import serving_meanwhile
from modelship.controller.stages.serving_clocks import POD_LOOK_MAX_SECONDS, POD_LOOK_SECONDS, pod_look_after
from modelship.controller.store import Store
from modelship.resources.meta import MODELDEPLOYMENT_LABEL, REVISION_LABEL
from modelship.resources.revision import revision
from tests.support.endpoints import routed
from tests.unit.test_autoscaled_ready import HPA, REV, scaled
from tests.unit.test_loud_failures import MemoryKube
from tests.unit.test_plan import CONFIG, IMAGE, NOW, cond, deployment, job, make_md, summary
from tests.unit.test_stages import conditions, ctx

OLD = "r-old"
DEADLINE = 30


def ago(seconds: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def crashing(restarts: int = 5, reason: str = "Error", code: int = 1, message: str = "") -> dict[str, Any]:
    """The server container's status as a kubelet writes it while it holds the container in its back-off."""
    term: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": ago(20), "finishedAt": ago(15)}
    if message:
        term["message"] = message
    return {"name": "server", "image": IMAGE, "ready": False, "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off {10 * restarts}s restarting failed container=server"}},
            "lastState": {"terminated": term}}  # fmt: skip


def running(since: float, restarts: int = 5) -> dict[str, Any]:
    """The server container running (ready) ``since`` seconds, after ``restarts`` crashes (exit code 1)."""
    last = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(since + 1)}} if restarts else {}
    return {"name": "server", "image": IMAGE, "ready": True, "restartCount": restarts,
            "state": {"running": {"startedAt": ago(since)}}, "lastState": last}  # fmt: skip


def pod(name: str, *containers: dict[str, Any], rev: str = REV, owner: str = "digits-5f7", hash_: str = "5f7",
        conditions_: list[dict[str, Any]] | None = None, deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "ml",
                            "labels": {REVISION_LABEL: rev, "pod-template-hash": hash_},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                                "uid": f"rs-{owner}", "controller": True}]}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = ago(1)
    return {"metadata": meta, "status": {"phase": "Running", "containerStatuses": list(containers),
                                         "conditions": conditions_ or []}}  # fmt: skip


def health(*pods: dict[str, Any]) -> Any:
    return serving_pods_health(list(pods), "digits")


# -- the pods, reduced and judged ---------------------------------------------------------------------------------


def test_a_hostile_termination_message_is_bounded_and_stripped_of_control_characters() -> None:
    """The termination message is the model's code's to write: escape sequences, new lines, a bidi override, NULs
    and 100 000 characters reach status as one bounded line."""
    hostile = "\x1b[2J\x1b[31mFAKE: Ready True\r\nStalled\tFalse\x00\u202egnirts\u2028" + "A" * 100_000
    p = pod_health(pod("digits-5f7-a", crashing(message=hostile)))
    ((reason, code, message),) = [c.terminated for c in p.containers if c.terminated]
    assert (reason, code) == ("Error", 1)
    assert len(message) <= POD_TEXT_LIMIT and message.endswith("…")
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e\u2028" for ch in message), message
    assert message.startswith("[2J [31mFAKE: Ready True Stalled False gnirts AAAA")
    text = cause(health(pod("digits-5f7-a", crashing(message=hostile))), REV, NOW)
    assert text is not None and "\n" not in text.describe() and len(text.describe()) < POD_TEXT_LIMIT + 200
    assert printable("  a\n\n b\tc  ") == "a b c" and printable("x" * 10, 5) == "xxxx…"


def test_only_the_deployment_s_own_pods_are_read() -> None:
    """A pod of the Deployment's ReplicaSet (named after it and the pod's template hash) is read; one someone else
    labelled so the selector finds it, the Canary candidate's (another Deployment's ReplicaSet), or one going away
    is not."""
    assert of_deployment(pod("a"), "digits")
    assert not of_deployment(pod("b", owner="digits-canary-5f7"), "digits")  # the candidate Deployment's
    assert not of_deployment(pod("c", owner="digits-666"), "digits")  # the hash label says another ReplicaSet
    assert not of_deployment(pod("d", hash_=""), "digits")
    assert not of_deployment(pod("e", deleting=True), "digits")
    for field, value in (("controller", False), ("controller", "true"), ("apiVersion", "example.com/v1")):
        forged = pod("f")
        forged["metadata"]["ownerReferences"][0][field] = value
        assert not of_deployment(forged, "digits"), (field, value)
    assert [p.name for p in health(pod("b"), pod("a"), pod("x", owner="other-5f7"))] == ["a", "b"]


def test_an_evicted_pod_is_not_judged() -> None:
    """A pod the kubelet evicted stays with phase Failed, reason Evicted, its container terminated (exit code 137)
    and never restarted: its ReplicaSet made another, so it is no crash loop of the revision (ContainerHealthy
    would never clear); nor is a pod that Succeeded."""
    gone = {"name": "server", "image": IMAGE, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                     "message": "The container could not be located"}}}  # fmt: skip
    evicted = pod("digits-5f7-e", gone)
    evicted["status"].update(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert not of_deployment(evicted, "digits")
    done = pod("digits-5f7-d", gone)
    done["status"]["phase"] = "Succeeded"
    assert not of_deployment(done, "digits")
    assert cause(health(evicted, done, pod("digits-5f7-a", running(20, restarts=0))), REV, NOW) is None


def test_the_newest_replica_set_is_the_one_the_progressing_condition_names() -> None:
    for message in ('Created new replica set "digits-9a9"', 'Found new replica set "digits-9a9"',
                    'ReplicaSet "digits-9a9" is progressing.', 'ReplicaSet "digits-9a9" has successfully progressed.',
                    'ReplicaSet "digits-9a9" has timed out progressing.'):  # fmt: skip
        assert newest_template_hash("digits", message) == "9a9"
    assert newest_template_hash("digits", 'ReplicaSet "digits-canary-9a9" is progressing.') is None
    assert newest_template_hash("digits", "Deployment is paused") is None
    assert newest_template_hash("digits", "") is None


def test_a_crash_loop_is_told_through_the_ready_moments_of_a_flap() -> None:
    """Waiting in CrashLoopBackOff, or just terminated in failure, is a crash loop; so is a container that restarted
    after a failure and runs (ready) for less than the kubelet's back-off reset: the moment between two crashes.
    One that has run longer since, never restarted, or is being created is not."""

    def judged(cs: dict[str, Any]) -> bool:
        return crash_looping(pod_health(pod("a", cs)).containers[0], NOW)

    assert judged(crashing())
    assert judged(running(20))
    assert not judged(running(RECOVERY_SECONDS + 1))
    assert not judged(running(20, restarts=0))
    just_died = {"name": "server", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    assert judged(just_died)
    assert not judged({**just_died, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}})
    assert not judged({"name": "server", "state": {"waiting": {"reason": "ContainerCreating"}}})
    # a forged start time that does not parse counts as just started, never as a crash
    assert not judged({**running(20, restarts=0), "state": {"running": {"startedAt": "yesterday"}}})


def test_the_cause_named_first_is_a_crash_then_an_image_then_the_scheduler() -> None:
    pull = {"name": "server", "image": "reg.example/m@sha256:ab", "state": {"waiting": {"reason": "ErrImagePull",
            "message": "rpc error: code = NotFound"}}}  # fmt: skip
    unschedulable = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                      "message": "0/3 nodes are available: 3 Insufficient memory.\n"}]  # fmt: skip
    pods = health(pod("a", conditions_=unschedulable), pod("b", pull), pod("c", crashing()))
    found = cause(pods, REV, NOW)
    assert found is not None and (found.trouble, found.pod) == (Trouble.CRASH_LOOP, "c")
    assert found.describe() == ("pod c: container server crash-looping (CrashLoopBackOff), last terminated Error "
                                "(exit code 1)")
    found = cause(pods[:2], REV, NOW)
    assert found is not None and found.describe() == (
        "pod b: container server image reg.example/m@sha256:ab not pulled (ImagePullBackOff)")  # fmt: skip
    found = cause(pods[:1], REV, NOW)
    assert found is not None
    assert found.describe() == "pod a unschedulable: 0/3 nodes are available: 3 Insufficient memory."
    # another revision's pods (the old ones of a rollout) say nothing about this one's
    assert cause(pods, OLD, NOW) is None and cause(None, REV, NOW) is None
    assert cause(health(pod("d", running(20, restarts=0))), REV, NOW) is None


def test_the_pods_are_read_only_while_the_revision_is_short_or_was_crash_looping() -> None:
    fixed = make_md(serving={"replicas": 2})
    assert not pods_wanted(fixed, deployment(REV, IMAGE, 2, 2))
    assert pods_wanted(fixed, deployment(REV, IMAGE, 2, 1))
    assert pods_wanted(fixed, deployment(REV, IMAGE, 2, 2, updated_replicas=1))  # a rollout's new pods
    # one replica, a rollout's surge: the old pod keeps available, ready and updated at 1 while the new one crashes
    one = make_md(serving={"replicas": 1})
    assert not pods_wanted(one, deployment(REV, IMAGE, 1, 1))
    assert pods_wanted(one, deployment(REV, IMAGE, 1, 1, status_replicas=2, updated_replicas=1))
    assert pods_wanted(make_md(serving=HPA), deployment(REV, IMAGE, 1, 1))  # below minReplicas 2
    flapping = make_md(serving={"replicas": 2}, status=status(crash_since=10))
    assert pods_wanted(flapping, deployment(REV, IMAGE, 2, 2))  # all ready between crashes: the clock is kept


# -- Deployed, ContainerHealthy and the stall ----------------------------------------------------------------------


def status(deployed: tuple[str, str, float] | None = None, crash_since: float | None = None,
           serving: str = OLD) -> dict[str, Any]:  # fmt: skip
    """The previous status: ``serving`` serves; Deployed (status, reason, since seconds), ContainerHealthy False
    since ``crash_since`` seconds."""
    conds: list[dict[str, Any]] = []
    if deployed is not None:
        conds.append({"type": "Deployed", "status": deployed[0], "reason": deployed[1], "message": "",
                      "lastTransitionTime": ago(deployed[2])})  # fmt: skip
    if crash_since is not None:
        conds.append({"type": "ContainerHealthy", "status": "False", "reason": "ServingCrashLoop", "message": "",
                      "lastTransitionTime": ago(crash_since)})  # fmt: skip
    return {"servingRevision": serving, "servingImage": IMAGE, "observedGeneration": 4, "conditions": conds}


def md_of(prev: dict[str, Any], **serving: Any) -> Any:
    spec = {"replicas": 2, "rollout": {"progressDeadlineSeconds": DEADLINE}} | serving
    return make_md(status=prev, serving=spec)


def judged(md: Any, dep: Any, pods: tuple[Any, ...], ready: int = 0) -> Any:
    c = ctx(md, Observed(deployment=dep, endpoints=routed((REV, ready)), serving_pods=pods))
    assert c.revision == REV
    return deploy(c, ServingTarget(REV, IMAGE))


def new_rollout(available: int = 0, **kw: Any) -> Any:
    """REV's Deployment rolling out (the old revision's pods still there): ``available`` of 2 of the new template."""
    return deployment(REV, IMAGE, 2, available, progress_reason="ReplicaSetUpdated", **kw)


def old_pod(name: str = "digits-0ld-x") -> dict[str, Any]:
    """A pod of the old revision's ReplicaSet, ready (it serves)."""
    return pod(name, running(900, restarts=0), rev=OLD, hash_="0ld", owner="digits-0ld",
               conditions_=[{"type": "Ready", "status": "True"}])  # fmt: skip


def beside_old(**kw: Any) -> Any:
    """REV's Deployment rolling out beside the old revision: its surge pod (not available) and the old
    revision's two pods, available."""
    return new_rollout(2, status_replicas=3, updated_replicas=1, **kw)


def test_a_rollout_whose_pods_crash_loop_says_why_and_is_stalled_past_the_deadline() -> None:
    """The new revision's pods crash-loop: Deployed (and so Ready) says which pod, which container and how it last
    ended, ContainerHealthy False starts the clock, the old revision keeps serving; past progressDeadlineSeconds of
    crash loop, ServingCrashLoop (Stalled) with the old revision still serving."""
    pods = health(pod("digits-5f7-a", crashing(message="Segmentation fault in libtensorflowlite")))
    first = judged(md_of(status(("False", "RollingOut", 5))), new_rollout(), pods)
    got = conditions(first.effects)
    told = ("pod digits-5f7-a: container server crash-looping (CrashLoopBackOff), last terminated Error (exit code 1): "
            "Segmentation fault in libtensorflowlite")  # fmt: skip
    assert got[ConditionType.DEPLOYED] == (False, Reason.ROLLING_OUT, f"0/2 replicas of {REV} available; {told}")
    assert got[ConditionType.CONTAINER_HEALTHY] == (False, Reason.SERVING_CRASH_LOOP, told)
    assert first.effects.progress is not None and told in first.effects.progress.message  # Ready's message
    assert first.effects.failure is None and first.serving_revision == OLD
    assert first.effects.requeue_after == DEADLINE + 1  # the crash loop's deadline, from the first look
    # 10 s into the crash loop: 20 s to go
    assert judged(md_of(status(("False", "RollingOut", 60), 10)), new_rollout(), pods).effects.requeue_after == 21
    late = judged(md_of(status(("False", "RollingOut", 60), DEADLINE + 1)), beside_old(), pods)
    deployed = conditions(late.effects)[ConditionType.DEPLOYED]
    assert deployed[:2] == (False, Reason.SERVING_CRASH_LOOP)
    steady = told.replace(" (CrashLoopBackOff)", "")  # the stall's words leave out the state of the moment
    assert deployed[2] == (f"pods of {REV} crash-loop for more than 30s (progressDeadlineSeconds 30); {steady}; "
                           f"revision {OLD} keeps serving")  # fmt: skip
    assert conditions(late.effects)[ConditionType.CONTAINER_HEALTHY] == (False, Reason.SERVING_CRASH_LOOP, steady)
    assert late.effects.failure is not None and late.effects.failure.reason == Reason.SERVING_CRASH_LOOP
    assert late.serving_revision == OLD and late.effects.progress is None


def test_the_crash_loop_messages_do_not_follow_restarts_or_back_off() -> None:
    """Each restart changes the restart count, the back-off and the times: the messages stay the same, so a
    crash-looping pod does not rewrite status (or post an Event) at each restart."""
    md = md_of(status(("False", "RollingOut", 60), 10))
    seen = {tuple(sorted((t.value, m) for t, (_s, _r, m) in conditions(
        judged(md, new_rollout(), health(pod("digits-5f7-a", crashing(restarts=n)))).effects).items()))
        for n in (1, 2, 7, 30)}  # fmt: skip
    assert len(seen) == 1


def test_a_ready_then_crash_flap_does_not_reset_the_clock_nor_end_the_stall() -> None:
    """The stalled revision's pods are all ready for a moment between crashes: still ServingCrashLoop (a flap is no
    recovery); once they have run the kubelet's back-off reset without a crash, the stall is over."""
    md = md_of(status(("False", "ServingCrashLoop", 120), 120, serving=REV))
    up = deployment(REV, IMAGE, 2, 2, progress_reason="NewReplicaSetAvailable")
    flap = judged(md, up, health(pod("digits-5f7-a", running(20)), pod("digits-5f7-b", running(25))), ready=2)
    assert conditions(flap.effects)[ConditionType.DEPLOYED][:2] == (False, Reason.SERVING_CRASH_LOOP)
    assert flap.effects.failure is not None
    # nothing would wake the operator when they have run long enough: it looks again then (the later pod's time)
    assert flap.effects.requeue_after == RECOVERY_SECONDS - 20 + 1
    assert conditions(flap.effects)[ConditionType.DEPLOYED][2].endswith(f"; only the ready pods of {REV} serve")
    well = health(pod("digits-5f7-a", running(RECOVERY_SECONDS + 5)),
                  pod("digits-5f7-b", running(RECOVERY_SECONDS + 9)))  # fmt: skip
    over = judged(md, up, well, ready=2)
    got = conditions(over.effects)
    assert got[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE) and ConditionType.CONTAINER_HEALTHY not in got
    # before the deadline, the moment all are ready is Deployed (they serve), and ContainerHealthy keeps its clock
    early = judged(md_of(status(("False", "RollingOut", 10), 10, serving=REV)), up,
                   health(pod("digits-5f7-a", running(20))), ready=2)  # fmt: skip
    got = conditions(early.effects)
    assert got[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)
    assert got[ConditionType.CONTAINER_HEALTHY][:2] == (False, Reason.SERVING_CRASH_LOOP)
    assert early.effects.requeue_after == RECOVERY_SECONDS - 20 + 1


def test_a_fix_that_keeps_the_revision_judges_only_the_new_template_s_pods() -> None:
    """Raising the memory limit the OOM message asks for keeps the revision but changes the pod template: until
    the Deployment runs it (and its controller observed it) no pod is judged, then only the pods of its newest
    ReplicaSet: the old template's OOMKilled pods neither keep the stall and its old clock nor are described with
    the new limit, and ContainerHealthy drops (its clock starts again if the new pods crash)."""
    md = md_of(status(("False", "ServingCrashLoop", 120), 120), resources={"limits": {"memory": "4Gi"}})
    old = pod("digits-5f7-a", crashing(reason="OOMKilled", code=137))
    fresh = pod("digits-9a9-b", running(5, restarts=0), hash_="9a9", owner="digits-9a9")
    pods = health(old, fresh)
    progressing = 'ReplicaSet "digits-9a9" is progressing.'
    for dep in (new_rollout(template="0ld"),  # the pass that applies the new template still sees the one before
                new_rollout(generation=3, progress_message=progressing),  # its controller has not observed it yet
                new_rollout(progress_message=progressing)):  # it runs it: only digits-9a9's pods speak
        got = conditions(judged(md, dep, pods).effects)
        assert got[ConditionType.DEPLOYED][:2] == (False, Reason.ROLLING_OUT), dep
        assert ConditionType.CONTAINER_HEALTHY not in got and "OOMKilled" not in got[ConditionType.DEPLOYED][2]
    # the new template's own pod crash-loops: that is told, with its clock from now
    again = health(old, pod("digits-9a9-b", crashing(reason="OOMKilled", code=137), hash_="9a9", owner="digits-9a9"))
    md_new = md_of(status(("False", "RollingOut", 5)), resources={"limits": {"memory": "4Gi"}})
    first = judged(md_new, new_rollout(progress_message=progressing), again)
    got = conditions(first.effects)
    assert "pod digits-9a9-b" in got[ConditionType.CONTAINER_HEALTHY][2]
    assert first.effects.failure is None


def test_a_fix_that_keeps_the_revision_and_stalls_says_what_serves_from_the_deployment_s_status() -> None:
    """A new template of the revision that served (a higher memory limit that still OOMs) crash-loops past the
    deadline: while the Deployment still runs available pods of the template before it, those keep serving; once
    none is left (or none is available) and no pod of the new one is ready, nothing serves, and the message says
    so rather than that ready pods keep serving."""
    md = md_of(status(("False", "RollingOut", 60), DEADLINE + 1, serving=REV), resources={"limits": {"memory": "4Gi"}})
    progressing = 'ReplicaSet "digits-9a9" is progressing.'
    ready = [{"type": "Ready", "status": "True"}]
    old = [pod(f"digits-5f7-{x}", running(900, restarts=0), conditions_=ready) for x in "ab"]
    oom = crashing(reason="OOMKilled", code=137)
    new = pod("digits-9a9-c", oom, hash_="9a9", owner="digits-9a9")

    def stalled(dep: Any, *pods: dict[str, Any]) -> str:
        out = judged(md, dep, health(*pods), ready=dep.available_replicas)
        reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
        assert reason == Reason.SERVING_CRASH_LOOP and "pod digits-9a9-c" in message, message
        assert "that are ready keep serving" not in message
        return str(message)

    # the rolling update's surge pod crash-loops: the old template's two pods are there and available
    surging = new_rollout(2, status_replicas=3, updated_replicas=1, progress_message=progressing)
    assert stalled(surging, *old, new).endswith(f"; the pods of {REV}'s previous template keep serving")
    # ... also when the new template's pod is ready for a moment between crashes (3 available, 1 of them new)
    flapping = pod("digits-9a9-c", running(20), hash_="9a9", owner="digits-9a9", conditions_=ready)
    up = new_rollout(3, status_replicas=3, updated_replicas=1, progress_message=progressing)
    assert stalled(up, *old, flapping).endswith(f"; the pods of {REV}'s previous template keep serving")
    # the old template's pods are gone (a maxUnavailable that let them go, a deleted Deployment): nothing serves
    gone = new_rollout(0, status_replicas=2, updated_replicas=2, progress_message=progressing)
    two = (new, pod("digits-9a9-d", oom, hash_="9a9", owner="digits-9a9"))
    assert stalled(gone, *two).endswith("; nothing serves now")
    # old pods counted but none available (their node lost): nothing serves either
    lost = new_rollout(0, status_replicas=3, updated_replicas=1, progress_message=progressing)
    assert stalled(lost, new).endswith("; nothing serves now")
    # no old pod left, one new pod ready between crashes: only that one serves, no older template is claimed
    alone = new_rollout(1, status_replicas=2, updated_replicas=2, progress_message=progressing)
    assert stalled(alone, new, pod("digits-9a9-d", running(20), hash_="9a9", owner="digits-9a9",
                                   conditions_=ready)).endswith(f"; only the ready pods of {REV} serve")  # fmt: skip


def test_a_new_revision_s_stall_names_the_old_one_only_while_its_pods_are_there() -> None:
    """One replica, maxSurge 1 / maxUnavailable 0: the new revision's pod is ready for a moment between crashes,
    the Deployment controller scales the old revision's ReplicaSet to 0, and the pod crashes again. The old
    revision no longer serves (no pod of it is left): neither the stall nor the controller's deadline says it
    keeps serving; servingRevision stays the revision last rolled out (what a new spec rolls back to)."""
    md = md_of(status(("False", "RollingOut", 60), DEADLINE + 1), replicas=1)
    progressing = 'ReplicaSet "digits-5f7" is progressing.'
    pods = health(pod("digits-5f7-a", crashing()))
    alone = deployment(REV, IMAGE, 1, 0, progress_reason="ReplicaSetUpdated", progress_message=progressing)
    assert (alone.status_replicas, alone.updated_replicas, alone.available_replicas) == (1, 1, 0)
    out = judged(md, alone, pods)
    reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
    assert reason == Reason.SERVING_CRASH_LOOP and message.endswith("; nothing serves now"), message
    assert OLD not in message and out.serving_revision == OLD
    # the controller's ProgressDeadlineExceeded path says the same
    timed_out = deployment(REV, IMAGE, 1, 0, progress_reason="ProgressDeadlineExceeded",
                           progress_deadline_exceeded=True,
                           progress_message='ReplicaSet "digits-5f7" has timed out progressing.')  # fmt: skip
    out = judged(md_of(status(("False", "RollingOut", 60)), replicas=1), timed_out, pods)
    message = conditions(out.effects)[ConditionType.DEPLOYED][2]
    assert message.startswith(f"rollout of {REV} made no progress") and message.endswith("; nothing serves now")
    assert OLD not in message
    # stalled, then the pod is ready again for a moment after a crash since the stall began: only it serves
    ready = [{"type": "Ready", "status": "True"}]
    stalled = md_of(status(("False", "ServingCrashLoop", 120), 120), replicas=1)
    flapped = deployment(REV, IMAGE, 1, 1, progress_reason="NewReplicaSetAvailable",
                         progress_message='ReplicaSet "digits-5f7" has successfully progressed.')  # fmt: skip
    out = judged(stalled, flapped, health(pod("digits-5f7-a", running(20), conditions_=ready)), ready=1)
    reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
    assert reason == Reason.SERVING_CRASH_LOOP and message.endswith(f"; only the ready pods of {REV} serve"), message
    # while the old revision's pod is there and available (the surge pod crash-loops), it keeps serving
    surging = deployment(REV, IMAGE, 1, 1, progress_reason="ReplicaSetUpdated", progress_message=progressing,
                         status_replicas=2, updated_replicas=1)  # fmt: skip
    with_old = health(old_pod(), pod("digits-5f7-a", crashing()))
    message = conditions(judged(md, surging, with_old).effects)[ConditionType.DEPLOYED][2]
    assert message.endswith(f"; revision {OLD} keeps serving"), message


def test_a_stall_holds_only_while_a_container_crashes_again_after_it_began() -> None:
    """One crash then a slow start past the deadline stalls the rollout; once every replica serves, the stall ends
    if no container has crashed since it began (the restarted one is "crash-looping" for 10 minutes by the
    kubelet's back-off reset, but it crashed before the stall: no flap). A node reboot's restart (the container
    lost, reason Unknown) after the stall is no crash either; a failure after it keeps the stall."""
    md = md_of(status(("False", "ServingCrashLoop", 120), 300, serving=REV))
    up = deployment(REV, IMAGE, 2, 2, progress_reason="NewReplicaSetAvailable")
    slow = health(pod("digits-5f7-a", running(200, restarts=1)), pod("digits-5f7-b", running(400, restarts=0)))
    got = conditions(judged(md, up, slow, ready=2).effects)
    assert got[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)
    rebooted = running(30, restarts=2)
    rebooted["lastState"]["terminated"].update(reason="Unknown", exitCode=255)
    got = conditions(judged(md, up, health(pod("digits-5f7-a", rebooted)), ready=2).effects)
    assert got[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)
    # it crashed again 31 s ago, after the stall began 120 s ago: still stalled
    again = judged(md, up, health(pod("digits-5f7-a", running(30, restarts=2))), ready=2)
    assert conditions(again.effects)[ConditionType.DEPLOYED][:2] == (False, Reason.SERVING_CRASH_LOOP)


def test_oomkilled_names_the_memory_limit_and_where_to_raise_it() -> None:
    pods = health(pod("digits-5f7-a", crashing(reason="OOMKilled", code=137)))
    prev = status(("False", "RollingOut", 5))
    limited = judged(md_of(prev, resources={"limits": {"memory": "512Mi"}}), new_rollout(), pods)
    message = conditions(limited.effects)[ConditionType.CONTAINER_HEALTHY][2]
    assert message.endswith("last terminated OOMKilled (exit code 137); its memory limit is 512Mi: raise "
                            "spec.serving.resources.limits.memory"), message  # fmt: skip
    no_limit = md_of(prev, resources={"requests": {"cpu": "1"}})
    unlimited = conditions(judged(no_limit, new_rollout(), pods).effects)[ConditionType.CONTAINER_HEALTHY][2]
    assert "no memory limit is set" in unlimited and "spec.serving.resources.limits.memory" in unlimited


def test_an_oomkilled_savedmodel_server_is_told_the_limit_its_pods_have() -> None:
    """A savedmodel export with the default resources runs with SAVEDMODEL_RESOURCES' limit (TensorFlow's), not the
    spec's default 512Mi: the message names the limit the pods have."""
    from modelship.resources.serving import SAVEDMODEL_RESOURCES
    from tests.unit.test_plan import make_md, valid_doc

    pods = health(pod("digits-5f7-a", crashing(reason="OOMKilled", code=137)))
    prev = status(("False", "RollingOut", 5))
    optimization = valid_doc()["spec"]["optimization"] | {"export": {"format": "savedmodel"}}
    md = make_md(status=prev, optimization=optimization,
                 serving={"replicas": 2, "rollout": {"progressDeadlineSeconds": DEADLINE}})  # fmt: skip
    from datetime import UTC, datetime

    from modelship.controller.podhealth import cause
    from modelship.controller.stages.pod_causes import cause_text

    message = cause_text(md, cause(pods, REV, datetime.now(UTC)))
    limit = SAVEDMODEL_RESOURCES.limits["memory"]
    assert limit != "512Mi" and f"its memory limit is {limit}:" in message, message


def test_what_serves_beside_a_stall_is_told_from_the_pod_list_not_the_store_s_counts() -> None:
    """The pods are listed now; the Deployment's status came through the watch at another moment. Whether pods of
    an older template still serve is told from the list (the Deployment's own pods, not terminating), so a count a
    moment old does not name a revision whose last pod just went, nor hide one still there; the counts speak only
    when no pod was listed."""
    md = md_of(status(("False", "RollingOut", 60), DEADLINE + 1), replicas=1)
    progressing = 'ReplicaSet "digits-5f7" is progressing.'
    new = pod("digits-5f7-a", crashing())

    def told(dep: Any, pods: tuple[Any, ...] | None) -> str:
        reason, message = conditions(judged(md, dep, pods).effects)[ConditionType.DEPLOYED][1:]
        assert reason in (Reason.SERVING_CRASH_LOOP, Reason.ROLLOUT_STALLED), (reason, message)
        return str(message)

    # the store still counts the old pod available; the list, read after it was scaled down, has none
    stale = deployment(REV, IMAGE, 1, 1, progress_reason="ReplicaSetUpdated", progress_message=progressing,
                       status_replicas=2, updated_replicas=1)  # fmt: skip
    assert told(stale, health(new)).endswith("; nothing serves now")
    # the store counts no pod of the old template yet; the list has it, ready: it keeps serving
    behind = deployment(REV, IMAGE, 1, 0, progress_reason="ReplicaSetUpdated", progress_message=progressing)
    assert told(behind, health(old_pod(), new)).endswith(f"; revision {OLD} keeps serving")
    # a terminating old pod (its endpoint is no longer ready) and a pod of another Deployment (the Canary's,
    # labelled alike) do not serve for it
    going = old_pod()
    going["metadata"]["deletionTimestamp"] = ago(1)
    other = pod("digits-canary-1a2-x", running(900, restarts=0), rev=OLD, hash_="1a2", owner="digits-canary-1a2",
                conditions_=[{"type": "Ready", "status": "True"}])  # fmt: skip
    assert told(stale, health(going, other, new)).endswith("; nothing serves now")
    # no pod listed (the controller's deadline, the pods not read): the counts
    exceeded = {"progress_deadline_exceeded": True, "progress_message": 'ReplicaSet "digits-5f7" has timed out'}
    prev = md_of(status(("False", "RollingOut", 60)), replicas=1)
    out = judged(prev, replace(stale, **exceeded), None)
    assert conditions(out.effects)[ConditionType.DEPLOYED][2].endswith(f"; revision {OLD} keeps serving")
    out = judged(prev, replace(behind, **exceeded), None)
    assert conditions(out.effects)[ConditionType.DEPLOYED][2].endswith("; nothing serves now")


def test_the_controller_s_deadline_names_the_cause() -> None:
    """The Deployment controller's ProgressDeadlineExceeded (a new template that never came up): ServingCrashLoop
    when its pods crash-loop, RolloutStalled with the pull or scheduling trouble named otherwise; a revision whose
    pods say nothing yet is looked at again soon (no watch wakes the operator when one starts crash-looping)."""
    prev = md_of(status(("False", "RollingOut", 60)))
    exceeded = beside_old(progress_deadline_exceeded=True, progress_message='ReplicaSet "digits-5f7" has timed out')
    out = judged(prev, exceeded, health(pod("digits-5f7-a", crashing())))
    assert conditions(out.effects)[ConditionType.DEPLOYED][:2] == (False, Reason.SERVING_CRASH_LOOP)
    pull = {"name": "server", "image": "reg.example/m@sha256:ab", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    out = judged(prev, exceeded, health(pod("digits-5f7-a", pull), old_pod(), old_pod("digits-0ld-y")))
    reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
    assert reason == Reason.ROLLOUT_STALLED and message == (
        f'rollout of {REV} made no progress: ReplicaSet "digits-5f7" has timed out; pod digits-5f7-a: container '
        f"server image reg.example/m@sha256:ab not pulled (ImagePullBackOff); revision {OLD} keeps serving")
    assert ConditionType.CONTAINER_HEALTHY not in conditions(out.effects)  # an image not pulled is no crash
    starting = judged(prev, new_rollout(), health(pod("digits-5f7-a", {"name": "server", "state": {"waiting": {
        "reason": "ContainerCreating"}}})))  # fmt: skip
    assert starting.effects.requeue_after == 60  # short for 60 s: the look backs off (pod_look_after)
    assert judged(prev, new_rollout(), ()).effects.requeue_after == 60
    assert judged(prev, new_rollout(), None).effects.requeue_after is None  # not read: nothing to look at again


def test_the_look_at_pods_that_say_nothing_backs_off() -> None:
    """A shortfall no pod explains (a ResourceQuota, CreateContainerConfigError, a probe that never passes) is
    looked at 15 s after it began, then after as long again (doubling), at most every 5 minutes: not a pod LIST
    every 15 s for ever."""
    def after(deployed: tuple[str, str, float] | None, progressed: float | None = None) -> float:
        dep = new_rollout(progress_updated=ago(progressed) if progressed is not None else None)
        return pod_look_after(md_of(status(deployed)).status, dep, NOW)

    assert after(None) == after(("True", "Available", 900)) == POD_LOOK_SECONDS  # it is short from now
    assert after(("False", "RollingOut", 3)) == POD_LOOK_SECONDS
    assert [after(("False", "RollingOut", s)) for s in (15, 30, 60, 120, 240)] == [15, 30, 60, 120, 240]
    assert after(("False", "RollingOut", 3600)) == POD_LOOK_MAX_SECONDS == 300
    # a rollout that starts after a long optimization (Deployed False since): its controller's progress counts
    assert after(("False", "PreviousRevisionServing", 3600), progressed=2) == POD_LOOK_SECONDS
    assert after(("False", "RollingOut", 3600), progressed=60) == 60
    quota = judged(md_of(status(("False", "RollingOut", 7200))), new_rollout(), ())  # no pod created
    assert quota.effects.requeue_after == POD_LOOK_MAX_SECONDS


def test_a_scale_under_an_hpa_restarts_the_look_s_back_off() -> None:
    """A scale keeps the Deployment's Progressing condition as it was (its controller runs no rollout for it), so
    a shortfall long under way, whose look has backed off to 5 minutes, is looked at 15 s after the HPA's last
    scale (its status.lastScaleTime), then after as long again: the new pods a scale makes are seen soon."""
    def after(scaled: float | None, long: float = 3600) -> float:
        at = ago(scaled) if scaled is not None else None
        return pod_look_after(md_of(status(("False", "RollingOut", long))).status, new_rollout(), NOW, at)

    assert after(None) == POD_LOOK_MAX_SECONDS
    assert after(2) == POD_LOOK_SECONDS and after(60) == 60 and after(7200) == POD_LOOK_MAX_SECONDS
    assert after(-30) == POD_LOOK_SECONDS  # a stamp ahead of now (a skewed clock) counts as now
    assert after(3600, long=20) == 20  # Deployed turning False later still counts from then
    # through the stage: the HPA's stamp, read with the pass, sets when to look again at pods that say nothing
    c = ctx(md_of(status(("False", "RollingOut", 7200))), Observed(deployment=new_rollout(), endpoints=routed(),
                                                                   serving_pods=(), last_scaled=ago(40)))  # fmt: skip
    assert deploy(c, ServingTarget(REV, IMAGE)).effects.requeue_after == 40


def test_the_hpa_s_last_scale_is_read_from_the_hpa_the_modeldeployment_controls() -> None:
    """status.lastScaleTime of the ModelDeployment's own HPA (its controller reference) reaches the pass, from the
    store (no API read); an HPA of the same name another owner controls is not read."""
    owner = {"uid": "u-1", "controller": True, "kind": "ModelDeployment", "name": "digits"}
    labels = {MODELDEPLOYMENT_LABEL: "digits"}
    meta = {"name": "digits", "namespace": "ml", "labels": labels, "ownerReferences": [owner]}
    hpa: dict[str, Any] = {"metadata": meta, "status": {"lastScaleTime": ago(40)}}
    store = Store()
    store.put("HorizontalPodAutoscaler", hpa)
    md = make_md(serving=HPA)
    assert Reconciler(RefusingKube(), store, CONFIG).observe(md).last_scaled == ago(40)  # type: ignore[arg-type]
    owner["uid"] = "someone-else"
    store.put("HorizontalPodAutoscaler", hpa)
    assert Reconciler(RefusingKube(), store, CONFIG).observe(md).last_scaled is None  # type: ignore[arg-type]
    assert last_scale_time(None) is None and last_scale_time({"status": {}}) is None


def below_floor_md(prev: dict[str, Any]) -> Any:
    return make_md(status=prev, serving={**HPA, "rollout": {"progressDeadlineSeconds": DEADLINE}})


def test_below_min_replicas_a_flap_does_not_reset_the_clock() -> None:
    """Under an HPA, crash-looping pods reach minReplicas between crashes: Deployed turned True for that moment,
    and the Deployment's Available condition True too. Below the floor again, the crash loop's clock (kept
    through the flap) counts: stalled at once past the deadline, as ServingCrashLoop."""
    prev = below_floor_md(status(("True", "Available", 5), DEADLINE + 60, serving=REV))
    pods = health(pod("digits-5f7-a", running(RECOVERY_SECONDS + 100, restarts=0)), pod("digits-5f7-b", crashing()))
    out = judged(prev, scaled(2, 1, unavailable_since=ago(3)), pods, ready=1)
    reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
    assert reason == Reason.SERVING_CRASH_LOOP and out.effects.failure is not None
    assert message.startswith(f"pods of {REV} crash-loop for more than 30s (progressDeadlineSeconds 30)")
    assert "; pod digits-5f7-b: container server crash-looping, last terminated Error" in message
    # without the crash loop's clock (its pods not crash-looping), the drop is now: the whole deadline to go
    quiet = below_floor_md(status(("True", "Available", 5), serving=REV))
    out = judged(quiet, scaled(2, 1, unavailable_since=ago(3)), pods[:1], ready=1)
    assert conditions(out.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLING_OUT
    assert out.effects.requeue_after == POD_LOOK_SECONDS  # the missing pod says nothing yet: look again soon
    unread = judged(quiet, scaled(2, 1, unavailable_since=ago(3)), None, ready=1)
    assert unread.effects.requeue_after == DEADLINE + 1


class RefusingKube:
    """An API whose pod list fails (a Role without list on pods, a timeout), then answers."""

    def __init__(self) -> None:
        self.lists = 0
        self.refuse = True

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        if self.refuse:
            raise ApiException(status=403, reason="Forbidden")
        return [pod("digits-5f7-a", crashing())]


def test_a_pod_list_that_fails_is_logged_once_and_the_pass_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """The pod list only explains why a revision does not serve: refused (403) or timed out, the pass goes on
    without it (None, as when no reason to read them), logged once until a list succeeds again."""
    kube = RefusingKube()
    rec = Reconciler(kube, Store(), CONFIG)  # type: ignore[arg-type]
    md = md_of(status(("False", "RollingOut", 5)))
    short = new_rollout()
    with caplog.at_level(logging.WARNING, logger="modelship.reconcile"):
        assert rec._serving_pods(md, short) is None
        assert rec._serving_pods(md, short) is None
    warned = [r for r in caplog.records if "serving pods not listed" in r.getMessage()]
    assert len(warned) == 1 and "Forbidden" in warned[0].getMessage() and kube.lists == 2
    kube.refuse = False
    listed = rec._serving_pods(md, short)
    assert listed is not None and [p["metadata"]["name"] for p in listed] == ["digits-5f7-a"]


def test_the_crash_is_told_as_the_container_is_now() -> None:
    """"(CrashLoopBackOff)" only while the kubelet holds the container in its back-off; a container running again
    between two crashes, or one that just ended, is told so (its last termination either way)."""
    def told(cs: dict[str, Any]) -> str:
        found = cause(health(pod("digits-5f7-a", cs)), REV, NOW)
        assert found is not None and found.trouble == Trouble.CRASH_LOOP
        return found.describe()

    assert told(crashing()) == ("pod digits-5f7-a: container server crash-looping (CrashLoopBackOff), last "
                                "terminated Error (exit code 1)")  # fmt: skip
    assert told(running(20)) == ("pod digits-5f7-a: container server running again after a crash, last terminated "
                                 "Error (exit code 1)")  # fmt: skip
    just_died = {"name": "server", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    assert told(just_died) == "pod digits-5f7-a: container server crashed, last terminated OOMKilled (exit code 137)"


def test_a_first_rollout_stalled_in_a_crash_loop_says_nothing_serves_yet() -> None:
    """No revision served before and none of the new pods is ready: the stall does not claim ready pods serve."""
    prev = status(("False", "RollingOut", 60), DEADLINE + 1)
    del prev["servingRevision"], prev["servingImage"]
    md = md_of(prev)
    out = judged(md, new_rollout(), health(pod("digits-5f7-a", crashing())))
    reason, message = conditions(out.effects)[ConditionType.DEPLOYED][1:]
    assert reason == Reason.SERVING_CRASH_LOOP and message.endswith("; nothing serves yet"), message
    assert "keep serving" not in message and "keeps serving" not in message


def test_a_first_rollout_partly_up_says_its_ready_pods_serve() -> None:
    """A first rollout with some pods ready and one that never comes up (crash-looping, or pending on a quota):
    its stall does not say nothing serves while pods of it do; "nothing serves yet" only when none is ready."""
    progressing = 'ReplicaSet "digits-5f7" is progressing.'
    dep = deployment(REV, IMAGE, 3, 2, progress_reason="ReplicaSetUpdated", progress_message=progressing)
    ready = [{"type": "Ready", "status": "True"}]
    up = [pod(f"digits-5f7-{c}", running(900, restarts=0), conditions_=ready) for c in "ab"]
    partly = health(*up, pod("digits-5f7-c", crashing()))
    assert serving_meanwhile(REV, None, dep, partly) == f"; only the ready pods of {REV} serve"
    assert serving_meanwhile(REV, None, dep, None) == f"; only the ready pods of {REV} serve"  # the counts
    assert serving_meanwhile(REV, None, dep, health(pod("digits-5f7-c", crashing()))) == "; nothing serves yet"
    prev = status(("False", "RollingOut", 60), DEADLINE + 1)
    del prev["servingRevision"], prev["servingImage"]
    message = conditions(judged(md_of(prev), dep, partly).effects)[ConditionType.DEPLOYED][2]
    assert message.endswith(f"; only the ready pods of {REV} serve"), message


def test_older_pods_are_named_by_the_revision_they_carry() -> None:
    """r-old served; r2 stalled and its ready moment let r-old's pods go; r3 is pushed while r2's pods are ready
    between crashes: those are the older pods, and they are r2's, not r-old's."""
    progressing = 'ReplicaSet "digits-5f7" is progressing.'
    dep = deployment(REV, IMAGE, 1, 1, progress_reason="ReplicaSetUpdated", progress_message=progressing,
                     status_replicas=2, updated_replicas=1)  # fmt: skip
    r2 = pod("digits-2b2-x", running(20), rev="r2", hash_="2b2", owner="digits-2b2",
             conditions_=[{"type": "Ready", "status": "True"}])  # fmt: skip
    new = pod("digits-5f7-a", crashing())
    assert serving_meanwhile(REV, OLD, dep, health(r2, new)) == "; revision r2 keeps serving"
    assert serving_meanwhile(REV, OLD, dep, health(r2, old_pod(), new)) == f"; revisions {OLD}, r2 keep serving"
    assert serving_meanwhile(REV, OLD, dep, health(old_pod(), new)) == f"; revision {OLD} keeps serving"


class CountingKube(MemoryKube):
    """An API that counts its pod lists and answers with the stable pod and the candidate's; the ReplicaSet
    ``<deployment>-<hash>`` has uid ``rs-<its name>`` and the store's Deployment of that name for controller."""

    def __init__(self, store: Store, candidate: str) -> None:
        super().__init__(store)
        self.pod_lists = 0
        self.candidate = candidate

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind != "ReplicaSet":
            return super().get(api_version, kind, namespace, name)
        dep = self.store.get("Deployment", namespace, name.rpartition("-")[0])
        refs = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"], "controller": True,
                 "uid": dep["metadata"]["uid"]}] if dep else []  # fmt: skip
        return {"metadata": {"name": name, "namespace": namespace, "uid": f"rs-{name}", "ownerReferences": refs}}

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        if kind != "Pod":
            return []
        self.pod_lists += 1
        ready = [{"type": "Ready", "status": "True"}]
        candidate = pod("digits-canary-9c9-a", running(60), rev=self.candidate, owner="digits-canary-9c9",
                        hash_="9c9", conditions_=ready)  # fmt: skip
        return [pod("digits-5f7-a", crashing()), candidate]


def test_an_analysing_canary_whose_stable_deployment_is_short_lists_the_serving_pods_once_a_pass() -> None:
    """The analysis reads the pods' own figures and the short stable Deployment's pods say why it is short: one
    list serves both (two before)."""
    serving = {"replicas": 2, "rollout": {"strategy": "Canary"}}
    cand = revision(make_md(serving=serving).spec)
    rollout = {"candidate": cand, "stable": REV, "phase": "Shadow", "step": 0, "startedAt": ago(30),
               "phaseStartedAt": ago(20)}  # fmt: skip
    md = make_md(serving=serving, status={**status(serving=REV), "rollout": rollout})
    owner = [{"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "name": "digits", "uid": "u-1",
              "controller": True}]  # fmt: skip
    store = Store()
    store.put("Deployment", {
        "metadata": {"name": "digits", "namespace": "ml", "uid": "d-1", "generation": 2, "ownerReferences": owner,
                     "labels": {"modelship.io/modeldeployment": "digits"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {REVISION_LABEL: REV}},
                                             "spec": {"containers": [{"name": "server", "image": IMAGE}]}}},
        "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "availableReplicas": 1,
                   "updatedReplicas": 2},
    })  # fmt: skip
    store.put("Deployment", {  # the candidate's, which made its pod (the analysis reads no pod of another maker)
        "metadata": {"name": "digits-canary", "namespace": "ml", "uid": "d-2", "generation": 1,
                     "ownerReferences": owner, "labels": {"modelship.io/modeldeployment": "digits"}},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {REVISION_LABEL: cand}},
                                             "spec": {"containers": [{"name": "server", "image": IMAGE}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                   "updatedReplicas": 1},
    })  # fmt: skip
    kube = CountingKube(store, cand)
    fetched: list[str] = []

    def fetch(p: dict[str, Any], port: int) -> str:
        fetched.append(p["metadata"]["name"])
        return ""

    observed = Reconciler(kube, store, CONFIG, fetch_metrics=fetch).observe(md)  # type: ignore[arg-type]
    assert observed.deployment is not None and pods_wanted(md, observed.deployment)  # the stable one is short
    assert observed.serving_pods is not None and [p.name for p in observed.serving_pods] == ["digits-5f7-a"]
    assert observed.readings is not None and fetched == ["digits-canary-9c9-a"]  # the ready pod's figures are read
    assert kube.pod_lists == 1


def test_last_failure_is_new_whenever_its_message_changes() -> None:
    """status.lastFailure's time is when this failure, message and all, was first seen: a spec fixed in one field
    and broken in another (Resolve fails with the same reason and no revision), or a memory limit raised and still
    too low (the same reason on the same revision, a new limit in the message), is a new failure with a new time.
    The crash-loop stall's ending, which changes with the pods' readiness, moves it too (review13: keeping the
    first time on a changed message hid when a new failure began)."""
    began = LastFailure(stage="Resolve", reason="InvalidSpec", message="spec.a: bad",
                        time=rfc3339(NOW - timedelta(hours=5)))  # fmt: skip
    same = Failure(StageName.RESOLVE, Reason.INVALID_SPEC, "spec.a: bad")
    assert kstatus.record_failure(began, same, None, NOW) is began
    other = Failure(StageName.RESOLVE, Reason.INVALID_SPEC, "spec.b: bad")
    fixed_a = kstatus.record_failure(began, other, None, NOW)
    assert (fixed_a.time, fixed_a.message) == (rfc3339(NOW), "spec.b: bad")


def test_a_stalled_crash_loop_keeps_its_status_and_last_failure_from_one_cycle_to_the_next() -> None:
    """The revision's pod crash-loops past the deadline: stalled, with lastFailure. A cycle later the same pod is
    running again after one more crash (another restart count, state, termination time): the failure is the same,
    so the whole status, lastFailure's time included (when it began), is what it was: no status write per cycle."""
    spec = {"replicas": 2, "rollout": {"progressDeadlineSeconds": DEADLINE}}
    rev = revision(make_md(build=False, serving=spec).spec)
    prev = status(("False", "RollingOut", 60), DEADLINE + 1)
    md = make_md(build=False, status=prev, serving=spec)
    optimized = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    dep = beside_old(revision=rev, progress_message='ReplicaSet "digits-5f7" is progressing.')

    def look(container: dict[str, Any], md: Any, now: Any) -> dict[str, Any]:
        pods = health(pod("digits-5f7-a", container, rev=rev), old_pod())
        observed = Observed(jobs=optimized, deployment=dep, endpoints=routed((OLD, 2)), serving_pods=pods)
        return plan(md, observed, CONFIG, now).status

    first = look(crashing(restarts=5, message="model failed to load"), md, NOW)
    assert cond(first, "Stalled")["status"] == "True" and cond(first, "Deployed")["reason"] == "ServingCrashLoop"
    assert first["lastFailure"]["time"] == rfc3339(NOW)
    later = NOW + timedelta(seconds=90)
    again = {"name": "server", "image": IMAGE, "ready": False, "restartCount": 6,
             "state": {"running": {"startedAt": rfc3339(later - timedelta(seconds=2))}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "model failed to load",
                                          "finishedAt": rfc3339(later - timedelta(seconds=3))}}}  # fmt: skip
    second = look(again, make_md(build=False, status=first, serving=spec), later)
    assert second["lastFailure"] == first["lastFailure"]
    assert second == first


def test_a_rollout_counts_only_the_new_template_s_available_pods() -> None:
    """REV rolls out beside the old revision, whose two pods are available (the Deployment's availableReplicas
    counts them): RollingOut's count is of the new template's pods alone, from the pods listed (Ready ones of the
    ReplicaSet its Progressing condition names), else bounded from the Deployment's counts (the old pods may or may
    not be available), and exact when those leave no doubt."""
    progressing = {"progress_message": 'ReplicaSet "digits-5f7" is progressing.'}
    starting = pod("digits-5f7-a", running(5, restarts=0))  # not Ready yet
    up = pod("digits-5f7-b", running(60, restarts=0), conditions_=[{"type": "Ready", "status": "True"}])

    def message(dep: Any, pods: tuple[Any, ...] | None) -> str:
        out = judged(md_of(status(("False", "RollingOut", 5))), dep, pods)
        reason, said = conditions(out.effects)[ConditionType.DEPLOYED][1:]
        assert reason == Reason.ROLLING_OUT and out.serving_revision == OLD
        return said

    surge = beside_old(**progressing)  # 3 pods: the new one, not available, and the two old ones, available
    assert message(surge, health(starting, old_pod(), old_pod("digits-0ld-y"))) == f"0/2 replicas of {REV} available"
    assert message(surge, None) == f"0 to 1 of 2 replicas of {REV} available"  # not listed: the counts bound it
    # one new pod available, a second one starting, one old pod left (available)
    second = new_rollout(2, status_replicas=3, updated_replicas=2, **progressing)
    assert message(second, health(up, starting, old_pod())) == f"1/2 replicas of {REV} available"
    assert message(second, None) == f"1 to 2 of 2 replicas of {REV} available"
    # the two new pods available, the old one going: no doubt left
    both = new_rollout(3, status_replicas=3, updated_replicas=2, **progressing)
    assert message(replace(both, available_replicas=3), None) == f"2/2 replicas of {REV} available"
