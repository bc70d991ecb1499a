"""The Gateway API HTTPRoute of the Canary strategy (``spec.serving.rollout.canary.trafficRouting.gatewayAPI``):
exact per-request weights between the stable revision and the candidate, where a Gateway implementation honours
backendRef weights.

The route, named like the ModelDeployment, attaches to the spec's Gateways and sends every request of its
hostnames to two backends: the stable Service (``<name>``, the stable Deployment's pods only: with a route the
candidate's pods never join it) with weight 100 - w and the candidate's Service (``<name>-canary``, the
candidate's pods only) with weight w. w is 0 when no candidate takes live traffic (no rollout, the shadow
phase, promoted, rolled back) and a canary step's weight once the candidate's pods for that step are available.
Pure: the verify stage decides w.
"""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.serving import GatewayAPIRouting, RolloutStrategy
from .kinds import HTTP_ROUTE, SERVICE
from .meta import canary_name, object_meta, serving_name

GATEWAY_GROUP = HTTP_ROUTE.group


def gateway_routing(md: ModelDeployment) -> GatewayAPIRouting | None:
    """The spec's HTTPRoute settings (Canary strategy with trafficRouting.gatewayAPI), else None."""
    rollout = md.spec.serving.rollout
    if rollout.strategy != RolloutStrategy.CANARY:
        return None
    return rollout.canary_spec().gateway_api()


def route_name(md: ModelDeployment) -> str:
    return serving_name(md)


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": SERVICE.kind, "name": name, "port": port, "weight": weight}


def http_route(md: ModelDeployment, candidate_weight: int) -> dict[str, Any] | None:
    """The HTTPRoute with the candidate's Service at ``candidate_weight`` percent and the stable Service at the
    rest; None when the spec asks for no route."""
    routing = gateway_routing(md)
    if routing is None:
        return None
    if not 0 <= candidate_weight <= 100:
        raise ValueError(f"a candidate weight is a percentage, not {candidate_weight}")
    port = md.spec.serving.port
    parents: list[dict[str, Any]] = []
    for ref in routing.parent_refs:
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
        if ref.namespace is not None:
            parent["namespace"] = ref.namespace
        if ref.section_name is not None:
            parent["sectionName"] = ref.section_name
        parents.append(parent)
    spec: dict[str, Any] = {"parentRefs": parents}
    if routing.hostnames:
        spec["hostnames"] = list(routing.hostnames)
    spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                _backend(serving_name(md), port, 100 - candidate_weight),
                _backend(canary_name(md), port, candidate_weight),
            ],
        }
    ]
    return {**HTTP_ROUTE.type_meta(), "metadata": object_meta(md, route_name(md), "server"), "spec": spec}


def route_weights(route: dict[str, Any]) -> tuple[int, int]:
    """(stable, candidate) weights of a route this module rendered."""
    refs = route["spec"]["rules"][0]["backendRefs"]
    return int(refs[0]["weight"]), int(refs[1]["weight"])
