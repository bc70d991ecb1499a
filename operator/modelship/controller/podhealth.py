"""Why a serving revision's pods do not serve: its pods, read on demand by label while the revision is short of
replicas, reduced to what they say (crash-looping containers with their last termination, images not pulled,
pods the scheduler cannot place), and judged into one cause a status message can name; a running stage Job's pods,
from the watch, are judged alike (``stage_pod_cause``). Pure.

Pod fields are tenant-influenced input (a container's termination message is written by the model's code, a
scheduler message names the tenant's node selectors): every text copied from a pod is bounded and stripped of
control characters (``printable``) before it reaches status or an Event."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..resources.kinds import DEPLOYMENT
from ..resources.meta import REVISION_LABEL
from .conditions import parse_rfc3339, seconds_since

POD_TEXT_LIMIT = 240
"""At most this many characters of a text copied from a pod (a termination message, a scheduler message)."""
NAME_LIMIT = 120
"""Pod and container names, images: the API bounds them; bounded again here (a forged status is not validated)."""
RECOVERY_SECONDS = 600
"""A container that restarted after a failure and has run this long since is no longer crash-looping: the kubelet
resets its restart back-off after 10 minutes of running (so a ready-then-crash flap stays a crash loop)."""
TEMPLATE_HASH_LABEL = "pod-template-hash"


def printable(text: object, limit: int = POD_TEXT_LIMIT) -> str:
    """``text`` on one line, as a status message may carry it: control, format (bidi overrides) and line or
    paragraph separator characters become spaces, runs of white space one space, at most ``limit`` characters
    (an ellipsis marks a cut)."""
    line = one_line(str(text)[: limit * 4])  # bound the work before cleaning
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def one_line(text: str) -> str:
    """``text`` on one line: control, format (bidi overrides) and line or paragraph separator characters become
    spaces, runs of white space one space. Not bounded: the caller bounds the text or the work."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co") else ch for ch in text)
    return " ".join(cleaned.split())


class Trouble(StrEnum):
    """What keeps a pod from serving, in the order a message names them (the first found wins)."""

    CRASH_LOOP = "CrashLoopBackOff"
    IMAGE_PULL = "ImagePullBackOff"
    WAITING = "Waiting"
    """A container held waiting for another reason than its start (CreateContainerConfigError, RunContainerError,
    ...): named for stage Job pods only (``stage_pod_cause``)."""
    UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True)
class ContainerHealth:
    """One container's (or init container's) state, as its pod's status says."""

    name: str
    waiting: str = ""
    """Reason it waits (CrashLoopBackOff, ImagePullBackOff, ErrImagePull, ContainerCreating, ...); "" if not."""
    waiting_message: str = ""
    """The kubelet's message for that wait (e.g. the Secret a CreateContainerConfigError misses), ``printable``."""
    restarts: int = 0
    running_since: str | None = None
    """startedAt of its current run (it runs now)."""
    terminated: tuple[str, int, str] | None = None
    """(reason, exit code, message) of its last termination (the current state's if it just ended, else the last
    state's), the message already ``printable``."""
    image: str = ""
    terminated_at: str | None = None
    """finishedAt of that last termination (RFC 3339), as the kubelet wrote it."""


@dataclass(frozen=True)
class PodHealth:
    """A serving pod of the ModelDeployment, reduced to what its status says."""

    name: str
    revision: str
    containers: tuple[ContainerHealth, ...] = ()
    unschedulable: str | None = None
    """The scheduler's message (PodScheduled False, reason Unschedulable), ``printable``."""
    template_hash: str = ""
    """Its pod-template-hash label: which of the Deployment's ReplicaSets (templates) made it."""
    ready: bool = False
    """Its Ready condition is True (the kubelet's word: its containers run and pass their readiness probe)."""


def _last_termination(cs: dict[str, Any]) -> dict[str, Any] | None:
    """The container's last termination: the current state's if it just ended, else the last state's."""
    for state in (cs.get("state") or {}, cs.get("lastState") or {}):
        term = state.get("terminated")
        if isinstance(term, dict):
            return term
    return None


def _terminated(term: dict[str, Any] | None) -> tuple[str, int, str] | None:
    if term is None:
        return None
    try:
        code = int(term.get("exitCode") or 0)
    except (TypeError, ValueError):
        code = 0
    return printable(term.get("reason") or "", 40), code, printable(term.get("message") or "")


