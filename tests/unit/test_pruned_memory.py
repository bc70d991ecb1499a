"""What serves when an older CRD prunes a status field the operator reads back (controller.stages.memory):
recovered from the live objects the operator owns, or held. Pure: the live Deployment is the one the deploy stage
renders, read back through the same observation the reconciler makes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelship.api.rollout_status import CriterionStatus, RolloutStatus
from modelship.api.status import ConditionType, Reason
from modelship.config import OperatorConfig
from modelship.controller.mergepatch import apply_merge_patch
from modelship.controller.observe import JobState, Observed, deployment_observation
from modelship.controller.plan import plan
from modelship.controller.pruning import PrunedStatus
from modelship.controller.reconcile import Reconciler
from modelship.controller.stages.build import build
from modelship.controller.stages.context import Effects
from modelship.controller.stages.deploy import ServingTarget, deploy, target
from modelship.controller.stages.gate import GateVerdict
from modelship.controller.stages.memory import (
    HARMLESS,
    ROLLOUT_READ_BACK,
    SERVING_IMAGE,
    Served,
    lost,
    read_back,
    rollout_lost,
    what_serves,
)
from modelship.controller.stages.optimize import optimize
from modelship.controller.stages.resolve import Known
from modelship.controller.store import Store
from modelship.resources.revision import revision
from modelship.resources.serving import ServedArtifact
from tests.unit.test_plan import CONFIG, IMAGE, NOW, job, make_md, summary
from tests.unit.test_stages import ARTIFACT_CONFIG, ARTIFACT_REF, PASSED, conditions, ctx, result
from tests.unit.test_verify import CANARY, OLD, by_name, canary_obs

CONTENT = "sha256:" + "ef" * 32
PULLED = ServedArtifact(ARTIFACT_REF, CONTENT)
BLOCKED = GateVerdict(False, Effects())
ARTIFACT = {"status.servingArtifact"}


def live(md: Any, serve: ServingTarget, config: Any = ARTIFACT_CONFIG, **status: Any) -> dict[str, Any]:
    """The serving Deployment as the deploy stage renders it for ``serve``, as the API server then holds it."""
    manifest: dict[str, Any] = deploy(ctx(md, config=config), serve).effects.apply[0]
    assert manifest["kind"] == "Deployment"
    replicas = manifest["spec"].get("replicas", 1)
    counts = dict(replicas=replicas, readyReplicas=replicas, updatedReplicas=replicas, availableReplicas=replicas)
    return {**manifest, "metadata": {**manifest["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, **counts, **status}}  # fmt: skip


def observed(md: Any, serve: ServingTarget, pruned: set[str], **more: Any) -> Observed:
    return Observed(deployment=deployment_observation(live(md, serve)), pruned_status=frozenset(pruned), **more)


def template(out: Any) -> dict[str, Any]:
    dep: dict[str, Any] = next(o for o in out.effects.apply if o["kind"] == "Deployment")
    return dict(dep["spec"]["template"])


def test_the_observation_says_what_the_pod_template_runs() -> None:
    md = make_md(build=False)
    pulls = deployment_observation(live(md, ServingTarget(OLD, None, PULLED)))
    assert (pulls.revision, pulls.stock_runtime, pulls.artifact, pulls.artifact_digest) == (
        OLD, True, ARTIFACT_REF, CONTENT
    )  # fmt: skip
    claim = deployment_observation(live(md, ServingTarget(OLD, None)))
    assert (claim.stock_runtime, claim.artifact, claim.image) == (True, None, CONFIG.images.serving)
    built = deployment_observation(live(make_md(), ServingTarget(OLD, IMAGE), CONFIG))
    assert (built.stock_runtime, built.artifact, built.image) == (False, None, IMAGE)


def test_which_fields_are_lost_and_which_are_the_operators_memory() -> None:
    assert lost("status.optimization.artifactRef", {"status.optimization"})
    assert lost("status.rollout.window", {"status.rollout"}) and not lost("status.rollout", {"status.rollout.window"})
    assert not lost("status.servingArtifactX", {"status.servingArtifact"})
    assert rollout_lost({"status.rollout.window", "status.rollout.ignoredOverrides", "status.url"}) == [
        "status.rollout.window"
    ]
    assert read_back("status.servingArtifact") and read_back("status.optimization")
    assert read_back("status.optimization.artifactRef") and read_back("status.rollout.criteria")
    assert not read_back("status.optimization.compressionRatio") and not read_back("status.updatedReplicas")
    assert not read_back("status.rollout.ignoredOverrides")


def test_a_blocked_revision_keeps_the_pulled_artifact_serving_when_servingArtifact_is_pruned() -> None:
    """Seen on the real API server before: status.servingArtifact pruned, a blocked next revision re-rendered the
    previous revision mounting the artifact claim (and said MultiNode False)."""
    md = make_md(build=False, status={"servingRevision": OLD})  # servingArtifact pruned from what was written
    before = live(md, ServingTarget(OLD, None, PULLED))
    c = ctx(md, observed(md, ServingTarget(OLD, None, PULLED), ARTIFACT), config=ARTIFACT_CONFIG)
    blocked = build(c, BLOCKED, Known(), None)
    assert target(c, blocked) == ServingTarget(OLD, None, PULLED)
    out = deploy(c, target(c, blocked))
    assert template(out) == before["spec"]["template"]  # the same pods: nothing rolls
    assert ConditionType.MULTI_NODE not in conditions(out.effects)
    assert conditions(out.effects)[ConditionType.DEPLOYED][1] == Reason.PREVIOUS_REVISION_SERVING
    assert (out.serving_revision, out.serving_artifact) == (OLD, ARTIFACT_REF)  # written back once the CRD keeps it
    # the same once the CRD is upgraded (no field known pruned), before status has it again: status says nothing of
    # an image or artifact, the Deployment of that revision says what it pulls
    upgraded = ctx(md, observed(md, ServingTarget(OLD, None, PULLED), set()), config=ARTIFACT_CONFIG)
    assert target(upgraded, blocked) == ServingTarget(OLD, None, PULLED)


def test_what_serves_is_held_when_the_live_deployment_cannot_tell_it() -> None:
    md = make_md(build=False, status={"servingRevision": OLD})
    # the serving Deployment runs another revision (a rollout in progress): which artifact OLD pulls is unknown
    other = ctx(md, observed(md, ServingTarget("rnew", None, PULLED), ARTIFACT), config=ARTIFACT_CONFIG)
    assert what_serves(other).served is None and "status.servingArtifact" in (what_serves(other).unknown or "")
    held = deploy(other, target(other, build(other, BLOCKED, Known(), None)))
    assert held.effects.apply == () and held.effects.delete == ()
    assert held.effects.failure is not None and held.effects.failure.reason == Reason.CRD_OLDER_THAN_OPERATOR
    status, reason, message = conditions(held.effects)[ConditionType.DEPLOYED]
    assert (status, reason) == (False, Reason.CRD_OLDER_THAN_OPERATOR)
    assert "kubectl apply --server-side -f crds/" in message and "serving Deployment runs revision rnew" in message
    assert held.serving_revision == OLD and held.url is not None
    # an artifact this ModelDeployment may not serve (another repository) is never adopted
    foreign = ServedArtifact("oci://evil.example/x@sha256:" + "0b" * 32)
    bad = ctx(md, observed(md, ServingTarget(OLD, None, foreign), ARTIFACT), config=ARTIFACT_CONFIG)
    assert what_serves(bad).served is None and what_serves(bad).unknown is not None
    # nothing pruned and a Deployment mounting the claim: status said it, the claim it is
    claim = ctx(md, observed(md, ServingTarget(OLD, None), set()), config=ARTIFACT_CONFIG)
    assert target(claim, build(claim, BLOCKED, Known(), None)) == ServingTarget(OLD, None)
    # status that has the artifact is read as before
    kept = make_md(build=False, status={"servingRevision": OLD, "servingArtifact": ARTIFACT_REF})
    assert target(ctx(kept), build(ctx(kept), BLOCKED, Known(), None)) == ServingTarget(OLD, None, ServedArtifact(
        ARTIFACT_REF))  # fmt: skip


def test_the_pushed_artifact_is_recalled_from_the_job_or_a_deployment_running_it_and_held_otherwise() -> None:
    """status.optimization.artifactRef pruned: on main, the reconcile after the one that read the Job rendered the
    revision mounting the claim instead of pulling what it pushed."""
    md = make_md(build=False)
    rev = revision(md.spec)
    recorded = result().wire()
    recorded.update(revision=rev)  # what status kept of the optimization: no artifactRef
    md = make_md(build=False, status={"optimization": recorded})
    pruned = frozenset({"status.optimization.artifactRef"})
    done = job("optimizer", rev, JobState.SUCCEEDED, msg=summary(artifact_ref=ARTIFACT_REF))
    for obs in (
        Observed(jobs=[done], pruned_status=pruned),
        Observed(deployment=deployment_observation(live(md, ServingTarget(rev, None, PULLED))), pruned_status=pruned),
        Observed(jobs=[done]),  # the CRD upgraded since: status still lacks it
    ):
        c = ctx(md, obs, config=ARTIFACT_CONFIG)
        opt = optimize(c, Known(optimization=md.status.optimization))
        assert opt.status.artifact_ref == ARTIFACT_REF  # written back once the CRD keeps it
        assert target(c, build(c, PASSED, Known(), opt.result)) == ServingTarget(rev, None, PULLED)
    # the Job is gone and nothing runs the revision: held, not served from the claim
    gone = ctx(md, Observed(pruned_status=pruned), config=ARTIFACT_CONFIG)
    opt = optimize(gone, Known(optimization=md.status.optimization))
    held = build(gone, PASSED, Known(), opt.result)
    assert not held.built and held.effects.failure is not None
    assert conditions(held.effects)[ConditionType.IMAGE_BUILT][:2] == (False, Reason.CRD_OLDER_THAN_OPERATOR)
    # a Job that reports an artifact elsewhere is not believed
    forged = job("optimizer", rev, JobState.SUCCEEDED, msg=summary(artifact_ref="oci://evil.example/x@" + CONTENT))
    c = ctx(md, Observed(jobs=[forged], pruned_status=pruned), config=ARTIFACT_CONFIG)
    assert not build(c, PASSED, Known(), optimize(c, Known(optimization=md.status.optimization)).result).built
    # nothing pruned, nothing pushed (no artifact repository): the claim, as before
    claim = ctx(md, Observed(), config=CONFIG)
    assert target(claim, build(claim, PASSED, Known(), opt.result)) == ServingTarget(rev, None)


def test_a_canary_rollout_is_held_while_its_record_is_pruned() -> None:
    """Without status.rollout the rollout restarts at every look (Shadow for ever): the candidate is not started,
    or is scaled to zero when it was, and the stable revision keeps serving all the traffic."""
    md = make_md(build=False, serving={"replicas": 2, "rollout": CANARY}, status={"servingRevision": OLD})
    rev = revision(md.spec)
    jobs = [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]
    stable = deployment_observation(live(md, ServingTarget(OLD, None), CONFIG))
    pruned = frozenset({"status.rollout"})
    p = plan(md, Observed(jobs=jobs, deployment=stable, pruned_status=pruned), CONFIG, NOW)
    assert [o["metadata"]["name"] for o in p.apply if o["kind"] == "Deployment"] == ["digits"]
    assert by_name(p, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == OLD
    verified = next(c for c in p.status["conditions"] if c["type"] == "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "CRDOlderThanOperator")
    assert "status.rollout" in verified["message"] and "kubectl apply --server-side -f crds/" in verified["message"]
    assert next(c for c in p.status["conditions"] if c["type"] == "Stalled")["status"] == "True"
    assert p.status["servingRevision"] == OLD and "rollout" not in p.status
    # a candidate started before the operator knew (a namespaced operator learns from its first write): to zero
    started = Observed(jobs=jobs, deployment=stable, canary=canary_obs(rev, 1, False), pruned_status=pruned)
    p = plan(md, started, CONFIG, NOW)
    assert by_name(p, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    # a part of the record that changes nothing (the overrides already warned about) holds nothing
    quiet = plan(md, Observed(jobs=jobs, deployment=stable,
                              pruned_status=frozenset({"status.rollout.ignoredOverrides"})), CONFIG, NOW)  # fmt: skip
    assert quiet.status["rollout"]["phase"] == "Shadow"
    # the first revision has nothing to be verified against: served at once, record or not
    first = make_md(build=False, serving={"replicas": 2, "rollout": CANARY})
    p = plan(first, Observed(jobs=jobs, pruned_status=pruned), CONFIG, NOW)
    assert all(c["reason"] != "CRDOlderThanOperator" for c in p.status["conditions"])
    assert by_name(p, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev


def test_a_blocked_revision_keeps_the_digest_the_serving_pods_check() -> None:
    """Status keeps the served artifact's reference, not its content digest: the previous revision re-rendered
    from status alone lost --digest, and every serving pod was replaced by an identical one."""
    md = make_md(build=False, status={"servingRevision": OLD, "servingArtifact": ARTIFACT_REF})
    before = live(md, ServingTarget(OLD, None, PULLED))
    c = ctx(md, Observed(deployment=deployment_observation(before)), config=ARTIFACT_CONFIG)
    out = deploy(c, target(c, build(c, BLOCKED, Known(), None)))
    assert template(out) == before["spec"]["template"]
    # another artifact in the Deployment than status names: status is the operator's word, the digest is not taken
    other = live(md, ServingTarget(OLD, None, ServedArtifact(ARTIFACT_REF.replace("0a", "0c"), CONTENT)))
    c = ctx(md, Observed(deployment=deployment_observation(other)), config=ARTIFACT_CONFIG)
    assert target(c, build(c, BLOCKED, Known(), None)) == ServingTarget(OLD, None, ServedArtifact(ARTIFACT_REF))


def test_the_stock_runtime_of_an_older_operator_does_not_hold_the_artifact_it_pulls() -> None:
    """An operator newer than its CRD is usually an upgraded one: its stock runtime image is newer than the one
    the serving Deployment runs. The artifact is recovered; the runtime is this operator's, as at any upgrade."""
    md = make_md(build=False, status={"servingRevision": OLD})
    old_runtime = live(md, ServingTarget(OLD, None, PULLED))
    pod = old_runtime["spec"]["template"]["spec"]
    for container in (*pod["containers"], *pod["initContainers"]):
        container["image"] = "modelship/serving:0.0.9"
    c = ctx(md, Observed(deployment=deployment_observation(old_runtime), pruned_status=frozenset(ARTIFACT)),
            config=ARTIFACT_CONFIG)  # fmt: skip
    assert target(c, build(c, BLOCKED, Known(), None)) == ServingTarget(OLD, None, PULLED)


