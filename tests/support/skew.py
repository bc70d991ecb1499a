"""A CRD newer than this operator, for the version-skew tests (unit and integration): the CRD generated from the
current models plus two spec fields and two status fields the models do not know."""

from __future__ import annotations

import copy
from typing import Any

from modelship.api.crd import crd

DEFAULTED = ("serving", "warmup")
"""A new spec field the newer CRD defaults: the API server fills it in on every read."""
DEFAULTED_VALUE = "auto"
SETTING = ("serving", "turbo")
"""A new spec field without a default: present only when the tenant sets it."""
NEW_STATUS = "upgradeNote"
"""A new top-level status field a newer operator writes."""
NEW_NESTED_STATUS = ("optimization", "energyJoules")
"""A new status field inside an object this operator writes too."""
NEW_CONDITION_FIELD = "severity"
"""A new field in condition items (a list keyed by type)."""


def newer_crd() -> dict[str, Any]:
    """The CRD of this operator's models, as a newer release would ship it."""
    out = copy.deepcopy(crd())
    root = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = root["properties"]["spec"]["properties"]
    spec[DEFAULTED[0]]["properties"][DEFAULTED[1]] = {
        "type": "string",
        "default": DEFAULTED_VALUE,
        "description": "A newer release's setting, defaulted to the old behaviour.",
    }
    spec[SETTING[0]]["properties"][SETTING[1]] = {"type": "boolean", "description": "A newer release's setting."}
    status = root["properties"]["status"]["properties"]
    status[NEW_STATUS] = {"type": "string", "description": "A newer operator's note."}
    status[NEW_NESTED_STATUS[0]]["properties"][NEW_NESTED_STATUS[1]] = {
        "type": "number",
        "description": "A newer operator's figure.",
    }
    status["conditions"]["items"]["properties"][NEW_CONDITION_FIELD] = {
        "type": "string",
        "description": "A newer operator's condition field.",
    }
    return out


OLDER_DEFAULTED = ("serving", "batching")
"""A spec field (with a default) the older CRD does not have yet: the API server prunes it from what a tenant
sends."""
OLDER_STATUS = ("optimization", "compressionRatio")
"""A status field this operator writes once (when the optimization Job ends, carried over after that) that the older
CRD does not have yet: the API server prunes it."""
OLDER_RECOMPUTED_STATUS = ("updatedReplicas",)
"""A status field this operator computes again at every reconcile (from the Deployment) that the older CRD does
not have yet: the API server prunes it from every status write."""


OLDER_READ_BACK_STATUS = (("servingArtifact",), ("optimization", "artifactRef"), ("rollout",))
"""Status fields this operator reads back as its memory of what serves, which a CRD of 2026-11-27 (before
build-less registry serving and the Canary strategy) did not have: the API server prunes them."""


def older_crd(
    status: tuple[tuple[str, ...], ...] = (OLDER_STATUS, OLDER_RECOMPUTED_STATUS),
    spec: tuple[tuple[str, ...], ...] = (OLDER_DEFAULTED,),
) -> dict[str, Any]:
    """The CRD of this operator's models as an older release shipped it (an operator upgraded before its CRD):
    without the ``spec`` and ``status`` field paths."""
    out = copy.deepcopy(crd())
    root = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for top, path in [*(("spec", p) for p in spec), *(("status", p) for p in status)]:
        node = root["properties"][top]
        for depth, key in enumerate(path):
            default = node.get("default")
            if isinstance(default, dict):  # an object's default names its fields too
                _drop(default, path[depth:])
            node = node["properties"][key] if depth < len(path) - 1 else node
        del node["properties"][path[-1]]
    return out


def _drop(value: dict[str, Any], path: tuple[str, ...]) -> None:
    if len(path) == 1:
        value.pop(path[0], None)
    elif isinstance(value.get(path[0]), dict):
        _drop(value[path[0]], path[1:])
