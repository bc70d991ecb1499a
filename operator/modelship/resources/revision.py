"""The content-addressed revision: a hash of everything that changes what gets served.

Same inputs, same revision, so no new optimization Job and no new build. Serving-only settings (replicas,
resources, autoscaling, rollout, service) are deliberately outside the hash: changing them redeploys, never
re-optimizes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec

REVISION_HEX = 10


def _digest(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def optimization_inputs(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """What determines the optimized artifact: the model (pinned digest or URI) and the optimization spec
    minus how its Job runs."""
    opt = spec.optimization.wire()
    opt.pop("job", None)
    return {"model": spec.model.wire(), "optimization": opt}


def optimization_key(spec: ModelDeploymentSpec) -> str:
    """Key of the optimization result (shared by revisions that differ only in build or target)."""
    return _digest(optimization_inputs(spec))[:REVISION_HEX]


def revision(spec: ModelDeploymentSpec) -> str:
    """The revision: optimization inputs + build inputs + hardware target."""
    build = spec.build.wire()
    build.pop("job", None)
    payload = {
        **optimization_inputs(spec),
        "build": build,
        "target": spec.serving.hardware.target.value,
    }
    return "r" + _digest(payload)[:REVISION_HEX]
