"""Exact traffic weights through a Gateway API HTTPRoute (Canary trafficRouting.gatewayAPI), pure: the rendered
route for every phase, through the whole plan (weights, replicas, status, the candidate kept out of the stable
Service), a cluster without the HTTPRoute API, and the route pruned when the spec drops it."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from modelship.api import ModelDeployment
from modelship.api.rollout_status import RolloutPhase, RolloutStatus
from modelship.api.serving import Canary
from modelship.controller.observe import JobState, Observed
from modelship.controller.plan import Plan, plan
from modelship.controller.stages.served_share import route_weight
from modelship.resources.revision import revision
from modelship.resources.route import http_route, route_weights
from tests.support.endpoints import routed
from tests.unit.test_plan import CONFIG, NOW, cond, deployment, job, make_md, summary
from tests.unit.test_verify import OLD, canary_obs, samples

ROUTING = {
    "gatewayAPI": {"parentRefs": [{"name": "public", "sectionName": "http"}], "hostnames": ["digits.ml.example"]}
}
CANARY: dict[str, Any] = {
    "strategy": "Canary",
    "canary": {
        "shadow": {"percent": 20, "durationSeconds": 60},
        "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 40, "pauseSeconds": 30}],
        "analysis": {"minRequests": 50, "latencyQuantile": 0.9},
        "trafficRouting": ROUTING,
    },
}


def md_with(status: dict[str, Any] | None = None, rollout: dict[str, Any] | None = None) -> ModelDeployment:
    return make_md(build=False, serving={"replicas": 4, "rollout": rollout or CANARY},
                   status={"servingRevision": OLD} if status is None else status)  # fmt: skip


def routes(p: Plan) -> list[dict[str, Any]]:
    return [o for o in p.apply if o["kind"] == "HTTPRoute"]


def weights(p: Plan) -> tuple[int, int]:
    (route,) = routes(p)
    return route_weights(route)


def candidate(p: Plan) -> dict[str, Any]:
    return next(o for o in p.apply if o["kind"] == "Deployment" and o["metadata"]["name"] == "digits-canary")


def test_the_rendered_route() -> None:
    md = md_with()
    route = http_route(md, 25)
    assert route is not None
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    meta = route["metadata"]
    assert meta["name"] == "digits" and meta["namespace"] == "ml"
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"] is True
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "sectionName": "http"}
    ]
    assert spec["hostnames"] == ["digits.ml.example"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "digits", "port": 8080, "weight": 75},
        {"group": "", "kind": "Service", "name": "digits-canary", "port": 8080, "weight": 25},
    ]
    assert route_weights(route) == (75, 25)
    with pytest.raises(ValueError):
        http_route(md, 101)
    # another namespace's Gateway, no hostnames: the route leaves them out
    other = copy.deepcopy(CANARY)
    other["canary"]["trafficRouting"] = {"gatewayAPI": {"parentRefs": [{"name": "shared", "namespace": "infra"}]}}
    route2 = http_route(md_with(rollout=other), 0)
    assert route2 is not None and "hostnames" not in route2["spec"]
    assert route2["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shared", "namespace": "infra"}
    ]
    # no route without trafficRouting, nor with another strategy
    plain = copy.deepcopy(CANARY)
    del plain["canary"]["trafficRouting"]
    assert http_route(md_with(rollout=plain), 0) is None
    assert http_route(make_md(build=False), 0) is None


def test_the_api_refuses_bad_routing() -> None:
    bad: list[dict[str, Any]] = [
        {"gatewayAPI": {"parentRefs": []}},
        {"gatewayAPI": {"parentRefs": [{"name": "Not_A_Name"}]}},
        {"gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": ["bad host"]}},
        {"gatewayAPI": {"parentRefs": [{"name": "gw", "port": 80}]}},
    ]
    for routing in bad:
        with pytest.raises(ValidationError):
            Canary.model_validate({"trafficRouting": routing})
    ok = Canary.model_validate({"trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}],
                                                                  "hostnames": ["*.example.com"]}}})  # fmt: skip
    wire = {"gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": ["*.example.com"]}}
    assert ok.wire()["trafficRouting"] == wire


@pytest.mark.parametrize(
    ("phase", "step", "started", "weight"),
    [
        (RolloutPhase.SHADOW, 0, True, 0),
        (RolloutPhase.CANARY, 1, False, 0),  # step 1's pods not available yet: nothing shifted
        (RolloutPhase.CANARY, 1, True, 10),
        (RolloutPhase.CANARY, 2, False, 10),  # step 2 waits for its pods with step 1's weight
        (RolloutPhase.CANARY, 2, True, 40),
        (RolloutPhase.PROMOTING, 2, True, 40),  # kept while the stable Deployment rolls to the candidate
        (RolloutPhase.PROMOTING, 0, True, 0),  # promoted by hand from the shadow phase
        (RolloutPhase.PROMOTED, 2, True, 0),  # the stable Service runs the candidate now
        (RolloutPhase.ROLLED_BACK, 2, True, 0),
    ],
)
def test_the_candidates_weight_in_every_phase(phase: RolloutPhase, step: int, started: bool, weight: int) -> None:
    canary = md_with().spec.serving.rollout.canary_spec()
    state = RolloutStatus(candidate="rnew", stable=OLD, phase=phase, step=step, started_at="2026-11-26T12:00:00Z",
                          phase_started_at="2026-11-26T12:00:00Z" if started else None)  # fmt: skip
    assert route_weight(canary, state) == weight


def test_a_rollout_through_the_route_shifts_exact_weights_and_returns_to_stable() -> None:
    md = md_with()
    rev = revision(md.spec)
    jobs = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    stable = deployment(OLD, CONFIG.images.serving, replicas=4, available=4)
    base = Observed(jobs=jobs, deployment=stable, route_api=True, canary_service_ip="10.96.0.9")
    # shadow: the route sends everything to the stable Service, the candidate sees only mirrored requests
    p1 = plan(md, base, CONFIG, NOW)
    assert weights(p1) == (100, 0)
    assert candidate(p1)["spec"]["replicas"] == 1
    assert p1.status["rollout"]["route"] == {"name": "digits", "stableWeight": 100, "candidateWeight": 0}
    obs = Observed(**{**base.__dict__, "canary": canary_obs(rev, 1, False), "samples": samples(n=10),
                      "canary_endpoints": routed((rev, 1), service="digits-canary")})  # fmt: skip
    p2 = plan(md_with(p1.status), obs, CONFIG, NOW)
    assert weights(p2) == (100, 0) and p2.status["rollout"]["phase"] == "Shadow"
    # the shadow held: step 1 (10%) starts; ceil(4 * 10 / 100) = 1 candidate pod, never behind the stable Service
    t = NOW + timedelta(seconds=61)
    p3 = plan(md_with(p2.status), Observed(**{**obs.__dict__, "samples": samples()}), CONFIG, t)
    r3 = p3.status["rollout"]
    assert (r3["phase"], r3["step"]) == ("Canary", 1)
    cand = candidate(p3)
    assert cand["spec"]["replicas"] == 1
    assert cand["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "modelship-shadow"
    assert weights(p3) == (100, 0) and r3["weight"] == 0  # shifted once the step's pods are seen available
    assert any(e.reason == "VerifiedCanary" and "canary step 1: 10% of requests through the HTTPRoute" in e.message
               for e in p3.events)  # fmt: skip
    # step 1's pods available (the shadow's one pod): exactly 90/10, in status too
    p4 = plan(md_with(p3.status), Observed(**{**obs.__dict__, "samples": samples()}), CONFIG, t + timedelta(seconds=1))
    assert weights(p4) == (90, 10) and p4.status["rollout"]["phaseStartedAt"] is not None
    assert p4.status["rollout"]["weight"] == 10
    assert p4.status["rollout"]["route"] == {"name": "digits", "stableWeight": 90, "candidateWeight": 10}
    # step 2 (40%): 2 candidate pods; until they are available the route keeps step 1's weights
    p5 = plan(md_with(p4.status), Observed(**{**obs.__dict__, "samples": samples()}), CONFIG, t + timedelta(seconds=32))
    r5 = p5.status["rollout"]
    assert (r5["phase"], r5["step"]) == ("Canary", 2) and candidate(p5)["spec"]["replicas"] == 2
    assert weights(p5) == (90, 10) and r5["weight"] == 10
    # both pods available, but the candidate's Service lists one: the route still waits for the second
    obs2 = Observed(**{**obs.__dict__, "canary": canary_obs(rev, 2, False), "samples": samples()})
    p5b = plan(md_with(p5.status), obs2, CONFIG, t + timedelta(seconds=33))
    assert weights(p5b) == (90, 10) and "phaseStartedAt" not in p5b.status["rollout"]
    obs2 = Observed(**{**obs2.__dict__, "canary_endpoints": routed((rev, 2), service="digits-canary")})
    p6 = plan(md_with(p5.status), obs2, CONFIG, t + timedelta(seconds=33))
    assert weights(p6) == (60, 40) and p6.status["rollout"]["weight"] == 40
    # step 2 held: promoting keeps 60/40 while the stable Deployment rolls to the candidate
    p7 = plan(md_with(p6.status), obs2, CONFIG, t + timedelta(seconds=64))
    assert p7.status["rollout"]["phase"] == "Promoting" and weights(p7) == (60, 40)
    # promoted: the stable Service (now the candidate's revision) gets everything, the candidate goes to zero
    obs3 = Observed(**{**obs2.__dict__, "deployment": deployment(rev, CONFIG.images.serving, replicas=4,
                                                                 available=4), "samples": None})  # fmt: skip
    unrouted = plan(md_with(p7.status), obs3, CONFIG, t + timedelta(seconds=70))  # the Service lists none yet
    assert unrouted.status["rollout"]["phase"] == "Promoting" and weights(unrouted) == (60, 40)
    obs3 = Observed(**{**obs3.__dict__, "endpoints": routed((rev, 4))})
    p8 = plan(md_with(p7.status), obs3, CONFIG, t + timedelta(seconds=70))
    assert p8.status["rollout"]["phase"] == "Promoted" and weights(p8) == (100, 0)
    assert p8.status["rollout"]["route"]["candidateWeight"] == 0 and candidate(p8)["spec"]["replicas"] == 0
    assert p8.status["phase"] == "Ready"


def test_a_rollback_sends_everything_back_to_stable() -> None:
    md = md_with()
    rev = revision(md.spec)
    jobs = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    stable = deployment(OLD, CONFIG.images.serving, replicas=4, available=4)
    state = RolloutStatus(candidate=rev, stable=OLD, phase=RolloutPhase.CANARY, step=2, weight=40,
                          mirror_percent=20, started_at="2026-11-26T12:00:00Z",
                          phase_started_at="2026-11-26T12:00:00Z")  # fmt: skip
    obs = Observed(jobs=jobs, deployment=stable, route_api=True, canary_service_ip="10.96.0.9",
                   canary=canary_obs(rev, 2, False), samples=samples(agreed=10),
                   canary_endpoints=routed((rev, 2), service="digits-canary"))  # fmt: skip
    before = plan(md_with({"servingRevision": OLD, "rollout": state.wire()}), obs.__class__(**{
        **obs.__dict__, "samples": samples()}), CONFIG, NOW)  # fmt: skip
    assert weights(before) == (60, 40)
    p = plan(md_with({"servingRevision": OLD, "rollout": state.wire()}), obs, CONFIG, NOW)
    assert p.status["rollout"]["phase"] == "RolledBack" and cond(p.status, "Stalled")["reason"] == "AnalysisFailed"
    assert weights(p) == (100, 0) and p.status["rollout"]["route"]["stableWeight"] == 100
    assert candidate(p)["spec"]["replicas"] == 0


def test_the_first_revision_gets_a_route_to_the_stable_service() -> None:
    md = md_with(status={})
    rev = revision(md.spec)
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())], route_api=True), CONFIG,
             NOW)  # fmt: skip
    assert weights(p) == (100, 0) and "rollout" not in p.status
    assert cond(p.status, "Verified")["reason"] == "NoStableRevision"


def test_without_the_httproute_api_the_resource_stalls_naming_the_field() -> None:
    md = md_with()
    rev = revision(md.spec)
    jobs = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    stable = deployment(OLD, CONFIG.images.serving, replicas=4, available=4)
    p = plan(md, Observed(jobs=jobs, deployment=stable, route_api=False), CONFIG, NOW)
    assert not routes(p)
    assert not [o for o in p.apply if o["kind"] == "Deployment" and o["metadata"]["name"] == "digits-canary"]
    stalled = cond(p.status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TrafficRoutingUnavailable"
    assert stalled["message"].startswith("spec.serving.rollout.canary.trafficRouting.gatewayAPI: ")
    assert "gateway.networking.k8s.io/v1" in stalled["message"]
    assert p.status["servingRevision"] == OLD  # the stable revision keeps serving
    dep = next(o for o in p.apply if o["kind"] == "Deployment" and o["metadata"]["name"] == "digits")
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == OLD
    assert p.requeue_after == 30.0  # it looks again: the CRDs may be installed


def test_the_route_is_deleted_when_the_spec_drops_it() -> None:
    plain = copy.deepcopy(CANARY)
    del plain["canary"]["trafficRouting"]
    md = md_with(rollout=plain)
    rev = revision(md.spec)
    obs = Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())],
                   deployment=deployment(OLD, CONFIG.images.serving),
                   existing=frozenset({("HTTPRoute", "digits")}))  # fmt: skip
    p = plan(md, obs, CONFIG, NOW)
    assert ("gateway.networking.k8s.io/v1", "HTTPRoute", "digits") in p.delete and not routes(p)
    never = plan(md, Observed(**{**obs.__dict__, "existing": frozenset()}), CONFIG, NOW)
    assert not [r for r in never.delete if r[1] == "HTTPRoute"]


@pytest.mark.parametrize("forged", ["yesterday", "2026-11-26T12:00:00"])
def test_a_step_whose_start_does_not_parse_keeps_the_step_befores_weight(forged: str) -> None:
    """route_weight read a set phaseStartedAt as a clock that runs where decide reads one that parses: a forged
    stamp gave the route the step's weight before its pods were judged available."""
    canary = md_with().spec.serving.rollout.canary_spec()
    state = RolloutStatus(candidate="rnew", stable=OLD, phase=RolloutPhase.CANARY, step=2,
                          started_at="2026-11-26T12:00:00Z", phase_started_at=forged)  # fmt: skip
    assert route_weight(canary, state) == 10
