"""Deploy: serve a revision with the Deployment (image by digest), Service, HPA, PDB and NetworkPolicy, and judge
its rollout. The revision the spec asks for serves once it is built; until then the previous good one keeps
serving with the current serving settings, so a revision that fails never takes the service down."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ...api.modeldeployment import ModelDeployment
from ...api.status import ConditionType, ModelDeploymentStatus, Phase, Reason, StageName
from ...resources.artifact import single_node_warning
from ...resources.canary import mirror_source
from ...resources.kinds import PRUNED
from ...resources.meta import serving_name
from ...resources.plan import ServingPlan, serving_plan
from ...resources.serving import ServedArtifact, service_url
from ..conditions import duration
from ..observe import DeploymentObservation, EndpointsObservation
from ..podhealth import (
    Cause,
    Trouble,
    cause,
    crashed_since,
    recovery_due,
)
from .build import BuildOutcome
from .context import (
    ConditionUpdate,
    Context,
    Effects,
    Failure,
    Manifest,
    ObjectRef,
    Progress,
    StageEvent,
    condition,
    pending,
)
from .memory import what_serves
from .mounts import held, missing_mounts
from .pod_causes import cause_text, container_health, crash_loop_stalled, serving_meanwhile
from .rollout_checks import (
    autoscaled_floor,
    judged_pods,
    newest_available,
    rollout_complete,
    serves_at_floor,
    template_rolled_out,
    wanted_replicas,
)
from .serving_clocks import below_floor_for, crash_looping_for, pod_look_after, short_for, soonest


@dataclass(frozen=True)
class ServingTarget:
    """Which revision the serving objects run, with which image (None: the stock runtime) and, without an image,
    which pushed artifact its pods pull (None: they mount the artifact claim)."""

    revision: str
    image: str | None
    artifact: ServedArtifact | None = None
    holding: tuple[Reason, str] | None = None
    """Why the previous revision serves though the spec's is built (it is being verified), for Deployed."""


def target(ctx: Context, built: BuildOutcome) -> ServingTarget | None:
    """The revision the spec asks for once it is built, else the one that served before (if any, and known:
    ``memory``), with the image or artifact it served from."""
    if built.built:
        return ServingTarget(ctx.revision, built.image, built.artifact)
    return serving(ctx)


def serving(ctx: Context, holding: tuple[Reason, str] | None = None) -> ServingTarget | None:
    """The revision that serves now, with its image or artifact, as far as it is known (``memory``)."""
    served = what_serves(ctx).served
    if served is None:
        return None
    return ServingTarget(served.revision, served.image, served.artifact, holding)


@dataclass(frozen=True)
class DeployOutcome:
    serving_revision: str | None
    serving_image: str | None
    serving_artifact: str | None
    """status.servingArtifact: the OCI artifact (by digest) the pods of servingRevision pull."""
    url: str | None
    effects: Effects


def scaling_down(dep: DeploymentObservation, routed: int) -> bool:
    """More replicas available, routed or counted than the HPA's spec.replicas: the count moves down."""
    n = dep.replicas
    return dep.available_replicas > n or routed > n or dep.status_replicas > n


def capacity_short(dep: DeploymentObservation, routed: int) -> bool:
    """A scale-up not complete: fewer replicas available or routed than the HPA's spec.replicas. It holds while
    surplus pods go too (an HPA that lowers its count during a stalled scale-up: status.replicas still counts the
    pending pods the controller has not deleted yet): fewer serve than asked for, whichever way the count moves."""
    return dep.available_replicas < dep.replicas or routed < dep.replicas


def scaling_message(dep: DeploymentObservation, rev: str, routed: int, floor: int, service: str) -> str:
    """Deployed's message while the HPA moves spec.replicas of a revision that serves at minReplicas or more."""
    n, available = dep.replicas, dep.available_replicas
    if capacity_short(dep, routed):  # short first: surplus pending pods going away are no scale-down done
        return (
            f"{available}/{n} replicas of {rev} available, {routed}/{n} endpoints ready in Service {service}, "
            f"autoscaler scaling up (at least minReplicas {floor} serve)"
        )
    if scaling_down(dep, routed):
        return (
            f"{available} replicas of {rev} available, {routed} endpoints ready in Service {service}, "
            f"autoscaler scaling down to {n}"
        )
    return f"{n}/{n} replicas of {rev} available and ready endpoints of Service {service}"


