"""What the serving pods' cause reads as in status: the suffix a Deployed, Ready or Capacity message carries
(``cause_text``: the pod, its container and last termination, and for an OOMKilled server where to raise the memory
limit), the ContainerHealthy condition (``container_health``) and Deployed's message once a crash loop stalls the
rollout (``crash_loop_stalled``). Pure; the cause itself is ``controller.podhealth``'s."""

from __future__ import annotations

from ...api.modeldeployment import ModelDeployment
from ...api.status import ConditionType, Reason
from ..conditions import duration
from ..podhealth import Cause, Trouble
from .context import ConditionUpdate, condition


def cause_text(md: ModelDeployment, found: Cause | None) -> str:
    """``; <what the pods say>`` for a message (with where to raise the memory limit when the serving container
    was OOMKilled), or "" when they say nothing."""
    if found is None:
        return ""
    text = f"; {found.describe()}"
    if found.oom and found.container == "server":
        limit = md.spec.serving.resources.limits.get("memory")
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


def crash_loop_stalled(md: ModelDeployment, rev: str, found: Cause | None, prev_revision: str | None) -> str:
    """Deployed's message once the pods of ``rev`` have crash-looped for progressDeadlineSeconds: the deadline, not
    the time so far, and no live count, so it stays the same from one pass to the next."""
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    message = (
        f"pods of {rev} crash-loop for more than {duration(deadline)} (progressDeadlineSeconds {deadline})"
        f"{cause_text(md, found)}"
    )
    if prev_revision and prev_revision != rev:
        return message + f"; revision {prev_revision} keeps serving"
    if not prev_revision:  # a first rollout: no revision served before, and none of these pods ever did
        return message + "; nothing serves yet"
    return message + f"; the pods of {rev} that are ready keep serving"
