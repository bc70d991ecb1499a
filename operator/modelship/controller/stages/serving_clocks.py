"""The serving revision's clocks: how long a scale-up has been short of replicas, its pods have crash-looped, it
has been below minReplicas under an HPA, and when to look at its pods again while they say nothing. Each clock
counts from stamps that live in objects (the previous status's conditions, the Deployment's own), so an operator
restart does not reset it; a stamp that is unset, unreadable or ahead of now starts no time. Pure functions of the
previous status, the Deployment as observed and ``now``; the deploy stage judges their deadlines."""

from __future__ import annotations

from datetime import datetime

from ...api.status import ConditionType, ModelDeploymentStatus
from ..conditions import seconds_since
from ..observe import DeploymentObservation


def seconds_since_stamps(now: datetime, *stamps: str | None, latest: bool = False) -> float:
    """Seconds since the earliest of the ``stamps`` that are set (times read from objects: a condition's
    lastTransitionTime, the Deployment's Available=False), or since the latest of them with ``latest``; 0 when
    none is set or that one is ahead of ``now``."""
    ages = [age for age in (seconds_since(s, now) for s in stamps) if age is not None]  # unset or unreadable: none
    if not ages:
        return 0.0
    return max(0.0, min(ages) if latest else max(ages))


def short_for(prev: ModelDeploymentStatus, dep: DeploymentObservation, now: datetime) -> float:
    """Seconds a scale-up has been short of replicas: since the earlier of the Capacity condition the previous
    status wrote (False: short since its lastTransitionTime) and the Deployment's Available condition turning
    False (the controller's own record, there when the operator did not run as the shortfall began). Both live
    in objects, so an operator restart does not reset the clock; 0 at the first look."""
    was = prev.condition(ConditionType.CAPACITY)
    short_since = was.last_transition_time if was is not None and was.status == "False" else None
    return seconds_since_stamps(now, short_since, dep.unavailable_since)


def crash_looping_for(prev: ModelDeploymentStatus, now: datetime) -> float:
    """Seconds the revision's pods have crash-looped: since the ContainerHealthy condition the previous status
    wrote turned False (it stays False while they crash-loop, also through the moments a restarted pod is ready
    between crashes: ``podhealth.crash_looping``); 0 at the first look."""
    was = prev.condition(ConditionType.CONTAINER_HEALTHY)
    return seconds_since_stamps(now, was.last_transition_time) if was is not None and was.status == "False" else 0.0


def below_floor_for(prev: ModelDeploymentStatus, dep: DeploymentObservation, now: datetime) -> float:
    """Seconds a revision has been below minReplicas: since the Deployment's Available condition turned False,
    yet no earlier than the previous status's Deployed condition says the revision dropped. Available keeps its
    lastTransitionTime through every short scale-up (False at any with maxUnavailable 0, while Deployed stays
    True), so it alone would count a drop below the floor from a scale-up long before: Deployed True at the last
    look, the drop is now; Deployed not True (RollingOut, RolloutStalled, ...), the later of the two stamps, or
    Deployed's alone when the Deployment counts itself available (a maxUnavailable above 0 lets it below
    minReplicas). Pods that crash-loop reach minReplicas between crashes and make Deployed True for a moment: the
    crash loop's own clock (``crash_looping_for``), which such a moment does not reset, counts then. All live in
    objects, so an operator restart does not reset the clock."""
    crashing = crash_looping_for(prev, now)
    was = prev.condition(ConditionType.DEPLOYED)
    if was is None or was.status == "True":
        return crashing
    return max(crashing, seconds_since_stamps(now, dep.unavailable_since, was.last_transition_time, latest=True))


POD_LOOK_SECONDS = 15.0
"""While a revision is short of replicas and its pods say nothing yet (they start, or load the model), look at them
again this soon at first: no watch tells when one of them starts crash-looping (the Deployment's status does not
change while a pod that never was ready crashes)."""
POD_LOOK_MAX_SECONDS = 300.0
"""The longest wait between two such looks (a shortfall nothing on a pod explains: a ResourceQuota that lets no
pod be created, CreateContainerConfigError, a readiness probe that never passes)."""


def pod_look_after(
    prev: ModelDeploymentStatus, dep: DeploymentObservation | None, now: datetime, scaled: str | None = None
) -> float:
    """When to look at the pods again while they say nothing: as long as the revision has been short and nothing
    moved (since the latest of the previous status's Deployed turning False, the Deployment controller's last
    progress, its Progressing lastUpdateTime: a rollout that starts after a long optimization is looked at soon,
    and the HPA's last scale, ``scaled``: a scale keeps the Progressing condition as it was, so new pods made by
    one are looked at soon too), at least ``POD_LOOK_SECONDS`` and at most ``POD_LOOK_MAX_SECONDS``: 15 s,
    doubling to 300 s, so a shortfall that lasts costs a pod LIST every 5 minutes, not every 15 s for ever. A crash
    loop is still seen within the first looks of a rollout or a scale, and within 5 minutes of a later start. A
    stamp ahead of ``now`` (a skewed clock) counts as now."""
    was = prev.condition(ConditionType.DEPLOYED)
    if was is None or was.status == "True":
        return POD_LOOK_SECONDS
    moved = dep.progress_updated if dep is not None else None
    short = seconds_since_stamps(now, was.last_transition_time, moved, scaled, latest=True)
    return min(POD_LOOK_MAX_SECONDS, max(POD_LOOK_SECONDS, short))


def soonest(*dues: float | None) -> float | None:
    """The earliest of the times to look again that are set."""
    return min((d for d in dues if d is not None), default=None)
