"""Gate: may this revision ship? The accuracy gate's outcome and the spec's ``onFail`` as the optimizer applied
them (a failed gate ships the baseline or the best passing result, or blocks the revision)."""

from __future__ import annotations

from dataclasses import dataclass

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


def _passed(reason: Reason, message: str) -> GateVerdict:
    return GateVerdict(True, Effects(conditions=(condition(ConditionType.GATE_PASSED, True, reason, message),)))