@dataclass(frozen=True)
class Capacity:
    """What a scale-up that is short says: the Capacity condition, a suffix of Deployed's message, when to look
    again (the deadline, for a scale-up not stalled yet)."""

    condition: ConditionUpdate
    suffix: str = ""
    requeue_after: float | None = None


def capacity(
    md: ModelDeployment, dep: DeploymentObservation, rev: str, routed: int, service: str, now: datetime, told: str = ""
) -> Capacity | None:
    """The Capacity condition while not every replica the HPA asks for of ``rev`` serves (None once they do,
    also while surplus ones go away): ScalingUp until that has lasted the rollout's progressDeadlineSeconds (the
    deadline the Deployment controller applies to a rollout, and does not apply to a pure scale), then
    ScaleUpStalled. Ready stays True meanwhile (at least minReplicas serve): traffic is served, capacity is
    missing, so it is a condition of its own and a Warning Event, not Stalled. ``told`` (``cause_text``) says why
    the new pods do not serve, when their pods say it."""
    if not capacity_short(dep, routed):
        return None
    n, available = dep.replicas, dep.available_replicas
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    seconds = short_for(md.status, dep, now)
    counts = f"{available}/{n} replicas of {rev} available"
    routes = f"{routed}/{n} endpoints ready in Service {service}"
    if seconds < deadline:
        message = f"{counts}, {routes}: the autoscaler scales up{told}"
        scaling = condition(ConditionType.CAPACITY, False, Reason.SCALING_UP, message)
        return Capacity(scaling, "", deadline - seconds + 1)
    # the deadline, not the time so far: the message stays the same from one status write to the next (the
    # condition's lastTransitionTime says since when)
    message = (
        f"{counts} for more than {duration(deadline)} (progressDeadlineSeconds {deadline}), {routes}: the autoscaler's "
        "scale-up makes no progress (new pods unschedulable, crash-looping or not pulled: the pods' events and "
        "the HPA's status tell which); the replicas that serve keep serving"
    ) + told
    cond = condition(ConditionType.CAPACITY, False, Reason.SCALE_UP_STALLED, message)
    return Capacity(cond, f"; scale-up stalled for more than {duration(deadline)}")


@dataclass(frozen=True)
class BelowFloor:
    """A revision short of minReplicas under an HPA with no deadline of the Deployment controller's: its stall
    (the message, once that has lasted progressDeadlineSeconds), else when to look again (the deadline)."""

    stalled: str | None = None
    requeue_after: float | None = None


def below_floor(
    md: ModelDeployment,
    prev: ModelDeploymentStatus,
    dep: DeploymentObservation | None,
    desired: dict[str, Any],
    rev: str,
    now: datetime,
    told: str = "",
) -> BelowFloor | None:
    """Fewer than minReplicas of ``rev`` available under an HPA, with ``rev``'s template rolled out by the
    Deployment controller's word (NewReplicaSetAvailable, which it keeps while only the count moves: it runs no
    progress deadline on a pure scale, so the HPA's raise to minReplicas, or a pod lost since, that never comes up
    is not flagged by it). The clock (serving_clocks.below_floor_for) is the Deployment's own, its Available
    condition False since (with the default maxUnavailable 0, as soon as fewer than spec.replicas are available),
    started no earlier than the previous status's Deployed condition says the revision dropped (that alone with a
    maxUnavailable above 0), or the crash loop's when the pods crash-loop; past the rollout's
    progressDeadlineSeconds it is a stalled rollout, as the controller's ProgressDeadlineExceeded would be;
    ``told`` says why, when the pods say it. None when the controller runs the rollout (its deadline holds) or it
    has not observed the last change."""
    floor = autoscaled_floor(md, desired)
    if floor is None or dep is None or dep.available_replicas >= floor:
        return None
    if dep.observed_generation < dep.generation or not template_rolled_out(dep, desired, rev):
        return None
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    seconds = below_floor_for(prev, dep, now)
    if seconds < deadline:
        return BelowFloor(requeue_after=deadline - seconds + 1)
    # the deadline, not the time so far, and no live count (crash-looping pods flap it): the message stays the same
    # from one pass to the next, so no status write, lastFailure or Event of its own (Capacity/Ready carry counts)
    return BelowFloor(
        f"fewer than minReplicas {floor} replicas of {rev} available for more than "
        f"{duration(deadline)} (progressDeadlineSeconds {deadline}): its new pods do not come up (unschedulable, "
        "over a ResourceQuota, crash-looping or not pulled: the pods' events and the ReplicaSet's conditions tell "
        "which), and the Deployment controller sets no deadline on a count the autoscaler moves" + told
    )


