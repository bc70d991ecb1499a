"""Under an HPA, the pure parts of: a scale-up whose new pods do not come up (the Capacity condition, its clock
kept in objects, the Events); a Deployment scaled to 0 outside the operator; the replica count handed over when
autoscaling is switched on (server-side apply would otherwise reset it to 1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelship import FIELD_MANAGER
from modelship.api.status import ConditionType, Reason
from modelship.controller.applycheck import unchanged, with_spec_hash
from modelship.controller.conditions import ConditionSet, duration, rfc3339
from modelship.controller.kstatus import EventType, events
from modelship.controller.observe import Observed, applies_replicas, deployment_observation
from modelship.controller.stages.deploy import ServingTarget, deploy, handover, scaled_to_zero
from modelship.controller.stages.rollout_checks import ROLLED_OUT
from modelship.controller.stages.serving_clocks import seconds_since_stamps
from modelship.resources.plan import serving_plan
from tests.support.endpoints import routed
from tests.unit.test_autoscaled_ready import HPA, REV, scaled, was
from tests.unit.test_plan import CONFIG, IMAGE, NOW, deployment, make_md
from tests.unit.test_stages import conditions, ctx

UP = (f"2/4 replicas of {REV} available, 2/4 endpoints ready in Service digits, autoscaler scaling up "
      "(at least minReplicas 2 serve)")  # fmt: skip


def short(seconds: float | None, reason: str = "ScalingUp", deadline: int | None = None) -> Any:
    """A ModelDeployment that was Deployed under the HPA (rollout.progressDeadlineSeconds ``deadline``); with
    ``seconds``, its last status also said Capacity False (``reason``) since that long before NOW."""
    spec = {"serving": {**HPA, "rollout": {"progressDeadlineSeconds": deadline}}} if deadline else {}
    md = was(**spec)
    if seconds is None:
        return md
    status = md.status.wire()
    status["conditions"].append({"type": "Capacity", "status": "False", "reason": reason, "message": "",
                                 "lastTransitionTime": rfc3339(NOW - timedelta(seconds=seconds))})  # fmt: skip
    return make_md(status=status, **({"serving": HPA} | spec))


def outcome(md: Any, dep: Any, ready: int) -> Any:
    return deploy(ctx(md, Observed(deployment=dep, endpoints=routed((REV, ready)))), ServingTarget(REV, IMAGE))


def test_a_scale_up_short_of_replicas_says_so_and_looks_again_at_the_deadline() -> None:
    out = outcome(short(None), scaled(4, 2), 2)
    got = conditions(out.effects)
    assert got[ConditionType.DEPLOYED] == (True, Reason.AVAILABLE, UP)  # Ready: minReplicas serve
    assert got[ConditionType.CAPACITY][:2] == (False, Reason.SCALING_UP)
    assert got[ConditionType.CAPACITY][2] == (f"2/4 replicas of {REV} available, 2/4 endpoints ready in Service "
                                              "digits: the autoscaler scales up")  # fmt: skip
    assert out.effects.requeue_after == 601  # the default progressDeadlineSeconds, first look now
    assert out.effects.failure is None and out.effects.progress is None and not out.effects.events
    # 100 s into it (the previous status's Capacity condition): the timer is the rest of the deadline
    assert outcome(short(100), scaled(4, 2), 2).effects.requeue_after == 501
    # available but not routed is short too
    assert conditions(outcome(short(None), scaled(4, 4), 3).effects)[ConditionType.CAPACITY][1] == Reason.SCALING_UP


def test_past_progress_deadline_seconds_the_scale_up_is_stalled_while_ready_stays() -> None:
    md = short(601, deadline=600)
    out = outcome(md, scaled(4, 2), 2)
    got = conditions(out.effects)
    assert got[ConditionType.DEPLOYED] == (True, Reason.AVAILABLE, UP + "; scale-up stalled for more than 10m")
    status, reason, message = got[ConditionType.CAPACITY]
    assert (status, reason) == (False, Reason.SCALE_UP_STALLED)
    assert message.startswith(f"2/4 replicas of {REV} available for more than 10m (progressDeadlineSeconds "
                              "600), "
                              "2/4 endpoints ready in Service digits: the autoscaler's scale-up makes no "
                              "progress")  # fmt: skip
    assert out.effects.failure is None and out.effects.requeue_after is None
    # a shorter deadline (the spec's) stalls sooner; just under it does not
    assert conditions(outcome(short(45, deadline=30), scaled(4, 2), 2).effects)[
        ConditionType.CAPACITY][1] == Reason.SCALE_UP_STALLED  # fmt: skip
    assert conditions(outcome(short(29, deadline=30), scaled(4, 2), 2).effects)[
        ConditionType.CAPACITY][1] == Reason.SCALING_UP  # fmt: skip


def test_the_clock_is_the_deployment_s_own_when_status_has_none() -> None:
    """The Deployment's Available condition turned False when the shortfall began (the operator was not running
    then, or its status was lost): that time counts."""
    since = rfc3339(NOW - timedelta(seconds=700))
    got = conditions(outcome(short(None), scaled(4, 2, unavailable_since=since), 2).effects)
    assert got[ConditionType.CAPACITY][1] == Reason.SCALE_UP_STALLED
    # the earlier of the two counts
    assert conditions(outcome(short(30), scaled(4, 2, unavailable_since=since), 2).effects)[
        ConditionType.CAPACITY][1] == Reason.SCALE_UP_STALLED  # fmt: skip
    # the message is the same at every pass (no status write for a clock that moves)
    later = outcome(short(None), scaled(4, 2, unavailable_since=rfc3339(NOW - timedelta(hours=3))), 2)
    assert conditions(later.effects)[ConditionType.CAPACITY][2] == got[ConditionType.CAPACITY][2]


def test_no_capacity_condition_once_every_replica_serves_or_while_scaling_down() -> None:
    full = outcome(short(None), scaled(4, 4), 4)
    assert ConditionType.CAPACITY not in conditions(full.effects) and not full.effects.events
    down = outcome(short(None), scaled(2, 4, status_replicas=4), 4)
    assert ConditionType.CAPACITY not in conditions(down.effects)
    # a stalled scale-up that is over: a Normal Event says so
    over = outcome(short(900, reason="ScaleUpStalled"), scaled(4, 4), 4)
    assert ConditionType.CAPACITY not in conditions(over.effects)
    (event,) = over.effects.events
    assert (event.warning, event.reason) == (False, "CapacityScaledUp")
    assert event.message == f"scale-up over: 4/4 replicas of {REV} available and ready endpoints of Service digits"
    # one only in flight ends silently
    assert not outcome(short(10), scaled(4, 4), 4).effects.events


def test_a_stalled_scale_up_the_hpa_lowers_stays_short_until_the_lower_count_serves() -> None:
    """Stalled at 2/4 available, the HPA lowers to 3: status.replicas still counts the 4 pods (the pending one not
    deleted yet), yet 2 < 3 serve: still short and stalled (clock kept), no "scale-up over" Event."""
    md = short(900, reason="ScaleUpStalled")
    lowered = outcome(md, scaled(3, 2, status_replicas=4, updated_replicas=4), 2)
    got = conditions(lowered.effects)
    assert got[ConditionType.CAPACITY][:2] == (False, Reason.SCALE_UP_STALLED)
    status, reason, message = got[ConditionType.DEPLOYED]
    assert (status, reason) == (True, Reason.AVAILABLE)
    assert message.startswith(f"2/3 replicas of {REV} available, 2/3 endpoints ready") and "scaling up" in message
    assert not lowered.effects.events
    # the surplus pending pod goes while 3 serve: over, the scale-down message and the Event
    done = outcome(md, scaled(3, 3, status_replicas=4, updated_replicas=4), 3)
    assert ConditionType.CAPACITY not in conditions(done.effects)
    assert "scaling down to 3" in conditions(done.effects)[ConditionType.DEPLOYED][2]
    assert [e.reason for e in done.effects.events] == ["CapacityScaledUp"]


def test_events_say_a_stall_not_every_scale_up() -> None:
    conds = ConditionSet([], 4, NOW)
    conds.set(ConditionType.CAPACITY, False, Reason.SCALING_UP, "2/4")
    assert events(conds) == []
    prev = conds.as_list()
    later = ConditionSet(prev, 4, NOW + timedelta(minutes=11))
    later.set(ConditionType.CAPACITY, False, Reason.SCALE_UP_STALLED, "2/4 for 11m")
    (event,) = events(later)
    assert (event.type, event.reason) == (EventType.WARNING, "CapacityScaleUpStalled")
    # the clock (lastTransitionTime) is kept from ScalingUp to ScaleUpStalled: both False
    assert later.as_list()[0].last_transition_time == rfc3339(NOW)


def test_duration_reads_as_a_person_says_it() -> None:
    assert [duration(s) for s in (0, 59.9, 119, 120, 3599, 7199, 7200, 7320)] == [
        "0s", "59s", "119s", "2m", "59m", "119m", "2h0m", "2h2m"]  # fmt: skip


def test_a_deployment_scaled_to_zero_under_an_hpa_is_stalled_with_the_remedy() -> None:
    out = outcome(was(), scaled(0, 0), 0)
    status, reason, message = conditions(out.effects)[ConditionType.DEPLOYED]
    assert (status, reason) == (False, Reason.SCALED_TO_ZERO)
    assert message == (
        "Deployment digits was scaled to 0 replicas outside the operator, and the HPA does not scale a target at 0 "
        "(autoscaling stays disabled while it is): nothing serves; scale it back (kubectl scale deployment digits "
        "--replicas=2), or set spec.suspend to scale to zero"
    )
    assert out.effects.failure is not None and out.effects.failure.reason == Reason.SCALED_TO_ZERO
    desired = serving_plan(was(), REV, CONFIG, IMAGE, None, None).deployment
    # not while the operator's own apply holds the count (0 when suspended: it hands it over), nor without an HPA
    assert scaled_to_zero(was(), scaled(0, 0, replicas_applied=True), desired) is None
    plain = make_md(serving={"replicas": 2})
    assert scaled_to_zero(plain, scaled(0, 0), serving_plan(plain, REV, CONFIG, IMAGE, None, None).deployment) is None


def test_switching_autoscaling_on_hands_the_count_over() -> None:
    md = was()
    desired = serving_plan(md, REV, CONFIG, IMAGE, None, None).deployment
    assert "replicas" not in desired["spec"]
    given = handover(md, scaled(3, 3, replicas_applied=True), desired)
    assert given == {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "digits", "namespace": "ml"}, "spec": {"replicas": 3}}  # fmt: skip
    # at least minReplicas (2): from 0 (suspended before) or 1
    assert handover(md, scaled(0, 0, replicas_applied=True), desired)["spec"]["replicas"] == 2  # type: ignore[index]
    # nothing to hand over: the operator's apply does not own the count, or it still sets it (no HPA)
    assert handover(md, scaled(3, 3), desired) is None
    plain = make_md(serving={"replicas": 2})
    fixed = serving_plan(plain, REV, CONFIG, IMAGE, None, None).deployment
    assert handover(plain, scaled(3, 3, replicas_applied=True), fixed) is None
    out = outcome(md, scaled(3, 3, replicas_applied=True), 3)
    assert out.effects.handover == (given,)
    assert not outcome(md, scaled(3, 3), 3).effects.handover


def _live(fields: list[dict[str, Any]], available: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits", "generation": 2, "managedFields": fields},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": IMAGE}]}}},
        "status": {"conditions": [available] if available else []},
    }


def test_the_observation_reads_who_applies_the_count_and_since_when_it_is_short() -> None:
    ours = {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    theirs = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
              "fieldsV1": {"f:spec": {"f:replicas": {}}}}  # fmt: skip
    handed = {"manager": "modelship-handover", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    without = {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}}
    assert applies_replicas(_live([ours])["metadata"])
    assert not applies_replicas(_live([without, theirs, handed])["metadata"])
    assert not applies_replicas({"name": "digits"})
    stamp = "2026-11-26T11:50:00Z"
    off = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "lastTransitionTime": stamp}
    on = {**off, "status": "True", "reason": "MinimumReplicasAvailable"}
    assert deployment_observation(_live([ours], off)).unavailable_since == stamp
    assert deployment_observation(_live([ours], on)).unavailable_since is None
    assert deployment_observation(_live([ours], on)).replicas_applied
    assert deployment(REV, IMAGE).replicas_applied is False


def test_an_object_whose_creating_entry_is_not_yet_the_operators_apply_entry_is_applied() -> None:
    """The patch that turns the create's Update entry into an Apply entry failed (the object changed in between):
    the next pass applies even an unchanged manifest (that path converts it), or the entry would own every
    defaulted field (spec.replicas under an HPA among them) with no handover seeing it."""
    meta = {"name": "digits", "annotations": {"a": "1"}}
    desired = with_spec_hash({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"paused": 0}})
    update = {"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    status = {**update, "subresource": "status"}
    spec = {"paused": 0, "replicas": 1}
    live = {**desired, "metadata": {**desired["metadata"], "managedFields": [status]}, "spec": spec}
    assert unchanged(desired, live)
    assert not unchanged(desired, {**live, "metadata": {**live["metadata"], "managedFields": [update, status]}})
    applied = {**update, "operation": "Apply"}
    assert unchanged(desired, {**live, "metadata": {**live["metadata"], "managedFields": [applied, status]}})
    assert not unchanged(desired, {**live, "spec": {"paused": 1}})


def below(seconds: float | None, **kw: Any) -> Any:
    """The serving Deployment of REV under the HPA (spec.replicas 2 = minReplicas), its template rolled out by the
    controller's word, with 1 pod available; its Available condition False since ``seconds`` before NOW."""
    since = rfc3339(NOW - timedelta(seconds=seconds)) if seconds is not None else None
    return scaled(2, 1, unavailable_since=since, **kw)


