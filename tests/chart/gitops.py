"""Evaluate ModelDeployment health the way GitOps tools do: Argo CD's Lua check (charts/modelship/docs) run in
lupa, and kstatus' generic rules (what Flux's health checks apply to a custom resource without
healthCheckExprs), ported from sigs.k8s.io/cli-utils pkg/kstatus/status (checkGenericProperties + Compute)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.chart.helm import CHART

LUA_CHECK = CHART / "docs" / "argocd-health.lua"
SAMPLES = Path(__file__).resolve().parent / "samples"
# the Lua libraries Argo CD's runtime leaves out: the check must not need them
_UNSAFE = ("os", "io", "debug", "package", "require", "dofile", "loadfile", "load")


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def argocd_health(obj: Mapping[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the Lua health check with ``obj`` as Argo CD does (global ``obj``, the script's return value)."""
    from lupa import LuaRuntime  # installed with the test extra

    lua = LuaRuntime(register_eval=False, unpack_returned_tuples=True)
    g = lua.globals()
    for name in _UNSAFE:
        g[name] = None
    g.obj = _to_lua(lua, json.loads(json.dumps(obj)))  # plain JSON types only, as Argo CD hands them over
    result = lua.execute(script if script is not None else LUA_CHECK.read_text())
    return {str(k): str(v) for k, v in result.items()}


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus' status of a custom resource: Terminating, InProgress, Failed or Current."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    if "generation" in meta and "observedGeneration" in status and status["observedGeneration"] != meta["generation"]:
        return "InProgress"
    for c in status.get("conditions") or []:
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return "InProgress"
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return "Failed"
    return "Current"  # "the absence of any known conditions means the resource is current"


def sample_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a health check reads of a live ModelDeployment: kind, name, generation, spec.suspend, status."""
    meta = obj["metadata"]
    out: dict[str, Any] = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": meta["name"], "generation": meta["generation"]},
        "spec": {k: v for k, v in (obj.get("spec") or {}).items() if k == "suspend"},
    }
    if obj.get("status"):
        out["status"] = obj["status"]
    return out


def load_samples() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))}


CANARY_SAMPLES = frozenset({"verifying", "stalled-analysis-failed"})
"""Samples captured by tests/integration/test_canary.py (a rollout in progress, one rolled back); the others by
tests/integration/test_gitops.py."""

# sample name -> (Argo CD health from the Lua check, kstatus status Flux computes)
EXPECTED: dict[str, tuple[str, str]] = {
    "ready": ("Healthy", "Current"),
    "progressing": ("Progressing", "InProgress"),
    "stalled-gate": ("Degraded", "Failed"),
    "stalled-job-failed": ("Degraded", "Failed"),
    "verifying": ("Progressing", "InProgress"),  # strategy Canary: a new revision in shadow
    "stalled-analysis-failed": ("Degraded", "Failed"),  # strategy Canary: rolled back, the stable serving
    "suspended": ("Suspended", "Current"),
    "spec-not-observed": ("Progressing", "InProgress"),
    # kstatus' known gap: no status at all is Current (see docs/flux-kustomization.yaml); Argo CD waits
    "new-no-status": ("Progressing", "Current"),
}
