"""The pods a Canary phase waits for: whether the candidate's pods are read this pass (``candidate_pods_wanted``),
how many candidate pods a phase runs and whether the Service selects them (``phase_shape``), whether the pods a
phase (not Promoting) needs serve, else which it waits for (``phase_pods_waiting``, judged on ``PhasePods``), and
whether the stable Deployment has rolled to a candidate being promoted (``promoted_pods_serve``). Pure; the
Canary stage (``stages.verify``) reads them at each look."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...api.modeldeployment import ModelDeployment
from ...api.rollout_status import RolloutPhase, RolloutStatus
from ...api.serving import Canary
from ...resources.revision import revision
from ..canary import ANALYZING, CANDIDATE_PODS, canary_replicas, shadow_replicas
from ..observe import DeploymentObservation, Observed
from .context import Manifest
from .deploy import routed_endpoints
from .rollout_checks import autoscaled_floor, rollout_complete, serves_at_floor


def phase_shape(canary: Canary, state: RolloutStatus, stable_replicas: int) -> tuple[int, bool]:
    """(candidate replicas, live) for a phase. With an HTTPRoute the candidate's pods never join the stable
    Service (the route weighs the two Services) and it gets the replicas its share warrants:
    ceil(stable replicas * weight / 100), at least 1."""
    shadow = shadow_replicas(stable_replicas, state.mirror_percent or 1)
    step = canary.steps[min(state.step, len(canary.steps)) - 1] if state.step > 0 else None
    routed = canary.gateway_api() is not None
    if state.phase == RolloutPhase.SHADOW:
        return shadow, False
    if state.phase in (RolloutPhase.CANARY, RolloutPhase.PROMOTING):
        if step is None:
            return shadow, False
        if routed:
            return max(1, math.ceil(stable_replicas * step.weight / 100)), False
        return canary_replicas(stable_replicas, step.weight), True
    return 0, state.step > 0 and not routed


def _ready(dep: DeploymentObservation | None, revision: str, replicas: int, live: bool) -> bool:
    return (
        dep is not None
        and dep.revision == revision
        and dep.live == live
        and dep.replicas == replicas
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas == replicas
        and dep.status_replicas == replicas
        and dep.available_replicas >= replicas
    )


def _reached(canary: Canary, state: RolloutStatus, observed: Observed, rev: str, live: bool) -> int | None:
    """The candidate's pods that are ready endpoints of the Service that brings them their traffic in this phase:
    the one Service when they are live, their own when the HTTPRoute weighs it or the stable pods mirror to it (a
    phase's clock starts only once they can be reached); None when no Service brings them any."""
    if live:
        return routed_endpoints(observed.endpoints, rev)
    if canary.gateway_api() is not None or state.mirror_percent > 0:
        return routed_endpoints(observed.canary_endpoints, rev)
    return None


def _routed(canary: Canary, state: RolloutStatus, observed: Observed, rev: str, replicas: int, live: bool) -> bool:
    reached = _reached(canary, state, observed, rev, live)
    return reached is None or reached >= replicas


def candidate_pods_wanted(md: ModelDeployment, dep: DeploymentObservation) -> bool:
    """Read the serving pods this pass for the Canary candidate's Deployment ``dep`` while the spec's revision is
    being analyzed (shadow or a canary step): it asks for pods and has fewer available, ready or of its newest
    template, or the last look found its pods crash-looping (kept through the moments a crash-looping pod is ready
    between crashes, so that moment does not reset the crash loop's clock). Otherwise nothing judges them."""
    rollout = md.status.rollout
    if rollout is None or rollout.phase not in ANALYZING or rollout.candidate != revision(md.spec):
        return False
    if rollout.candidate_failing_since is not None:
        return True
    return dep.replicas > 0 and dep.short_of(dep.replicas)


@dataclass(frozen=True)
class PhasePods:
    """What a look at a phase (not Promoting) judges the pods by: the stable Deployment's manifest (of revision
    ``stable``), the candidate's for the phase (``replicas``, ``live``) and, under an HPA, the floor."""

    stable: str
    stable_manifest: Manifest
    candidate_manifest: Manifest
    replicas: int
    live: bool
    floor: int | None
    """minReplicas while an HPA owns the stable Deployment's count, else None."""
    settled: bool
    """A Deployment status behind its generation can only be behind a count, and is trusted (``lag_trusted``)."""


def phase_pods_waiting(md: ModelDeployment, canary: Canary, state: RolloutStatus, observed: Observed, rev: str,
                       pods: PhasePods) -> str | None:  # fmt: skip
    """None when the pods a phase needs serve (the stable Deployment and the candidate's pods for the phase), else
    which of them it waits for (the rollout's message names them).

    Every wanted pod up: the stable Deployment's rollout is complete, the candidate's Deployment has its replicas
    for the phase, all available and routed. Under an HPA, whose moves of the stable Deployment's count are no
    rollout, less is enough: each Deployment's template fully rolled out (the controller's word), the stable
    Deployment serving at least minReplicas and the candidate at least its share of minReplicas (available and
    routed). So the phase's clock neither waits for nor restarts at a scale, while the candidate is asked for its
    share of the live count."""
    stable_dep, cand = observed.deployment, observed.canary
    stable_ok = rollout_complete(md, stable_dep, pods.stable_manifest, pods.stable)
    cand_ok = _ready(cand, rev, pods.replicas, pods.live) and _routed(canary, state, observed, rev, pods.replicas,
                                                                     pods.live)  # fmt: skip
    if pods.floor is None:
        return _waiting_for(stable_ok, cand_ok)
    if not stable_ok:
        routed = routed_endpoints(observed.endpoints, pods.stable)
        stable_ok = serves_at_floor(stable_dep, pods.stable_manifest, pods.stable, pods.floor, routed, pods.settled)
    if not cand_ok and cand is not None and cand.live == pods.live:
        least = phase_shape(canary, state, pods.floor)[0]
        reached = _reached(canary, state, observed, rev, pods.live)
        routed = least if reached is None else reached
        cand_ok = serves_at_floor(cand, pods.candidate_manifest, rev, least, routed, pods.settled)
    return _waiting_for(stable_ok, cand_ok)


def _waiting_for(stable_ok: bool, cand_ok: bool) -> str | None:
    if stable_ok:
        return None if cand_ok else CANDIDATE_PODS
    return "the stable pods" if cand_ok else f"{CANDIDATE_PODS} and the stable pods"


def promoted_pods_serve(md: ModelDeployment, observed: Observed, manifest: Manifest, rev: str, n: int) -> bool:
    """Promoting: the stable Deployment rolled to the candidate ``rev``: every wanted replica available and routed,
    or, under an HPA, the template fully rolled out (the controller finished rolling it: every pod it wanted then
    was available) and at least minReplicas available and routed, so a scale after the roll does not hold
    promotion until the HPA's new pods are up. A status behind the Deployment's generation is never trusted here:
    the change not yet observed may be the promotion's own template."""
    routed = routed_endpoints(observed.endpoints, rev)
    if rollout_complete(md, observed.deployment, manifest, rev) and routed >= n:
        return True
    floor = autoscaled_floor(md, manifest)
    return floor is not None and serves_at_floor(observed.deployment, manifest, rev, floor, routed, lag_ok=False)