def pods_wanted(md: ModelDeployment, dep: DeploymentObservation) -> bool:
    """Read the serving pods this pass (a list by label: no watch holds them): the Deployment has fewer pods
    available, ready or of its newest template than it asks for (or than minReplicas under an HPA), it still runs
    pods of an older template beside them (a rollout's surge: with one replica the old pod keeps every count full
    while the new one crash-loops), or the previous status says its pods crash-loop (kept through the moments they
    are all ready between crashes)."""
    if md.status.condition(ConditionType.CONTAINER_HEALTHY) is not None:
        return True
    auto = md.spec.serving.autoscaling
    return dep.short_of(max(dep.replicas, auto.min_replicas if auto.enabled else 0))


def scaled_to_zero(md: ModelDeployment, dep: DeploymentObservation | None, desired: dict[str, Any]) -> str | None:
    """Why nothing will serve when an HPA owns the count and the Deployment was scaled to 0 outside the operator:
    the HPA does not scale a target at 0 replicas (its ScalingActive condition says ScalingDisabled), so nothing
    brings it back. None otherwise (also when the operator's own apply still holds the count: it hands it over)."""
    floor = autoscaled_floor(md, desired)
    if floor is None or dep is None or dep.replicas != 0 or dep.replicas_applied:
        return None
    name = dep.name
    return (
        f"Deployment {name} was scaled to 0 replicas outside the operator, and the HPA does not scale a target at 0 "
        f"(autoscaling stays disabled while it is): nothing serves; scale it back (kubectl scale deployment {name} "
        f"--replicas={floor}), or set spec.suspend to scale to zero"
    )


def handover(md: ModelDeployment, dep: DeploymentObservation | None, desired: dict[str, Any]) -> Manifest | None:
    """When autoscaling is switched on, the manifest leaves spec.replicas out; had the operator's server-side
    apply owned it (it set the count before), that apply would remove the field and the Deployment would fall to
    the default of 1 replica until the HPA acts. So, in that pass, the count is first applied under a field
    manager of its own (the live count, at least minReplicas): the field keeps an owner, keeps its value, and is
    the HPA's from its first write on. None when nothing is to hand over."""
    floor = autoscaled_floor(md, desired)
    if floor is None or dep is None or not dep.replicas_applied:
        return None
    meta = desired["metadata"]
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "spec": {"replicas": max(dep.replicas, floor)},
    }


