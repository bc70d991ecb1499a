"""Verify (Canary strategy): between build and deploy, a built revision that would replace the serving one is
first verified on live traffic, beside it: shadow (the stable pods mirror a share of requests to it), canary
steps (it takes a share of the Service's pods), then promotion (the stable Deployment rolls to it) or rollback
(scaled to zero, the stable revision serving everything, Stalled with reason AnalysisFailed, or CandidateCrashLoop /
CandidateNotStarting when the candidate's own pods, read as ``pod_causes.candidate_trouble`` reads them, cannot
serve).

The decisions are ``controller.canary``'s; this stage turns them into objects (the candidate's Deployment and
Service, the mirror settings the candidate offers the stable pods), conditions, Events and what the deploy stage
serves. The first revision of a ModelDeployment has nothing to be compared with and is served at once; so is any
revision under RollingUpdate or Recreate. The candidate's share of traffic (the route's weight, ``servedWeight``)
is ``served_share``'s; the pod templates a phase is judged on and when a lagging Deployment status is trusted are
``phase_templates``'; the pods a phase runs and waits for are ``phase_pods``'.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...api.rollout_status import (
    AnalysisWindow,
    RollbackCause,
    RolloutPhase,
    RolloutStatus,
    RouteStatus,
)
from ...api.serving import Canary, RolloutStrategy
from ...api.status import ConditionType, Phase, Reason, StageName
from ...resources.canary import (
    canary_deployment,
    canary_service,
    candidate_template,
    mirror_offer,
    mirror_source,
)
from ...resources.kinds import HTTP_ROUTE
from ...resources.meta import TEMPLATE_ANNOTATION
from ...resources.plan import serving_plan
from ...resources.route import gateway_routing, http_route, route_name
from ...resources.serving import ServedArtifact
from ..canary import (
    ANALYZING,
    CANDIDATE_PODS,
    Look,
    Manual,
    Samples,
    decide,
    effective_weight,
    ignored_overrides,
    manual_action,
    start,
)
from ..canary_trouble import (
    RETRIED_CAUSES,
    CandidateTrouble,
    rearmed,
    recorded,
    restart_mark,
    retry_told,
    unjudged,
    with_cause_words,
)
from ..observe import Observed
from ..phasewindow import advance, phase_key, samples
from ..podhealth import newest_template_hash
from ..podmetrics import coverage
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
)
from .deploy import ServingTarget, serving
from .memory import ROLLED_BACK_TEMPLATE, SERVING_REVISION, lost, rollout_lost, rollout_unknown
from .phase_pods import PhasePods, phase_pods_waiting, phase_shape, promoted_pods_serve
from .phase_pods import candidate_pods_wanted as candidate_pods_wanted  # reconcile reads it from here
from .phase_templates import lag_trusted, with_phase_templates
from .pod_causes import candidate_trouble
from .rollout_checks import autoscaled_floor, wanted_replicas
from .served_share import below_share, route_weight, served_weight

ROLLED_BACK_RESTARTED_AT = "status.rollout.rolledBackRestartedAt"
"""Pruned by an older CRD: a rollback for the candidate's pods is not compared on its restart (``rearmed``)."""
ANALYSIS_INTERVAL_SECONDS = 5.0
"""How often a rollout in progress reads the pods' figures again."""
ROUTE_API_RECHECK_SECONDS = 30.0
"""How often a ModelDeployment Stalled for a missing HTTPRoute API looks again (the CRDs may be installed)."""
ROUTING_FIELD = "spec.serving.rollout.canary.trafficRouting.gatewayAPI"

_ROLLBACK_REASON = {
    RollbackCause.ANALYSIS_FAILED: Reason.ANALYSIS_FAILED,
    RollbackCause.ANALYSIS_INCONCLUSIVE: Reason.ANALYSIS_INCONCLUSIVE,
    RollbackCause.ABORTED: Reason.ROLLOUT_ABORTED,
    RollbackCause.CANDIDATE_CRASH_LOOP: Reason.CANDIDATE_CRASH_LOOP,
    RollbackCause.CANDIDATE_NOT_STARTING: Reason.CANDIDATE_NOT_STARTING,
}