def test_below_min_replicas_past_the_deadline_is_a_stalled_rollout() -> None:
    """A revision that served at minReplicas loses a pod that cannot come back (no node, a quota), or a first
    rollout the controller completed at 1 replica before the HPA raised it to minReplicas: the controller keeps
    NewReplicaSetAvailable and runs no deadline on the count, so the operator's own does, from the Deployment's
    Available condition turning False (the previous status's Deployed condition False since long before)."""
    for md in (was(deployed=False, **{"serving": {**HPA, "rollout": {"progressDeadlineSeconds": 30}}}),
               stalled_since(3600, Reason.ROLLOUT_STALLED)):  # fmt: skip
        early = outcome(md, below(10), 1)
        assert conditions(early.effects)[ConditionType.DEPLOYED] == (
            False, Reason.ROLLING_OUT, f"1/2 replicas of {REV} available")  # fmt: skip
        assert early.effects.requeue_after == 21 and early.effects.failure is None  # the operator's own timer
        late = outcome(md, below(31), 1)
        status, reason, message = conditions(late.effects)[ConditionType.DEPLOYED]
        assert (status, reason) == (False, Reason.ROLLOUT_STALLED)
        assert message == (f"fewer than minReplicas 2 replicas of {REV} available for more than 30s "
                           "(progressDeadlineSeconds 30): its new pods do not come up (unschedulable, over a "
                           "ResourceQuota, crash-looping or not pulled: the pods' events and the ReplicaSet's "
                           "conditions tell which), and the Deployment controller sets no deadline on a count the "
                           "autoscaler moves")  # fmt: skip
        assert late.effects.failure is not None and late.effects.failure.reason == Reason.ROLLOUT_STALLED
        assert late.effects.progress is None and late.effects.requeue_after is None
        assert late.serving_revision == md.status.serving_revision  # what served before stays servingRevision
        # the message names the deadline, not the time so far: the same at every later pass
        assert conditions(outcome(md, below(3 * 3600), 1).effects)[ConditionType.DEPLOYED][2] == message
    # the quota case: the ReplicaSet could not create the second pod at all (status.replicas 1 of spec 2)
    first = was(deployed=False, **{"serving": {**HPA, "rollout": {"progressDeadlineSeconds": 30}}})
    quota = outcome(first, below(31, status_replicas=1, updated_replicas=1), 1)
    assert conditions(quota.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLOUT_STALLED
    # pods that come up end it: Deployed again (the stall was the Deployment's Available condition, now True)
    assert conditions(outcome(first, scaled(2, 2), 2).effects)[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)


def stalled_since(seconds: float, reason: Reason = Reason.ROLLING_OUT) -> Any:
    """REV under the HPA (progressDeadlineSeconds 30) whose last status said Deployed False (``reason``) since
    ``seconds`` before NOW."""
    status = was(deployed=False).status.wire()
    (deployed,) = status["conditions"]
    deployed |= {"reason": reason.value, "lastTransitionTime": rfc3339(NOW - timedelta(seconds=seconds))}
    return make_md(status=status, serving={**HPA, "rollout": {"progressDeadlineSeconds": 30}})


def test_the_below_floor_clock_starts_no_earlier_than_the_revision_dropped() -> None:
    """With maxUnavailable 0 the Deployment's Available condition turned False at a short scale-up long ago (Ready
    stayed True, Capacity ScalingUp) and kept its lastTransitionTime: a drop below minReplicas now (a node drained)
    is not stalled at once. Deployed True at the last look: the drop is now, look again at the deadline; Deployed
    False since (RollingOut, RolloutStalled): the later of the two stamps, from objects (a restart keeps it)."""
    served = was(**{"serving": {**HPA, "rollout": {"progressDeadlineSeconds": 30}}})  # Deployed True
    now = outcome(served, below(900), 1)
    assert conditions(now.effects)[ConditionType.DEPLOYED] == (False, Reason.ROLLING_OUT, f"1/2 replicas of {REV} "
                                                                "available")  # fmt: skip
    assert now.effects.requeue_after == 31 and now.effects.failure is None
    # the next look: Deployed False RollingOut since the drop (10 s ago): 20 s to go, then stalled
    assert outcome(stalled_since(10), below(900), 1).effects.requeue_after == 21
    late = conditions(outcome(stalled_since(31), below(900), 1).effects)[ConditionType.DEPLOYED]
    assert late[:2] == (False, Reason.ROLLOUT_STALLED)
    # ... and stays stalled (RolloutStalled since then); the Deployment's stamp the later one counts too
    assert conditions(outcome(stalled_since(900, Reason.ROLLOUT_STALLED), below(31), 1).effects)[
        ConditionType.DEPLOYED][1] == Reason.ROLLOUT_STALLED  # fmt: skip
    assert outcome(stalled_since(900), below(10), 1).effects.requeue_after == 21


def test_the_below_floor_stall_message_does_not_follow_the_live_count() -> None:
    """Crash-looping pods flap 0 -> 1 -> 0 available: the stall's message (Deployed, lastFailure) stays the same,
    so no status write, lastFailure time or Warning Event at each flap."""
    md = stalled_since(900, Reason.ROLLOUT_STALLED)
    messages = {conditions(outcome(md, scaled(2, n, unavailable_since=rfc3339(NOW - timedelta(seconds=900))), n)
                           .effects)[ConditionType.DEPLOYED][2] for n in (0, 1)}  # fmt: skip
    assert len(messages) == 1 and next(iter(messages)).startswith(f"fewer than minReplicas 2 replicas of {REV} ")


def test_below_min_replicas_with_the_deployment_counting_itself_available_runs_deployed_s_clock() -> None:
    """A maxUnavailable above 0 lets the Deployment count itself Available below minReplicas (no Available False,
    no stamp of the controller's): the clock is Deployed's own lastTransitionTime (False since the drop), so such
    a revision is stalled past the deadline too instead of RollingOut for ever."""
    assert outcome(stalled_since(10), below(None), 1).effects.requeue_after == 21
    late = outcome(stalled_since(31), below(None), 1)
    assert conditions(late.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLOUT_STALLED
    assert late.effects.failure is not None
    # Deployed True at the last look: the drop is now, the whole deadline to go
    served = was(**{"serving": {**HPA, "rollout": {"progressDeadlineSeconds": 30}}})
    now = outcome(served, below(None), 1)
    assert conditions(now.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLING_OUT
    assert now.effects.requeue_after == 31


def test_below_min_replicas_is_not_judged_where_the_controller_s_deadline_holds_or_it_cannot_tell() -> None:
    md = was(deployed=False, **{"serving": {**HPA, "rollout": {"progressDeadlineSeconds": 30}}})

    def judged(dep: Any) -> tuple[Reason, float | None]:
        out = outcome(md, dep, 1)
        return conditions(out.effects)[ConditionType.DEPLOYED][1], out.effects.requeue_after

    # the controller still rolls the template out: its own ProgressDeadlineExceeded says a stall
    assert judged(below(900, progress_reason="ReplicaSetUpdated")) == (Reason.ROLLING_OUT, None)
    # ... and an old template's pods still counted (updated < status.replicas): a rollout too
    assert judged(below(900, status_replicas=3)) == (Reason.ROLLING_OUT, None)
    # the controller has not observed the last change: its status may describe another template
    assert judged(below(900, generation=3)) == (Reason.ROLLING_OUT, None)
    # the operator's own replicas (no HPA): a rollout as any, the controller's deadline
    fixed = was(deployed=False, **{"serving": {"replicas": 2, "rollout": {"progressDeadlineSeconds": 30}}})
    out = outcome(fixed, deployment(REV, IMAGE, 2, 1, progress_reason=ROLLED_OUT,
                                    unavailable_since=rfc3339(NOW - timedelta(seconds=900))), 1)  # fmt: skip
    assert conditions(out.effects)[ConditionType.DEPLOYED][1] == Reason.ROLLING_OUT and out.effects.failure is None


def test_seconds_since_the_earliest_or_the_latest_stamp_that_is_set() -> None:
    """The clocks kept in objects (short_for: the earlier stamp; latest=True: the later one): unset stamps are
    skipped, none set or a stamp ahead of now is 0."""
    ago = {n: rfc3339(NOW - timedelta(seconds=n)) for n in (10, 40)}
    assert seconds_since_stamps(NOW, ago[10], None, ago[40]) == 40
    assert seconds_since_stamps(NOW, ago[10], None, ago[40], latest=True) == 10
    assert seconds_since_stamps(NOW, None, "") == 0 and seconds_since_stamps(NOW, None, latest=True) == 0
    ahead = rfc3339(NOW + timedelta(seconds=5))
    assert seconds_since_stamps(NOW, ahead) == 0 and seconds_since_stamps(NOW, ago[40], ahead, latest=True) == 0
