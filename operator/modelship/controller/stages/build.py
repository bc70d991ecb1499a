"""Build: the build Job packages the optimized artifact with the serving runtime and pushes it; its result is
the pushed image by digest, recorded as status.image. Without a build the stock runtime serves the artifact."""

from __future__ import annotations

from dataclasses import dataclass

from ...api.build_result import BuildResult
from ...api.status import ConditionType, ImageStatus, Phase, Reason, StageName
from ...resources.build_job import build_job
from ...resources.optimize_job import artifact_dir
from ..observe import JobObservation
from .context import Context, Effects, Manifest, condition, pending
from .gate import GateVerdict
from .jobs import JobStage, classify_by_job, run_job_stage
from .resolve import Known

COMPONENT = "build"
"""Component label of build Jobs (resources/build_job.py)."""


def parse_build_result(text: str | None, repository: str, platforms: list[str]) -> BuildResult:
    """The builder's termination message (BuildKit's JSON line or Kaniko's bare digest); ValueError with a
    readable reason when it is neither."""
    return BuildResult.from_termination_message(text or "", repository, platforms)


def read_result(ctx: Context, job: JobObservation) -> BuildResult:
    build = ctx.md.spec.build
    result = parse_build_result(job.termination_message, build.repository or "", [p.value for p in build.platforms])
    if not result.ok or result.image is None:
        raise ValueError(result.error or "the build reported failure")
    return result


def make_job(ctx: Context, attempt: int) -> Manifest:
    return build_job(ctx.md, ctx.revision, artifact_dir(ctx.config, ctx.revision), ctx.config, attempt)


# the context step's FailJob rule marks bad input (a missing artifact) permanent: classify_by_job honours it
BUILD_JOB: JobStage[BuildResult] = JobStage(
    StageName.BUILD, COMPONENT, ConditionType.IMAGE_BUILT, Phase.BUILDING, "build Job",
    created=Reason.BUILD_JOB_CREATED, running=Reason.BUILD_JOB_RUNNING, invalid_result=Reason.INVALID_BUILD_RESULT,
    make=make_job, read=read_result, classify=classify_by_job,
)  # fmt: skip


@dataclass(frozen=True)
class BuildOutcome:
    built: bool
    """The revision can be served: its image is pushed, or it needs none."""
    image: str | None
    """The image to serve (repository@sha256:...); None for the stock runtime."""
    status: ImageStatus | None
    """status.image (None: left out)."""
    effects: Effects


def build(ctx: Context, verdict: GateVerdict, known: Known) -> BuildOutcome:
    if not verdict.deployable:
        return BuildOutcome(False, None, None, pending(ConditionType.IMAGE_BUILT, "waiting for the gate"))
    if not ctx.md.spec.build.enabled:
        message = "served from the artifact volume by the stock runtime"
        return BuildOutcome(True, None, None, _built(Reason.BUILD_DISABLED, message))
    if known.image is not None and known.image.reference:
        ref = known.image.reference
        if known.image_from_cache:
            return BuildOutcome(True, ref, known.image, _built(Reason.CACHED, f"image {ref} (built before)"))
        return BuildOutcome(True, ref, known.image, _built(Reason.PUSHED, f"image {ref}"))
    prev = ctx.prev.image
    recorded = (prev.attempts or 0) if prev is not None and prev.revision == ctx.revision else 0
    out = run_job_stage(ctx, BUILD_JOB, recorded)
    if out.result is None or out.result.image is None:
        return BuildOutcome(
            False, None, ImageStatus(revision=ctx.revision, job=out.job, attempts=out.attempts), out.effects
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


def _built(reason: Reason, message: str) -> Effects:
    return Effects(conditions=(condition(ConditionType.IMAGE_BUILT, True, reason, message),))