_PHASE_REASON = {
    RolloutPhase.SHADOW: Reason.SHADOWING,
    RolloutPhase.CANARY: Reason.CANARY_STEP,
    RolloutPhase.PROMOTING: Reason.PROMOTING,
    RolloutPhase.PROMOTED: Reason.PROMOTED,
}


@dataclass(frozen=True)
class VerifyOutcome:
    serve: ServingTarget | None
    """What the stable Deployment runs (the candidate only once it is being promoted)."""
    status: RolloutStatus | None
    effects: Effects


def verify(ctx: Context, built: ServingTarget | None) -> VerifyOutcome:
    md = ctx.md
    prev = ctx.prev.rollout
    if gateway_routing(md) is not None and not ctx.observed.route_api:
        return _no_route_api(ctx, built, prev)
    if md.spec.serving.rollout.strategy != RolloutStrategy.CANARY or ctx.suspended:
        return _with_route(ctx, VerifyOutcome(built, prev, Effects(apply=_wound_down(ctx, prev))), 0)
    stable = ctx.prev.serving_revision
    if built is not None and built.revision == ctx.revision:
        # an older CRD prunes the memory a Canary rollout needs (without servingRevision, whether there is a
        # revision to verify against): the candidate is not started
        pruned = ctx.observed.pruned_status
        gone = [SERVING_REVISION] if lost(SERVING_REVISION, pruned) else []
        gone += rollout_lost(pruned) if gone or (stable is not None and built.revision != stable) else []
        if gone:
            return _held(ctx, rollout_unknown(gone))
    if built is None or stable is None or built.revision == stable or built.revision != ctx.revision:
        return _with_route(ctx, _nothing_to_verify(ctx, built, prev), 0)
    canary = md.spec.serving.rollout.canary_spec()
    outcome = _verify(ctx, built, stable, canary)
    assert outcome.status is not None
    return _with_route(ctx, outcome, route_weight(canary, outcome.status))


def _held(ctx: Context, message: str) -> VerifyOutcome:
    """Stalled, reason CRDOlderThanOperator: the revision that serves keeps serving (when known: ``memory``) with
    all the traffic (the HTTPRoute, if any, at weight 0 for a candidate); no candidate is started, and one that
    has pods (started before the operator found the record pruned) is scaled to zero, offering no mirror."""
    reason = Reason.CRD_OLDER_THAN_OPERATOR
    dep = ctx.observed.canary
    apply: tuple[Manifest, ...] = ()
    if dep is not None and dep.replicas > 0 and dep.revision:
        image = None if dep.stock_runtime else dep.image
        artifact = ServedArtifact(dep.artifact, dep.artifact_digest) if dep.artifact else None
        apply = (canary_deployment(ctx.md, dep.revision, ctx.config, image, 0, dep.live, artifact),)
    effects = Effects(
        conditions=(condition(ConditionType.VERIFIED, False, reason, message),),
        apply=apply,
        failure=Failure(StageName.VERIFY, reason, message),
    )
    stable = ctx.prev.serving_revision
    serve = serving(ctx, (reason, f"revision {stable} serves: {message}")) if stable else None
    return _with_route(ctx, VerifyOutcome(serve, ctx.prev.rollout, effects), 0)


def _with_route(ctx: Context, outcome: VerifyOutcome, candidate_weight: int) -> VerifyOutcome:
    """The outcome with the HTTPRoute at ``candidate_weight`` (the spec asks for one), or the route this
    ModelDeployment created before deleted (it no longer does)."""
    route = http_route(ctx.md, candidate_weight)
    effects = outcome.effects
    if route is None:
        name = route_name(ctx.md)
        if (HTTP_ROUTE.kind, name) not in ctx.observed.existing:
            return outcome
        gone: ObjectRef = (HTTP_ROUTE.api_version, HTTP_ROUTE.kind, name)
        return VerifyOutcome(outcome.serve, outcome.status, replace(effects, delete=(*effects.delete, gone)))
    # a backend Service not there yet only leaves the route's ResolvedRefs condition False until it is
    out = replace(effects, apply=(*effects.apply, route))
    status = outcome.status
    if status is not None:  # a rollout's status shows the weights in force
        weights = RouteStatus(name=route_name(ctx.md), stable_weight=100 - candidate_weight,
                              candidate_weight=candidate_weight)  # fmt: skip
        status = status.model_copy(update={"route": weights})
    return VerifyOutcome(outcome.serve, status, out)


