"""``strategy: Auto``: try the candidate chains the data allows within the time budget, reusing shared prefixes,
each measured and judged; a candidate that fails is reported and the search goes on."""

from __future__ import annotations

import time
from typing import NamedTuple

from ..api.candidates import Candidate, auto_candidates
from ..api.report import StepReport
from .errors import OptimizeError, first_line
from .progress import Task
from .steps import StepRunner, describe_step, step_label
from .variants import Search, State, Variant

Cache = dict[tuple[str, ...], State]
"""Float results of chain prefixes, by the steps that made them."""


class ChainOutcome(NamedTuple):
    state: State
    fine_tuned: bool
    notes: list[str]


def run_auto(runner: StepRunner) -> Search:
    """Run every candidate that fits the time budget (the first always runs)."""
    ctx = runner.ctx
    opt = ctx.opt
    cands = auto_candidates(
        trainable=ctx.loaded.keras is not None,
        calibration=ctx.calibration_sample is not None,
        fine_tune=ctx.setup is not None,
        export=opt.export.format,
    )
    notes = ["strategy Auto: post-training quantization candidates only"] if ctx.loaded.ptq_only else []
    budget = opt.time_budget_seconds
    begin = time.monotonic()
    cache: Cache = {}
    variants: list[Variant] = []
    reports: list[StepReport] = []
    for n, cand in enumerate(cands, start=1):
        if n > 1 and time.monotonic() - begin > budget:
            reports.append(
                StepReport(
                    name=cand.name,
                    skipped=True,
                    chain=[describe_step(s) for s in cand.steps],
                    notes=[f"skipped: the time budget of {budget}s was used up"],
                )
            )
            ctx.progress.log(f"candidate {cand.name}: skipped (time budget of {budget}s used up)")
            continue
        result = _try_candidate(runner, cand, cache, f"candidate {n}/{len(cands)} {cand.name}")
        reports.append(result.report)
        if isinstance(result, Variant):
            variants.append(result)
    return Search(variants=variants, reports=reports, notes=notes)


class Failed(NamedTuple):
    """A candidate that raised."""

    report: StepReport


def _try_candidate(runner: StepRunner, cand: Candidate, cache: Cache, label: str) -> Variant | Failed:
    chain = [describe_step(s) for s in cand.steps]
    epochs = sum(s.fine_tune.epochs for s in cand.steps if s.fine_tune is not None)
    task = runner.ctx.progress.task(label, total=epochs + 1)
    started = time.monotonic()
    try:
        outcome = run_chain(runner, cand, cache, task)
        measured = runner.measure(outcome.state)
    except Exception as exc:  # one candidate failing must not end the search
        msg = str(exc) if isinstance(exc, OptimizeError) else f"{type(exc).__name__}: {first_line(exc)}"
        task.finish(f"failed: {msg[:200]}")
        return Failed(StepReport(name=cand.name, chain=chain, passed=False, error=msg[:1000]))
    report = StepReport(
        name=cand.name,
        chain=chain,
        fine_tuned=outcome.fine_tuned,
        notes=outcome.notes,
        measurement=measured.measurement,
        passed=measured.passed,
        seconds=round(time.monotonic() - started, 3),
    )
    task.finish(runner.evaluator.line(report))
    return Variant(report=report, tflite=measured.tflite, keras=outcome.state.keras, name=cand.name)


def run_chain(runner: StepRunner, cand: Candidate, cache: Cache, task: Task) -> ChainOutcome:
    """Apply a candidate's steps from the original model, reusing float prefixes other candidates computed."""
    loaded = runner.ctx.loaded
    state = State(keras=loaded.keras, stats_model=loaded.keras)
    fine_tuned = False
    notes: list[str] = []
    key: tuple[str, ...] = ()
    for step in cand.steps:
        key = (*key, describe_step(step))
        if key in cache:
            state = cache[key]
            notes.append(f"{step_label(step)}: reused from an earlier candidate")
            task.advance(f"{step_label(step)} reused", amount=step.fine_tune.epochs if step.fine_tune else 0)
            continue
        outcome = runner.apply(step, state, task)
        state = outcome.state
        fine_tuned = fine_tuned or outcome.fine_tuned
        notes += [f"{step_label(step)}: {n}" for n in outcome.notes]
        if state.tflite is None and not outcome.skipped:
            cache[key] = state
    return ChainOutcome(state=state, fine_tuned=fine_tuned, notes=notes)