def serves_while_scaling(
    md: ModelDeployment,
    prev: ModelDeploymentStatus,
    dep: DeploymentObservation | None,
    desired: dict[str, Any],
    rev: str,
    routed: int,
) -> bool:
    """``rev`` is (or keeps being) Deployed (Ready) while an HPA scales it: it was Deployed (every wanted replica
    available and routed) and since then nothing but the count moved (its template stays fully rolled out, the
    controller says), and at least minReplicas of its pods are available and ready endpoints of the Service.

    A revision not Deployed before (a plain rollout, or a Canary's promotion) is too once its template is fully
    rolled out by the controller's word (observed, NewReplicaSetAvailable: every pod it wanted then was available)
    and at least minReplicas of it serve: an HPA that scaled it beyond what can be scheduled right after the roll
    is a Capacity shortfall, not a rollout that never ends (which would keep servingRevision on the revision
    before, and the next spec change would roll the serving pods back to it); the rule promotion uses.

    A new template, a rollout the controller has not finished, the operator's own replicas (no HPA) or fewer
    than minReplicas serving: False, judged as any rollout (all wanted replicas available and routed).
    While the controller has not yet observed the HPA's write (observedGeneration behind) its status still
    describes the settled template: the same judgement holds, but only when that is sure: the Deployment carries
    this operator's template digest (an older operator's has none) and the previous status was written for this
    ModelDeployment's generation (else a status write failed after an apply, and the unobserved change may be the
    operator's own template, not the HPA's count)."""
    floor = autoscaled_floor(md, desired)
    if floor is None or dep is None:
        return False
    was = prev.condition(ConditionType.DEPLOYED)
    if prev.serving_revision != rev or was is None or was.status != "True":
        return serves_at_floor(dep, desired, rev, floor, routed, lag_ok=False)
    if dep.observed_generation < dep.generation and (
        dep.template is None or prev.observed_generation is None or prev.observed_generation != md.metadata.generation
    ):
        return False
    return template_rolled_out(dep, desired, rev) and dep.available_replicas >= floor and routed >= floor


def scaled_up(prev: ModelDeploymentStatus, message: str) -> tuple[StageEvent, ...]:
    """A Normal Event (CapacityScaledUp) when a scale-up the previous status said was stalled is over."""
    was = prev.condition(ConditionType.CAPACITY)
    if was is None or was.reason != Reason.SCALE_UP_STALLED:
        return ()
    return (StageEvent(False, f"{ConditionType.CAPACITY.value}{Reason.SCALED_UP.value}", f"scale-up over: {message}"),)


def routed_endpoints(endpoints: EndpointsObservation | None, rev: str) -> int:
    """Ready endpoints of pods of ``rev`` the Service's EndpointSlices list (0 before the Service exists)."""
    return endpoints.ready_of(rev) if endpoints is not None else 0


def _turned_off(ctx: Context, sp: ServingPlan) -> tuple[ObjectRef, ...]:
    """Optional objects (the pruned kinds) the spec no longer wants but the ModelDeployment created before."""
    name, optional = serving_name(ctx.md), sp.optional()
    return tuple(
        (pruned.api_version, pruned.kind, name)
        for pruned in PRUNED
        if pruned.kind in optional  # the HTTPRoute is the verify stage's
        and optional[pruned.kind] is None
        and (pruned.kind, name) in ctx.observed.existing
    )


def _kept(ctx: Context) -> tuple[str | None, str | None, str | None]:
    """(servingRevision, servingImage, servingArtifact) for status while the revision that served before still
    does: as far as it is known (recovered from the serving Deployment when status lost them: written back
    once the CRD keeps them)."""
    memory = what_serves(ctx)
    if memory.served is None:
        return ctx.prev.serving_revision, ctx.prev.serving_image, ctx.prev.serving_artifact
    served = memory.served
    return served.revision, served.image, served.artifact.reference if served.artifact is not None else None