def _container(cs: dict[str, Any]) -> ContainerHealth:
    state = cs.get("state") or {}
    term = _last_termination(cs)
    waiting, running = state.get("waiting") or {}, state.get("running") or {}
    try:
        restarts = int(cs.get("restartCount") or 0)
    except (TypeError, ValueError):
        restarts = 0
    return ContainerHealth(
        name=printable(cs.get("name") or "", NAME_LIMIT),
        waiting=printable(waiting.get("reason") or "", 40) if isinstance(waiting, dict) else "",
        waiting_message=printable(waiting.get("message") or "") if isinstance(waiting, dict) else "",
        restarts=restarts,
        running_since=str(running.get("startedAt")) if isinstance(running, dict) and running.get("startedAt") else None,
        terminated=_terminated(term),
        image=printable(cs.get("image") or "", NAME_LIMIT),
        terminated_at=str(term["finishedAt"]) if term is not None and term.get("finishedAt") else None,
    )


def live(pod: dict[str, Any]) -> bool:
    """The pod has not ended (phase Failed or Succeeded) and is not being deleted: what it says is about now."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded")


def of_deployment(pod: dict[str, Any], deployment: str) -> bool:
    """The pod is one the Deployment ``deployment``'s ReplicaSets made (its controller is the ReplicaSet named
    after the Deployment and the pod's template hash) and is not going away: a pod someone else labelled so the
    selector finds it, or one of the Canary's candidate Deployment, is not this Deployment's (the reference must be
    the controller's, to an apps/v1 ReplicaSet). Nor is a pod that
    has ended (phase Failed or Succeeded: one the kubelet evicted stays so, its containers terminated and never
    restarted): its ReplicaSet does not count it and makes another, so it tells nothing of the revision's health.
    By name only: a reference's uid is the pod creator's to write, so the operator reads pods vouched for
    (``replicasets.ReplicaSetOwners.vouched``: a reference whose uid is not the named ReplicaSet's, controlled by the
    Deployment, is dropped first)."""
    meta = pod.get("metadata") or {}
    if not live(pod):
        return False
    template_hash = (meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL)
    if not template_hash:
        return False
    return any(
        ref.get("controller") is True
        and ref.get("apiVersion") == DEPLOYMENT.api_version  # a ReplicaSet is in the Deployment's group, apps/v1
        and ref.get("kind") == "ReplicaSet"
        and ref.get("name") == f"{deployment}-{template_hash}"
        for ref in meta.get("ownerReferences") or []
    )


def container_statuses(pod: dict[str, Any], containers: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The pod's init containers' statuses, then its containers' (a failed init step is where a pod's last words
    may be), of the ``containers`` named only (all when None)."""
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return [cs for cs in statuses if isinstance(cs, dict) and (containers is None or cs.get("name") in containers)]


def pod_health(pod: dict[str, Any]) -> PodHealth:
    """Reduce a serving pod to what planning reads of it."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    unschedulable, ready = None, False
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            unschedulable = printable(c.get("message") or "no node fits the pod")
        ready = ready or (c.get("type") == "Ready" and c.get("status") == "True")
    return PodHealth(
        name=printable(meta.get("name") or "", NAME_LIMIT),
        revision=str((meta.get("labels") or {}).get(REVISION_LABEL) or ""),
        containers=tuple(_container(cs) for cs in container_statuses(pod)),
        unschedulable=unschedulable,
        template_hash=str((meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL) or ""),
        ready=ready,
    )


def serving_pods_health(pods: list[dict[str, Any]], deployment: str) -> tuple[PodHealth, ...]:
    """The Deployment's own pods (``of_deployment``) among ``pods``, reduced, by name."""
    return tuple(sorted((pod_health(p) for p in pods if of_deployment(p, deployment)), key=lambda p: p.name))


def newest_template_hash(deployment: str, progress_message: str) -> str | None:
    """The pod-template-hash of the Deployment's newest ReplicaSet, as its Progressing condition names it (the
    controller names the new ReplicaSet in every message of that condition: Created new replica set "d-h", Found
    new replica set "d-h", ReplicaSet "d-h" is progressing / has successfully progressed / has timed out
    progressing); None when the message names none (a paused Deployment, no condition yet)."""
    found = re.search(rf'"{re.escape(deployment)}-([a-z0-9]+)"', progress_message)
    return found.group(1) if found else None


def of_template(pods: tuple[PodHealth, ...] | None, template_hash: str | None) -> tuple[PodHealth, ...] | None:
    """The pods of the template ``template_hash`` (all of them when it is not known)."""
    if pods is None or template_hash is None:
        return pods
    return tuple(p for p in pods if p.template_hash == template_hash)


LOST = ("Unknown", "ContainerStatusUnknown")
"""Termination reasons that say the container was lost (its node rebooted, the runtime forgot it), not that it
failed."""


def crashed_since(pods: tuple[PodHealth, ...] | None, revision: str, since: str) -> bool:
    """A container of ``revision``'s pods failed (a termination other than exit code 0 or a lost container) after
    ``since`` (RFC 3339): it crashed again. A restart whose last failure is older (one crash, then a slow start;
    a node reboot) is not. True when ``since`` does not parse (the judgement before this one holds)."""
    start = parse_rfc3339(since)
    if start is None:
        return True
    for p in pods or ():
        if p.revision != revision:
            continue
        for c in p.containers:
            ended = parse_rfc3339(c.terminated_at)
            if c.terminated is None or ended is None or c.terminated[1] == 0 or c.terminated[0] in LOST:
                continue
            if ended > start:
                return True
    return False


def _running_for(started: str, now: datetime) -> float:
    """Seconds since ``started`` (RFC 3339); 0 for a stamp that does not parse (a forged status)."""
    return seconds_since(started, now) or 0.0


def crash_looping(c: ContainerHealth, now: datetime) -> bool:
    """The kubelet holds the container in its restart back-off, or it just ended in failure, or it restarted
    after a termination and has not yet run ``RECOVERY_SECONDS`` since (the ready moments of a flap)."""
    if c.waiting == "CrashLoopBackOff":
        return True
    if c.running_since is None and c.terminated is not None and not c.waiting:
        return c.terminated[1] != 0  # it ended now (before the kubelet's back-off): a failure, not a completion
    if c.restarts > 0 and c.terminated is not None and c.running_since is not None:
        return _running_for(c.running_since, now) < RECOVERY_SECONDS
    return False


def recovery_due(pods: tuple[PodHealth, ...] | None, revision: str, now: datetime) -> float | None:
    """Seconds until the last container of ``revision``'s pods that runs after a failed run has run
    ``RECOVERY_SECONDS`` (no longer crash-looping, if it does not crash again): nothing else would wake the
    operator then (a crash, or a pod that becomes ready, changes the Deployment's status, which does). None when
    none such runs."""
    dues = [
        RECOVERY_SECONDS - _running_for(c.running_since, now) + 1
        for p in pods or ()
        if p.revision == revision
        for c in p.containers
        if c.running_since is not None and crash_looping(c, now)
    ]
    return max(dues, default=None)


LOOPING = "looping"
"""``Cause.state`` of a crash loop told without the container's state of the moment (``Cause.steady``)."""


@dataclass(frozen=True)
class Cause:
    """Why pods of a revision do not serve, in words that stay the same while the cause does (no restart counts,
    no back-off times: a crash-looping pod does not rewrite status at each restart)."""

    trouble: Trouble
    pod: str
    container: str = ""
    terminated: tuple[str, int, str] | None = None
    """The crash-looping container's last termination: (reason, exit code, message)."""
    detail: str = ""
    """The image not pulled, or the scheduler's message."""
    state: str = ""
    """How the crash-looping container is now: waiting (its reason, CrashLoopBackOff while the kubelet holds it in
    its restart back-off), "running" again after a failed run, "" (it just ended), or ``LOOPING``: not said
    (``steady``)."""
    said: str = ""
    """The kubelet's message for a container held waiting (``Trouble.WAITING``)."""

    @property
    def oom(self) -> bool:
        return self.terminated is not None and self.terminated[0] == "OOMKilled"

    def steady(self) -> Cause:
        """This cause in words that stay the same through the crash loop's cycles: a crash-looping container's
        state (held in its back-off, running again, just crashed) changes at each restart, so a failure recorded
        from it (a stalled rollout's Deployed message, status.lastFailure) says only that it crash-loops; other
        causes are already steady."""
        return replace(self, state=LOOPING) if self.trouble == Trouble.CRASH_LOOP else self

    def _crashed_now(self) -> str:
        """How a crash-looping container is now, in words."""
        if self.state == LOOPING:
            return "crash-looping"
        if self.state == "CrashLoopBackOff":
            return "crash-looping (CrashLoopBackOff)"
        if self.state == "running":
            return "running again after a crash"
        return "crashed"

    def describe(self) -> str:
        """``reason_only`` with the words that go with it: the termination message, the kubelet's, the image, the
        scheduler's."""
        if self.trouble == Trouble.IMAGE_PULL:
            return f"pod {self.pod}: container {self.container} image {self.detail} not pulled (ImagePullBackOff)"
        if self.trouble == Trouble.CRASH_LOOP:
            words = self.terminated[2] if self.terminated is not None else ""
        elif self.trouble == Trouble.WAITING:
            words = self.said
        else:
            return f"pod {self.pod} unschedulable: {self.detail}"
        text = self.reason_only()
        return f"{text}: {words}" if words else text

    def reason_only(self) -> str:
        """What ``describe`` says without anyone's free text (the scheduler's or the kubelet's message, a
        termination message, an image): the pod, its container and the reason alone. For pods in the platform's
        build namespace, whose words name the platform (its taints, node pools, Secrets), not the tenant's."""
        if self.trouble == Trouble.CRASH_LOOP:
            text = f"pod {self.pod}: container {self.container} {self._crashed_now()}"
            if self.terminated is not None:
                text += f", last terminated {self.terminated[0] or 'Error'} (exit code {self.terminated[1]})"
            return text
        if self.trouble == Trouble.IMAGE_PULL:
            return f"pod {self.pod}: container {self.container} image not pulled (ImagePullBackOff)"
        if self.trouble == Trouble.WAITING:
            return f"pod {self.pod}: container {self.container} waiting ({self.detail})"
        return f"pod {self.pod} unschedulable (Unschedulable)"


STEADY_WAITING = ("CreateContainerConfigError", "ErrImageNeverPull")
"""Waiting reasons whose kubelet message stays the same while the cause does (a Secret or ConfigMap key missing,
an image not present with pullPolicy Never): a stage pod's message quotes it. Others (CreateContainerError,
RunContainerError ...) carry texts that change at each retry (ids, deadlines): only their reason is said, so that
status is not rewritten at every retry."""
IMAGE_NOT_PULLED = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
"""Waiting reasons of a container whose image the kubelet cannot pull (the two first alternate while it retries)."""
STARTING = ("", "ContainerCreating", "PodInitializing")
"""Waiting reasons of a container on its way to run (for a few seconds as a rule): nothing to name."""


def _image_not_pulled(p: PodHealth, c: ContainerHealth) -> Cause | None:
    if c.waiting in IMAGE_NOT_PULLED:
        return Cause(Trouble.IMAGE_PULL, p.name, c.name, detail=c.image or "(unnamed)")
    return None


def _not_scheduled(pods: list[PodHealth]) -> Cause | None:
    for p in pods:
        if p.unschedulable is not None:
            return Cause(Trouble.UNSCHEDULABLE, p.name, detail=p.unschedulable)
    return None


def _first(pods: list[PodHealth], judge: Callable[[PodHealth, ContainerHealth], Cause | None]) -> Cause | None:
    """The first cause ``judge`` finds in a container of ``pods`` (in order: pods, then their containers)."""
    for p in pods:
        for c in p.containers:
            found = judge(p, c)
            if found is not None:
                return found
    return None


def cause(pods: tuple[PodHealth, ...] | None, revision: str, now: datetime) -> Cause | None:
    """The first cause found among the pods of ``revision`` (by pod name; a crash loop before an image not
    pulled before a pod not scheduled); None when none of its pods says why it does not serve (they start, or
    the pods were not read)."""
    mine = [p for p in pods or () if p.revision == revision]

    def crashing(p: PodHealth, c: ContainerHealth) -> Cause | None:
        if not crash_looping(c, now):
            return None
        state = c.waiting or ("running" if c.running_since is not None else "")
        return Cause(Trouble.CRASH_LOOP, p.name, c.name, c.terminated, state=state)

    return _first(mine, crashing) or _first(mine, _image_not_pulled) or _not_scheduled(mine)


def _held_waiting(p: PodHealth, c: ContainerHealth) -> Cause | None:
    """A container the kubelet holds waiting for a reason that does not pass by itself: its restart back-off, an
    image not pulled, or any other reason than its start (``STARTING``)."""
    if c.waiting == "CrashLoopBackOff":
        return Cause(Trouble.CRASH_LOOP, p.name, c.name, c.terminated, state=c.waiting)
    if c.waiting in STARTING:
        return None
    said = c.waiting_message if c.waiting in STEADY_WAITING else ""  # others' texts change at each kubelet retry
    return _image_not_pulled(p, c) or Cause(Trouble.WAITING, p.name, c.name, detail=c.waiting, said=said)


def stage_pod_cause(pods: tuple[PodHealth, ...]) -> Cause | None:
    """Why a running stage Job's live pods (``pods``: not ended, not being deleted) do not progress: a container
    held waiting (``_held_waiting``), else a pod the scheduler cannot place; None while they start or run. Judged
    from the kubelet's and scheduler's words alone (no time: a Job's pods run once, the Job retries them), so the
    cause stays the same while they do."""
    listed = list(pods)
    return _first(listed, _held_waiting) or _not_scheduled(listed)
