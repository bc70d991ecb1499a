"""kstatus from the stages: Ready / Reconciling / Stalled, the phase, lastFailure, and an Event per condition
change. Argo CD, Flux and ``kubectl wait`` read these three conditions; nothing else needs to know the stages."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..api.status import (
    IN_FLIGHT_REASONS,
    Condition,
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


@dataclass(frozen=True)
class JobResults:
    """What a pass found of the Jobs that ran or run (``job_results``): status fields and stage conditions."""

    fields: dict[str, object]
    conditions: tuple[Condition, ...]


JOB_STAGE_RECORDS: tuple[tuple[str, tuple[str, ...], tuple[ConditionType, ...]], ...] = (
    ("optimization", ("source", "optimization"),
     (ConditionType.RESOLVED, ConditionType.OPTIMIZED, ConditionType.GATE_PASSED)),
    ("image", ("image",), (ConditionType.IMAGE_BUILT,)),
)  # fmt: skip
"""Each Job stage: the status field naming its Job, the fields that record what its Jobs did (the model they
fetched, the optimization's figures and artifact, the pushed image, the attempts made) and the conditions that
say it (the digest the optimization Job resolved, the gate's verdict on its figures)."""


def job_results(planned: ModelDeploymentStatus, creating: Collection[str]) -> JobResults:
    """Of the status a pass decided (``planned``) before a write of it was refused, what records Jobs that ran or
    run: those are facts whatever was refused (a build Job pushed the image), and a status that lost them would
    have the next pass start the stage over once the finished Job is gone (job_ttl_seconds): a rebuild, then
    "failed N attempt(s)" though none failed. Per Job stage, its fields and conditions as planned, but not for a
    stage whose record names a Job the pass was to create (``creating``): the pass counted that attempt and said
    JobCreated, and its create may be the refused write or one after it (the creates come last); nor for a stage
    the pass records nothing of (gate not passed, build disabled), whose held record stays.

    Not carried, left as status held: what tells of writes (Deployed, the serving revision and image, the
    endpoint, the rollout and its phase clocks, replicas), and the spec's revision and phase."""
    fields: dict[str, object] = {}
    conditions: list[Condition] = []
    for job_field, names, types in JOB_STAGE_RECORDS:
        record = getattr(planned, job_field)
        if record is None or record.job in creating:
            continue
        fields.update({n: getattr(planned, n) for n in names})
        conditions += [c for c in planned.conditions if c.type in types]
    return JobResults(fields, tuple(conditions))


def stalled(
    prev: ModelDeploymentStatus,
    generation: int | None,
    failure: Failure,
    revision: str | None,
    now: datetime,
    *,
    ran: JobResults | None = None,
) -> tuple[ModelDeploymentStatus, list[Event]]:
    """A resource the stages could not plan for (a spec the operator cannot use, an operator error): Stalled with
    the reason, everything else status holds kept but, given ``ran``, the results of the Jobs a refused pass found
    (their conditions' changes are Events too)."""
    carried = ran or JobResults({}, ())
    conds = ConditionSet(prev.conditions, generation, now)
    for c in prev.conditions:
        if c.type not in (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED):
            conds.keep(c)
    for c in carried.conditions:  # over the held one of its type
        conds.keep(c)
    stall(conds, failure.reason, failure.message)
    status = prev.model_copy(
        update={
            **carried.fields,
            "observed_generation": generation,
            "phase": Phase.FAILED,
            "conditions": conds.as_list(),
            "last_failure": record_failure(prev.last_failure, failure, revision, now),
        }
    )
    return status, events(conds)