def test_a_built_image_is_recovered_when_servingImage_is_pruned_and_only_from_its_repository() -> None:
    md = make_md(status={"servingRevision": OLD})  # build enabled: servingImage pruned from what was written
    pruned = frozenset({"status.servingImage"})
    c = ctx(md, Observed(deployment=deployment_observation(live(md, ServingTarget(OLD, IMAGE), CONFIG)),
                         pruned_status=pruned))  # fmt: skip
    assert target(c, build(c, BLOCKED, Known(), None)) == ServingTarget(OLD, IMAGE)
    elsewhere = "evil.example/digits@" + CONTENT
    c = ctx(md, Observed(deployment=deployment_observation(live(md, ServingTarget(OLD, elsewhere), CONFIG)),
                         pruned_status=pruned))  # fmt: skip
    assert what_serves(c).served is None and "status.servingImage" in (what_serves(c).unknown or "")


def test_status_lacking_the_artifact_of_a_pushing_modeldeployment_is_never_read_as_the_claim() -> None:
    """Status can lack servingArtifact / artifactRef with nothing known pruned (a namespaced operator restarted, or
    the CRD upgraded since they were pruned): a ModelDeployment that pushes artifacts recovers them or holds."""
    md = make_md(build=False, status={"servingRevision": OLD})
    mid_rollout = ctx(md, observed(md, ServingTarget("rnew", None, PULLED), set()), config=ARTIFACT_CONFIG)
    memory = what_serves(mid_rollout)
    assert memory.served is None and "status lacks status.servingArtifact" in (memory.unknown or "")
    held = deploy(mid_rollout, target(mid_rollout, build(mid_rollout, BLOCKED, Known(), None)))
    assert held.effects.apply == () and held.effects.failure is not None
    assert held.effects.failure.reason == Reason.CRD_OLDER_THAN_OPERATOR
    # the live Deployment of that revision says so: the claim (or the artifact it pulls) it is
    claim = ctx(md, observed(md, ServingTarget(OLD, None), set()), config=ARTIFACT_CONFIG)
    assert what_serves(claim).served is not None and what_serves(claim).served.artifact is None  # type: ignore[union-attr]
    # nothing pushed (no artifact repository): status says the claim, as before
    plain = ctx(md, Observed(deployment=deployment_observation(live(md, ServingTarget("rnew", None), CONFIG))))
    assert target(plain, build(plain, BLOCKED, Known(), None)) == ServingTarget(OLD, None)

    rev = revision(md.spec)
    recorded = result().wire()
    recorded.update(revision=rev)  # status has the optimization result, without artifactRef; nothing known pruned
    md = make_md(build=False, status={"optimization": recorded})
    gone = ctx(md, Observed(), config=ARTIFACT_CONFIG)
    assert not build(gone, PASSED, Known(), optimize(gone, Known(optimization=md.status.optimization)).result).built
    # a succeeded Job of the revision that pushed nothing says: the claim
    unpushed = job("optimizer", rev, JobState.SUCCEEDED, msg=summary())
    c = ctx(md, Observed(jobs=[unpushed]), config=ARTIFACT_CONFIG)
    opt = optimize(c, Known(optimization=md.status.optimization))
    assert target(c, build(c, PASSED, Known(), opt.result)) == ServingTarget(rev, None)


