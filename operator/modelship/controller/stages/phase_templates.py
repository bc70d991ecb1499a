"""The pod templates a Canary phase is judged on (``status.rollout.phaseTemplates``) and when a Deployment status
its controller has not caught up with is trusted in a phase (``lag_trusted``), with its fallback for an installed
CRD that prunes the templates (the generation alone decides)."""

from __future__ import annotations

from datetime import datetime

from ...api.rollout_status import PhaseTemplates, RolloutStatus
from ..canary import ANALYZING, clock_runs, phase_begun
from ..observe import Observed
from .memory import PHASE_TEMPLATES, lost


def live_templates(observed: Observed) -> PhaseTemplates | None:
    """The digests of the pod templates the stable and the candidate's Deployments run now, as read (None when
    either Deployment, or its template, is not there)."""
    stable, cand = observed.deployment, observed.canary
    if stable is None or cand is None or stable.pod_template is None or cand.pod_template is None:
        return None
    return PhaseTemplates(stable=stable.pod_template, candidate=cand.pod_template)


def lag_trusted(
    state: RolloutStatus, observed: Observed, prev_generation: int | None, generation: int | None, now: datetime
) -> bool:
    """A Deployment status its controller has not caught up with (observedGeneration behind) is trusted in a phase
    (it can only be behind a count the HPA wrote) when the phase's clock runs (its pods were judged serving on a
    status the controller had observed), the last status was written for the ModelDeployment's generation (no
    spec change, no failed status write after an apply of the operator's), and both Deployments still run the pod
    templates read when the clock started (``phaseTemplates``). The last one because a template can change while
    the ModelDeployment's generation does not: a ``kubectl rollout restart`` (an annotation on the template), an
    edit of the Deployment, an operator upgrade that renders the template anew. When the installed CRD prunes
    ``phaseTemplates`` (an older one: Helm does not upgrade CRDs), they are never there to compare:
    the generation alone decides, as before the field (the Warning Event about the older CRD names it), where
    requiring them would restart the phase's clock at nearly every scale of an HPA. A phase start that does not
    parse, or lies ahead of ``now``, is a clock not started (``decide`` restarts it)."""
    if phase_begun(state, now) is None or generation is None or prev_generation != generation:
        return False
    templates_pruned = lost(PHASE_TEMPLATES, observed.pruned_status)
    return templates_pruned or (state.phase_templates is not None and state.phase_templates == live_templates(observed))


def with_phase_templates(prev: RolloutStatus, new: RolloutStatus, observed: Observed) -> RolloutStatus:
    """``new`` with the templates its phase is judged on: read when the phase's clock (re)starts, kept while it
    runs, none while it does not. A running phase without them (its status written by an operator before them)
    takes them at a look whose two Deployment statuses are observed by their controller (they describe the
    templates read)."""
    if new.phase not in ANALYZING or not clock_runs(new):
        return new.model_copy(update={"phase_templates": None})
    restarted = (new.phase, new.step, new.phase_started_at) != (prev.phase, prev.step, prev.phase_started_at)
    templates = None if restarted else prev.phase_templates
    deps = (observed.deployment, observed.canary)
    if templates is None and all(d is not None and d.observed_generation >= d.generation for d in deps):
        templates = live_templates(observed)
    return new.model_copy(update={"phase_templates": templates})
