"""A Canary rollout under an HPA (pure, through the whole plan): the autoscaler moving the stable Deployment's count
in the middle of a phase is no rollout. The phase's clock goes on while each Deployment's template stays fully
rolled out and the stable pods serve at least minReplicas (the candidate at least its share of minReplicas),
available and routed; the candidate is asked for its share of the live count without its template changing; and
promotion finishes once the stable Deployment rolled to the candidate, whatever the HPA does after."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from modelship.controller.observe import DeploymentObservation, Observed, deployment_observation
from modelship.controller.plan import Plan, plan
from modelship.controller.stages.rollout_checks import ROLLED_OUT
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
                                name=name, pod_template=pod_template(rev, name))  # fmt: skip
    return deployment(rev, CONFIG.images.serving, replicas, available, **(base | kw))


def pod_template(rev: str, name: str = "digits") -> str:
    """The digest a Deployment's pod template reads as (a scale leaves it as it is)."""
    return f"{name}-{rev}"[:64]


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
    stable = deployment(OLD, CONFIG.images.serving, pod_template=pod_template(OLD))
    p1 = plan(md, Observed(jobs=jobs, deployment=stable), CONFIG, NOW)
    obs = Observed(jobs=jobs, deployment=stable, canary=candidate(rev, 1, False),
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


def read(manifest: dict[str, Any], replicas: int, generation: int = 2, seen: int = 2, **annotations: str) -> Any:
    """The observation of the Deployment the operator rendered as ``manifest``, as the API server returns it: at
    ``replicas``, all available, its template fully rolled out by the controller's word at generation ``seen``;
    ``annotations`` added to its pod template (as ``kubectl rollout restart`` does)."""
    dep = copy.deepcopy(manifest)
    dep["metadata"]["generation"] = generation
    dep["spec"]["replicas"] = replicas
    dep["spec"]["template"]["metadata"].setdefault("annotations", {}).update(annotations)
    dep["status"] = {"observedGeneration": seen, "replicas": replicas, "updatedReplicas": replicas,
                     "readyReplicas": replicas, "availableReplicas": replicas,
                     "conditions": [{"type": "Progressing", "status": "True", "reason": ROLLED_OUT}]}  # fmt: skip
    return deployment_observation(dep)


def test_a_rollout_restart_the_controller_has_not_observed_is_not_taken_for_the_rolled_out_template() -> None:
    _md, rev, jobs = new_revision()
    p1 = plan(md_auto(), Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving)), CONFIG, NOW)
    base = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving), canary_service_ip=IP,
                    canary_endpoints=routed((rev, 1), service="digits-canary"), endpoints=routed((OLD, 2)),
                    samples=samples(n=10))  # fmt: skip
    rendered = plan(md_auto(p1.status), base, CONFIG, NOW)  # the shadow's two Deployments, as the operator renders them
    stable, cand = by_name(rendered, "Deployment", "digits"), by_name(rendered, "Deployment", "digits-canary")
    obs = Observed(**{**base.__dict__, "deployment": read(stable, 2), "canary": read(cand, 1)})
    p3 = plan(md_auto(rendered.status), obs, CONFIG, NOW)
    assert rollout(p3)["phaseStartedAt"] == "2026-11-26T12:00:00Z"
    # the HPA wrote 4; the controller has not seen it: trusted, the clock goes on
    assert rollout(again(p3, obs, 20, deployment=read(stable, 4, generation=3)))["phaseStartedAt"] == (
        "2026-11-26T12:00:00Z"
    )
    # `kubectl rollout restart deployment/digits`: the template changes, the ModelDeployment's generation does not,
    # and the controller's status (not caught up) still says the old template is rolled out
    restart = {"kubectl.kubernetes.io/restartedAt": "2026-11-26T12:00:15Z"}
    p4 = again(p3, obs, 20, deployment=read(stable, 2, generation=3, **restart))
    assert "phaseStartedAt" not in rollout(p4), rollout(p4)["message"]
    assert rollout(p4)["message"] == "waiting for the stable pods of shadow"


