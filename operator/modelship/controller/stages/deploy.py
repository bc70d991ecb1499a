"""Deploy: serve a revision with the Deployment (image by digest), Service, HPA, PDB and NetworkPolicy, and judge
its rollout. The revision the spec asks for serves once it is built; until then the previous good one keeps
serving with the current serving settings, so a revision that fails never takes the service down."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ...api.modeldeployment import ModelDeployment
from ...api.status import ConditionType, Phase, Reason, StageName
from ...resources.kinds import PRUNED
from ...resources.meta import serving_name
from ...resources.plan import ServingPlan, serving_plan
from ...resources.serving import service_url
from ..observe import DeploymentObservation
from .build import BuildOutcome
from .context import Context, Effects, Failure, ObjectRef, Progress, condition, pending


@dataclass(frozen=True)
class ServingTarget:
    """Which revision the serving objects run, with which image (None: the stock runtime, artifact volume)."""

    revision: str
    image: str | None


def target(ctx: Context, built: BuildOutcome) -> ServingTarget | None:
    """The revision the spec asks for once it is built, else the one that served before (if any)."""
    if built.built:
        return ServingTarget(ctx.revision, built.image)
    if ctx.prev.serving_revision:
        return ServingTarget(ctx.prev.serving_revision, ctx.prev.serving_image)
    return None


@dataclass(frozen=True)
class DeployOutcome:
    serving_revision: str | None
    serving_image: str | None
    url: str | None
    effects: Effects


def wanted_replicas(md: ModelDeployment, desired: dict[str, Any], dep: DeploymentObservation | None) -> int:
    """Replicas the rollout must reach: the spec's, or under an HPA the Deployment's count but never fewer than
    minReplicas (a new Deployment starts at 1; the HPA controller raises it to minReplicas)."""
    if "replicas" in desired["spec"]:
        return int(desired["spec"]["replicas"])
    current = dep.replicas if dep else 1
    auto = md.spec.serving.autoscaling
    return max(current, auto.min_replicas) if auto.enabled else current


def rollout_complete(md: ModelDeployment, dep: DeploymentObservation | None, desired: dict[str, Any], rev: str) -> bool:
    if dep is None or dep.revision != rev:
        return False
    want_image = desired["spec"]["template"]["spec"]["containers"][0]["image"]
    want = wanted_replicas(md, desired, dep)
    return (
        dep.image == want_image
        and dep.replicas == want
        and dep.observed_generation >= dep.generation
        and dep.updated_replicas == want
        and dep.status_replicas == want
        and dep.available_replicas >= want
    )


def _turned_off(ctx: Context, sp: ServingPlan) -> tuple[ObjectRef, ...]:
    """Optional objects (the pruned kinds) the spec no longer wants but the ModelDeployment created before."""
    name, optional = serving_name(ctx.md), sp.optional()
    return tuple(
        (pruned.api_version, pruned.kind, name)
        for pruned in PRUNED
        if optional[pruned.kind] is None and (pruned.kind, name) in ctx.observed.existing
    )


def deploy(ctx: Context, serve: ServingTarget | None) -> DeployOutcome:
    prev, rev, dep = ctx.prev, ctx.revision, ctx.observed.deployment
    if serve is None:
        return DeployOutcome(
            prev.serving_revision, prev.serving_image, None, pending(ConditionType.DEPLOYED, "nothing to deploy yet")
        )
    sp = serving_plan(ctx.md, serve.revision, ctx.config, serve.image)
    objects = Effects(apply=tuple(sp.objects()), delete=_turned_off(ctx, sp), needs_artifact_claim=serve.image is None)
    url = service_url(ctx.md, ctx.config)

    def still(status: bool, reason: Reason, message: str, **more: Any) -> DeployOutcome:
        """The revision that served before still does (all but a completed rollout)."""
        effects = replace(objects, conditions=(condition(ConditionType.DEPLOYED, status, reason, message),), **more)
        return DeployOutcome(prev.serving_revision, prev.serving_image, url, effects)

    if serve.revision != rev:
        return still(
            False, Reason.PREVIOUS_REVISION_SERVING, f"revision {serve.revision} serves while {rev} is not deployable"
        )
    want = wanted_replicas(ctx.md, sp.deployment, dep)
    if rollout_complete(ctx.md, dep, sp.deployment, rev):
        message = f"{want}/{want} replicas of {rev} available"
        effects = replace(objects, conditions=(condition(ConditionType.DEPLOYED, True, Reason.AVAILABLE, message),))
        return DeployOutcome(rev, serve.image, url, effects)
    if dep is not None and dep.progress_deadline_exceeded and dep.revision == rev:
        message = f"rollout of {rev} made no progress: {dep.progress_message}"
        if prev.serving_revision and prev.serving_revision != rev:
            message += f"; revision {prev.serving_revision} keeps serving"
        return still(
            False, Reason.ROLLOUT_STALLED, message, failure=Failure(StageName.DEPLOY, Reason.ROLLOUT_STALLED, message)
        )
    have = dep.available_replicas if dep and dep.revision == rev else 0
    message = f"{have}/{want} replicas of {rev} available"
    if dep is not None and dep.replicas < want:
        message += f" (the HPA raises the Deployment to minReplicas {want})"
    return still(False, Reason.ROLLING_OUT, message, progress=Progress(Reason.ROLLING_OUT, message, Phase.DEPLOYING))
