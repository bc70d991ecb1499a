"""A revision whose serving pods crash-loop, on the real control plane (the Deployment, ReplicaSet and EndpointSlice
controllers; kwok writes the pods' status as a kubelet restarting a crashing container would): the operator lists
the pods by label under its own RBAC, names the crash in Deployed, Ready and ContainerHealthy, stalls once it has
lasted progressDeadlineSeconds while the previous revision keeps serving, and neither a ready-then-crash flap nor a
hostile termination message gets past it (the clock kept, the text bounded and on one line); once the flap let the
Deployment controller take the previous revision's pod away, the stall no longer says that revision serves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelship.controller.conditions import rfc3339
from modelship.controller.podhealth import newest_template_hash
from modelship_dev.cluster import ANNOTATION_CRASH
from tests.integration import no_resync
from tests.integration.cluster import condition, wait_for
from tests.integration.rollout import NEW_IMAGE
from tests.integration.test_operator import MSG, Cluster, build_result, md_doc, opt_summary
from tests.integration.test_ready_routes import _slice_pods

# no periodic resync: what wakes the ModelDeployment is a watch event (the Deployment's) or the operator's own timer
operator, k = no_resync.operator, no_resync.k

REVISION = "modelship.io/revision"
HOSTILE = "\x1b[2J\x1b[31mFAKE Ready=True\r\nStalled\tFalse\x00\u202eesrever\u2028" + "A" * 20_000


def _pods(k: Cluster, rev: str) -> list[Any]:
    selector = f"{REVISION}={rev},app.kubernetes.io/component=server"
    return sorted((p for p in k.core.list_namespaced_pod(k.ns, label_selector=selector).items
                   if p.metadata.deletion_timestamp is None), key=lambda p: p.metadata.name)  # fmt: skip


def _events(k: Cluster, reason: str) -> list[Any]:
    events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
    return [e for e in events if e.reason == reason and e.involved_object.kind == "ModelDeployment"]


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def _flap(k: Cluster, pod: str, message: str) -> None:
    """The pod's server container restarted and is ready for a moment (its last run ended with ``message``)."""
    now = _now()
    k.core.patch_namespaced_pod_status(pod, k.ns, {"status": {
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "server", "image": NEW_IMAGE, "imageID": "", "ready": True, "started": True,
                               "restartCount": 6, "state": {"running": {"startedAt": now}},
                               "lastState": {"terminated": {"exitCode": 139, "reason": "Error", "message": message,
                                                            "startedAt": now, "finishedAt": now}}}]}})  # fmt: skip


