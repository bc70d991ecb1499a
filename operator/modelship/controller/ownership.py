"""Own only what you created: who controls the objects a plan wants to write, judged before any write.

A ModelDeployment writes an object only when it controls it (an owner reference with its uid and
``controller: true``, as controller-runtime's ``IsControlledBy``) or when no object has that name yet. Anything
else (an object without owner, one controlled by another ModelDeployment, including a deleted and re-created
namesake with another uid, or by anything else) is left untouched and the ModelDeployment is Stalled with
reason NameConflict naming it. Pure: ``controller.reconcile`` reads the objects and carries the verdict out.

The race window between the read and the write is closed by the API server, not by timing: a missing object is
created by POST (a 409 means someone else's object took the name: read again, judge again); an object judged
ours is server-side applied with its uid as precondition (another object under that name is refused); a pruned
object is deleted with its uid as precondition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.status import Reason, StageName
from ..resources.meta import COMPONENT_LABEL, controlled_by, describe_controller
from .stages.build import COMPONENT as BUILD_COMPONENT
from .stages.context import Failure
from .stages.optimize import COMPONENT as OPTIMIZE_COMPONENT

_STAGE_OF_COMPONENT = {OPTIMIZE_COMPONENT: StageName.OPTIMIZE, BUILD_COMPONENT: StageName.BUILD}


@dataclass(frozen=True)
class Conflict:
    """An object the plan wants to write that this ModelDeployment does not control."""

    kind: str
    name: str
    holder: str
    """Who controls it, for people."""
    stage: StageName

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.holder})"


def judge(manifest: dict[str, Any], live: dict[str, Any] | None, owner_uid: str | None) -> Conflict | None:
    """None when the plan may write ``manifest``: no object has its name, or ``owner_uid`` controls it."""
    if live is None or controlled_by(live, owner_uid):
        return None
    component = (manifest["metadata"].get("labels") or {}).get(COMPONENT_LABEL, "")
    stage = _STAGE_OF_COMPONENT.get(component, StageName.DEPLOY) if manifest["kind"] == "Job" else StageName.DEPLOY
    return Conflict(manifest["kind"], manifest["metadata"]["name"], describe_controller(live), stage)


def name_conflict(conflicts: list[Conflict]) -> Failure:
    """The failure that stalls the ModelDeployment: every object named, and what to do."""
    objects = "; ".join(str(c) for c in conflicts)
    message = (
        f"{objects}: exists and is not controlled by this ModelDeployment, so it is left untouched (the operator "
        "never takes over an object it did not create); delete or rename that object, or rename the "
        "ModelDeployment"
    )
    return Failure(conflicts[0].stage, Reason.NAME_CONFLICT, message)
