"""A Canary candidate whose pods crash-loop, on the real control plane (the Deployment, ReplicaSet and EndpointSlice
controllers; kwok's pods, whose status the test writes as a kubelet restarting an OOMKilled container would): while
it waits, the rollout's message names the cause the candidate's pods give; once the crash loop has lasted
progressDeadlineSeconds the candidate is rolled back (CandidateCrashLoop, the cause in Verified and Ready, an Event,
lastFailure, the candidate's Deployment at 0), and the stable Deployment is never touched: same template, same
pods, serving throughout. A re-apply or a scale after the rollback leaves it standing; a change of the candidate's
pod template (the memory limit raised) starts the revision anew."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from modelship.controller.canary_trouble import FINAL, RETRY
from modelship_dev.cluster import ANNOTATION_CRASH
from tests.integration.cluster import CRD_DIR, apply_manifest, condition, install_crds, wait_for
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_canary import (
    CANARY,
    GROUP,
    PLURAL,
    VERSION,
    Cluster,
    FakeMetrics,
    _deployment,
    _events,
    _first_revision_then_a_new_one,
    fake_metrics,
    k,
    metrics,
    operator,
)
from tests.integration.test_crash_loop import _crash
from tests.support import skew as older

__all__ = ["fake_metrics", "k", "metrics", "operator"]  # the fixtures of test_canary, its operator and metrics

REVISION = "modelship.io/revision"
MESSAGE = "failed to load the model: std::bad_alloc"


def _pods(k: Cluster, rev: str) -> list[Any]:
    selector = f"{REVISION}={rev},app.kubernetes.io/component=server"
    return sorted((p for p in k.core.list_namespaced_pod(k.ns, label_selector=selector).items
                   if p.metadata.deletion_timestamp is None), key=lambda p: p.metadata.name)  # fmt: skip


def _oom_killed(k: Cluster, pod: str) -> None:
    """The pod's server container was OOMKilled loading its model and waits in the kubelet's restart back-off."""
    image = next(c.image for c in k.core.read_namespaced_pod(pod, k.ns).spec.containers if c.name == "server")
    _crash(k, pod, image, "OOMKilled", 137, MESSAGE)


def test_a_candidate_whose_pods_crash_loop_is_rolled_back_with_the_cause(k: Cluster, metrics: FakeMetrics) -> None:
    rollout = {**CANARY, "progressDeadlineSeconds": 30}
    doc, old, new = _first_revision_then_a_new_one(k, metrics, rollout)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    stable = _deployment(k, "digits")
    stable_pods = {p.metadata.name: p.metadata.uid for p in _pods(k, old)}
    assert len(stable_pods) == 2 and stable.status.available_replicas == 2
    candidates = _pods(k, new)
    assert len(candidates) == 1, [p.metadata.name for p in candidates]
    crashing = candidates[0].metadata.name
    _oom_killed(k, crashing)

    # while it is not yet judged, the rollout says what it waits for, and why it does not come
    told = (f"pod {crashing}: container server crash-looping (CrashLoopBackOff), last terminated OOMKilled "
            "(exit code 137)")  # fmt: skip
    def told_while_waiting(o: dict[str, Any]) -> bool:
        r = o["status"]["rollout"]
        return r["phase"] == "Shadow" and told in (r.get("message") or "")

    # the crash loop's clock starts at the look that sees it: that look writes the message, 30 s before a rollback
    waiting = k.wait_md(told_while_waiting, what="the candidate's cause in the rollout's message", timeout=60)
    r = waiting["status"]["rollout"]
    assert r["message"].startswith("waiting for the candidate's pods of shadow: "), r
    assert r.get("candidateFailingSince") and r.get("phaseStartedAt") is None, r
    assert MESSAGE in r["message"], r

    # past progressDeadlineSeconds of crash loop: rolled back, the cause in status, the stable revision serving
    gone = k.wait_condition("Stalled", "True", reason="CandidateCrashLoop", timeout=120)
    s = gone["status"]
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["rollbackCause"] == "CandidateCrashLoop", s
    assert s["rollout"]["decision"] == "Rollback" and s["rollout"]["weight"] == 0 and s["rollout"]["mirrorPercent"] == 0
    verified = condition(gone, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "CandidateCrashLoop"), verified
    assert "crash-loop for more than 30s (progressDeadlineSeconds 30)" in verified["message"], verified
    assert told in verified["message"] and MESSAGE in verified["message"], verified
    assert verified["message"].endswith(f"; {RETRY}; revision {old} keeps serving all traffic"), verified
    assert "or spec.serving.rollout.progressDeadlineSeconds, to try the revision again" in verified["message"]
    assert s["rollout"]["rolledBackGeneration"] == gone["metadata"]["generation"], s["rollout"]
    assert s["rollout"]["rolledBackTemplate"], s["rollout"]
    assert told in condition(gone, "Ready")["message"] and condition(gone, "Ready")["status"] == "False"
    assert s["servingRevision"] == old and s["revision"] == new
    assert s["lastFailure"]["reason"] == "CandidateCrashLoop" and s["lastFailure"]["stage"] == "Verify"
    warnings = wait_for(lambda: [e for e in _events(k) if e.reason == "VerifiedRolledBack"], timeout=30,
                        description="the rollback's Event")  # fmt: skip
    assert warnings[0].type == "Warning" and told in warnings[0].message
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")

    # the stable Deployment was never touched: its template, generation and pods are those before the rollout
    after = _deployment(k, "digits")
    assert after.metadata.generation == stable.metadata.generation
    assert after.spec.template == stable.spec.template
    assert after.spec.template.metadata.labels[REVISION] == old
    assert {p.metadata.name: p.metadata.uid for p in _pods(k, old)} == stable_pods
    assert after.status.available_replicas == 2

    # the same spec re-applied, then its replicas changed through the scale subresource (`kubectl scale md`, an HPA
    # or KEDA on the ModelDeployment: a new generation, the same candidate pod template): once the operator has
    # looked at the new generation, the rollback stands
    k.apply(doc)
    k.custom.patch_namespaced_custom_object_scale(GROUP, VERSION, k.ns, PLURAL, "digits", {"spec": {"replicas": 3}})
    scaled = k.wait_md(lambda o: o["metadata"]["generation"] > gone["metadata"]["generation"]
                       and o["status"].get("observedGeneration") == o["metadata"]["generation"],
                       what="the scale looked at", timeout=60)  # fmt: skip
    kept = scaled["status"]["rollout"]
    assert (kept["phase"], kept.get("rollbackCause"), kept["startedAt"]) == (
        "RolledBack", "CandidateCrashLoop", s["rollout"]["startedAt"]), kept  # fmt: skip
    assert kept["rolledBackTemplate"] == s["rollout"]["rolledBackTemplate"], kept
    assert scaled["spec"]["serving"]["replicas"] == 3 and _deployment(k, "digits-canary").spec.replicas == 0
    assert condition(scaled, "Stalled")["reason"] == "CandidateCrashLoop"

    # the memory limit raised, as the message says (the revision stays), changes the candidate's pod template: a new
    # rollout of the same revision, whose pods of the new template come up and serve
    doc["spec"]["serving"]["resources"] = {"limits": {"memory": "4Gi"}}
    k.apply(doc)
    again = k.wait_md(lambda o: o["metadata"]["generation"] > scaled["metadata"]["generation"]
                      and o["status"]["rollout"]["phase"] == "Shadow", what="a new rollout", timeout=60)  # fmt: skip
    r = again["status"]["rollout"]
    assert again["status"]["revision"] == new and r["candidate"] == new and r.get("rollbackCause") is None, r
    assert r["startedAt"] != s["rollout"]["startedAt"] and r.get("rolledBackTemplate") is None, r
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None
              and o["status"]["rollout"]["phase"] == "Shadow", what="the new template's pods available")  # fmt: skip
    candidate = _deployment(k, "digits-canary")
    server = next(c for c in candidate.spec.template.spec.containers if c.name == "server")
    assert candidate.spec.replicas == 1 and server.resources.limits["memory"] == "4Gi"
    assert condition(k.md(), "Stalled")["status"] == "False"


def test_a_candidate_template_whose_pods_never_come_up_is_rolled_back_naming_its_newest_pods(
    k: Cluster, metrics: FakeMetrics
) -> None:
    """The candidate's Deployment gets a new template (here an annotation another manager writes, as a mutating
    policy or a hand edit would) whose pods crash-loop from their start: the pod of the template before stays
    ready, yet the candidate is judged on the newest template's pods, as the Deployment controller names it."""
    rollout = {**CANARY, "progressDeadlineSeconds": 30}
    _, old, new = _first_revision_then_a_new_one(k, metrics, rollout)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    stable = _deployment(k, "digits")
    stable_pods = {p.metadata.name: p.metadata.uid for p in _pods(k, old)}
    first = {p.metadata.name for p in _pods(k, new)}
    crash = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION_CRASH: "true"}}}}}
    k.apps.patch_namespaced_deployment("digits-canary", k.ns, crash)
    gone = k.wait_condition("Stalled", "True", reason="CandidateCrashLoop", timeout=120)
    verified = condition(gone, "Verified")["message"]
    crashing = [p.metadata.name for p in _pods(k, new) if p.metadata.name not in first]
    # by its own clock or the Deployment controller's ProgressDeadlineExceeded, whichever comes first (both 30 s)
    found = re.search(r": pod (\S+): container server ", verified)
    named = found.group(1) if found else ""
    assert named and named not in first, (verified, first)  # a pod of the newest template, not the ready one
    assert "crash-looping (CrashLoopBackOff), last terminated Error (exit code 1)" in verified, verified
    assert verified.endswith(f"; {RETRY}; revision {old} keeps serving all traffic"), verified
    assert not crashing or named in crashing, (named, crashing)
    assert gone["status"]["servingRevision"] == old
    after = _deployment(k, "digits")
    assert after.metadata.generation == stable.metadata.generation and after.spec.template == stable.spec.template
    assert {p.metadata.name: p.metadata.uid for p in _pods(k, old)} == stable_pods


