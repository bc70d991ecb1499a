"""A Canary rollout under an HPA (pure, through the whole plan): the autoscaler moving the stable Deployment's count
in the middle of a phase is no rollout. The phase's clock goes on while each Deployment's template stays fully
rolled out and the stable pods serve at least minReplicas (the candidate at least its share of minReplicas),
available and routed; the candidate is asked for its share of the live count without its template changing; and
promotion finishes once the stable Deployment rolled to the candidate, whatever the HPA does after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelship.controller.observe import DeploymentObservation, Observed
from modelship.controller.plan import Plan, plan
from modelship.controller.stages.deploy import ROLLED_OUT
from modelship.resources.meta import TEMPLATE_ANNOTATION
from tests.support.endpoints import routed
from tests.unit.test_plan import CONFIG, NOW, deployment, make_md
from tests.unit.test_verify import CANARY, OLD, by_name, md_with, new_revision, samples

AUTO = {"enabled": True, "minReplicas": 2, "maxReplicas": 8}
IP = "10.96.0.9"


def md_auto(status: dict[str, Any] | None = None) -> Any:
    return make_md(build=False, serving={"replicas": 2, "rollout": CANARY, "autoscaling": AUTO},
                   status={"servingRevision": OLD} if status is None else status)  # fmt: skip


def hpa_scaled(rev: str, replicas: int, available: int, name: str = "digits", **kw: Any) -> DeploymentObservation:
    """A Deployment whose template is fully rolled out (the controller's Progressing reason says so) and whose
    count was moved to ``replicas``: only ``available`` pods of it run (the rest cannot start yet)."""
    base: dict[str, Any] = dict(status_replicas=available, updated_replicas=available, progress_reason=ROLLED_OUT,
                                name=name)  # fmt: skip
    return deployment(rev, CONFIG.images.serving, replicas, available, **(base | kw))


def candidate(rev: str, replicas: int, live: bool, available: int | None = None, **kw: Any) -> DeploymentObservation:
    up = replicas if available is None else available
    return hpa_scaled(rev, replicas, up, name="digits-canary", live=live, **kw)


def rollout(p: Plan) -> dict[str, Any]:
    r: dict[str, Any] = p.status["rollout"]
    return r


def in_shadow() -> tuple[str, Observed, Plan]:
    """A shadow phase whose clock runs (started at NOW), the stable Deployment at minReplicas."""
    _md, rev, jobs = new_revision()
    md = md_auto()
    p1 = plan(md, Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving)), CONFIG, NOW)
    obs = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving), canary=candidate(rev, 1, False),
                   canary_service_ip=IP, canary_endpoints=routed((rev, 1), service="digits-canary"),
                   endpoints=routed((OLD, 2)), samples=samples(n=10))  # fmt: skip
    p2 = plan(md_auto(p1.status), obs, CONFIG, NOW)
    assert rollout(p2)["phaseStartedAt"] == "2026-11-26T12:00:00Z"
    return rev, obs, p2


def again(p: Plan, obs: Observed, seconds: float, **changes: Any) -> Plan:
    return plan(md_auto(p.status), Observed(**{**obs.__dict__, **changes}), CONFIG, NOW + timedelta(seconds=seconds))


def test_an_hpa_scale_up_mid_shadow_keeps_the_clock_and_the_shadow_passes() -> None:
    _rev, obs, p2 = in_shadow()
    # the HPA asks for 4; 2 run (the new ones cannot start yet), both routed: the clock goes on
    up = {"deployment": hpa_scaled(OLD, 4, 2), "endpoints": routed((OLD, 2))}
    p3 = again(p2, obs, 30, **up)
    assert rollout(p3)["phaseStartedAt"] == "2026-11-26T12:00:00Z", rollout(p3)["message"]
    assert rollout(p3)["message"] == "shadow held 30/60s"
    assert by_name(p3, "Deployment", "digits-canary")["spec"]["replicas"] == 1  # 20% of 4 still takes one pod
    # the shadow's hold runs out with passing figures: canary step 1, though the HPA's new pods never came
    p4 = again(p3, obs, 61, samples=samples(), **up)
    assert (rollout(p4)["phase"], rollout(p4)["step"]) == ("Canary", 1)
    # the step's pods: its share of the live count (4 stable pods: 4 candidate pods for 50%)
    assert by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] == 4 and rollout(p4)["weight"] == 50


def test_fewer_than_min_replicas_or_a_rollout_of_the_stable_pods_restarts_the_clock() -> None:
    _rev, obs, p2 = in_shadow()
    # one stable pod serves: below minReplicas
    p3 = again(p2, obs, 30, deployment=hpa_scaled(OLD, 4, 1), endpoints=routed((OLD, 1)))
    assert "phaseStartedAt" not in rollout(p3)
    assert rollout(p3)["message"] == "waiting for the stable pods of shadow"
    # two available, one routed
    p3 = again(p2, obs, 30, deployment=hpa_scaled(OLD, 4, 2), endpoints=routed((OLD, 1)))
    assert "phaseStartedAt" not in rollout(p3)
    # the stable Deployment rolls out a template (the controller no longer says its newest one is available)
    rolling = hpa_scaled(OLD, 4, 3, progress_reason="ReplicaSetUpdated", updated_replicas=1, status_replicas=4)
    p3 = again(p2, obs, 30, deployment=rolling, endpoints=routed((OLD, 3)))
    assert "phaseStartedAt" not in rollout(p3)
    assert rollout(p3)["message"] == "waiting for the stable pods of shadow"  # not the candidate's: they serve
    # without an HPA every replica the operator asks for must serve, as before
    fixed = plan(md_with(p2.status), Observed(**{**obs.__dict__, "deployment": hpa_scaled(OLD, 2, 1)}), CONFIG, NOW)
    assert "phaseStartedAt" not in rollout(fixed)
    assert rollout(fixed)["message"] == "waiting for the stable pods of shadow"
    assert rollout(plan(md_with(p2.status), obs, CONFIG, NOW))["phaseStartedAt"] == "2026-11-26T12:00:00Z"


def stable_template(p: Plan) -> str:
    return str(by_name(p, "Deployment", "digits")["metadata"]["annotations"][TEMPLATE_ANNOTATION])


def test_a_scale_the_controller_has_not_observed_yet_is_trusted_only_once_the_phase_runs() -> None:
    _rev, obs, p2 = in_shadow()
    digest = stable_template(p2)
    behind = hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2, template=digest)
    p3 = again(p2, obs, 30, deployment=behind)
    assert rollout(p3)["phaseStartedAt"] == "2026-11-26T12:00:00Z"
    # a Deployment without the operator's template digest (an older operator's): the unobserved change may be a
    # template, not a count
    p3 = again(p2, obs, 30, deployment=hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2))
    assert "phaseStartedAt" not in rollout(p3)
    # the phase has not started: its templates were never judged rolled out; the lag is waited out
    waiting = {**p2.status, "rollout": {k: v for k, v in rollout(p2).items() if k != "phaseStartedAt"}}
    p3 = plan(md_auto(waiting), Observed(**{**obs.__dict__, "deployment": behind}), CONFIG, NOW)
    assert "phaseStartedAt" not in rollout(p3)


def in_step() -> tuple[str, Observed, Plan]:
    """Canary step 1 (50%) with its clock running, the HPA's stable Deployment at 4, the candidate at 4."""
    rev, obs, p2 = in_shadow()
    at4 = {"deployment": hpa_scaled(OLD, 4, 4), "endpoints": routed((OLD, 4))}
    p3 = again(p2, obs, 61, samples=samples(), **at4)
    assert rollout(p3)["phase"] == "Canary"
    live = {**at4, "canary": candidate(rev, 4, True), "endpoints": routed((OLD, 4), (rev, 4)), "samples": samples()}
    p4 = again(p3, obs, 62, **live)
    assert rollout(p4)["phaseStartedAt"] == "2026-11-26T12:01:02Z"
    return rev, Observed(**{**obs.__dict__, **live}), p4


def test_the_candidate_follows_the_live_count_without_restarting_its_step() -> None:
    rev, obs, p4 = in_step()
    before = by_name(p4, "Deployment", "digits-canary")
    # the HPA asks for 6 stable pods; none of the new ones runs yet: the candidate is asked for 6 (50% of the pods
    # behind the Service), the step's clock goes on while its 4 pods serve
    p5 = again(p4, obs, 70, deployment=hpa_scaled(OLD, 6, 4))
    after = by_name(p5, "Deployment", "digits-canary")
    assert after["spec"]["replicas"] == 6 and rollout(p5)["phaseStartedAt"] == "2026-11-26T12:01:02Z"
    # a scale, never a new template: none of the candidate's pods is replaced
    annotation = before["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    assert after["metadata"]["annotations"][TEMPLATE_ANNOTATION] == annotation
    assert after["spec"]["template"] == before["spec"]["template"]
    # the candidate's Deployment took the 6 (its controller saw it), 4 run: still its share of minReplicas (2)
    p6 = again(p5, obs, 80, deployment=hpa_scaled(OLD, 6, 4), canary=candidate(rev, 6, True, available=4))
    assert rollout(p6)["phaseStartedAt"] == "2026-11-26T12:01:02Z"
    # down to 3 stable: the candidate to 3, the step goes on
    p7 = again(p6, obs, 85, deployment=hpa_scaled(OLD, 3, 3, status_replicas=4, updated_replicas=4))
    assert by_name(p7, "Deployment", "digits-canary")["spec"]["replicas"] == 3
    assert rollout(p7)["phaseStartedAt"] == "2026-11-26T12:01:02Z"
    # the step passes on its own figures and promotion begins
    p8 = again(p7, obs, 100, deployment=hpa_scaled(OLD, 6, 4), canary=candidate(rev, 6, True, available=4))
    assert rollout(p8)["phase"] == "Promoting"


def test_a_candidate_below_its_share_of_the_floor_or_not_rolled_out_holds_the_step() -> None:
    rev, obs, p4 = in_step()
    # one candidate pod serves: below its share of minReplicas (2 for 50%)
    one = candidate(rev, 6, True, available=1)
    p5 = again(p4, obs, 70, deployment=hpa_scaled(OLD, 6, 4), canary=one, endpoints=routed((OLD, 4), (rev, 1)))
    assert "phaseStartedAt" not in rollout(p5)
    # its template is being rolled out (a changed spec): not what the step was judged on
    rolling = candidate(rev, 6, True, available=4, progress_reason="ReplicaSetUpdated", updated_replicas=2)
    p5 = again(p4, obs, 70, deployment=hpa_scaled(OLD, 6, 4), canary=rolling)
    assert "phaseStartedAt" not in rollout(p5)
    # its pods are not the step's (shadow pods, out of the Service)
    p5 = again(p4, obs, 70, deployment=hpa_scaled(OLD, 6, 4), canary=candidate(rev, 6, False, available=4))
    assert "phaseStartedAt" not in rollout(p5)


def promoting() -> tuple[str, Observed, Plan]:
    rev, obs, p4 = in_step()
    p5 = again(p4, obs, 100)
    assert rollout(p5)["phase"] == "Promoting"
    return rev, obs, p5


def test_promotion_finishes_when_the_hpa_scales_after_the_roll() -> None:
    rev, obs, p5 = promoting()
    # the stable Deployment rolled to the candidate (the controller says its newest template is available), then
    # the HPA asked for 6: 4 run and are routed
    rolled = hpa_scaled(rev, 6, 4)
    p6 = again(p5, obs, 110, deployment=rolled, endpoints=routed((rev, 4)))
    assert rollout(p6)["phase"] == "Promoted"
    assert by_name(p6, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    # the promoted revision serves at once (its template rolled out, minReplicas serve): servingRevision is it, so
    # a later spec change never renders OLD's template again; the HPA's missing pods are a Capacity shortfall
    assert p6.status["servingRevision"] == rev
    capacity = next(c for c in p6.status["conditions"] if c["type"] == "Capacity")
    assert (capacity["status"], capacity["reason"]) == ("False", "ScalingUp"), capacity
    ready = next(c for c in p6.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    p7 = again(p6, obs, 120, deployment=hpa_scaled(rev, 6, 6), endpoints=routed((rev, 6)))
    assert p7.status["servingRevision"] == rev and rollout(p7)["phase"] == "Promoted"
    assert all(c["type"] != "Capacity" for c in p7.status["conditions"])


def test_promotion_waits_for_the_roll_itself() -> None:
    rev, obs, p5 = promoting()
    # the roll to the candidate is under way: 4 of its 6 pods up
    rolling = hpa_scaled(rev, 6, 6, progress_reason="ReplicaSetUpdated", updated_replicas=4, available_replicas=6)
    p6 = again(p5, obs, 110, deployment=rolling, endpoints=routed((rev, 4), (OLD, 2)))
    assert rollout(p6)["phase"] == "Promoting"
    # the controller has not observed the promotion's template yet (its status still says the old one is rolled
    # out): never taken for the roll, even with the template digest in place
    digest = by_name(p5, "Deployment", "digits")["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    unseen = hpa_scaled(rev, 6, 6, generation=3, observed_generation=2, template=digest)
    p6 = again(p5, obs, 110, deployment=unseen, endpoints=routed((OLD, 6)))
    assert rollout(p6)["phase"] == "Promoting"
    # fewer than minReplicas of the candidate routed
    p6 = again(p5, obs, 110, deployment=hpa_scaled(rev, 6, 4), endpoints=routed((rev, 1)))
    assert rollout(p6)["phase"] == "Promoting"
