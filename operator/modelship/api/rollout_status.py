"""Status of a Canary rollout (status.rollout): the candidate, its phase and traffic share, each criterion's
observed value against its threshold, the decision, and the current phase's analysis window. Written only by the
operator."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .common import ApiModel


class RolloutPhase(StrEnum):
    """Where a Canary rollout of status.rollout.candidate is."""

    SHADOW = "Shadow"
    CANARY = "Canary"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


class Criterion(StrEnum):
    """The analysis criteria."""

    ERROR_RATE = "ErrorRate"
    LATENCY_RATIO = "LatencyRatio"
    AGREEMENT = "Agreement"


class Verdict(StrEnum):
    PENDING = "Pending"
    """Fewer requests than analysis.minRequests so far."""
    PASSED = "Passed"
    FAILED = "Failed"


class Decision(StrEnum):
    """What the analysis decided at the last look."""

    WAIT = "Wait"
    """Hold the phase (its time has not passed, or a criterion has too few requests)."""
    NEXT = "Next"
    """The phase held: go on to the next one."""
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"


class RollbackCause(StrEnum):
    """Why a rollout was rolled back."""

    ANALYSIS_FAILED = "AnalysisFailed"
    """A criterion failed."""
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    """A phase could not judge every criterion in time (too few requests)."""
    ABORTED = "Aborted"
    """The abort annotation."""
    ABANDONED = "Abandoned"
    """The spec moved on to another revision."""
    CANDIDATE_CRASH_LOOP = "CandidateCrashLoop"
    """A container of the candidate's pods crash-looped for progressDeadlineSeconds with its pods not all
    available, or its Deployment's controller gave up on it (ProgressDeadlineExceeded) while they crash-looped."""
    CANDIDATE_NOT_STARTING = "CandidateNotStarting"
    """The candidate's Deployment made no progress for progressDeadlineSeconds (ProgressDeadlineExceeded): its
    pods are not pulled, not scheduled or never ready."""


class WindowCounters(ApiModel):
    """Counters of one serving pod (or their sum over a phase's window) that the analysis reads."""

    mirrored: float = 0
    """Mirrored requests whose two answers were compared (stable pods)."""
    mirror_failures: float = 0
    """Mirrored requests the candidate did not answer (stable pods)."""
    rows_agreed: float = 0
    """Rows of mirrored requests on which the candidate agreed (stable pods)."""
    rows_disagreed: float = 0
    """Rows on which it did not (stable pods)."""
    requests: float = 0
    """Inference requests answered."""
    errors: float = 0
    """Of those, answered 5xx or 429."""
    latency: Annotated[list[float], Field(max_length=64)] = Field(default_factory=list)
    """Cumulative counts of the latency histogram, one per bound of the window's latencyBounds."""


class PodBaseline(ApiModel):
    """One serving pod's counters at the last look: its next delta is taken from them."""

    pod: Annotated[str, Field(max_length=253)]
    """Pod name."""
    candidate: bool
    """The pod serves the candidate (else the stable revision)."""
    counters: WindowCounters
    """Its counters at the last look (cumulative since its server started)."""


class AnalysisWindow(ApiModel):
    """The current phase's analysis window (figures read from the pods' metrics endpoints): each look adds every
    pod's counter increase since the previous look, a counter that went down is a restarted pod and counts from
    zero (as Prometheus' rate() does). Kept in status so an operator restart loses nothing."""

    phase: str
    """The phase the window belongs to (phase/step/start): another one starts a new window."""
    since: str
    """When the window started (RFC 3339)."""
    latency_bounds: Annotated[list[str], Field(max_length=64)] = Field(default_factory=list)
    """Upper bounds of the latency histogram buckets, as Prometheus' le label writes them."""
    stable: WindowCounters = Field(default_factory=WindowCounters)
    """Increase over the window, summed over the stable pods."""
    candidate: WindowCounters = Field(default_factory=WindowCounters)
    """Increase over the window, summed over the candidate's pods."""
    pods: Annotated[list[PodBaseline], Field(max_length=64)] = Field(default_factory=list)
    """Each pod's counters at the last look (at most 64 pods are followed)."""


class CriterionStatus(ApiModel):
    """One analysis criterion: observed value against its threshold."""

    name: Criterion
    """ErrorRate, LatencyRatio or Agreement."""
    observed: float | None = None
    """Observed value (unset before any request)."""
    threshold: float
    """maxErrorRate, maxLatencyRatio or minAgreement."""
    requests: int = 0
    """Requests the observed value is computed over (LatencyRatio: the fewer of the two sides')."""
    required: int | None = None
    """Requests the criterion needs before it is judged: minRequests, or for LatencyRatio
    max(minRequests, ceil(5 / (1 - latencyQuantile))) on each side."""
    verdict: Verdict = Verdict.PENDING
    """Pending (fewer than the required requests), Passed or Failed."""


class RouteStatus(ApiModel):
    """The HTTPRoute that splits live traffic (spec.serving.rollout.canary.trafficRouting.gatewayAPI)."""

    name: str
    """The HTTPRoute (in the ModelDeployment's namespace)."""
    stable_weight: int
    """Weight of the stable Service's backendRef, as written on the route."""
    candidate_weight: int
    """Weight of the candidate's Service's backendRef, as written on the route."""


class PhaseTemplates(ApiModel):
    """Digests of the pod templates of the two Deployments a phase was judged on, as read from them when the
    phase's clock started (spec.template, defaults included)."""

    stable: Annotated[str, Field(max_length=64)]
    """The stable Deployment's."""
    candidate: Annotated[str, Field(max_length=64)]
    """The candidate's Deployment's."""


