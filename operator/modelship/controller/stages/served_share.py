"""The candidate's share of traffic in a Canary rollout: the weight the HTTPRoute gives it in a phase
(``route_weight``), the share it serves at a look (``status.rollout.servedWeight``: its ready endpoints behind the
Service, or the route's weight once its Service has one) and what a canary step's message adds while it serves
less than the step's share (``below_share``). The route's weight is what the verify stage sets the HTTPRoute to;
the served share and the message are only reported (no decision reads them back)."""

from __future__ import annotations

from ...api.rollout_status import RolloutPhase, RolloutStatus
from ...api.serving import Canary
from ..canary import clock_runs, effective_weight
from ..observe import Observed
from .deploy import routed_endpoints


def route_weight(canary: Canary, state: RolloutStatus) -> int:
    """The candidate's weight on the HTTPRoute: a canary step's once the candidate's pods for it are available
    (until then the step before's, 0 before the first), kept while promoting; 0 in the shadow phase, promoted
    (the stable Service runs the candidate by then) and rolled back."""
    if state.phase not in (RolloutPhase.CANARY, RolloutPhase.PROMOTING) or state.step <= 0:
        return 0
    step = min(state.step, len(canary.steps))
    if state.phase == RolloutPhase.CANARY and not clock_runs(state):
        step -= 1
    return canary.steps[step - 1].weight if step > 0 else 0


def served_weight(canary: Canary, state: RolloutStatus, observed: Observed, stable: str) -> int:
    """The candidate's share of live traffic at this look, in percent (``servedWeight``): without an HTTPRoute its
    ready endpoints over the stable and candidate ones behind the Service (kube-proxy picks among them); through
    an HTTPRoute the route's weight once the candidate's Service has a ready endpoint, else 0. 100 once Promoted,
    0 once RolledBack."""
    final = {RolloutPhase.PROMOTED: 100, RolloutPhase.ROLLED_BACK: 0}.get(state.phase)
    if final is not None:
        return final
    rev = state.candidate
    if canary.gateway_api() is not None:
        return route_weight(canary, state) if routed_endpoints(observed.canary_endpoints, rev) > 0 else 0
    ours = routed_endpoints(observed.endpoints, rev)
    return effective_weight(routed_endpoints(observed.endpoints, stable), ours)


def below_share(canary: Canary, state: RolloutStatus, observed: Observed, stable: str, served: int) -> str:
    """What a canary step's message adds while its clock runs and the candidate serves less than the step's share
    (an HPA raised the stable count and the candidate's new pods are not up yet, a quota holds them): the figures
    are judged on what it does serve, and the clock goes on (a clock restarted at every scale would never end).
    "" otherwise."""
    if state.phase != RolloutPhase.CANARY or not clock_runs(state) or served >= state.weight:
        return ""
    if canary.gateway_api() is not None:
        return f"; the candidate's Service has no ready endpoint: it serves 0%, below the step's {state.weight}%"
    ours = routed_endpoints(observed.endpoints, state.candidate)
    total = ours + routed_endpoints(observed.endpoints, stable)
    return (
        f"; the candidate serves {served}% ({ours} of {total} ready endpoints behind the Service), below the "
        f"step's {state.weight}%"
    )
