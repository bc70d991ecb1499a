"""What the operator sees of a ModelDeployment's children, reduced to the facts planning needs. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..resources.meta import COMPONENT_LABEL, REVISION_LABEL
from .revcache import CachedRevision


class JobState(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobObservation:
    """One stage Job and what its pod said when it finished."""

    name: str
    stage: str
    """optimizer or builder (the component label)."""
    revision: str
    attempt: int
    state: JobState
    reason: str = ""
    message: str = ""
    termination_message: str | None = None
    """The container's termination message, once a pod of the Job has terminated."""
    termination_reason: str | None = None
    """Why that container terminated (Completed, Error, OOMKilled, ...)."""
    finished_at: str | None = None


@dataclass(frozen=True)
class DeploymentObservation:
    name: str
    revision: str | None
    """Revision label of the pod template."""
    image: str | None
    generation: int
    observed_generation: int
    replicas: int
    """Desired replicas (spec)."""
    status_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool
    progress_message: str = ""


@dataclass(frozen=True)
class Observed:
    """Everything observed for one ModelDeployment."""

    jobs: list[JobObservation] = field(default_factory=list)
    deployment: DeploymentObservation | None = None
    existing: frozenset[tuple[str, str]] = frozenset()
    """(kind, name) of every owned serving object that exists (Service, HPA, PDB, NetworkPolicy, claim)."""
    cached: CachedRevision | None = None
    """What the namespace's revision cache holds for the revision the spec asks for."""

    def jobs_for(self, stage: str, revision: str) -> list[JobObservation]:
        return sorted((j for j in self.jobs if j.stage == stage and j.revision == revision), key=lambda j: j.attempt)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def job_observation(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobObservation:
    """Reduce a Job and its pods to a JobObservation."""
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete and complete.get("status") == "True":
        state, reason, message = JobState.SUCCEEDED, "Completed", ""
        finished = status.get("completionTime") or complete.get("lastTransitionTime")
    elif failed and failed.get("status") == "True":
        state, reason, message = JobState.FAILED, failed.get("reason") or "Failed", failed.get("message") or ""
        finished = failed.get("lastTransitionTime")
    else:
        state, reason, message, finished = JobState.ACTIVE, "", "", None
    return JobObservation(
        name=meta["name"],
        stage=labels.get(COMPONENT_LABEL, ""),
        revision=labels.get(REVISION_LABEL, ""),
        attempt=int((meta.get("annotations") or {}).get("modelship.io/attempt", "1")),
        state=state,
        reason=reason,
        message=message,
        termination_message=termination_message(pods, want_success=state == JobState.SUCCEEDED),
        termination_reason=termination_reason(pods),
        finished_at=finished,
    )


def termination_message(pods: list[dict[str, Any]], want_success: bool) -> str | None:
    """The termination message of the newest terminated pod (a succeeded one when the Job succeeded); "" when it
    terminated without one; None while no such pod has been seen."""
    best: tuple[str, str] | None = None
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if want_success and phase != "Succeeded":
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if not term:
                continue
            stamp = term.get("finishedAt") or ""
            msg = term.get("message") or ""  # the API omits an empty message
            if best is None or stamp >= best[0]:
                best = (stamp, msg)
    return best[1] if best else None


def termination_reason(pods: list[dict[str, Any]]) -> str | None:
    """The reason of the newest terminated container (OOMKilled, Error, DeadlineExceeded, ...)."""
    best: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("reason") and (best is None or (term.get("finishedAt") or "") >= best[0]):
                best = (term.get("finishedAt") or "", term["reason"])
    return best[1] if best else None


def deployment_observation(dep: dict[str, Any]) -> DeploymentObservation:
    meta = dep["metadata"]
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    template = spec.get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    progressing = _condition(dep, "Progressing")
    return DeploymentObservation(
        name=meta["name"],
        revision=((template.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL),
        image=containers[0].get("image"),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas", 1)),
        status_replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        progress_deadline_exceeded=bool(progressing and progressing.get("reason") == "ProgressDeadlineExceeded"),
        progress_message=(progressing or {}).get("message") or "",
    )