def _crash(k: Cluster, pod: str, image: str = NEW_IMAGE, reason: str = "Error", code: int = 139,
           message: str | None = None) -> None:  # fmt: skip
    """... and crashes again: back in the kubelet's restart back-off (its last run ended with ``reason``, exit
    ``code`` and, when given, the termination ``message``)."""
    now = _now()
    ended: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}
    if message is not None:
        ended["message"] = message
    k.core.patch_namespaced_pod_status(pod, k.ns, {"status": {
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "server", "image": image, "imageID": "", "ready": False, "started": False,
                               "restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                               "lastState": {"terminated": ended}}]}})  # fmt: skip


def test_a_revision_whose_pods_crash_loop_says_why_stalls_and_the_previous_one_serves(k: Cluster) -> None:
    # one replica: when the flap below makes the new pod available, the Deployment controller only scales the old
    # ReplicaSet down; with two, it would scale the new one up, and a fresh crash-looping pod whose name sorts first
    # would be the one named (the cause is the first found by pod name), never the flapped one
    doc = md_doc(rollout={"progressDeadlineSeconds": 30}, replicas=1)
    k.apply(doc)
    old = k.wait_condition("Ready", "True", timeout=120)["status"]["revision"]
    # a new revision (another optimization, another image) whose pods crash at start
    doc["spec"]["optimization"]["gate"]["maxDrop"] = 0.02
    doc["spec"]["optimization"]["job"]["podAnnotations"] = {MSG: opt_summary(candidate="prune+dynamic")}
    doc["spec"]["build"]["job"]["podAnnotations"] = {MSG: build_result(NEW_IMAGE)}
    doc["spec"]["serving"]["podAnnotations"] = {ANNOTATION_CRASH: "true"}
    k.apply(doc)
    s = k.wait_md(lambda o: "crash-looping" in ((condition(o, "Deployed") or {}).get("message") or ""),
                  what="Deployed naming the crash loop", timeout=120)  # fmt: skip
    new = s["status"]["revision"]
    assert new != old
    crashing = [p.metadata.name for p in _pods(k, new)]
    # the pods judged are those of the newest ReplicaSet the real Deployment controller's Progressing names
    progressing = next(c for c in k.apps.read_namespaced_deployment("digits", k.ns).status.conditions
                       if c.type == "Progressing")  # fmt: skip
    hashes = {p.metadata.labels["pod-template-hash"] for p in _pods(k, new)}
    assert {newest_template_hash("digits", progressing.message or "")} == hashes, (progressing, hashes)
    deployed, ready, healthy = condition(s, "Deployed"), condition(s, "Ready"), condition(s, "ContainerHealthy")
    told = deployed["message"].split("; ", 1)[1]
    assert any(told.startswith(f"pod {name}: container server crash-looping (CrashLoopBackOff), last terminated "
                               "Error (exit code 1)") for name in crashing), deployed  # fmt: skip
    assert (healthy["status"], healthy["reason"]) == ("False", "ServingCrashLoop") and told in healthy["message"]
    if deployed["reason"] == "RollingOut":  # not yet past the deadline: Ready says the same, Reconciling
        assert ready["status"] == "False" and told in ready["message"]
    # past progressDeadlineSeconds of crash loop: Stalled, the previous revision serving throughout
    s = k.wait_md(lambda o: (condition(o, "Stalled") or {}).get("status") == "True", what="Stalled", timeout=90)
    deployed = condition(s, "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "ServingCrashLoop"), deployed
    # the stall's words leave out the container's state of the moment (it changes at each restart)
    assert "container server crash-looping, last terminated Error (exit code 1)" in deployed["message"], deployed
    assert deployed["message"].endswith(f"; revision {old} keeps serving"), deployed
    assert condition(s, "Ready")["reason"] == "ServingCrashLoop" and s["status"]["lastFailure"]["stage"] == "Deploy"
    assert s["status"]["servingRevision"] == old
    serving = [p.metadata.name for p in _pods(k, old)]
    routed = {name for name, ready in _slice_pods(k, "digits").items() if ready}
    assert len(serving) == 1 and routed == set(serving), (serving, routed)
    clock = condition(s, "ContainerHealthy")["lastTransitionTime"]
    assert len(_events(k, "ContainerHealthyServingCrashLoop")) == 1

    # a flap: the first crashing pod is ready for a moment, its last run ended with a hostile termination message;
    # the Deployment's status changes (a watch event): the stall holds, the clock is kept, the text is tamed
    first = crashing[0]
    # its crash comes after the stall began (stamps have whole seconds: one in the stall's own second is not after)
    stalled_at = deployed["lastTransitionTime"]
    wait_for(lambda: _now() > stalled_at or None, timeout=5, description="a second past the stall's start")
    _flap(k, first, HOSTILE)
    s = k.wait_md(lambda o: "FAKE" in ((condition(o, "ContainerHealthy") or {}).get("message") or ""),
                  what="the flapping pod's last termination read", timeout=60)  # fmt: skip
    healthy = condition(s, "ContainerHealthy")
    assert healthy["lastTransitionTime"] == clock
    told = healthy["message"]
    assert told.startswith(f"pod {first}: container server crash-looping, last terminated Error "
                           "(exit code 139): [2J [31mFAKE Ready=True Stalled False esrever AAA"), told  # fmt: skip
    assert len(told) < 400 and told.endswith("…")
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e\u2028" for ch in str(s["status"])), "control character in status"
    deployed = condition(s, "Deployed")
    assert (deployed["status"], deployed["reason"]) == ("False", "ServingCrashLoop") and told in deployed["message"]
    assert condition(s, "Stalled")["status"] == "True"
    # that moment made the new pod available (no minReadySeconds): the Deployment controller scales the old
    # ReplicaSet to 0 (maxUnavailable 0 is met), and then no pod of the old revision is left to serve
    wait_for(lambda: not _pods(k, old) or None, timeout=60, description="the old revision's pod gone")

    def ends(text: str) -> Any:
        return lambda o: ((condition(o, "Deployed") or {}).get("message") or "").endswith(text)

    s = k.wait_md(ends(f"; only the ready pods of {new} serve"), what="the flapping pod serving alone", timeout=60)
    assert f"revision {old}" not in condition(s, "Deployed")["message"]
    # ... and it crashes again: still stalled, the same clock, and nothing serves now (servingRevision stays the
    # revision last rolled out, what a failed change falls back to)
    _crash(k, first)
    wait_for(lambda: "FAKE" not in ((condition(k.md(), "ContainerHealthy") or {}).get("message") or "") or None,
             timeout=60, description="the crash seen again")  # fmt: skip
    s = k.wait_md(ends("; nothing serves now"), what="Deployed saying nothing serves", timeout=60)
    assert condition(s, "ContainerHealthy")["lastTransitionTime"] == clock
    assert (condition(s, "Deployed")["reason"], condition(s, "Stalled")["status"]) == ("ServingCrashLoop", "True")
    assert f"revision {old}" not in condition(s, "Deployed")["message"] and s["status"]["servingRevision"] == old
    assert len(_events(k, "ContainerHealthyServingCrashLoop")) == 1  # no Event at each restart
