"""What every stage gets (``Context``) and what every stage gives back besides its typed result (``Effects``).

A stage never writes status or talks to the API server: it says which conditions it reached, which objects it
wants created, applied or deleted, whether it failed (``Failure``: the resource is Stalled) or has work in
flight (``Progress``: the resource is Reconciling), and when it wants another look. ``plan()`` folds the
effects of all stages, in order, into one Plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...api.modeldeployment import ModelDeployment
from ...api.status import ConditionType, ModelDeploymentStatus, Phase, Reason, StageName
from ...config import OperatorConfig
from ..observe import Observed

Manifest = dict[str, Any]
ObjectRef = tuple[str, str, str]
"""(apiVersion, kind, name) of an object in the ModelDeployment's namespace."""


@dataclass(frozen=True)
class Context:
    """The inputs of one reconcile decision: all a stage may look at."""

    md: ModelDeployment
    revision: str
    """Content-addressed revision the spec asks for."""
    observed: Observed
    config: OperatorConfig
    now: datetime

    @property
    def prev(self) -> ModelDeploymentStatus:
        """The status the previous reconcile wrote."""
        return self.md.status

    @property
    def suspended(self) -> bool:
        return self.md.spec.suspend


@dataclass(frozen=True)
class ConditionUpdate:
    type: ConditionType
    status: bool | None
    reason: Reason
    message: str = ""


@dataclass(frozen=True)
class Failure:
    """The stage cannot go on for this revision without a change: the resource is Stalled."""

    stage: StageName
    reason: Reason
    message: str


@dataclass(frozen=True)
class Progress:
    """Work in flight: the resource is Reconciling, in ``phase``."""

    reason: Reason
    message: str
    phase: Phase


@dataclass(frozen=True)
class StageEvent:
    """An Event a stage posts itself (a step no condition change shows, e.g. the next canary step)."""

    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Effects:
    """What one stage contributes to the plan."""

    conditions: tuple[ConditionUpdate, ...] = ()
    create: tuple[Manifest, ...] = ()
    """Objects to create (Jobs: never updated, a new attempt is a new Job)."""
    apply: tuple[Manifest, ...] = ()
    """Objects to server-side apply."""
    handover: tuple[Manifest, ...] = ()
    """Fields to server-side apply under the handover field manager before ``apply`` (the replica count an HPA
    takes over: it keeps an owner when the operator's apply stops setting it)."""
    delete: tuple[ObjectRef, ...] = ()
    failure: Failure | None = None
    progress: Progress | None = None
    requeue_after: float | None = None
    """Seconds until the stage wants another look (a retry backoff, a Job result still on its way)."""
    needs_artifact_claim: bool = False
    """The artifact claim must exist (a Job writes to it): the plan applies it first when it does not."""
    events: tuple[StageEvent, ...] = ()


def condition(type_: ConditionType, status: bool | None, reason: Reason, message: str = "") -> ConditionUpdate:
    return ConditionUpdate(type_, status, reason, message)


def pending(type_: ConditionType, message: str) -> Effects:
    """A stage waiting for an upstream result (left out of status once an upstream stage failed)."""
    return Effects(conditions=(condition(type_, None, Reason.PENDING, message),))