HASH = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HEAD_START = 5
"""Seconds between the first ReplicaSet's crash-loop clock and the restart."""


def _rollout_restart(k: Cluster, name: str, crash: bool) -> datetime:
    """``kubectl rollout restart deployment/<name>``: a restartedAt annotation on the pod template, written by
    kubectl's own field manager (not the operator's). With ``crash`` the same write makes the restarted pods
    crash-loop from their start (kwok's crash-loop stage owns them: nothing rewrites them Ready), as when the fix
    outside the spec did not help; without it the write removes that annotation (the fix helped). Returns the
    restart's moment (its stamp)."""
    now = datetime.now(UTC)
    annotations = {RESTARTED_AT: now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ANNOTATION_CRASH: "true" if crash else None}
    body = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    k.apps.patch_namespaced_deployment(name, k.ns, body, field_manager="kubectl-rollout")
    return now


@contextmanager
def _operator_paused(operator: OperatorProcess) -> Iterator[None]:
    """The operator stopped (SIGSTOP) for the block, as a busy or restarting operator is: it takes no look until
    the block ends, and then sees the cluster as the block left it."""
    assert operator.proc is not None and operator.proc.poll() is None
    os.kill(operator.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(operator.proc.pid, signal.SIGCONT)


def _crash_looping(pod: Any) -> bool:
    return any(s.state.waiting is not None and s.state.waiting.reason == "CrashLoopBackOff"
               for s in pod.status.container_statuses or ())  # fmt: skip


def _names_replica_set(k: Cluster, name: str, template_hash: str) -> bool:
    """The Deployment's controller has observed its last change and names the ReplicaSet of ``template_hash`` as
    its newest (in its Progressing condition, where the operator reads it)."""
    dep = _deployment(k, name)
    progressing = next((c.message or "" for c in dep.status.conditions or () if c.type == "Progressing"), "")
    return dep.status.observed_generation == dep.metadata.generation and f'"{name}-{template_hash}"' in progressing


def _seconds(stamp: str) -> datetime:
    """An RFC 3339 stamp, whole seconds (a Deployment's condition times and the operator's stamps have no more)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(microsecond=0)


def test_a_rollout_restart_of_the_candidate_judges_its_new_pods_anew_and_retries_a_rollback(
    k: Cluster, metrics: FakeMetrics, operator: OperatorProcess
) -> None:
    """After a fix outside the spec, `kubectl rollout restart deployment/digits-canary`: the operator's server-side
    apply keeps the restart (another manager's field: no flap, no second ReplicaSet), the Deployment controller makes
    a new ReplicaSet, and its pods are judged on a crash-loop clock of their own; after the rollback, a restart
    starts a new rollout of the same revision, the stable Deployment untouched throughout."""
    deadline = 30
    rollout = {**CANARY, "progressDeadlineSeconds": deadline}
    _, old, new = _first_revision_then_a_new_one(k, metrics, rollout)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    stable = _deployment(k, "digits")
    stable_pods = {p.metadata.name: p.metadata.uid for p in _pods(k, old)}
    first = _pods(k, new)
    assert len(first) == 1, [p.metadata.name for p in first]
    _oom_killed(k, first[0].metadata.name)
    timed = k.wait_md(lambda o: o["status"]["rollout"].get("candidateFailingTemplate") is not None,
                      what="the crash loop's clock of the first ReplicaSet", timeout=60)  # fmt: skip
    r1 = timed["status"]["rollout"]
    assert r1["candidateFailingTemplate"] == first[0].metadata.labels[HASH], r1

    # the restart comes a few seconds after the first clock's start (stamps have whole seconds), so a rollback on
    # that clock, its deadline counted from before the restart, would come clearly before the restart's deadline
    head_start = _seconds(r1["candidateFailingSince"]) + timedelta(seconds=HEAD_START)
    wait_for(lambda: datetime.now(UTC) >= head_start or None, timeout=HEAD_START + 5,
             description=f"{HEAD_START}s past the first clock's start")  # fmt: skip
    # the restart, whose pods crash-loop too (the fix did not help). The operator takes no look between the first
    # ReplicaSet's crash loop and the new one's (as a busy operator may not): a look in between, which finds the
    # new pods not yet started, would end the first clock whatever the rule, and the new one would start anew.
    known = {first[0].metadata.name}
    with _operator_paused(operator):
        restarted = _rollout_restart(k, "digits-canary", crash=True)
        fresh = wait_for(lambda: [p for p in _pods(k, new) if p.metadata.name not in known and _crash_looping(p)]
                         or None, timeout=60, description="a crash-looping pod of the restarted template")  # fmt: skip
        wait_for(lambda: _names_replica_set(k, "digits-canary", fresh[0].metadata.labels[HASH]) or None, timeout=60,
                 description="the Deployment controller naming the new ReplicaSet")  # fmt: skip
    assert fresh[0].metadata.labels[HASH] != r1["candidateFailingTemplate"]
    second = k.wait_md(lambda o: o["status"]["rollout"].get("candidateFailingTemplate") == fresh[0].metadata.labels[
        HASH], what="the crash loop's clock of the new ReplicaSet", timeout=60)  # fmt: skip
    r2 = second["status"]["rollout"]
    assert r2["phase"] == "Shadow" and r2["candidateFailingSince"] > r1["candidateFailingSince"], (r1, r2)

    # rolled back for the new pods: on their own clock or on the Deployment controller's ProgressDeadlineExceeded
    # for the new ReplicaSet, whichever comes first, both no sooner than progressDeadlineSeconds after the restart
    # (the first clock, carried over, would have ended before)
    gone = k.wait_condition("Stalled", "True", reason="CandidateCrashLoop", timeout=120)
    verified = condition(gone, "Verified")
    assert f"pod {fresh[0].metadata.name}: container server crash-looping" in verified["message"], verified
    assert verified["message"].endswith(f"; {RETRY}; revision {old} keeps serving all traffic"), verified
    ended = _seconds(condition(gone, "Stalled")["lastTransitionTime"])
    assert (ended - restarted.replace(microsecond=0)).total_seconds() >= deadline, (restarted, ended, r1, r2)
    judged = gone["status"]["rollout"]
    assert "candidateFailingTemplate" not in judged and judged["rolledBackTemplate"], judged
    assert judged["rolledBackRestartedAt"] == restarted.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), judged  # the judged one
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")

    # the operator's applies kept the restart, and never own it
    cand = _deployment(k, "digits-canary")
    assert cand.spec.template.metadata.annotations[RESTARTED_AT] == restarted.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    owners = [m.manager for m in cand.metadata.managed_fields
              if RESTARTED_AT in json.dumps(m.fields_v1)]  # fmt: skip
    assert owners == ["kubectl-rollout"], owners

    # a restart after the rollback (the candidate at zero; the fix helped): a new rollout of the same revision,
    # whose pods serve
    _rollout_restart(k, "digits-canary", crash=False)
    again = k.wait_md(lambda o: o["status"]["rollout"]["phase"] == "Shadow"
                      and o["status"]["rollout"]["startedAt"] != judged["startedAt"],
                      what="a new rollout after the restart", timeout=60)  # fmt: skip
    r = again["status"]["rollout"]
    assert (r["candidate"], r.get("rollbackCause"), r.get("rolledBackTemplate")) == (new, None, None), r
    assert "rolledBackRestartedAt" not in r, r
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None
              and o["status"]["rollout"]["phase"] == "Shadow",
              what="the restarted candidate's pods available")  # fmt: skip
    assert condition(k.md(), "Stalled")["status"] == "False"
    after = _deployment(k, "digits")
    assert after.metadata.generation == stable.metadata.generation and after.spec.template == stable.spec.template
    assert {p.metadata.name: p.metadata.uid for p in _pods(k, old)} == stable_pods


def test_a_rollback_whose_record_an_older_crd_prunes_says_it_is_final_and_stays_so(
    k: Cluster, metrics: FakeMetrics, api_client: client.ApiClient
) -> None:
    """An installed CRD older than the operator drops status.rollout.rolledBackTemplate (and rolledBackGeneration):
    the rollback's message says it is final, with the real API server's pruning, and a change of the candidate's
    pods indeed leaves it rolled back, its message as it was. This operator reads the served CRD (every resync), so
    it knows of the pruning before the rollback; a namespaced one learns it only from the rollback's own write,
    which the unit tests (test_verify) cover. Last in the module: the operator's memory of the pruned fields goes
    with it; the current CRD is applied again when it ends."""
    pruned = (("rollout", "rolledBackTemplate"), ("rollout", "rolledBackGeneration"))
    apply_manifest(api_client, older.older_crd(status=pruned, spec=()), force=True)
    try:
        rollout = {**CANARY, "progressDeadlineSeconds": 30}
        doc, old, new = _first_revision_then_a_new_one(k, metrics, rollout)
        k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
        _oom_killed(k, _pods(k, new)[0].metadata.name)
        k.wait_condition("Stalled", "True", reason="CandidateCrashLoop", timeout=120)
        ending = f"; {FINAL}; revision {old} keeps serving all traffic"
        final = k.wait_md(lambda o: o["status"]["rollout"]["message"].endswith(ending),
                          what="the rollback's message saying it is final", timeout=60)  # fmt: skip
        r = final["status"]["rollout"]
        assert (r["phase"], r["rollbackCause"]) == ("RolledBack", "CandidateCrashLoop"), r
        assert "rolledBackTemplate" not in r and "rolledBackGeneration" not in r, r
        assert RETRY not in r["message"] and condition(final, "Verified")["message"].endswith(ending)
        # the memory limit raised: nothing tells which template was judged, the rollback stands
        doc["spec"]["serving"]["resources"] = {"limits": {"memory": "4Gi"}}
        k.apply(doc)
        looked = k.wait_md(lambda o: o["metadata"]["generation"] > final["metadata"]["generation"]
                           and o["status"].get("observedGeneration") == o["metadata"]["generation"],
                           what="the change looked at", timeout=60)  # fmt: skip
        kept = looked["status"]["rollout"]
        assert (kept["phase"], kept["startedAt"], kept["message"]) == ("RolledBack", r["startedAt"], r["message"])
        assert _deployment(k, "digits-canary").spec.replicas == 0
    finally:
        install_crds(api_client, CRD_DIR)
