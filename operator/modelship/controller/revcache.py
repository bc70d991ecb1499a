"""The namespace's revision cache: a ConfigMap mapping a revision to the results of its optimization and build,
so a ModelDeployment whose spec resolves to a revision done before (by it or by another one in the namespace)
skips both Jobs. Pure: the codec of one entry; ``controller.reconcile`` reads and merge-patches the ConfigMap."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..api.report import Summary
from ..api.status import OptimizationStatus, SourceStatus
from ..resources.meta import REVISION_CACHE_LABELS, REVISION_CACHE_NAME

CONFIGMAP = REVISION_CACHE_NAME
LABELS = REVISION_CACHE_LABELS


@dataclass(frozen=True)
class CachedRevision:
    """What one revision's earlier run established."""

    optimization: OptimizationStatus | None = None
    source: SourceStatus | None = None
    image: str | None = None
    """The pushed image, repository@sha256:..."""


def parse(text: str, model_uri: str) -> CachedRevision:
    """One entry; ValueError when it is not readable. Entries written before status records were stored hold
    the optimizer's summary line instead (``summary``): still read."""
    entry = json.loads(text)
    if not isinstance(entry, dict):
        raise ValueError("a revision cache entry must be a JSON object")
    image = entry.get("image")
    if image is not None and not isinstance(image, str):
        raise ValueError("image must be a string")
    if "summary" in entry:
        summary = Summary.from_line(str(entry["summary"]))
        optimization = OptimizationStatus.from_summary(summary, revision="", job=None, attempts=0, cached=True)
        return CachedRevision(optimization, SourceStatus.from_summary(model_uri, summary), image)
    results, fetched = entry.get("optimization"), entry.get("source")
    return CachedRevision(
        OptimizationStatus.model_validate(results) if results is not None else None,
        SourceStatus.model_validate(fetched) if fetched is not None else None,
        image,
    )


def entry(optimization: OptimizationStatus, source: SourceStatus | None, image: str) -> str:
    """The entry recording a revision's results (its optimization's Job bookkeeping left out)."""
    results = optimization.model_copy(
        update={"revision": None, "job": None, "attempts": None, "cached": None, "completed_at": None}
    )
    data: dict[str, object] = {"optimization": results.wire(), "image": image}
    if source is not None:
        data["source"] = source.wire()
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