def test_a_digest_taken_from_the_live_deployment_must_be_a_digest() -> None:
    md = make_md(build=False, status={"servingRevision": OLD, "servingArtifact": ARTIFACT_REF})
    forged = replace(deployment_observation(live(md, ServingTarget(OLD, None, PULLED))), artifact_digest="sha256:x;y")
    c = ctx(md, Observed(deployment=forged), config=ARTIFACT_CONFIG)
    assert target(c, build(c, BLOCKED, Known(), None)) == ServingTarget(OLD, None, ServedArtifact(ARTIFACT_REF))
    # recovered only with a well-formed digest (status lacks the artifact): else held
    lacking = make_md(build=False, status={"servingRevision": OLD})
    c = ctx(lacking, Observed(deployment=forged, pruned_status=frozenset(ARTIFACT)), config=ARTIFACT_CONFIG)
    assert what_serves(c).served is None and what_serves(c).unknown is not None


def test_a_tenant_edit_of_the_serving_deployment_is_not_adopted_when_nothing_is_pruned() -> None:
    """A current CRD, status naming no image (the stock runtime served the claim before a build was enabled): an
    image of spec.build.repository put into the serving Deployment by someone else is reverted, not adopted."""
    md = make_md(status={"servingRevision": OLD})
    edited = live(md, ServingTarget(OLD, IMAGE), CONFIG)
    c = ctx(md, Observed(deployment=deployment_observation(edited)))
    assert what_serves(c).served == Served(OLD, None, None)
    assert target(c, build(c, BLOCKED, Known(), None)) == ServingTarget(OLD, None)
    # with servingImage known pruned, the live Deployment is what tells it
    c = ctx(md, Observed(deployment=deployment_observation(edited), pruned_status=frozenset({SERVING_IMAGE})))
    assert what_serves(c).served == Served(OLD, IMAGE, None)