def test_a_lagging_status_is_not_trusted_once_a_template_changed_outside_the_spec() -> None:
    rev, obs, p2 = in_shadow()
    # the clock started on the templates read then
    read_then = {"stable": pod_template(OLD), "candidate": pod_template(rev, "digits-canary")}
    assert rollout(p2)["phaseTemplates"] == read_then
    digest = stable_template(p2)
    # `kubectl rollout restart` of the stable Deployment (or an edit, or an operator upgrade that renders its
    # template anew): its generation moves, the ModelDeployment's does not, and the controller has not seen it yet
    # (its status still says the old template is rolled out). Not trusted: the clock restarts
    restarted = hpa_scaled(OLD, 2, 2, generation=3, observed_generation=2, template=digest, pod_template="restarted")
    p3 = again(p2, obs, 30, deployment=restarted)
    assert "phaseStartedAt" not in rollout(p3) and "phaseTemplates" not in rollout(p3)
    assert rollout(p3)["message"] == "waiting for the stable pods of shadow"
    # the same for the candidate's Deployment
    cand = candidate(rev, 1, False, generation=3, observed_generation=2, pod_template="restarted")
    p3 = again(p2, obs, 30, deployment=hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2, template=digest),
               canary=cand)  # fmt: skip
    assert "phaseStartedAt" not in rollout(p3)
    # the controller caught up and rolled the restarted template out: the clock starts again, on it
    done = hpa_scaled(OLD, 2, 2, template=digest, pod_template="restarted")
    p4 = again(p3, obs, 40, deployment=done)
    assert rollout(p4)["phaseStartedAt"] == "2026-11-26T12:00:40Z"
    assert rollout(p4)["phaseTemplates"]["stable"] == "restarted"
    # from then on an HPA write the controller has not observed is trusted again
    p5 = again(p4, obs, 50, deployment=hpa_scaled(OLD, 4, 2, generation=4, observed_generation=3, template=digest,
                                                  pod_template="restarted"))  # fmt: skip
    assert rollout(p5)["phaseStartedAt"] == "2026-11-26T12:00:40Z"


def test_a_running_phase_without_recorded_templates_takes_them_from_an_observed_status() -> None:
    _rev, obs, p2 = in_shadow()
    digest = stable_template(p2)
    older = {**p2.status, "rollout": {k: v for k, v in rollout(p2).items() if k != "phaseTemplates"}}
    behind = hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2, template=digest)
    # written by an operator before phaseTemplates: a lagging status is not trusted
    p3 = plan(md_auto(older), Observed(**{**obs.__dict__, "deployment": behind}), CONFIG, NOW)
    assert "phaseStartedAt" not in rollout(p3)
    # a look at observed statuses keeps the clock and reads the templates; the next lag is trusted
    p3 = plan(md_auto(older), obs, CONFIG, NOW)
    assert rollout(p3)["phaseStartedAt"] == "2026-11-26T12:00:00Z" and rollout(p3)["phaseTemplates"]
    assert rollout(again(p3, obs, 30, deployment=behind))["phaseStartedAt"] == "2026-11-26T12:00:00Z"


def test_an_older_crd_that_prunes_phase_templates_trusts_a_lagging_status_on_the_generation() -> None:
    """An installed CRD older than the operator drops phaseTemplates from every status write (Helm never upgrades
    crds/): they are never there to compare, so the generation alone decides, as before the field; else every
    scale of the HPA the controller has not observed yet restarted the phase's clock and it never ended."""
    _rev, obs, p2 = in_shadow()
    digest = stable_template(p2)
    pruned = {**p2.status, "rollout": {k: v for k, v in rollout(p2).items() if k != "phaseTemplates"}}
    behind = hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2, template=digest)
    older_crd = Observed(**{**obs.__dict__, "deployment": behind,
                            "pruned_status": frozenset({"status.rollout.phaseTemplates"})})  # fmt: skip
    p3 = plan(md_auto(pruned), older_crd, CONFIG, NOW + timedelta(seconds=30))
    assert rollout(p3)["phaseStartedAt"] == "2026-11-26T12:00:00Z", rollout(p3)["message"]
    # the generation still decides: a status written for another generation is not trusted
    stale = plan(md_auto({**pruned, "observedGeneration": 1}), older_crd, CONFIG, NOW + timedelta(seconds=30))
    assert "phaseStartedAt" not in rollout(stale)



@pytest.mark.parametrize("forged", ["yesterday", "9999-12-31T23:59:59Z"])
def test_a_lagging_status_is_not_trusted_while_the_phase_start_is_forged(forged: str) -> None:
    """lag_trusted read a set phaseStartedAt as a clock that runs; decide reads one that does not parse, or lies
    in the future, as a clock not started. Now both agree: the lagging status is waited out, as at a phase's
    first look."""
    _rev, obs, p2 = in_shadow()
    digest = stable_template(p2)
    forged_status = {**p2.status, "rollout": {**rollout(p2), "phaseStartedAt": forged}}
    behind = hpa_scaled(OLD, 4, 2, generation=3, observed_generation=2, template=digest)
    older_crd = Observed(**{**obs.__dict__, "deployment": behind,
                            "pruned_status": frozenset({"status.rollout.phaseTemplates"})})  # fmt: skip
    p3 = plan(md_auto(forged_status), older_crd, CONFIG, NOW + timedelta(seconds=30))
    assert "phaseStartedAt" not in rollout(p3), rollout(p3)["message"]
    assert rollout(p3)["message"] == "waiting for the stable pods of shadow"


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


