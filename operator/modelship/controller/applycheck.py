"""Before the operator applies a child it owns: whether the live object already holds the manifest (nothing to
apply), which fields the API server defaults at a create that another owner takes (an HPA's replicas), and the
hash stamp that makes a change which only removes a field a change. Pure functions of the manifest and the live
object; the reconcile does the writes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .. import own_entry

SPEC_HASH = "modelship.io/spec-hash"


def _subset(want: Any, have: Any) -> bool:
    """Every field we want is present in what the server has, with the same value."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(_subset(a, b) for a, b in zip(want, have, strict=True))
        )
    return bool(want == have or str(want) == str(have))


def unchanged(desired: dict[str, Any], current: dict[str, Any]) -> bool:
    """Nothing to apply: the live object has every field and annotation the manifest sets, and its fields are the
    operator's to apply already. An object whose creating entry (the POST's Update) was not yet turned into an Apply
    entry (that patch failed after the create, the object changed in between) is applied anyway: until then the
    operator's entry owns every field the API server defaulted, spec.replicas of a Deployment under an HPA among
    them, and no handover sees it."""
    if any(own_entry(e, "Update") for e in current["metadata"].get("managedFields") or []):
        return False
    annotations = desired["metadata"].get("annotations", {}), current["metadata"].get("annotations") or {}
    return _subset(*annotations) and _subset(
        {k: v for k, v in desired.items() if k not in ("metadata", "status")},
        {k: v for k, v in current.items() if k not in ("metadata", "status")},
    )


def defaulted(desired: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Fields the API server defaults at a create that the manifest leaves to another owner: a Deployment's
    spec.replicas under an HPA (the creating entry must not own it, or an apply would have to hand it over)."""
    if desired.get("kind") == "Deployment" and "replicas" not in (desired.get("spec") or {}):
        return (("f:spec", "f:replicas"),)
    return ()


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the object with a hash of itself: a change that only removes a field still changes the hash."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"]
    return {**obj, "metadata": {**meta, "annotations": {**meta.get("annotations", {}), SPEC_HASH: digest}}}
