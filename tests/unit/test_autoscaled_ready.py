"""Deployed (so Ready) while an HPA scales a revision that serves: the pure decision of the deploy stage. A revision
that was Deployed and stays fully rolled out keeps Deployed True at minReplicas available and routed while the
count moves; a new revision or template, a rollout the Deployment controller has not finished, the operator's own
replicas, or fewer than minReplicas serving are judged as any rollout (RollingOut until every wanted replica is
available and routed)."""

from __future__ import annotations

from typing import Any

from modelship.api.status import ConditionType, Reason
from modelship.controller.observe import Observed
from modelship.controller.stages.deploy import ServingTarget, deploy, scaling_message
from modelship.controller.stages.rollout_checks import ROLLED_OUT, autoscaled_floor, template_rolled_out
from modelship.resources.canary import canary_deployment
from modelship.resources.meta import TEMPLATE_ANNOTATION
from modelship.resources.plan import serving_plan
from modelship.resources.revision import revision
from modelship.resources.serving import template_digest
from tests.support.endpoints import routed
from tests.unit.test_plan import CONFIG, IMAGE, deployment, make_md
from tests.unit.test_stages import conditions, ctx

HPA = {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}}
REV = revision(make_md(serving=HPA).spec)


def was(deployed: bool = True, serving_rev: str = REV, observed: int | None = 4, **spec: Any) -> Any:
    """A ModelDeployment (generation 4; under the HPA unless ``spec`` says otherwise) whose last status, written for
    generation ``observed``, said ``serving_rev`` serves, Deployed ``deployed``."""
    status: dict[str, Any] = {
        "servingRevision": serving_rev,
        "servingImage": IMAGE,
        "conditions": [{"type": "Deployed", "status": str(deployed), "reason": "Available" if deployed else
                        "RollingOut", "message": "", "observedGeneration": 4,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }  # fmt: skip
    if observed is not None:
        status["observedGeneration"] = observed
    return make_md(status=status, **({"serving": HPA} | spec))


def scaled(replicas: int, available: int, image: str = IMAGE, **kw: Any) -> Any:
    """The serving Deployment of REV after the HPA wrote ``replicas``: every pod of the template, rolled out."""
    base: dict[str, Any] = dict(status_replicas=replicas, updated_replicas=replicas, progress_reason=ROLLED_OUT)
    return deployment(REV, image, replicas, available, **(base | kw))


def judged(md: Any, dep: Any, ready: int) -> tuple[bool | None, Reason, str]:
    c = ctx(md, Observed(deployment=dep, endpoints=routed((REV, ready))))
    assert c.revision == REV
    return conditions(deploy(c, ServingTarget(REV, IMAGE)).effects)[ConditionType.DEPLOYED]


def test_a_deployed_revision_stays_deployed_while_the_hpa_scales_up() -> None:
    status, reason, message = judged(was(), scaled(4, 2), 2)
    assert (status, reason) == (True, Reason.AVAILABLE)
    assert message == (f"2/4 replicas of {REV} available, 2/4 endpoints ready in Service digits, autoscaler "
                       "scaling up (at least minReplicas 2 serve)")  # fmt: skip
    # pods available but not routed yet count as not serving: the message says both
    assert judged(was(), scaled(6, 6), 3)[:2] == (True, Reason.AVAILABLE)
    message = judged(was(), scaled(6, 6), 3)[2]
    assert "6/6 replicas" in message and "3/6 endpoints" in message
    # all up and routed: the message of any Deployed revision
    assert judged(was(), scaled(4, 4), 4)[2] == f"4/4 replicas of {REV} available and ready endpoints of Service digits"


def current_template(md: Any) -> str:
    """The template digest the operator renders for ``md`` now."""
    rendered = serving_plan(md, REV, CONFIG, IMAGE, None, None).deployment
    return str(rendered["metadata"]["annotations"][TEMPLATE_ANNOTATION])


def test_a_scale_down_the_controller_has_not_observed_yet_stays_deployed() -> None:
    """The HPA wrote 2 (generation 5); the controller's status still describes generation 4's 4 pods."""
    own = current_template(was())
    dep = scaled(2, 4, status_replicas=4, updated_replicas=4, generation=5, observed_generation=4, template=own)
    status, reason, message = judged(was(), dep, 4)
    assert (status, reason) == (True, Reason.AVAILABLE)
    assert message == (f"4 replicas of {REV} available, 4 endpoints ready in Service digits, autoscaler scaling "
                       "down to 2")  # fmt: skip
    up = scaled(4, 2, status_replicas=2, updated_replicas=2, generation=5, observed_generation=4, template=own)
    assert judged(was(), up, 2)[:2] == (True, Reason.AVAILABLE)


def test_an_unobserved_deployment_change_is_held_only_when_it_can_only_be_the_hpas() -> None:
    """The Deployment controller has not observed the latest write (observedGeneration behind): held Ready only when
    the Deployment carries this operator's template digest and the previous status was written for this
    ModelDeployment's generation; otherwise the unobserved change may be the operator's own template (an upgrade
    from an operator without the digest, or a status write that failed after an apply): judged as a rollout."""
    behind: dict[str, Any] = dict(status_replicas=4, updated_replicas=4, generation=5, observed_generation=4)
    own = current_template(was())
    assert judged(was(), scaled(4, 4, template=own, **behind), 4)[:2] == (True, Reason.AVAILABLE)
    # an older operator's Deployment (no digest): not sure the change is only the count
    assert judged(was(), scaled(4, 2, template=None, **behind), 2)[:2] == (False, Reason.ROLLING_OUT)
    # the last status was for generation 3 (its write after the apply of generation 4's template failed)
    assert judged(was(observed=3), scaled(4, 2, template=own, **behind), 2)[:2] == (False, Reason.ROLLING_OUT)
    assert judged(was(observed=None), scaled(4, 2, template=own, **behind), 2)[:2] == (False, Reason.ROLLING_OUT)
    # observed by the controller: the template digest decides as before, whatever the previous status's generation
    assert judged(was(observed=3), scaled(4, 2, template=None), 2)[:2] == (True, Reason.AVAILABLE)


def test_fewer_than_min_replicas_serving_is_rolling_out() -> None:
    status, reason, message = judged(was(), scaled(4, 1), 1)
    assert (status, reason, message) == (False, Reason.ROLLING_OUT, f"1/4 replicas of {REV} available")
    # available but fewer than minReplicas routed
    assert judged(was(), scaled(4, 4), 1)[:2] == (False, Reason.ROLLING_OUT)


def test_a_rollout_is_judged_as_without_an_hpa_until_the_controller_rolled_it_out() -> None:
    """A revision not Deployed before (a first rollout, a new revision) waits for every wanted replica available
    and routed while the controller is rolling it out; once the controller says its template is rolled out
    (NewReplicaSetAvailable) and at least minReplicas serve, it serves, and a count the HPA raised beyond what can
    be scheduled is a Capacity shortfall, not a rollout that never ends."""
    first = was(deployed=False)
    # still rolling: the controller's Progressing reason says so, or pods it counts are not of the template yet
    rolling = scaled(4, 2, progress_reason="ReplicaSetUpdated")
    assert judged(first, rolling, 2) == (False, Reason.ROLLING_OUT, f"2/4 replicas of {REV} available")
    assert judged(first, scaled(4, 2, status_replicas=4, updated_replicas=2), 2)[:2] == (False, Reason.ROLLING_OUT)
    assert judged(first, scaled(4, 2, progress_reason="NewReplicaSetCreated"), 2)[:2] == (False, Reason.ROLLING_OUT)
    # the controller has not observed the latest generation: never taken for rolled out
    assert judged(first, scaled(4, 4, generation=3, observed_generation=2), 4)[:2] == (False, Reason.ROLLING_OUT)
    # fewer than minReplicas (2) routed
    assert judged(first, scaled(4, 4), 1)[:2] == (False, Reason.ROLLING_OUT)
    # rolled out, then the HPA asked for 4 of which 2 serve: Deployed, the shortfall is Capacity's
    out = deploy(ctx(first, Observed(deployment=scaled(4, 2), endpoints=routed((REV, 2)))), ServingTarget(REV, IMAGE))
    got = conditions(out.effects)
    assert got[ConditionType.DEPLOYED][:2] == (True, Reason.AVAILABLE)
    assert got[ConditionType.CAPACITY][:2] == (False, Reason.SCALING_UP)
    assert out.serving_revision == REV
    assert judged(was(serving_rev="rold"), scaled(4, 4), 2)[:2] == (True, Reason.AVAILABLE)  # a new revision too
    # a new template the controller is rolling out (its Progressing reason), or pods of an old template left
    for dep in (scaled(4, 4, progress_reason="ReplicaSetUpdated"), scaled(4, 3, updated_replicas=3),
                scaled(4, 4, progress_reason="NewReplicaSetCreated"), scaled(4, 4, image="other@sha256:" + "1" * 64)):
        assert judged(was(), dep, 2)[:2] == (False, Reason.ROLLING_OUT), dep  # fmt: skip
    stalled = scaled(4, 2, progress_reason="ProgressDeadlineExceeded", progress_deadline_exceeded=True)
    assert judged(was(), stalled, 2)[:2] == (False, Reason.ROLLOUT_STALLED)


def test_the_operators_own_replicas_are_judged_as_today() -> None:
    """Without an HPA the count is the spec's: a change of it is Reconciling until every replica serves."""
    own = was(serving={"replicas": 4})
    assert revision(own.spec) == REV  # serving settings are not part of the revision
    dep = deployment(REV, IMAGE, 4, 2, progress_reason=ROLLED_OUT)
    c = ctx(own, Observed(deployment=dep, endpoints=routed((REV, 2))))
    out = conditions(deploy(c, ServingTarget(c.revision, IMAGE)).effects)[ConditionType.DEPLOYED]
    assert out[:2] == (False, Reason.ROLLING_OUT)


def test_the_pure_parts() -> None:
    md = make_md(serving=HPA)
    desired = serving_plan(md, REV, CONFIG, IMAGE, None, None).deployment
    assert autoscaled_floor(md, desired) == 2
    own = make_md(serving={"replicas": 4})
    assert autoscaled_floor(own, serving_plan(own, REV, CONFIG, IMAGE, None, None).deployment) is None
    suspended = make_md(serving=HPA, suspend=True)  # scaled to zero by the operator, no HPA
    assert autoscaled_floor(suspended, serving_plan(suspended, REV, CONFIG, IMAGE, None, None).deployment) is None
    assert template_rolled_out(scaled(4, 2), desired, REV)
    assert not template_rolled_out(scaled(4, 2), desired, "rold")
    assert not template_rolled_out(scaled(4, 2, updated_replicas=3), desired, REV)
    assert not template_rolled_out(scaled(4, 2, progress_reason=""), desired, REV)
    assert not template_rolled_out(None, desired, REV)
    full = "3/3 replicas of r available and ready endpoints of Service s"
    assert scaling_message(scaled(3, 3), "r", 3, 2, "s") == full
    assert scaling_message(scaled(3, 3), "r", 4, 2, "s").endswith("autoscaler scaling down to 3")
    up = "autoscaler scaling up (at least minReplicas 2 serve)"
    assert scaling_message(scaled(5, 3), "r", 3, 2, "s").endswith(up)


def test_a_template_the_operator_is_changing_is_a_rollout() -> None:
    """A serving setting changed (same revision): the pass that applies the new template still sees the old one
    live. Its digest (TEMPLATE_ANNOTATION) differs from the rendered one, so that pass is RollingOut, with or
    without an HPA, not Ready on the pods of the template being replaced; a Deployment an older operator applied
    (no digest) is judged by revision and image alone, as before."""
    old = "0" * 16
    assert judged(was(), scaled(4, 4, template=old), 4)[:2] == (False, Reason.ROLLING_OUT)
    assert judged(was(), scaled(4, 4, template=None), 4)[:2] == (True, Reason.AVAILABLE)
    own = was(serving={"replicas": 2})
    for live, verdict in ((old, (False, Reason.ROLLING_OUT)), (None, (True, Reason.AVAILABLE))):
        dep = deployment(REV, IMAGE, 2, 2, progress_reason=ROLLED_OUT, template=live)
        c = ctx(own, Observed(deployment=dep, endpoints=routed((REV, 2))))
        assert conditions(deploy(c, ServingTarget(REV, IMAGE)).effects)[ConditionType.DEPLOYED][:2] == verdict
    # the live digest equal to the rendered one: the template is the one the operator applies
    rendered = serving_plan(own, REV, CONFIG, IMAGE, None, None).deployment
    current = rendered["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    assert current == template_digest(rendered["spec"]["template"])
    dep = deployment(REV, IMAGE, 2, 2, progress_reason=ROLLED_OUT, template=current)
    c = ctx(own, Observed(deployment=dep, endpoints=routed((REV, 2))))
    assert conditions(deploy(c, ServingTarget(REV, IMAGE)).effects)[ConditionType.DEPLOYED][:2] == (
        True,
        Reason.AVAILABLE,
    )


def test_the_template_digest_follows_the_template() -> None:
    md = make_md(serving=HPA)
    one = serving_plan(md, REV, CONFIG, IMAGE, None, None).deployment
    again = serving_plan(make_md(serving=HPA), REV, CONFIG, IMAGE, None, None).deployment
    assert one["metadata"]["annotations"][TEMPLATE_ANNOTATION] == again["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    bigger = make_md(serving=HPA | {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}})
    other = serving_plan(bigger, REV, CONFIG, IMAGE, None, None).deployment
    assert revision(bigger.spec) == REV  # the same revision, another template
    assert other["metadata"]["annotations"][TEMPLATE_ANNOTATION] != one["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    # the candidate's Deployment (Canary) carries the digest of the template it runs, not of the one it came from
    cand = canary_deployment(md, REV, CONFIG, IMAGE, 1, False)
    assert cand["metadata"]["annotations"][TEMPLATE_ANNOTATION] == template_digest(cand["spec"]["template"])
    assert cand["metadata"]["annotations"][TEMPLATE_ANNOTATION] != one["metadata"]["annotations"][TEMPLATE_ANNOTATION]