def _no_route_api(ctx: Context, built: ServingTarget | None, prev: RolloutStatus | None) -> VerifyOutcome:
    """The spec asks for an HTTPRoute the cluster cannot hold: Stalled, naming the field; no candidate is
    verified (its weights could not be set), the revision that serves keeps serving (the first one is served,
    through its Service), and the operator looks again every 30 s (the CRDs may be installed)."""
    message = (
        f"{ROUTING_FIELD}: the cluster does not serve the HTTPRoute API ({HTTP_ROUTE.api_version}, "
        f"{HTTP_ROUTE.plural}); install the Gateway API CRDs (standard channel) or remove trafficRouting"
    )
    stable = ctx.prev.serving_revision
    serve = built
    if built is not None and stable is not None and built.revision != stable:
        serve = serving(ctx, (Reason.TRAFFIC_ROUTING_UNAVAILABLE, f"revision {stable} serves: {message}"))
    reason = Reason.TRAFFIC_ROUTING_UNAVAILABLE
    effects = Effects(
        conditions=(condition(ConditionType.VERIFIED, False, reason, message),),
        apply=(*_wound_down(ctx, prev), canary_service(ctx.md)),
        failure=Failure(StageName.VERIFY, reason, message),
        requeue_after=ROUTE_API_RECHECK_SECONDS,
    )
    return VerifyOutcome(serve, prev, effects)


def _nothing_to_verify(ctx: Context, built: ServingTarget | None, prev: RolloutStatus | None) -> VerifyOutcome:
    """The first revision (served at once), the serving one, or one not built yet: no candidate now. A rollout
    of another candidate still in progress is abandoned (the spec moved on)."""
    state, events = prev, tuple[StageEvent, ...]()
    if prev is not None and prev.phase in (*ANALYZING, RolloutPhase.PROMOTING) and prev.candidate != ctx.revision:
        message = f"abandoned: the spec asks for revision {ctx.revision} now; revision {prev.stable} serves"
        state = prev.model_copy(update={"phase": RolloutPhase.ROLLED_BACK, "weight": 0, "served_weight": 0,
                                        "mirror_percent": 0, "rollback_cause": RollbackCause.ABANDONED,
                                        "window": None, "phase_templates": None, "candidate_failing_since": None,
                                        "candidate_failing_template": None, "message": message})  # fmt: skip
        events = (StageEvent(False, "VerifiedAbandoned", f"rollout of {prev.candidate} {message}"),)
    objects = [*_wound_down(ctx, state), canary_service(ctx.md)]
    conditions: tuple[ConditionUpdate, ...] = ()
    if built is not None and built.revision == ctx.revision:
        if state is not None and state.candidate == ctx.revision and state.phase == RolloutPhase.PROMOTED:
            conditions = (condition(ConditionType.VERIFIED, True, Reason.PROMOTED, state.message),)
        else:
            message = f"revision {ctx.revision} is served without verification: no other revision served before it"
            conditions = (condition(ConditionType.VERIFIED, True, Reason.NO_STABLE_REVISION, message),)
    return VerifyOutcome(built, state, Effects(conditions=conditions, apply=tuple(objects), events=events))


