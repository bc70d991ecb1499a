"""The reconcile decision for one ModelDeployment, as a pure function of what was observed.

The stages run in order, each a pure function of the context (and of the outcomes before it) to a typed outcome
(``controller.stages``): resolve (results the revision already has) -> optimize (Job) -> resolve (the model's
pin) -> gate -> build (Job) -> verify (Canary strategy: shadow, canary steps, promotion or rollback) -> deploy.
``plan`` folds their effects into one Plan: the objects to create, apply
and delete, the status (through the API's status models) and its kstatus conditions, the Events, the revision
cache entry, and when to look again. Nothing here talks to the API server; ``controller.reconcile`` carries the
plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.status import LastFailure, ModelDeploymentStatus, Phase, Reason
from ..config import OperatorConfig
from ..resources.meta import artifact_claim_name, selector_labels
from ..resources.revision import revision as compute_revision
from ..resources.volumes import artifact_claim
from . import kstatus
from .conditions import ConditionSet
from .kstatus import Event, EventType
from .observe import Observed
from .stages.build import build
from .stages.context import Context, Effects, Failure, Manifest, ObjectRef
from .stages.deploy import deploy, target
from .stages.gate import gate
from .stages.optimize import optimize
from .stages.resolve import known_results, remember, resolve
from .stages.verify import verify


@dataclass
class Plan:
    """What to do: objects to create (Jobs) or apply (everything else), delete, the status to write."""

    status: dict[str, Any]
    create: list[Manifest] = field(default_factory=list)
    apply: list[Manifest] = field(default_factory=list)
    handover: list[Manifest] = field(default_factory=list)
    """Applied under the handover field manager before ``apply`` (a replica count an HPA takes over)."""
    delete: list[ObjectRef] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    cache_put: tuple[str, str] | None = None
    """(revision, JSON) for the namespace's revision cache (in the operator's namespace)."""
    requeue_after: float | None = None


def plan(md: ModelDeployment, observed: Observed, config: OperatorConfig, now: datetime) -> Plan:
    """Decide the next actions and the status for ``md``."""
    ctx = Context(md, compute_revision(md.spec), observed, config, now)
    known = known_results(ctx)
    opt = optimize(ctx, known)
    source = resolve(ctx, opt.source)
    verdict = gate(ctx, opt.result)
    image = build(ctx, verdict, known, opt.result)
    verified = verify(ctx, target(ctx, image))
    served = deploy(ctx, verified.serve)
    out = [opt.effects, source.effects, verdict.effects, image.effects, verified.effects, served.effects]
    conds = ConditionSet(md.status.conditions, md.metadata.generation, now)
    failure = next((e.failure for e in reversed(out) if e.failure), None)
    for effects in out:
        for c in effects.conditions:
            if not (failure and c.reason == Reason.PENDING):  # a stage waiting behind a failed one says nothing
                conds.set(c.type, c.status, c.reason, c.message)
    progress = next((e.progress for e in reversed(out) if e.progress), None)
    phase = kstatus.summarize(conds, suspended=md.spec.suspend, failure=failure, progress=progress)
    status = ModelDeploymentStatus(
        observed_generation=md.metadata.generation,
        phase=phase,
        revision=ctx.revision,
        serving_revision=served.serving_revision,
        serving_image=served.serving_image,
        serving_artifact=served.serving_artifact,
        conditions=conds.as_list(),
        source=source.source or md.status.source,
        optimization=opt.status,
        image=image.status,
        selector=",".join(f"{k}={v}" for k, v in selector_labels(md).items()),
        url=served.url,
        rollout=verified.status,
        last_failure=_last_failure(ctx, phase, failure),
        **_replicas(ctx),
    )
    # the cache is written when a build Job just produced the image, or when this ModelDeployment reused an entry
    # (its last use moves forward); never from what status already recorded, or every ModelDeployment whose entry
    # was evicted would write it back on every resync
    fresh = image.built and (known.image is None or known.image_from_cache)
    entry = remember(ctx, opt.result, opt.source, image.image, known.image_from_cache) if fresh else None
    return Plan(
        status=status.wire(),
        create=[o for e in out for o in e.create],
        apply=_with_claim(ctx, out, [o for e in out for o in e.apply]),
        handover=[o for e in out for o in e.handover],
        delete=[r for e in out for r in e.delete],
        events=[
            *kstatus.events(conds),
            *(
                Event(EventType.WARNING if e.warning else EventType.NORMAL, e.reason, e.message)
                for effects in out
                for e in effects.events
            ),
        ],
        cache_put=(ctx.revision, entry) if entry else None,
        requeue_after=min((e.requeue_after for e in out if e.requeue_after is not None), default=None),
    )


def _with_claim(ctx: Context, effects: list[Effects], apply: list[Manifest]) -> list[Manifest]:
    """The artifact claim first, when a Job writes to it and it does not exist yet. Not for the serving pods: a
    claim made afresh would not hold the artifact they serve (the deploy stage waits for it: ``ClaimNotFound``)."""
    needed = any(e.needs_artifact_claim for e in effects)
    if needed and ("PersistentVolumeClaim", artifact_claim_name(ctx.md)) not in ctx.observed.existing:
        return [artifact_claim(ctx.md, ctx.config), *apply]
    return apply


def _last_failure(ctx: Context, phase: Phase, failure: Failure | None) -> LastFailure | None:
    """Kept until the resource is Ready again."""
    if phase == Phase.READY:
        return None
    if failure is None:
        return ctx.prev.last_failure
    return kstatus.record_failure(ctx.prev.last_failure, failure, ctx.revision, ctx.now)


def _replicas(ctx: Context) -> dict[str, int]:
    dep = ctx.observed.deployment
    if dep is None:
        return {"replicas": 0, "ready_replicas": 0, "updated_replicas": 0, "available_replicas": 0}
    return {
        "replicas": dep.status_replicas,
        "ready_replicas": dep.ready_replicas,
        "updated_replicas": dep.updated_replicas if dep.revision == ctx.revision else 0,
        "available_replicas": dep.available_replicas,
    }