class RolloutStatus(ApiModel):
    """A Canary rollout: the candidate revision, its phase and traffic share, and the analysis."""

    candidate: str
    """Revision under analysis."""
    candidate_image: str | None = None
    """Image of the candidate (unset when the stock runtime serves it)."""
    candidate_artifact: str | None = None
    """Without an image: the pushed artifact the candidate's pods pull (unset: the artifact claim)."""
    stable: str
    """Revision serving before the candidate."""
    phase: RolloutPhase
    """Shadow, Canary, Promoting, Promoted or RolledBack."""
    step: int = 0
    """Canary step (1-based; 0 before the first)."""
    weight: int = 0
    """Candidate's share of live traffic the current step asks for, in percent: exact through an HTTPRoute
    (route), else as the replica counts asked give it."""
    served_weight: int | None = None
    """Candidate's share of live traffic at the last look, in percent: without an HTTPRoute its ready endpoints
    over the stable and candidate ready endpoints behind the Service (below weight while its pods come up, or an
    HPA or a quota holds it short); through an HTTPRoute the route's weight once the candidate's Service has a
    ready endpoint (0 before)."""
    route: RouteStatus | None = None
    """The HTTPRoute's weights (trafficRouting.gatewayAPI), as written on it."""
    mirror_percent: int = 0
    """Share of the stable pods' requests mirrored to the candidate."""
    started_at: str
    """When the rollout of the candidate began (RFC 3339)."""
    phase_started_at: str | None = None
    """When the current phase's clock started: its pods were available (RFC 3339)."""
    phase_templates: PhaseTemplates | None = None
    """The pod templates the running phase was judged on (set with phaseStartedAt): a Deployment status its
    controller has not caught up with is trusted only while both Deployments still run these."""
    criteria: list[CriterionStatus] = Field(default_factory=list)
    """Each criterion's observed value against its threshold, at the last look."""
    decision: Decision = Decision.WAIT
    """The analysis' decision at the last look."""
    message: str = ""
    """The decision, for people."""
    rollback_cause: RollbackCause | None = None
    """Why it was rolled back (RolledBack only)."""
    ignored_overrides: Annotated[list[Annotated[str, Field(max_length=400)]], Field(max_length=2)] | None = None
    """Annotations modelship.io/promote or modelship.io/abort that name another revision than the candidate, as
    annotation=value: ignored (an Event said so when each appeared)."""
    source: str | None = None
    """Where the analysis figures come from: Pods (their metrics endpoints) or Prometheus."""
    window: AnalysisWindow | None = None
    """The current phase's analysis window (figures read from the pods)."""
    candidate_failing_since: str | None = None
    """Since when the candidate's pods have crash-looped, without a break (RFC 3339; kept through a crashed pod's
    Ready moments); unset while they do not (also while they are not pulled or not scheduled: that is judged by
    their Deployment's progress deadline). A crash loop that lasts progressDeadlineSeconds rolls the candidate
    back."""
    candidate_failing_template: Annotated[str, Field(max_length=64)] | None = None
    """The pod-template-hash of the candidate's ReplicaSet whose pods candidateFailingSince times (its Deployment's
    newest, as the Deployment controller names it): the pods of another ReplicaSet (a `kubectl rollout restart` of
    the candidate's Deployment after a fix outside the spec, an edit of its template) start a clock of their own.
    Unset with candidateFailingSince."""
    rolled_back_generation: int | None = None
    """The ModelDeployment's metadata.generation when the candidate was rolled back for its pods (CandidateCrashLoop,
    CandidateNotStarting). What tries the revision again is a change of ``rolledBackTemplate`` (a scale writes a new
    generation too); a record without that template (pruned by an older CRD, or written by an older operator) gets
    it from the spec while the spec is still this generation, and otherwise stays final. Unset for other
    rollbacks."""
    rolled_back_template: Annotated[str, Field(max_length=64)] | None = None
    """A digest of the candidate's pod template its judged pods ran when it was rolled back for them
    (CandidateCrashLoop, CandidateNotStarting), as the spec renders it whatever the phase (its replicas, shadow or
    live labels and mirror offer left out), together with spec.serving.rollout.progressDeadlineSeconds: while the
    spec renders the same (a re-apply, a scale, an HPA writing /scale) the rollback stands; a change of the
    candidate's pods (spec.serving's resources such as the memory limit the message names, hardware nodeSelector,
    tolerations or runtimeClassName, podAnnotations, shmSize, serviceAccountName, the image of the same revision) or
    of the progress deadline starts a new rollout of the same revision (and so does a `kubectl rollout restart` of
    the candidate's Deployment after a fix outside the spec, such as quota, node capacity or a pull Secret's
    content: ``rolledBackRestartedAt``). Unset for other rollbacks, which stay final for their revision."""
    rolled_back_restarted_at: Annotated[str, Field(max_length=64)] | None = None
    """With rolledBackTemplate: the kubectl.kubernetes.io/restartedAt annotation of the candidate Deployment's pod
    template when it was rolled back for its pods (``kubectl rollout restart``, which the operator's applies keep),
    empty when it had none: another one (a restart after a fix outside the spec, such as quota, node capacity or a
    pull Secret's content) starts a new rollout of the same revision, the stable revision's pods untouched. Unset
    in a record written before the field (or pruned by an older CRD): a restart is then not compared, so one made
    before the rollback is not taken for a new one (a spec change still tries the revision again)."""
