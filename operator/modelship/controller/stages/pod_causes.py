"""What the serving pods' cause reads as in status: the suffix a Deployed, Ready or Capacity message carries
(``cause_text``: the pod, its container and last termination, and for an OOMKilled server where to raise the memory
limit), the ContainerHealthy condition (``container_health``) and Deployed's message once a crash loop stalls the
rollout (``crash_loop_stalled``, with what serves meanwhile: ``serving_beside``). Pure; the cause itself is
``controller.podhealth``'s."""

from __future__ import annotations

from datetime import datetime

from ...api.modeldeployment import ModelDeployment
from ...api.status import ConditionType, Reason
from ...resources.serving import server_resources
from ..canary_trouble import CandidateTrouble
from ..conditions import duration
from ..observe import DeploymentObservation
from ..podhealth import Cause, PodHealth, Trouble, cause, newest_template_hash, of_template, printable
from .context import ConditionUpdate, condition


def cause_text(md: ModelDeployment, found: Cause | None) -> str:
    """``; <what the pods say>`` for a message (with where to raise the memory limit when the serving container
    was OOMKilled), or "" when they say nothing."""
    if found is None:
        return ""
    text = f"; {found.describe()}"
    if found.oom and found.container == "server":
        limit = server_resources(md).limits.get("memory")  # what the pods get (a savedmodel export's default)
        if limit is not None:
            text += f"; its memory limit is {limit}: raise spec.serving.resources.limits.memory"
        else:
            text += (
                "; no memory limit is set: the node's memory or a LimitRange's default bounds it, set "
                "spec.serving.resources.limits.memory (and requests.memory) above what the model needs"
            )
    return text


def container_health(md: ModelDeployment, found: Cause | None) -> tuple[ConditionUpdate, ...]:
    """ContainerHealthy False (ServingCrashLoop) while a container of the revision's pods crash-loops, else
    nothing (the condition is set only while False)."""
    if found is None or found.trouble != Trouble.CRASH_LOOP:
        return ()
    message = cause_text(md, found)[2:]
    return (condition(ConditionType.CONTAINER_HEALTHY, False, Reason.SERVING_CRASH_LOOP, message),)


def serving_beside(rev: str, older: str, dep: DeploymentObservation | None, pods: tuple[PodHealth, ...] | None) -> str:
    """What serves while the newest template of the Deployment ``dep``, of ``rev``, crash-loops: the pods of the
    templates before it while any of those is ready (named by the revisions they carry: "revision rOLD keeps
    serving", or "the pods of rX's previous template keep serving" when they are ``rev``'s own), else the newest
    template's pods that are ready, else nothing. Told from ``pods``, the Deployment's own pods (every template's,
    not terminating) as one list read now, against the newest template its Progressing condition names; only when
    they were not listed (or no template is named) from the Deployment's status counts, read from the watch at
    another moment (pods of an older template are available while it counts more pods than it has updated), with
    ``older`` as their wording. No count: it changes only when one of the three does."""
    newest = newest_template_hash(dep.name, dep.progress_message) if dep is not None else None
    if pods is not None and newest is not None:
        before = [p for p in pods if p.ready and p.template_hash != newest]
        if before:
            others = sorted({p.revision for p in before if p.revision and p.revision != rev})
            if not others:
                return f"; the pods of {rev}'s previous template keep serving"
            if len(others) == 1:
                return f"; revision {others[0]} keeps serving"
            return f"; revisions {', '.join(others)} keep serving"
        if any(p.ready for p in pods):
            return f"; only the ready pods of {rev} serve"
        return "; nothing serves now"
    if dep is None or dep.available_replicas <= 0:
        return "; nothing serves now"
    if dep.status_replicas > dep.updated_replicas:
        return f"; {older}"
    return f"; only the ready pods of {rev} serve"


def serving_meanwhile(
    rev: str, prev_revision: str | None, dep: DeploymentObservation | None, pods: tuple[PodHealth, ...] | None
) -> str:
    """What serves while the pods of ``rev`` do not (a stalled rollout's message ends with it): ``serving_beside``,
    with the older pods, when only the Deployment's counts tell of them, named as the revision that served
    (``prev_revision``) or, when that is ``rev`` itself, as its previous template. The older revision is named only
    while its pods are there to serve: after a ready moment of the new pod let the Deployment controller scale the
    old ReplicaSet to 0, it no longer serves. On a first rollout (no revision served before) "nothing serves yet"
    when nothing does, and the pods of ``rev`` that are ready when some are."""
    older = (
        f"revision {prev_revision} keeps serving"
        if prev_revision and prev_revision != rev
        else f"the pods of {rev}'s previous template keep serving"
    )
    told = serving_beside(rev, older, dep, pods)
    if not prev_revision and told == "; nothing serves now":
        return "; nothing serves yet"
    return told


def crash_loop_stalled(
    md: ModelDeployment,
    rev: str,
    found: Cause | None,
    prev_revision: str | None,
    dep: DeploymentObservation | None,
    pods: tuple[PodHealth, ...] | None,
) -> str:
    """Deployed's message once the pods of ``rev`` have crash-looped for progressDeadlineSeconds: the deadline, not
    the time so far, and no live count, so it stays the same from one pass to the next; what serves meanwhile
    (``serving_meanwhile``: ``dep``, the Deployment, and ``pods``, its own pods of every template)."""
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    message = (
        f"pods of {rev} crash-loop for more than {duration(deadline)} (progressDeadlineSeconds {deadline})"
        f"{cause_text(md, found)}"
    )
    return message + serving_meanwhile(rev, prev_revision, dep, pods)


def candidate_trouble(
    md: ModelDeployment, rev: str, dep: DeploymentObservation | None, pods: tuple[PodHealth, ...] | None, now: datetime
) -> CandidateTrouble | None:
    """Why the Canary candidate ``rev``'s pods do not serve: the cause their pods of the Deployment's newest template
    name (``cause_text``: the thresholds and wording of the stable path), and whether the Deployment controller gave
    up on that template (ProgressDeadlineExceeded, read only once it observed the Deployment's last change); None
    when neither says anything (the pods start, pull or wait for a node within the deadline). A crash loop counts
    only in a pod that is not Ready now: a Ready pod's container running again after a crash is only
    ``recovering`` (one restart that then runs is not a loop, also beside a pod still starting)."""
    if dep is None or dep.revision != rev:
        return None
    newest = of_template(pods, newest_template_hash(dep.name, dep.progress_message))
    down = cause(tuple(p for p in newest or () if not p.ready), rev, now)
    found = down or cause(newest, rev, now)
    exceeded = dep.progress_deadline_exceeded and dep.observed_generation >= dep.generation
    if found is None and not exceeded:
        return None
    text = cause_text(md, found)[2:] if found is not None else printable(dep.progress_message or "no progress")
    crash = down is not None and down.trouble == Trouble.CRASH_LOOP
    recovering = not crash and found is not None and found.trouble == Trouble.CRASH_LOOP
    return CandidateTrouble(text, crash_loop=crash, recovering=recovering, deadline_exceeded=exceeded)
