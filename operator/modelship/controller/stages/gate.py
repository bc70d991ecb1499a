"""Gate: may this revision ship? The accuracy gate's outcome and the spec's ``onFail`` (a failed gate ships the
baseline or the best passing result, or blocks the revision).

The verdict is the operator's, not the pod's: the optimizer runs the tenant's model, so its report is input.
Before anything ships, the gate's arithmetic (``api.gate``, the optimizer's own) is redone from the reported
baseline and value with the spec's metric and gate, and a report whose figures contradict its verdict or the
spec (Passed with a drop above maxDrop, a decision onFail does not allow, a candidate the spec never asked for)
is refused: Stalled, reason GateReportRefused, nothing built or deployed."""

from __future__ import annotations

from dataclasses import dataclass

from ...api.gate import Reported, verify
from ...api.report import GateDecision, ShipDecision
from ...api.status import ConditionType, OptimizationStatus, Reason, StageName
from .context import Context, Effects, Failure, condition, pending

FALLBACKS: dict[str, Reason] = {
    ShipDecision.BASELINE: Reason.GATE_FAILED_DEPLOY_BASELINE,
    ShipDecision.BEST_PASSING: Reason.GATE_FAILED_DEPLOY_BEST_PASSING,
}
"""What a failed gate ships instead (onFail DeployBaseline / DeployBestPassing); anything else is blocked."""


@dataclass(frozen=True)
class GateVerdict:
    deployable: bool
    """The revision may be built and served."""
    effects: Effects


def gate(ctx: Context, result: OptimizationStatus | None) -> GateVerdict:
    if result is None:
        return GateVerdict(False, pending(ConditionType.GATE_PASSED, "waiting for the optimization result"))
    refused = verify(ctx.md.spec.optimization, reported(result))
    if refused is not None:
        message = f"the optimizer's report for revision {ctx.revision} is refused: {refused}"
        failure = Failure(StageName.GATE, Reason.GATE_REPORT_REFUSED, message)
        effects = Effects(
            conditions=(condition(ConditionType.GATE_PASSED, False, Reason.GATE_REPORT_REFUSED, message),),
            failure=failure,
        )
        return GateVerdict(False, effects)
    message = result.describe()
    if result.gate is None or result.gate == GateDecision.SKIPPED:
        return _passed(Reason.GATE_SKIPPED, "optimization disabled: no gate")
    if result.gate == GateDecision.PASSED:
        return _passed(Reason.WITHIN_THRESHOLD, message)
    fallback = FALLBACKS.get(result.decision or "")
    if fallback is not None:
        return GateVerdict(True, Effects(conditions=(condition(ConditionType.GATE_PASSED, False, fallback, message),)))
    blocked = Failure(StageName.GATE, Reason.GATE_FAILED, f"accuracy gate blocked revision {ctx.revision}: {message}")
    effects = Effects(
        conditions=(condition(ConditionType.GATE_PASSED, False, Reason.GATE_FAILED, message),), failure=blocked
    )
    return GateVerdict(False, effects)


def reported(result: OptimizationStatus) -> Reported:
    return Reported(
        metric=result.metric,
        baseline=result.baseline,
        value=result.value,
        drop=result.metric_drop,
        gate=result.gate,
        decision=result.decision,
        candidate=result.candidate,
    )


def _passed(reason: Reason, message: str) -> GateVerdict:
    return GateVerdict(True, Effects(conditions=(condition(ConditionType.GATE_PASSED, True, reason, message),)))