def test_the_served_weight_is_the_routed_share_and_the_step_goes_on_below_it() -> None:
    rev, obs, p4 = in_step()
    # every pod up: the share asked is the share served
    assert (rollout(p4)["weight"], rollout(p4)["servedWeight"]) == (50, 50)
    assert "below" not in rollout(p4)["message"]
    # the HPA raised the stable count to 6 and all 6 serve; the candidate is asked for 6, 4 of them run (a quota
    # holds the rest): 4 of the 10 ready endpoints are the candidate's
    up = {"deployment": hpa_scaled(OLD, 6, 6), "canary": candidate(rev, 6, True, available=4),
          "endpoints": routed((OLD, 6), (rev, 4))}  # fmt: skip
    p5 = again(p4, obs, 70, **up)
    r = rollout(p5)
    assert (r["weight"], r["servedWeight"]) == (50, 40), r
    assert r["message"] == (
        "canary step 1 held 8/30s; the candidate serves 40% (4 of 10 ready endpoints behind the Service), below "
        "the step's 50%"
    )
    verified = next(c for c in p5.status["conditions"] if c["type"] == "Verified")
    assert verified["message"] == r["message"]
    # the step's clock goes on: a clock restarted at every scale would never end
    assert r["phaseStartedAt"] == "2026-11-26T12:01:02Z"
    # the candidate's pods come up: the note goes
    p6 = again(p5, obs, 80, **{**up, "canary": candidate(rev, 6, True), "endpoints": routed((OLD, 6), (rev, 6))})
    assert (rollout(p6)["servedWeight"], rollout(p6)["message"]) == (50, "canary step 1 held 18/30s")



def test_below_its_share_compares_with_the_weight_the_same_write_sets() -> None:
    """A 20% step: the HPA raises the stable count from 4 to 6 (4 of them up), the candidate is asked for 2 (25% of
    the pods behind the Service), its one pod serves 20%: below the 25% the same write sets as weight, not the 20%
    of the look before."""
    step20 = {**CANARY, "canary": {**CANARY["canary"], "steps": [{"weight": 20, "pauseSeconds": 30}]}}

    def look(status: dict[str, Any], obs: Observed, seconds: float, **changes: Any) -> Plan:
        md = make_md(build=False, serving={"replicas": 2, "rollout": step20, "autoscaling": AUTO}, status=status)
        return plan(md, Observed(**{**obs.__dict__, **changes}), CONFIG, NOW + timedelta(seconds=seconds))

    _md, rev, jobs = new_revision()
    stable = deployment(OLD, CONFIG.images.serving, pod_template=pod_template(OLD))
    p1 = look({"servingRevision": OLD}, Observed(jobs=jobs, deployment=stable), 0)
    obs = Observed(jobs=jobs, deployment=stable, canary=candidate(rev, 1, False), canary_service_ip=IP,
                   canary_endpoints=routed((rev, 1), service="digits-canary"), endpoints=routed((OLD, 2)),
                   samples=samples(n=10))  # fmt: skip
    p2 = look(p1.status, obs, 0)
    at4 = {"deployment": hpa_scaled(OLD, 4, 4), "endpoints": routed((OLD, 4)), "samples": samples()}
    p3 = look(p2.status, obs, 61, **at4)
    assert rollout(p3)["phase"] == "Canary"
    live = {**at4, "canary": candidate(rev, 1, True), "endpoints": routed((OLD, 4), (rev, 1))}
    p4 = look(p3.status, obs, 62, **live)
    r = rollout(p4)
    assert (r["phaseStartedAt"], r["weight"], r["servedWeight"]) == ("2026-11-26T12:01:02Z", 20, 20)
    assert "below" not in r["message"]
    p5 = look(p4.status, obs, 70, **{**live, "deployment": hpa_scaled(OLD, 6, 4)})
    r = rollout(p5)
    assert by_name(p5, "Deployment", "digits-canary")["spec"]["replicas"] == 2
    assert (r["phaseStartedAt"], r["weight"], r["servedWeight"]) == ("2026-11-26T12:01:02Z", 25, 20), r
    assert r["message"].endswith("below the step's 25%"), r["message"]
