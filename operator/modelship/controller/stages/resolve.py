"""Resolve: pin the model and skip work already done.

The revision is content-addressed (model digest or URI + optimization + build + target, ``resources.revision``),
so results recorded for it still hold: first in status (this ModelDeployment did the work), then in the
namespace's revision cache (any ModelDeployment of the namespace did; the cache lives in the operator's
namespace, out of the tenant's reach: ``controller.revcache``). The model's digest is pinned by the spec or
resolved by the optimization Job, which fetches and verifies the model before optimizing it (``resolve`` runs on
its outcome).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...api.status import ConditionType, ImageStatus, OptimizationStatus, Reason, SourceStatus
from .. import revcache
from .context import Context, Effects, condition


@dataclass(frozen=True)
class Known:
    """Results the revision already has: a stage whose result is known does not run."""

    optimization: OptimizationStatus | None = None
    source: SourceStatus | None = None
    image: ImageStatus | None = None
    image_from_cache: bool = False


def known_results(ctx: Context) -> Known:
    prev, rev, uri = ctx.prev, ctx.revision, ctx.md.spec.model.uri
    cached = ctx.observed.cached
    optimization = source = image = None
    if prev.optimization is not None and prev.optimization.revision == rev and prev.optimization.decision:
        optimization = prev.optimization
        if prev.source is not None and prev.source.digest:
            source = SourceStatus(uri=uri, digest=prev.source.digest, size_bytes=prev.source.size_bytes)
    elif cached is not None and cached.optimization is not None:
        optimization = cached.optimization.model_copy(
            update={"revision": rev, "job": None, "attempts": 0, "cached": True, "completed_at": None}
        )
        source = cached.source.model_copy(update={"uri": uri}) if cached.source is not None else None
    if prev.image is not None and prev.image.revision == rev and prev.image.reference:
        image = prev.image
    elif cached is not None and cached.image:
        image = ImageStatus(revision=rev, reference=cached.image, digest=cached.image.rsplit("@", 1)[-1])
        return Known(optimization, source, image, image_from_cache=True)
    return Known(optimization, source, image)


def remember(
    ctx: Context,
    optimization: OptimizationStatus | None,
    source: SourceStatus | None,
    image: str | None,
    reused: bool = False,
) -> str | None:
    """The revision cache entry to write once the revision is built: when the cache does not have it yet, or
    when this ModelDeployment just reused it (its last use moves forward: the cache evicts the least recently
    used entries first)."""
    if optimization is None or not image:
        return None
    cached = ctx.observed.cached
    if cached is not None and cached.image == image and not reused:
        return None
    return revcache.entry(optimization, source, image, ctx.now)


@dataclass(frozen=True)
class Resolution:
    source: SourceStatus | None
    """status.source to write (None: keep the recorded one)."""
    effects: Effects


def resolve(ctx: Context, fetched: SourceStatus | None) -> Resolution:
    """The Resolved condition from the spec's pin and what the optimization Job fetched (when known)."""
    model = ctx.md.spec.model
    conditions = []
    source = None
    if model.digest:
        conditions.append(
            condition(ConditionType.RESOLVED, True, Reason.DIGEST_PINNED, f"model pinned to {model.digest}")
        )
        source = SourceStatus(uri=model.uri, digest=model.digest)
    if fetched is not None:
        source = fetched
        if not model.digest:
            message = f"model resolved to {fetched.digest}"
            conditions.append(condition(ConditionType.RESOLVED, True, Reason.DIGEST_RESOLVED, message))
    elif not model.digest:
        message = "the optimization Job fetches the model and pins its digest"
        conditions.append(condition(ConditionType.RESOLVED, None, Reason.RESOLVING, message))
    return Resolution(source, Effects(conditions=tuple(conditions)))
