"""Build: the build Job packages the optimized artifact with the serving runtime and pushes it; its result is
the pushed image by digest, recorded as status.image. Without a build the stock runtime serves the artifact: the
one the optimization Job pushed as an OCI artifact (each serving pod pulls its own copy by digest), else the
artifact claim (one node). Either way only what the operator asked for is served: an image
``<spec.build.repository>@sha256:<64 hex>``, an artifact ``oci://<the repository the operator pushed it to>@sha256:<64
hex>`` (``resources.artifact.servable``); anything else is Stalled (ImageOutsideRepository,
ArtifactOutsideRepository)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ...api.build_result import DIGEST_PATTERN, BuildResult, in_repository
from ...api.status import ConditionType, ImageStatus, OptimizationStatus, Phase, Reason, StageName
from ...resources.artifact import servable
from ...resources.build_job import UPLOAD_PORT, build_job
from ...resources.export_job import export_job
from ...resources.serving import ServedArtifact
from ..observe import JobObservation
from .context import Context, Effects, Failure, Manifest, condition, pending
from .gate import GateVerdict
from .jobs import JobStage, RefusedResult, classify_by_job, run_job_stage
from .memory import pushed_artifact
from .resolve import Known

COMPONENT = "build"
"""Component label of build Jobs (resources/build_job.py)."""
EXPORT_COMPONENT = "export"
"""Component label of export Jobs (resources/export_job.py)."""


def parse_build_result(text: str | None, repository: str, platforms: list[str]) -> BuildResult:
    """The builder's termination message (BuildKit's JSON line or Kaniko's bare digest); ValueError with a
    readable reason when it is neither."""
    return BuildResult.from_termination_message(text or "", repository, platforms)


_DIGEST = DIGEST_PATTERN.strip("^$")


def read_result(ctx: Context, job: JobObservation) -> BuildResult:
    build = ctx.md.spec.build
    repository = build.repository or ""
    result = parse_build_result(job.termination_message, repository, [p.value for p in build.platforms])
    if not result.ok or result.image is None:
        raise ValueError(result.error or "the build reported failure")
    if not in_repository(result.image, repository):
        raise RefusedResult(
            Reason.IMAGE_OUTSIDE_REPOSITORY,
            f"the build reported image {result.image[:300]!r}, which is not {repository}@sha256:<64 hex> "
            "(spec.build.repository by digest): it is never deployed",
        )
    return result


def _unbuildable(ctx: Context, attempt: int) -> Manifest:
    raise ValueError("no artifact digest recorded for this revision: nothing to build")


# the receive and context steps' FailJob rules mark bad input (not the recorded artifact, a missing one) permanent:
# classify_by_job honours them
BUILD_JOB: JobStage[BuildResult] = JobStage(
    StageName.BUILD, COMPONENT, ConditionType.IMAGE_BUILT, Phase.BUILDING, "build Job",
    created=Reason.BUILD_JOB_CREATED, running=Reason.BUILD_JOB_RUNNING, invalid_result=Reason.INVALID_BUILD_RESULT,
    make=_unbuildable, read=read_result, classify=classify_by_job,
)  # fmt: skip
"""The build stage; ``make`` is bound to the revision's recorded artifact digest in ``build``."""


def exports(ctx: Context) -> tuple[Manifest, ...]:
    """An export Job for each pod of the running build Job that waits for its artifact and has none yet: the
    artifact claim is in the tenant's namespace, the build pod in the build namespace (resources/export_job.py)."""
    jobs = ctx.observed.jobs_for(COMPONENT, ctx.revision)
    if not jobs or not jobs[-1].uid:
        return ()
    job = jobs[-1]
    have = {j.build_pod for j in ctx.observed.jobs_for(EXPORT_COMPONENT, ctx.revision)}  # by pod, not by name:
    md, rev, cfg = ctx.md, ctx.revision, ctx.config  # one an earlier operator named otherwise counts too
    return tuple(
        export_job(md, rev, cfg, build_pod=pod, address=ip, token=job.uid, port=UPLOAD_PORT, attempt=job.attempt)
        for pod, ip in job.receivers
        if pod not in have
    )


@dataclass(frozen=True)
class BuildOutcome:
    built: bool
    """The revision can be served: its image is pushed, or it needs none."""
    image: str | None
    """The image to serve (repository@sha256:...); None for the stock runtime."""
    status: ImageStatus | None
    """status.image (None: left out)."""
    effects: Effects
    artifact: ServedArtifact | None = None
    """Build disabled: the OCI artifact the optimization Job pushed, pulled by each serving pod (None: the stock
    runtime serves from the artifact claim)."""


