"""What this operator remembers in status of what serves, and what it does when an installed CRD older than the
operator prunes that memory.

Status is where the operator remembers what serves: the API server drops a field the installed CRD does not
declare (``controller.pruning``), and a decision that read the dropped field would act on a false memory (seen:
with ``status.servingArtifact`` pruned, a blocked next revision re-rendered the serving Deployment to mount the
artifact claim instead of pulling the served artifact). What serves must never change because a field was
pruned, so every status field a decision reads back is one of:

===================================  =====================================================================
``status.servingImage``,             **recovered** from the live serving Deployment (the operator's own), when
``status.servingArtifact``           its pod template runs ``status.servingRevision``: the server container's
                                     image (a built one, or the stock runtime told ``--model``) and the
                                     artifact its init container pulls, with the digest it checks. Only what
                                     this ModelDeployment may serve is taken (its image repository, its
                                     artifact repository, a well-formed digest); otherwise **held**. Read
                                     only while a field is known pruned or the ModelDeployment pushes
                                     artifacts (then a missing field is never "the claim" on a guess)
``status.optimization.artifactRef``  **recovered** from the revision's succeeded optimization Job (its summary,
                                     checked like any summary, while the Job is kept: ``jobTtlSeconds``) or a
                                     serving Deployment running the revision; otherwise **held**
``status.servingRevision``           **held**: which revision serves is what the serving Deployment's template
                                     cannot tell during a rollout
``status.rollout`` (the Canary       **held** while a candidate would be verified: its phase, step, clocks and
record)                              window are nowhere else; a rollout restarted at every look never ends
===================================  =====================================================================

**Held** means: Stalled, reason ``CRDOlderThanOperator`` naming the fields and the fix, and no serving object
applied or deleted by the stage that needs the memory (the candidate is not started; the serving Deployment is
left as it is). A change that does not need the memory still goes on: a revision that is built is deployed
(RollingUpdate) from what its build gave.

Status keeps the served artifact's reference, not the content digest its pods check: that digest is taken from
the serving Deployment when it pulls the same reference (re-rendered without it, every serving pod was replaced
by an identical one when a next revision was blocked, whatever the CRD).

Nine read-back fields are harmless when pruned: ``status.rollout.ignoredOverrides`` (which override annotations a
Warning Event has named: named again), ``status.rollout.criteria[].required`` (a figure in a message),
``status.rollout.servedWeight`` (only reported), ``status.rollout.phaseTemplates`` (a lagging Deployment status
is then trusted on the generation alone, as before the field), ``status.rollout.candidateFailingSince`` (a
candidate's crash loop is then judged only by its Deployment's progress deadline),
``status.rollout.candidateFailingTemplate`` (a crash loop's clock is then kept across a new ReplicaSet),
``status.rollout.rolledBackRestartedAt`` (a restart of the candidate's Deployment then does not try a rollback for
its pods again; a spec change does) and ``status.rollout.rolledBackGeneration`` and
``status.rollout.rolledBackTemplate`` (a rollback for the candidate's pods then stays final for its revision): see
``HARMLESS``. The
other fields read back (``optimization`` and ``image`` results and attempts, ``source``, ``lastFailure``,
``conditions``) are in every CRD this API version ever had, so no released CRD prunes them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ...api.build_result import DIGEST_PATTERN, in_repository
from ...api.report import Summary
from ...api.status import OptimizationStatus
from ...resources.artifact import artifact_repository, artifact_target, pushed_here, servable
from ...resources.serving import ServedArtifact
from ..observe import DeploymentObservation, JobState
from .context import Context

SERVING_REVISION = "status.servingRevision"
SERVING_IMAGE = "status.servingImage"
SERVING_ARTIFACT = "status.servingArtifact"
ARTIFACT_REF = "status.optimization.artifactRef"
ROLLOUT = "status.rollout"
PHASE_TEMPLATES = "status.rollout.phaseTemplates"
ROLLED_BACK_TEMPLATE = "status.rollout.rolledBackTemplate"
HARMLESS = frozenset({"status.rollout.ignoredOverrides", "status.rollout.criteria[].required",
                      "status.rollout.servedWeight", PHASE_TEMPLATES, "status.rollout.candidateFailingSince",
                      "status.rollout.candidateFailingTemplate", "status.rollout.rolledBackGeneration",
                      ROLLED_BACK_TEMPLATE, "status.rollout.rolledBackRestartedAt"})  # fmt: skip
"""Read back (or only reported), but pruning them changes nothing that serves. phaseTemplates pruned: a phase
trusts a Deployment status its controller has not caught up with on the ModelDeployment's generation alone, as
before the field (``phase_templates.lag_trusted``; a ``kubectl rollout restart`` mid-phase may then be judged on
the status of the template before it for the controller's lag); without that fallback the status would never be
trusted, the phase's clock would restart at nearly every scale of an HPA, and the phase would never end.
candidateFailingSince pruned: a candidate's crash loop is not judged by its own clock (it restarts at each look),
only by its Deployment's ProgressDeadlineExceeded; the stable revision serves meanwhile, as before the field.
candidateFailingTemplate pruned: a crash loop's clock is kept across a new ReplicaSet of the candidate's (a
``kubectl rollout restart``), as before the field.
rolledBackRestartedAt pruned: a rollback's record is not compared on the candidate Deployment's restart (as a
record written before the field): a ``kubectl rollout restart`` does not try it again, a spec change does.
rolledBackTemplate pruned: a rollback for the candidate's pods stays final for its revision, as an analysis
rollback does (a spec change does not try it again), as before the field; its message says so and names the field
(``canary_trouble.recorded``). rolledBackGeneration pruned: a record without rolledBackTemplate cannot be filled in
from the spec once the CRD keeps it (which template was judged cannot be told): it stays final, and says so."""
ROLLOUT_READ_BACK = frozenset(
    f"status.rollout.{field}"
    for field in (
        "candidate", "candidateImage", "candidateArtifact", "stable", "phase", "step", "weight", "route",
        "mirrorPercent", "startedAt", "phaseStartedAt", "criteria", "decision", "message", "rollbackCause", "source",
        "window",
    )
)  # fmt: skip
"""The fields of the Canary record a rollout's decisions read back: one of them pruned holds the rollout
(``rollout_lost``). Every field of ``RolloutStatus`` is here or in ``HARMLESS`` (a unit test checks): a field added
to the record must be classified."""
FIX = "apply this release's CRD (kubectl apply --server-side -f crds/)"


READ_BACK = (SERVING_REVISION, SERVING_IMAGE, SERVING_ARTIFACT, ARTIFACT_REF, ROLLOUT)
"""The status fields (and objects holding them) whose loss would change what serves but for this module."""


def read_back(path: str) -> bool:
    """``path`` is (or holds, or is part of) a status field this operator reads back to know what serves."""
    if path in HARMLESS:
        return False
    return any(lost(field, [path]) or lost(path, [field]) for field in READ_BACK)


def lost(path: str, pruned: Iterable[str]) -> bool:
    """``path`` (``status.optimization.artifactRef``), or an object holding it, is pruned by the served CRD."""
    return any(path == p or path.startswith((f"{p}.", f"{p}[]")) for p in pruned)


def rollout_lost(pruned: Iterable[str]) -> list[str]:
    """The parts of ``status.rollout`` the Canary decisions read back that the served CRD prunes."""
    return sorted(p for p in pruned if (p == ROLLOUT or p.startswith(f"{ROLLOUT}.")) and p not in HARMLESS)


@dataclass(frozen=True)
class Served:
    """The revision the serving Deployment runs, with its image (None: the stock runtime) and, without an image,
    the artifact its pods pull (None: they mount the artifact claim)."""

    revision: str
    image: str | None
    artifact: ServedArtifact | None


@dataclass(frozen=True)
class Memory:
    served: Served | None
    """What serves (None: nothing yet, or ``unknown``)."""
    unknown: str | None = None
    """Why what serves cannot be told (a pruned field the live objects do not tell either): hold."""


def what_serves(ctx: Context) -> Memory:
    """What serves, from status; from the live serving Deployment where status says nothing of the image or
    artifact of ``status.servingRevision`` and a read-back field is known pruned or the ModelDeployment pushes
    artifacts (the served CRD prunes them now, or did when status was last written: an operator restarted, or a CRD
    applied since, finds them missing too). Otherwise the live Deployment is not read: status says what serves,
    and a tenant's edit of the Deployment is reverted, never adopted."""
    prev, pruned = ctx.prev, ctx.observed.pruned_status
    if lost(SERVING_REVISION, pruned):
        return Memory(None, _unknown([SERVING_REVISION], "which revision serves"))
    if not prev.serving_revision:
        return Memory(None)
    live = ctx.observed.deployment
    if prev.serving_image or prev.serving_artifact:
        artifact = ServedArtifact(prev.serving_artifact) if prev.serving_artifact and not prev.serving_image else None
        # status keeps the reference, the pods also check the content digest: re-rendered without it, every
        # serving pod would be replaced by an identical one (a blocked next revision did that)
        same = artifact is not None and live is not None and live.revision == prev.serving_revision
        if same and live is not None and artifact is not None and live.artifact == artifact.reference:
            artifact = ServedArtifact(artifact.reference, _digest(live.artifact_digest) or artifact.digest)
        return Memory(Served(prev.serving_revision, prev.serving_image, artifact))
    gone = [f for f in (SERVING_IMAGE, SERVING_ARTIFACT) if lost(f, pruned)]
    pushes = artifact_repository(ctx.md, ctx.config) is not None
    if not gone and not pushes:  # status says it: the stock runtime serves the artifact from the claim
        return Memory(Served(prev.serving_revision, None, None))
    # status lacks what it may have lost (pruned now or when it was written): only a live object tells it, also
    # that the claim serves; never a guess
    served = _live(ctx, live) if live is not None and live.revision == prev.serving_revision else None
    if served is not None:
        return Memory(served)
    runs = "does not exist" if live is None else f"runs revision {live.revision}"
    if live is not None and live.revision == prev.serving_revision:
        runs = "runs an image or artifact this ModelDeployment may not serve"
    what = f"what revision {prev.serving_revision} serves (the serving Deployment {runs})"
    return Memory(None, _unknown(gone or [SERVING_ARTIFACT], what, known=bool(gone)))


def _digest(digest: str | None) -> str | None:
    """A content digest read from a live Deployment (tenant-editable): only a well-formed one."""
    return digest if digest is not None and re.fullmatch(DIGEST_PATTERN, digest) else None


def _live(ctx: Context, live: DeploymentObservation) -> Served | None:
    """What the live serving Deployment runs, if it is what this ModelDeployment may serve."""
    assert live.revision is not None
    if not live.stock_runtime:  # a built image, carrying its model
        repo = ctx.md.spec.build.repository or ""
        ok = live.image is not None and live.artifact is None and in_repository(live.image, repo)
        return Served(live.revision, live.image, None) if ok else None
    # the stock runtime: its image is this operator's (or the spec's) and is rendered afresh, as after an upgrade
    if live.artifact is None:
        return Served(live.revision, None, None)
    if not servable(ctx.md, ctx.config, live.artifact):
        return None
    if live.artifact_digest is not None and _digest(live.artifact_digest) is None:
        return None  # a malformed digest: not what this operator rendered
    return Served(live.revision, None, ServedArtifact(live.artifact, live.artifact_digest))


def pushed_artifact(ctx: Context, result: OptimizationStatus) -> tuple[ServedArtifact | None, str | None]:
    """(artifact, why unknown) of the spec's revision when its optimization ``result`` names no artifact though
    the operator asks for a push (``status.optimization.artifactRef`` pruned by the served CRD now or when status
    was written): the revision's succeeded optimization Job says what it pushed (or that it pushed nothing: the
    claim); so does a Deployment already running the revision. Unknown (hold) otherwise, whether or not the field
    is known pruned: never the claim on a guess. (None, None) when nothing is pushed: the pods mount the claim."""
    if result.artifact_ref or artifact_target(ctx.md, ctx.config, ctx.revision) is None:
        return None, None
    for job in reversed(ctx.observed.jobs_for("optimizer", ctx.revision)):
        if job.state != JobState.SUCCEEDED or not job.termination_message:
            continue
        try:
            summary = Summary.from_line(job.termination_message)
        except ValueError:
            continue
        ref = summary.artifact_ref
        if summary.ok and ref is None:
            return None, None  # the Job pushed nothing: its artifact is on the claim
        if summary.ok and ref is not None and pushed_here(ctx.md, ctx.config, ref):
            return ServedArtifact(ref, summary.artifact_digest), None
    for live in (ctx.observed.deployment, ctx.observed.canary):
        served = _live(ctx, live) if live is not None and live.revision == ctx.revision else None
        if served is not None:
            return served.artifact, None  # None: it mounts the claim
    why = f"the artifact revision {ctx.revision} pushed (its optimization Job is gone and nothing runs it)"
    return None, _unknown([ARTIFACT_REF], why, known=lost(ARTIFACT_REF, ctx.observed.pruned_status))


def recalled(ctx: Context, result: OptimizationStatus) -> OptimizationStatus:
    """``result`` with the artifact its revision pushed, when status lost it and the live objects tell it."""
    artifact, _ = pushed_artifact(ctx, result)
    if artifact is None:
        return result
    digest = result.artifact_digest or artifact.digest
    return result.model_copy(update={"artifact_ref": artifact.reference, "artifact_digest": digest})


def _unknown(fields: list[str], what: str, known: bool = True) -> str:
    """Why a serving change is held; ``known``: the fields are known pruned now (else status lacks them, as after
    an older CRD pruned them when status was written)."""
    drops = (
        f"the installed ModelDeployment CRD is older than this operator: the API server drops {', '.join(fields)} "
        "from status"
        if known
        else f"status lacks {', '.join(fields)} (an older CRD pruned it when status was written, or a restart "
        "forgot that it does)"
    )
    return (
        f"{drops}, where this operator remembers {what}, and the live objects do not tell it either. Serving "
        f"changes are held until then, what serves keeps serving: {FIX}"
    )


def rollout_unknown(fields: list[str]) -> str:
    """Why a Canary verification is held: the rollout record is pruned."""
    return (
        f"the installed ModelDeployment CRD is older than this operator: the API server drops {', '.join(fields)} "
        "from status, where this operator records a Canary rollout's phase, step and analysis: a rollout would "
        f"restart at every look and never end. The candidate is not started, what serves keeps serving: {FIX}"
    )