def _wound_down(ctx: Context, state: RolloutStatus | None) -> tuple[Manifest, ...]:
    """The candidate's Deployment at zero when it has pods (a finished or abandoned rollout, or a strategy that is
    no longer Canary): with no candidate pod offering, the stable pods mirror nothing."""
    out: list[Manifest] = []
    dep = ctx.observed.canary
    if dep is not None and state is not None and (dep.replicas > 0 or dep.revision != state.candidate):
        artifact = ServedArtifact(state.candidate_artifact) if state.candidate_artifact else None
        out.append(canary_deployment(ctx.md, state.candidate, ctx.config, state.candidate_image, 0, dep.live, artifact))
    return tuple(out)


def _verify(ctx: Context, built: ServingTarget, stable: str, canary: Canary) -> VerifyOutcome:
    md, rev, observed = ctx.md, ctx.revision, ctx.observed
    prev = ctx.prev.rollout
    # the candidate's pod template (and deadline) as the spec renders it now, and the restart of its Deployment
    # (kubectl rollout restart) if any: a rollback for its pods judged on another, or before another restart, is over
    restarted = observed.canary.restarted_at if observed.canary is not None else None
    template = candidate_template(md, rev, ctx.config, built.image, built.artifact)
    fresh = prev is None or prev.candidate != rev or rearmed(prev, rev, template, restarted)
    artifact_ref = built.artifact.reference if built.artifact else None
    state = start(canary, rev, built.image, stable, ctx.now, artifact_ref) if fresh or prev is None else prev
    ip = observed.canary_service_ip
    source = mirror_source(md, ip)
    kept = serving(ctx)
    image, artifact = (kept.image, kept.artifact) if kept is not None else (ctx.prev.serving_image, None)
    stable_plan = serving_plan(md, stable, ctx.config, image, artifact, source)
    n = wanted_replicas(md, stable_plan.deployment, observed.deployment)
    replicas, live = phase_shape(canary, state, n)
    waiting: str | None = None
    trouble: CandidateTrouble | None = None
    if state.phase == RolloutPhase.PROMOTING:
        promoted_plan = serving_plan(md, rev, ctx.config, built.image, built.artifact, source)
        available = promoted_pods_serve(md, observed, promoted_plan.deployment, rev, n)
    else:
        was = mirror_offer(md, ip, state.mirror_percent, rev) if ip and state.mirror_percent > 0 else None
        settled = lag_trusted(state, observed, ctx.prev.observed_generation, md.metadata.generation, ctx.now)
        pods = PhasePods(
            stable=stable,
            stable_manifest=stable_plan.deployment,  # its pods read the offer
            candidate_manifest=canary_deployment(md, rev, ctx.config, built.image, replicas, live, built.artifact, was),
            replicas=replicas,
            live=live,
            floor=autoscaled_floor(md, stable_plan.deployment),
            settled=settled,
        )
        waiting = phase_pods_waiting(md, canary, state, observed, rev, pods)
        trouble = _judged_trouble(ctx, state, pods.candidate_manifest)
        if waiting is None and ip is None and state.mirror_percent > 0:
            waiting = "the candidate Service's address"  # the stable pods mirror to it
        available = waiting is None
    manual: Manual | None = manual_action(md.metadata.annotations, rev)
    figures, window = _figures(observed, state, ctx) if state.phase in ANALYZING else (None, None)
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    retry = not lost(ROLLED_BACK_TEMPLATE, observed.pruned_status)  # a rollback for its pods can be tried again
    look = Look(ctx.now, available, figures, manual, waiting or CANDIDATE_PODS, trouble, deadline, retry)
    new = with_phase_templates(state, _windowed(decide(canary, state, look), observed, window, ctx), observed)
    if new.phase == RolloutPhase.ROLLED_BACK and state.phase != RolloutPhase.ROLLED_BACK:
        # judged on pods of the template this pass renders (``_judged_trouble``): the one a change of tries again
        # (the restart is not recorded where the CRD prunes it: then the message does not offer it, ``retry_told``)
        mark = None if lost(ROLLED_BACK_RESTARTED_AT, observed.pruned_status) else restart_mark(restarted)
        record = {"rolled_back_generation": md.metadata.generation, "rolled_back_template": template,
                  "rolled_back_restarted_at": mark}  # fmt: skip
        new = new.model_copy(update=record if new.rollback_cause in RETRIED_CAUSES else dict.fromkeys(record))
        new = retry_told(new)
    elif new.phase == RolloutPhase.ROLLED_BACK and state.phase == RolloutPhase.ROLLED_BACK:
        # a look after the rollback: how it is tried again, told from its record (filled in once if it can be)
        new = recorded(new, template, md.metadata.generation, not retry, restarted)
    replicas, live = phase_shape(canary, new, n)
    routed = canary.gateway_api() is not None
    weight = {RolloutPhase.PROMOTED: 100, RolloutPhase.ROLLED_BACK: 0}.get(new.phase)
    if weight is None and routed:
        weight = route_weight(canary, new)
    elif weight is None:
        weight = effective_weight(n, replicas) if live else 0
    ignored = ignored_overrides(md.metadata.annotations, rev)
    new = new.model_copy(update={"weight": weight})  # the share this write asks for is what "below" compares with
    served = served_weight(canary, new, observed, stable)
    below = below_share(canary, new, observed, stable, served)
    # what the figures left out belongs to the decision's cause, before its ending and the serving revision's words
    told = with_cause_words(new.message, coverage(observed.readings))
    new = new.model_copy(update={"served_weight": served, "ignored_overrides": ignored or None,
                                 "message": told + below})  # fmt: skip
    # the candidate offers the stable pods to be mirrored to (through its Service, once it has an address)
    offer = mirror_offer(md, ip, new.mirror_percent, rev) if ip and new.mirror_percent > 0 else None
    objects = (
        canary_service(md),
        canary_deployment(md, rev, ctx.config, built.image, replicas, live, built.artifact, offer),
    )
    events = (*_events(prev if not fresh else None, new, canary), *_ignored_events(prev if not fresh else None, new))
    if new.phase == RolloutPhase.ROLLED_BACK:
        reason = _ROLLBACK_REASON.get(new.rollback_cause or RollbackCause.ANALYSIS_FAILED, Reason.ANALYSIS_FAILED)
        message = f"revision {rev} rolled back: {new.message}"
        effects = Effects(
            conditions=(condition(ConditionType.VERIFIED, False, reason, message),),
            apply=objects,
            failure=Failure(StageName.VERIFY, reason, message),
            events=events,
        )
        return VerifyOutcome(serving(ctx, (reason, f"revision {stable} serves: {message}")), new, effects)
    if new.phase == RolloutPhase.PROMOTED:
        effects = Effects(
            conditions=(condition(ConditionType.VERIFIED, True, Reason.PROMOTED, new.message),),
            apply=objects,
            events=events,
        )
        return VerifyOutcome(built, new, effects)
    reason = _PHASE_REASON[new.phase]
    if figures is not None and figures.error and new.phase in ANALYZING:
        reason = Reason.ANALYSIS_UNAVAILABLE
    effects = Effects(
        conditions=(condition(ConditionType.VERIFIED, False, reason, new.message),),
        apply=objects,
        progress=Progress(reason, f"verifying revision {rev}: {new.message}", Phase.VERIFYING),
        requeue_after=ANALYSIS_INTERVAL_SECONDS,
        events=events,
    )
    if new.phase == RolloutPhase.PROMOTING:
        return VerifyOutcome(built, new, effects)
    holding = (Reason.VERIFYING, f"revision {stable} serves while revision {rev} is verified: {new.message}")
    return VerifyOutcome(serving(ctx, holding), new, effects)


