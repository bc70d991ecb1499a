"""Optimize: the optimization Job (fetch and verify the model, optimize, evaluate, gate) for the revision, unless
its result is already known. Its result is the optimizer's summary line, recorded as status.optimization."""

from __future__ import annotations

from dataclasses import dataclass

from ...api.redact import redact
from ...api.report import FailureKind, Summary
from ...api.status import ConditionType, OptimizationStatus, Phase, Reason, SourceStatus, StageName
from ...resources.artifact import artifact_target, pushed_here
from ...resources.optimize_job import optimize_job
from ..observe import JobObservation
from .context import Context, Effects, Manifest, condition
from .jobs import JobFailure, JobStage, RefusedResult, classify_by_job, failure_text, run_job_stage
from .memory import recalled
from .resolve import Known

COMPONENT = "optimizer"
"""Component label of optimization Jobs (resources/optimize_job.py)."""


@dataclass(frozen=True)
class OptimizeOutcome:
    """Outcome of the optimize stage."""

    status: OptimizationStatus
    """status.optimization for this revision (results once known, else the Job and its attempts)."""
    result: OptimizationStatus | None
    """The optimization result for this revision, when known."""
    source: SourceStatus | None
    """The model as the optimization Job fetched it, when known."""
    effects: Effects


def read_summary(ctx: Context, job: JobObservation) -> Summary:
    summary = Summary.from_line(job.termination_message or "")
    if not summary.ok:
        raise ValueError(summary.error or "the optimizer reported failure")
    if summary.artifact_ref is not None and not pushed_here(ctx.md, ctx.config, summary.artifact_ref):
        target = artifact_target(ctx.md, ctx.config, ctx.revision)
        expected = f"{target.reference.rsplit(':', 1)[0]}@sha256:<64 hex>" if target else "no push at all"
        raise RefusedResult(
            Reason.ARTIFACT_OUTSIDE_REPOSITORY,
            f"the optimizer reported artifact {summary.artifact_ref[:300]!r}, but the operator asked for {expected}: "
            "it is never served",
        )
    return summary


def classify(job: JobObservation) -> JobFailure:
    """An optimizer that wrote ok=false explained itself: permanent unless it said Temporary."""
    try:
        summary = Summary.from_line(job.termination_message or "")
    except ValueError:
        return classify_by_job(job)
    if summary.ok:
        return classify_by_job(job)
    if summary.failure == FailureKind.TEMPORARY:
        return JobFailure(False, Reason.JOB_FAILED, failure_text(job))
    return JobFailure(True, Reason.OPTIMIZATION_FAILED, redact(summary.error or "the optimizer reported failure"))


def make_job(ctx: Context, attempt: int) -> Manifest:
    return optimize_job(ctx.md, ctx.revision, ctx.config, attempt)


OPTIMIZE_JOB: JobStage[Summary] = JobStage(
    StageName.OPTIMIZE, COMPONENT, ConditionType.OPTIMIZED, Phase.OPTIMIZING, "optimization Job",
    created=Reason.JOB_CREATED, running=Reason.JOB_RUNNING, invalid_result=Reason.INVALID_SUMMARY,
    make=make_job, read=read_summary, classify=classify,
)  # fmt: skip


def optimize(ctx: Context, known: Known) -> OptimizeOutcome:
    if known.optimization is not None:
        return _done(ctx, known.optimization, known.source)
    prev = ctx.prev.optimization
    recorded = (prev.attempts or 0) if prev is not None and prev.revision == ctx.revision else 0
    out = run_job_stage(ctx, OPTIMIZE_JOB, recorded)
    if out.result is not None:
        result = OptimizationStatus.from_summary(
            out.result,
            revision=ctx.revision,
            job=out.job,
            attempts=out.attempts,
            cached=False,
            completed_at=out.finished_at,
        )
        return _done(ctx, result, SourceStatus.from_summary(ctx.md.spec.model.uri, out.result))
    status = OptimizationStatus(revision=ctx.revision, job=out.job, attempts=out.attempts)
    return OptimizeOutcome(status, None, None, out.effects)


def _done(ctx: Context, result: OptimizationStatus, source: SourceStatus | None) -> OptimizeOutcome:
    result = recalled(ctx, result)  # the artifact it pushed, when status lost it (a CRD older than the operator)
    reason = Reason.OPTIMIZED if ctx.md.spec.optimization.enabled else Reason.CONVERTED
    effects = Effects(conditions=(condition(ConditionType.OPTIMIZED, True, reason, result.describe()),))
    return OptimizeOutcome(result, result, source, effects)