def deploy(ctx: Context, serve: ServingTarget | None) -> DeployOutcome:
    rev, dep = ctx.revision, ctx.observed.deployment
    kept = _kept(ctx)
    prev_revision = kept[0]
    if serve is None:
        unknown = what_serves(ctx).unknown
        if unknown is not None:  # what serves cannot be told (an older CRD pruned it): nothing is touched
            failure = Failure(StageName.DEPLOY, Reason.CRD_OLDER_THAN_OPERATOR, unknown)
            cond = condition(ConditionType.DEPLOYED, False, Reason.CRD_OLDER_THAN_OPERATOR, unknown)
            url = service_url(ctx.md, ctx.config) if prev_revision else None
            return DeployOutcome(*kept, url, Effects(conditions=(cond,), failure=failure))
        waiting = pending(ConditionType.DEPLOYED, "nothing to deploy yet")
        return DeployOutcome(*kept, None, waiting)
    source = mirror_source(ctx.md, ctx.observed.canary_service_ip)  # Canary strategy: where a candidate offers
    sp = serving_plan(ctx.md, serve.revision, ctx.config, serve.image, serve.artifact, source)
    from_claim = serve.image is None and serve.artifact is None
    given = handover(ctx.md, dep, sp.deployment)
    objects = Effects(apply=tuple(sp.objects()), delete=_turned_off(ctx, sp), handover=(given,) if given else ())
    url = service_url(ctx.md, ctx.config)
    absent = missing_mounts(ctx, sp.deployment, f"rollout of revision {serve.revision}")
    if absent is not None:  # its pods could not start: the Deployment keeps the template that serves (if any)
        others = tuple(o for o in objects.apply if o is not sp.deployment)
        waiting = held(ctx, StageName.DEPLOY, ConditionType.DEPLOYED, absent)
        effects = replace(waiting, apply=others, delete=objects.delete)
        return DeployOutcome(*kept, url, effects)
    one_node = single_node_warning(ctx.md, ctx.config) if from_claim else None
    # what the pods of the revision being rolled out say about why they do not serve (read only while it is short)
    pods = judged_pods(ctx.observed.serving_pods, dep, sp.deployment)
    # the Deployment's own pods of every template, from the same list: what serves beside the judged ones
    listed = ctx.observed.serving_pods if pods is not None else None
    found = cause(pods, rev, ctx.now) if serve.revision == rev else None
    told = cause_text(ctx.md, found)
    # a stall's words (its Deployed message, ContainerHealthy, lastFailure) leave out the state of the moment of a
    # crash-looping container, which changes at each restart: one status write when it stalls, not one per cycle
    steady = found.steady() if found is not None else None
    told_steady = cause_text(ctx.md, steady)
    # a crash loop whose pods run (ready between crashes) ends when they have run long enough: look again then
    recovers = recovery_due(pods, rev, ctx.now) if found is not None else None

    def deployed(status: bool, reason: Reason, message: str, health: Cause | None) -> tuple[ConditionUpdate, ...]:
        """The Deployed condition, MultiNode (False) while the pods are confined to one node, ContainerHealthy
        (False) while they crash-loop (``health``)."""
        out = [condition(ConditionType.DEPLOYED, status, reason, message), *container_health(ctx.md, health)]
        if one_node is not None:
            out.append(condition(ConditionType.MULTI_NODE, False, Reason.ARTIFACT_CLAIM_READ_WRITE_ONCE, one_node))
        return tuple(out)

    def still(status: bool, reason: Reason, message: str, **more: Any) -> DeployOutcome:
        """The revision that served before still does (all but a completed rollout); a stall (``failure``) says
        its cause in steady words."""
        more["requeue_after"] = soonest(more.get("requeue_after"), recovers)
        health = steady if more.get("failure") is not None else found
        effects = replace(objects, conditions=deployed(status, reason, message, health), **more)
        return DeployOutcome(*kept, url, effects)

    if serve.revision != rev and serve.holding is not None:
        return still(False, *serve.holding)
    if serve.revision != rev:
        return still(
            False, Reason.PREVIOUS_REVISION_SERVING, f"revision {serve.revision} serves while {rev} is not deployable"
        )
    want = wanted_replicas(ctx.md, sp.deployment, dep)
    service, routed = serving_name(ctx.md), routed_endpoints(ctx.observed.endpoints, rev)

    def serves(message: str, *more: ConditionUpdate, **extra: Any) -> DeployOutcome:
        extra["requeue_after"] = soonest(extra.get("requeue_after"), recovers)
        effects = replace(objects, conditions=deployed(True, Reason.AVAILABLE, message, found) + more, **extra)
        served = serve.artifact.reference if serve.artifact is not None else None
        return DeployOutcome(rev, serve.image, served, url, effects)

    zero = scaled_to_zero(ctx.md, dep, sp.deployment)
    if zero is not None:
        return still(False, Reason.SCALED_TO_ZERO, zero, failure=Failure(StageName.DEPLOY, Reason.SCALED_TO_ZERO, zero))
    deadline = ctx.md.spec.serving.rollout.progress_deadline_seconds
    crash = found if found is not None and found.trouble == Trouble.CRASH_LOOP else None
    crashing_for = crash_looping_for(ctx.prev, ctx.now) if crash is not None else 0.0
    scaling = dep is not None and serves_while_scaling(ctx.md, ctx.prev, dep, sp.deployment, rev, routed)
    complete = rollout_complete(ctx.md, dep, sp.deployment, rev)
    was = ctx.prev.condition(ConditionType.DEPLOYED)
    # once stalled, a container that crashed again since keeps it so; one crash then a slow start does not (it
    # would be "crash-looping" until it has run 10 minutes while every replica serves)
    stuck = (
        was is not None
        and was.reason == Reason.SERVING_CRASH_LOOP
        and crashed_since(pods, rev, was.last_transition_time)
    )
    if crash is not None and crashing_for >= deadline and (stuck or not (scaling or (complete and routed >= want))):
        # replicas missing (or all ready for a moment between crashes, after the stall): a flap does not end it
        message = crash_loop_stalled(ctx.md, rev, steady, prev_revision, dep, listed)
        failure = Failure(StageName.DEPLOY, Reason.SERVING_CRASH_LOOP, message)
        return still(False, Reason.SERVING_CRASH_LOOP, message, failure=failure)
    crash_due = deadline - crashing_for + 1 if crash is not None else None
    # an HPA moving the count of a revision that serves is no rollout: it stays Deployed (Ready) at minReplicas
    if dep is not None and scaling:
        floor = autoscaled_floor(ctx.md, sp.deployment) or want
        message = scaling_message(dep, rev, routed, floor, service)
        short = capacity(ctx.md, dep, rev, routed, service, ctx.now, told)
        if short is not None:
            return serves(message + short.suffix, short.condition, requeue_after=short.requeue_after)
        return serves(message, events=scaled_up(ctx.prev, message))
    if complete:
        # available pods are not yet routed: Ready means the Service sends requests to the revision's pods
        if routed < want:
            message = f"{want}/{want} replicas of {rev} available, {routed}/{want} endpoints ready in Service {service}"
            return still(
                False, Reason.ROLLING_OUT, message, progress=Progress(Reason.ROLLING_OUT, message, Phase.DEPLOYING)
            )
        return serves(f"{want}/{want} replicas of {rev} available and ready endpoints of Service {service}")
    if dep is not None and dep.progress_deadline_exceeded and dep.revision == rev:
        reason = Reason.SERVING_CRASH_LOOP if crash is not None else Reason.ROLLOUT_STALLED
        message = f"rollout of {rev} made no progress: {dep.progress_message}{told_steady}"
        message += serving_meanwhile(rev, prev_revision, dep, listed)
        return still(False, reason, message, failure=Failure(StageName.DEPLOY, reason, message))
    low = below_floor(ctx.md, ctx.prev, dep, sp.deployment, rev, ctx.now, told_steady)
    if low is not None and low.stalled is not None:
        reason = Reason.SERVING_CRASH_LOOP if crash is not None else Reason.ROLLOUT_STALLED
        return still(False, reason, low.stalled, failure=Failure(StageName.DEPLOY, reason, low.stalled))
    fewest, most = newest_available(dep, sp.deployment, rev, pods)
    count = f"{fewest}/{want}" if fewest == most else f"{fewest} to {most} of {want}"
    message = f"{count} replicas of {rev} available"
    if dep is not None and dep.replicas < want:
        message += f" (the HPA raises the Deployment to minReplicas {want})"
    message += told
    scaled = ctx.observed.last_scaled
    look = pod_look_after(ctx.prev, dep, ctx.now, scaled) if found is None and pods is not None else None
    progress = Progress(Reason.ROLLING_OUT, message, Phase.DEPLOYING)
    due = soonest(low.requeue_after if low else None, crash_due, look)
    return still(False, Reason.ROLLING_OUT, message, progress=progress, requeue_after=due)
