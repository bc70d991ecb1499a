"""The revision cache: what a revision's optimization and build established, so a ModelDeployment whose spec
resolves to a revision done before in its namespace (by it or by another one) skips both Jobs.

It lives where tenants cannot write: one ConfigMap per tenant namespace in the OPERATOR's namespace
(``modelship-revisions-<tenant namespace>``), keyed by revision. A revision is computable offline from a spec,
so a cache a tenant could write would let it skip optimization, gate and build (issue 14). Entries never cross
namespaces: a tenant's revision never reuses another tenant's image.

It is bounded (at most ``max_entries`` entries and ``max_bytes`` bytes of data per ConfigMap, far below the
1 MiB object limit) and pruned least recently used first: every entry records when it was last written or
reused (``at``); a write that would cross a bound evicts the oldest entries in the same patch.

Pure: the codec of one entry and the patch of one write; ``controller.reconcile`` reads and writes the ConfigMap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..api.report import Summary
from ..api.status import OptimizationStatus, SourceStatus
from ..resources.meta import MANAGED_BY, MANAGED_BY_LABEL, REVISION_CACHE_NAME, safe_name

TENANT_LABEL = "modelship.io/revision-cache-of"
"""Label of a cache ConfigMap: the tenant namespace whose revisions it holds."""
LEGACY_LABELS = {MANAGED_BY_LABEL: MANAGED_BY, "modelship.io/cache": "revisions"}
"""The labels of the pre-issue-14 cache (``modelship-revisions`` in each tenant namespace): never read."""


def configmap_name(tenant_namespace: str) -> str:
    """``modelship-revisions-<namespace>``: unique per namespace (a namespace is a DNS label)."""
    return safe_name(REVISION_CACHE_NAME, tenant_namespace, limit=253)


def labels(tenant_namespace: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: tenant_namespace}


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


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # microseconds: writes within a second keep their order


def entry(optimization: OptimizationStatus, source: SourceStatus | None, image: str, at: datetime) -> str:
    """The entry recording a revision's results (its optimization's Job bookkeeping left out), used at ``at``."""
    results = optimization.model_copy(
        update={"revision": None, "job": None, "attempts": None, "cached": None, "completed_at": None}
    )
    data: dict[str, object] = {"optimization": results.wire(), "image": image, "at": _stamp(at)}
    if source is not None:
        data["source"] = source.wire()
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _last_used(text: str) -> str:
    try:
        value = json.loads(text).get("at")
    except (ValueError, AttributeError):
        return ""  # unreadable entries go first
    return value if isinstance(value, str) else ""


def _size(key: str, value: str) -> int:
    return len(key.encode()) + len(value.encode())


def put(
    data: Mapping[str, str], revision: str, value: str, *, max_entries: int, max_bytes: int
) -> dict[str, str | None]:
    """The merge patch of ``data`` that writes ``revision`` and evicts the least recently used entries until at
    most ``max_entries`` entries and ``max_bytes`` bytes remain (evicted keys are null)."""
    if _size(revision, value) > max_bytes:
        return {}  # an entry larger than the whole cache is not cached
    kept = {k: v for k, v in data.items() if k != revision}
    patch: dict[str, str | None] = {revision: value}
    budget_entries = max(0, max_entries - 1)
    budget_bytes = max_bytes - _size(revision, value)
    total = sum(_size(k, v) for k, v in kept.items())
    for key in sorted(kept, key=lambda k: (_last_used(kept[k]), k)):
        if len(kept) <= budget_entries and total <= budget_bytes:
            break
        total -= _size(key, kept.pop(key))
        patch[key] = None
    return patch