def build(ctx: Context, verdict: GateVerdict, known: Known, shipped: OptimizationStatus | None) -> BuildOutcome:
    """``shipped``: the optimization result the gate let through (what a build-less revision serves; its artifact
    digest, recorded from the optimization Job's summary, is the one a build accepts)."""
    if not verdict.deployable:
        return BuildOutcome(False, None, None, pending(ConditionType.IMAGE_BUILT, "waiting for the gate"))
    if not ctx.md.spec.build.enabled:
        return _served_without_build(ctx, shipped)
    if known.image is not None and known.image.reference and in_repository(known.image.reference, repository(ctx)):
        ref = known.image.reference
        if known.image_from_cache:
            return BuildOutcome(True, ref, known.image, _built(Reason.CACHED, f"image {ref} (built before)"))
        return BuildOutcome(True, ref, known.image, _built(Reason.PUSHED, f"image {ref}"))
    prev = ctx.prev.image
    recorded = (prev.attempts or 0) if prev is not None and prev.revision == ctx.revision else 0
    artifact_digest = shipped.artifact_digest if shipped is not None else None
    if artifact_digest:
        stage = replace(
            BUILD_JOB, make=lambda c, attempt: build_job(c.md, c.revision, artifact_digest, c.config, attempt)
        )
    else:
        stage = BUILD_JOB
    out = run_job_stage(ctx, stage, recorded)
    if out.result is None or out.result.image is None:
        effects = replace(out.effects, create=(*out.effects.create, *exports(ctx)))
        return BuildOutcome(
            False, None, ImageStatus(revision=ctx.revision, job=out.job, attempts=out.attempts), effects
        )
    image = out.result.image
    status = ImageStatus(
        revision=ctx.revision,
        job=out.job,
        attempts=out.attempts,
        reference=image,
        digest=out.result.digest or image.rsplit("@", 1)[-1],
        platforms=list(out.result.platforms),
        completed_at=out.finished_at,
    )
    return BuildOutcome(True, image, status, _built(Reason.PUSHED, f"image {image}"))


def _served_without_build(ctx: Context, shipped: OptimizationStatus | None) -> BuildOutcome:
    unknown = pushed_artifact(ctx, shipped)[1] if shipped is not None else None
    if unknown is not None:  # status.optimization.artifactRef pruned by an older CRD, and nothing tells it
        failure = Failure(StageName.BUILD, Reason.CRD_OLDER_THAN_OPERATOR, unknown)
        cond = condition(ConditionType.IMAGE_BUILT, False, Reason.CRD_OLDER_THAN_OPERATOR, unknown)
        return BuildOutcome(False, None, None, Effects(conditions=(cond,), failure=failure))
    if shipped is not None and shipped.artifact_ref:
        digest = shipped.artifact_digest
        if not servable(ctx.md, ctx.config, shipped.artifact_ref) or (digest and not re.fullmatch(_DIGEST, digest)):
            message = (
                f"revision {ctx.revision} names artifact {shipped.artifact_ref[:300]!r} (content digest "
                f"{(digest or '-')[:80]!r}), not one the operator pushed for namespace "
                f"{ctx.md.metadata.namespace}: it is never served"
            )
            failure = Failure(StageName.BUILD, Reason.ARTIFACT_OUTSIDE_REPOSITORY, message)
            cond = condition(ConditionType.IMAGE_BUILT, False, Reason.ARTIFACT_OUTSIDE_REPOSITORY, message)
            return BuildOutcome(False, None, None, Effects(conditions=(cond,), failure=failure))
        artifact = ServedArtifact(shipped.artifact_ref, digest)
        message = f"the stock runtime serves the artifact {artifact.reference} (no build; each pod pulls it)"
        return BuildOutcome(True, None, None, _built(Reason.BUILD_DISABLED, message), artifact)
    message = "the stock runtime serves the artifact from the artifact volume (no build)"
    return BuildOutcome(True, None, None, _built(Reason.BUILD_DISABLED, message))


def repository(ctx: Context) -> str:
    return ctx.md.spec.build.repository or ""


def _built(reason: Reason, message: str) -> Effects:
    return Effects(conditions=(condition(ConditionType.IMAGE_BUILT, True, reason, message),))
