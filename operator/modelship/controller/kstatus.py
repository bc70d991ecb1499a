"""kstatus from the stages: Ready / Reconciling / Stalled, the phase, lastFailure, and an Event per condition
change. Argo CD, Flux and ``kubectl wait`` read these three conditions; nothing else needs to know the stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..api.status import (
    IN_FLIGHT_REASONS,
    ConditionType,
    LastFailure,
    ModelDeploymentStatus,
    Phase,
    Reason,
)
from .conditions import ConditionSet, rfc3339
from .stages.context import Failure, Progress

FAILURE_MESSAGE_LIMIT = 2000


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    """``<condition type><reason>``, e.g. ImageBuiltPushed."""
    message: str


def summarize(conds: ConditionSet, *, suspended: bool, failure: Failure | None, progress: Progress | None) -> Phase:
    """Set the kstatus trio from the stage conditions already in ``conds``; return the phase."""
    deployed = conds.get(ConditionType.DEPLOYED)
    if suspended:
        conds.set(ConditionType.READY, False, Reason.SUSPENDED, "suspended: scaled to zero, nothing removed")
        conds.set(ConditionType.RECONCILING, False, Reason.SUSPENDED)
        conds.set(ConditionType.STALLED, False, Reason.SUSPENDED)
        return Phase.SUSPENDED
    if failure is not None:
        stall(conds, failure.reason, failure.message)
        return Phase.FAILED
    if deployed is not None and deployed.status == "True":
        conds.set(ConditionType.READY, True, Reason.AVAILABLE, deployed.message)
        conds.set(ConditionType.RECONCILING, False, Reason.IDLE)
        conds.set(ConditionType.STALLED, False, Reason.HEALTHY)
        return Phase.READY
    reason, message = (progress.reason, progress.message) if progress else (Reason.PROGRESSING, "working")
    conds.set(ConditionType.READY, False, reason, message)
    conds.set(ConditionType.RECONCILING, True, reason, message)
    conds.set(ConditionType.STALLED, False, Reason.HEALTHY)
    return progress.phase if progress else Phase.PENDING


def stall(conds: ConditionSet, reason: Reason, message: str) -> None:
    conds.set(ConditionType.READY, False, reason, message)
    conds.set(ConditionType.RECONCILING, False, reason)
    conds.set(ConditionType.STALLED, True, reason, message)


def record_failure(prev: LastFailure | None, failure: Failure, revision: str | None, now: datetime) -> LastFailure:
    """status.lastFailure for ``failure``; the time it first happened is kept while it stays the same."""
    new = LastFailure(
        stage=failure.stage.value,
        reason=failure.reason.value,
        message=failure.message[:FAILURE_MESSAGE_LIMIT],
        revision=revision,
        time=rfc3339(now),
    )
    if prev is not None and (prev.stage, prev.reason, prev.message, prev.revision) == (
        new.stage,
        new.reason,
        new.message,
        new.revision,
    ):
        return prev
    return new


def events(conds: ConditionSet) -> list[Event]:
    """One Event per changed condition (Reconciling and Stalled say nothing Ready does not): Warning when a
    condition turned False for a reason other than work in flight."""
    out = []
    for c in conds.changes():
        if c.type in (ConditionType.RECONCILING, ConditionType.STALLED, ConditionType.VERIFIED):
            continue  # Verified: the rollout stage posts one Event per step itself
        if c.type == ConditionType.CAPACITY and c.reason == Reason.SCALING_UP:
            continue  # every autoscaler scale-up: no news until it stalls
        warning = c.status == "False" and c.reason not in IN_FLIGHT_REASONS
        message = c.message or f"{c.type} is {c.status}"
        out.append(Event(EventType.WARNING if warning else EventType.NORMAL, f"{c.type}{c.reason}"[:128], message))
    return out


def stalled(
    prev: ModelDeploymentStatus, generation: int | None, failure: Failure, revision: str | None, now: datetime
) -> tuple[ModelDeploymentStatus, list[Event]]:
    """A resource the stages could not plan for (a spec the operator cannot use, an operator error): Stalled with
    the reason, everything else status holds kept."""
    conds = ConditionSet(prev.conditions, generation, now)
    for c in prev.conditions:
        if c.type not in (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED):
            conds.keep(c)
    stall(conds, failure.reason, failure.message)
    status = prev.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.FAILED,
            "conditions": conds.as_list(),
            "last_failure": record_failure(prev.last_failure, failure, revision, now),
        }
    )
    return status, events(conds)