def _judged_trouble(ctx: Context, state: RolloutStatus, manifest: Manifest) -> CandidateTrouble | None:
    """What the candidate's pods say at a look of an analyzing phase (``pod_causes.candidate_trouble``), judged only
    on the pods of the template this pass renders for the phase (``manifest``). None while its Deployment runs
    another (the operator's last apply, its modelship.io/template: the spec changed, or the phase's labels or
    mirror offer, and this pass applies it): the pods of the template before are never judged for the new one, and
    a crash loop's clock starts anew with it. Told but not judged while the Deployment's controller has not
    observed its last change (``unjudged``: its pods may still be of the template before). The ReplicaSet whose
    pods are judged (the newest, as the controller names it) is told with it: a crash loop's clock is that
    ReplicaSet's, and the pods of a new one (a ``kubectl rollout restart``, which the operator's apply keeps) start
    their own (``canary_trouble.troubled_for``)."""
    dep = ctx.observed.canary
    if state.phase not in ANALYZING or dep is None:
        return None
    if dep.template is None or dep.template != (manifest["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION):
        return None
    found = candidate_trouble(ctx.md, ctx.revision, dep, ctx.observed.canary_pods, ctx.now)
    if found is not None:
        found = replace(found, template_hash=newest_template_hash(dep.name, dep.progress_message))
    return found if dep.observed_generation >= dep.generation else unjudged(found)


def _figures(observed: Observed, state: RolloutStatus, ctx: Context) -> tuple[Samples | None, AnalysisWindow | None]:
    """The analysis figures of the current phase: from Prometheus (already over the phase's window), or from the
    pods' readings added to the phase's window kept in status."""
    readings = observed.readings
    if readings is None:
        return observed.samples, None
    key = phase_key(state)
    window = advance(state.window if state.window and state.window.phase == key else None, readings, key, ctx.now)
    return samples(window, readings), window


def _windowed(new: RolloutStatus, observed: Observed, window: AnalysisWindow | None, ctx: Context) -> RolloutStatus:
    """The new state with the window it goes on with: a phase that (re)started opens a new one from the current
    readings; a finished rollout keeps none (its criteria say what was observed)."""
    if new.phase not in ANALYZING:
        return new.model_copy(update={"window": None})
    readings = observed.readings
    if readings is None:
        return new.model_copy(update={"window": None, "source": "Prometheus" if observed.samples else new.source})
    key = phase_key(new)
    if window is None or window.phase != key:
        window = advance(None, readings, key, ctx.now)
    return new.model_copy(update={"window": window, "source": "Pods"})


def _events(prev: RolloutStatus | None, new: RolloutStatus, canary: Canary) -> tuple[StageEvent, ...]:
    """One Event per step of the rollout: it started, a phase or canary step began, it was promoted or rolled
    back."""
    if prev is not None and (prev.phase, prev.step) == (new.phase, new.step):
        return ()
    if new.phase == RolloutPhase.ROLLED_BACK:
        return (StageEvent(True, "VerifiedRolledBack", f"revision {new.candidate}: {new.message}"),)
    where = {
        RolloutPhase.SHADOW: f"shadow: {new.mirror_percent}% of requests mirrored",
        RolloutPhase.CANARY: _step_text(canary, new),
        RolloutPhase.PROMOTING: "promoting",
        RolloutPhase.PROMOTED: "promoted",
    }[new.phase]
    return (StageEvent(False, f"Verified{new.phase.value}", f"revision {new.candidate}: {where}; {new.message}"),)


def _ignored_events(prev: RolloutStatus | None, new: RolloutStatus) -> tuple[StageEvent, ...]:
    """A Warning for each override annotation naming another revision, when it appears (once per rollout)."""
    before = set(prev.ignored_overrides or ()) if prev is not None else set()
    out = []
    for item in new.ignored_overrides or ():
        if item in before:
            continue
        key, _, value = item.partition("=")
        message = (
            f"the annotation {item} is ignored: it names revision {value or '(none)'}, not the candidate "
            f"{new.candidate} (annotate {key}={new.candidate} to act on this rollout)"
        )
        out.append(StageEvent(True, "VerifiedOverrideIgnored", message))
    return tuple(out)


def _step_text(canary: Canary, state: RolloutStatus) -> str:
    if canary.gateway_api() is None:
        return f"canary step {state.step} at {state.weight}% of the pods"
    weight = canary.steps[min(state.step, len(canary.steps)) - 1].weight
    return f"canary step {state.step}: {weight}% of requests through the HTTPRoute once its pods are available"