def test_every_field_of_the_rollout_record_is_classified_read_back_or_harmless() -> None:
    fields = {f"status.rollout.{info.alias or name}" for name, info in RolloutStatus.model_fields.items()}
    fields |= {f"status.rollout.criteria[].{info.alias or name}" for name, info in CriterionStatus.model_fields.items()}
    criteria = {f for f in fields if f.startswith("status.rollout.criteria[].")}
    unclassified = fields - ROLLOUT_READ_BACK - HARMLESS - criteria
    assert not unclassified, f"add to memory.ROLLOUT_READ_BACK or memory.HARMLESS: {sorted(unclassified)}"
    assert not ROLLOUT_READ_BACK & HARMLESS and fields >= (ROLLOUT_READ_BACK | HARMLESS)  # no stale names
    assert "status.rollout.criteria" in ROLLOUT_READ_BACK  # its items are read back, but for HARMLESS ones
    assert all(read_back(f) for f in ROLLOUT_READ_BACK) and not any(read_back(f) for f in HARMLESS)
    assert rollout_lost(ROLLOUT_READ_BACK | HARMLESS) == sorted(ROLLOUT_READ_BACK)


def test_a_held_canary_of_a_namespaced_operator_goes_on_once_the_crd_keeps_the_record() -> None:
    """A namespaced operator cannot read the CRD; its held status sends no status.rollout. Once the CRD is
    applied, the dry-run probe at the retry finds the record kept, and the next reconcile starts the rollout
    (before: Stalled CRDOlderThanOperator until a restart)."""
    md = make_md(build=False, serving={"replicas": 2, "rollout": CANARY}, status={"servingRevision": OLD})
    jobs = [job("optimizer", revision(md.spec), JobState.SUCCEEDED, msg=summary())]
    stable = deployment_observation(live(md, ServingTarget(OLD, None), CONFIG))
    kube = ForbiddenCrdKube({"metadata": {"namespace": "ml", "name": "digits", "uid": "u"},
                             "status": {"servingRevision": OLD}})  # fmt: skip
    now = [0.0]
    writer = Reconciler(kube, Store(), OperatorConfig()).status_writer  # type: ignore[arg-type]
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    writer.check_served_crd()  # forbidden: namespaced

    def reconcile() -> str:
        out = plan(md, Observed(jobs=jobs, deployment=stable, pruned_status=writer.known_pruned()), CONFIG, NOW)
        writer.write(kube.body, out.status)
        return str(next(c for c in out.status["conditions"] if c["type"] == "Verified")["reason"])

    reconcile()  # the rollout starts, its record is pruned: known from this write
    assert writer.known_pruned() == {"status.rollout"}
    for _ in range(3):
        now[0] += 300
        assert reconcile() == "CRDOlderThanOperator"  # held; probed at 600 s: still pruned
    assert kube.dry_runs == 1
    kube.prunes = False  # the admin applies the CRD
    now[0] += 600
    assert reconcile() == "CRDOlderThanOperator" and writer.known_pruned() == frozenset()  # the probe found it kept
    assert reconcile() != "CRDOlderThanOperator" and "rollout" in kube.body["status"]  # goes on, recorded


class ForbiddenCrdKube:
    """A namespaced operator's API server: the CRD may not be read; status.rollout pruned while ``prunes``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.prunes = True
        self.dry_runs = 0

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        merged = apply_merge_patch(self.body.get("status") or {}, status)
        if self.prunes:
            merged.pop("rollout", None)
        self.dry_runs += dry_run
        if dry_run:
            return {**self.body, "status": merged}
        self.body = {**self.body, "status": merged}
        return self.body

    def custom_resource_definition(self, name: str) -> dict[str, Any]:
        raise ApiException(status=403, reason="Forbidden")

    def event(self, *args: Any) -> None:
        pass
