"""Status of a ModelDeployment: kstatus conditions, stage results, replicas, endpoint. Written only by the operator."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictBool

from .common import ApiModel
from .report import Summary
from .rollout_status import RolloutStatus


class Phase(StrEnum):
    """Coarse lifecycle phase, for people; tools should read conditions."""

    PENDING = "Pending"
    OPTIMIZING = "Optimizing"
    BUILDING = "Building"
    DEPLOYING = "Deploying"
    VERIFYING = "Verifying"
    READY = "Ready"
    SUSPENDED = "Suspended"
    FAILED = "Failed"


class ConditionType(StrEnum):
    """Condition types: the kstatus trio and one per stage."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    RESOLVED = "Resolved"
    OPTIMIZED = "Optimized"
    GATE_PASSED = "GatePassed"
    IMAGE_BUILT = "ImageBuilt"
    VERIFIED = "Verified"
    DEPLOYED = "Deployed"
    MULTI_NODE = "MultiNode"
    """Set only while it is False: the serving pods mount the ReadWriteOnce artifact claim and the spec asks for
    more than one of them, so all must run on the node holding it (reason ArtifactClaimReadWriteOnce)."""
    CAPACITY = "Capacity"
    """Set only while it is False: an HPA scales the revision that serves up and fewer replicas than it asks for
    are available or routed (reason ScalingUp; ScaleUpStalled once that lasts progressDeadlineSeconds). Ready
    stays True while minReplicas serve: traffic is served, capacity is missing."""
    CONTAINER_HEALTHY = "ContainerHealthy"
    """Set only while it is False: a container of the rolled-out revision's pods crash-loops (reason
    ServingCrashLoop; the message names the pod, the container and its last termination). Its lastTransitionTime
    is the crash loop's clock: kept while the pods crash-loop, also through the moments a restarted pod is ready
    between crashes; past progressDeadlineSeconds with replicas missing, Deployed is ServingCrashLoop (Stalled)."""


class Reason(StrEnum):
    """Every reason the operator writes into a condition or lastFailure (CamelCase, as Kubernetes wants).

    Events are named ``<condition type><reason>`` (e.g. ``ImageBuiltPushed``, ``ReadyAvailable``)."""

    # kstatus
    AVAILABLE = "Available"
    IDLE = "Idle"
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    INVALID_SPEC = "InvalidSpec"
    POLICY_VIOLATION = "PolicyViolation"
    """The spec sets what the platform's admin policy forbids (api/policy.py): nothing is created for it."""
    RECONCILE_ERROR = "ReconcileError"
    """The operator itself failed on this object (a bug or a spec its builders cannot express)."""
    APPLY_REFUSED = "ApplyRefused"
    """The API server refused a write of a child for its content (an admission policy or webhook denied it, or it
    is invalid): the message names the object and the API server's words; nothing after it is written until a
    change or a resync finds it taken."""
    NAME_CONFLICT = "NameConflict"
    """An object the ModelDeployment would create exists and is not controlled by it: left untouched."""
    NAMESPACE_EXCLUDED = "NamespaceExcluded"
    """The platform excludes the ModelDeployment's namespace (operator.excludeNamespaces): nothing is created."""
    UNSUPPORTED_FIELDS = "UnsupportedFields"
    """The spec sets fields this operator does not know (the installed CRD is newer than the operator: upgrade
    the operator): nothing is changed, what serves keeps serving."""
    CRD_OLDER_THAN_OPERATOR = "CRDOlderThanOperator"
    """The installed CRD prunes a status field this operator reads back to know what serves (or where a Canary
    stands), and the live objects cannot tell it either: serving changes are held, what serves keeps serving."""
    # waiting for an upstream stage
    PENDING = "Pending"
    # Resolve
    DIGEST_PINNED = "DigestPinned"
    DIGEST_RESOLVED = "DigestResolved"
    RESOLVING = "Resolving"
    # Job stages (optimization, build)
    JOB_CREATED = "JobCreated"
    JOB_RUNNING = "JobRunning"
    BUILD_JOB_CREATED = "BuildJobCreated"
    BUILD_JOB_RUNNING = "BuildJobRunning"
    RETRY_BACKOFF = "RetryBackoff"
    JOB_FAILED = "JobFailed"
    OPTIMIZATION_FAILED = "OptimizationFailed"
    INVALID_SUMMARY = "InvalidSummary"
    INVALID_BUILD_RESULT = "InvalidBuildResult"
    FOREIGN_POD = "ForeignPod"
    """A stage Job finished with a pod that does not run its template (a forged controller reference)."""
    IMAGE_OUTSIDE_REPOSITORY = "ImageOutsideRepository"
    """The build reported an image that is not <spec.build.repository>@sha256:<64 hex>: never deployed."""
    SECRET_NOT_FOUND = "SecretNotFound"
    """A stage Job (or the serving Deployment) would mount a Secret the spec names (credentials.secretRef,
    build.pushSecretRef) that does not exist in the namespace: the Job is not created (its pod would wait in
    ContainerCreating) until it does."""
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    """A stage Job would mount a ConfigMap the spec names (credentials.caBundleRef, optimization.metric.codeRef)
    that does not exist in the namespace: the Job is not created (its pod would wait in ContainerCreating) until it
    does."""
    CLAIM_NOT_FOUND = "ClaimNotFound"
    """A stage Job would mount a PersistentVolumeClaim (a pvc:// URI's claim), or the serving Deployment the
    artifact claim, that does not exist in the namespace: the Job is not created / the Deployment keeps its
    template (its pod would wait in Pending) until it does."""
    CONFIG_MAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"
    """A stage Job would mount a key of a ConfigMap as a file (credentials.caBundleRef.key) that the ConfigMap
    lacks: the Job is not created (the kubelet would fail the mount, the pod wait in ContainerCreating) until it
    has it."""
    ARTIFACT_OUTSIDE_REPOSITORY = "ArtifactOutsideRepository"
    """A build-less revision's report named an artifact that is not oci://<the repository the operator pushed it
    to>@sha256:<64 hex> (or a content digest that is not sha256:<64 hex>): never served."""
    # Optimize
    OPTIMIZED = "Optimized"
    CONVERTED = "Converted"
    # Gate
    GATE_SKIPPED = "GateSkipped"
    WITHIN_THRESHOLD = "WithinThreshold"
    GATE_FAILED = "GateFailed"
    GATE_FAILED_DEPLOY_BASELINE = "GateFailedDeployBaseline"
    GATE_FAILED_DEPLOY_BEST_PASSING = "GateFailedDeployBestPassing"
    GATE_REPORT_REFUSED = "GateReportRefused"
    """The optimizer's figures contradict its verdict or the spec's gate: the operator's own verdict refuses it."""
    # Build
    BUILD_DISABLED = "BuildDisabled"
    PUSHED = "Pushed"
    CACHED = "Cached"
    # Deploy
    ROLLING_OUT = "RollingOut"
    ROLLOUT_STALLED = "RolloutStalled"
    """The Deployment exceeded its progress deadline, or under an HPA fewer than minReplicas have been available
    for progressDeadlineSeconds with its template rolled out (the controller sets no deadline on a count)."""
    SERVING_CRASH_LOOP = "ServingCrashLoop"
    """ContainerHealthy: a container of the revision's pods crash-loops. Deployed: it has for progressDeadlineSeconds
    with replicas missing (Stalled; the revision that served before, if any, keeps serving)."""
    PREVIOUS_REVISION_SERVING = "PreviousRevisionServing"
    ARTIFACT_CLAIM_READ_WRITE_ONCE = "ArtifactClaimReadWriteOnce"
    """MultiNode: the pods serve from the ReadWriteOnce artifact claim (no registry receives the artifact)."""
    SCALING_UP = "ScalingUp"
    """Capacity: the HPA scales the revision that serves up; its new replicas are not all available and routed."""
    SCALE_UP_STALLED = "ScaleUpStalled"
    """Capacity: a scale-up has been short of replicas for progressDeadlineSeconds (new pods unschedulable,
    crash-looping, or not pulled); a Warning Event says so. Ready stays True while minReplicas serve."""
    SCALED_UP = "ScaledUp"
    """The Event (CapacityScaledUp) when a stalled scale-up is over."""
    SCALED_TO_ZERO = "ScaledToZero"
    """Under an HPA the serving Deployment was scaled to 0 outside the operator: the HPA does not scale a target
    at 0 (autoscaling disabled), so nothing would bring it back: Stalled until someone scales it up."""
    # Verify (Canary strategy)
    VERIFYING = "Verifying"
    """Deployed: the previous revision serves while the new one is verified."""
    SHADOWING = "Shadowing"
    CANARY_STEP = "CanaryStep"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    """A phase went on analysis.inconclusiveAfterSeconds past its hold time without every criterion judged (too
    few requests): rolled back, the stable revision serving."""
    ANALYSIS_UNAVAILABLE = "AnalysisUnavailable"
    """The analysis figures could not be read (the Prometheus server the chart names is down or answers
    garbage): the phase holds until they can, or until it is inconclusive."""
    ROLLOUT_ABORTED = "RolloutAborted"
    CANDIDATE_CRASH_LOOP = "CandidateCrashLoop"
    """Verified: the candidate's pods crash-looped for progressDeadlineSeconds: rolled back, the stable revision
    serving."""
    CANDIDATE_NOT_STARTING = "CandidateNotStarting"
    """Verified: the candidate's Deployment made no progress for progressDeadlineSeconds (its pods not pulled, not
    scheduled or never ready): rolled back, the stable revision serving."""
    NO_STABLE_REVISION = "NoStableRevision"
    TRAFFIC_ROUTING_UNAVAILABLE = "TrafficRoutingUnavailable"
    """trafficRouting.gatewayAPI is set but the cluster does not serve the HTTPRoute API."""


IN_FLIGHT_REASONS = frozenset(
    {
        Reason.JOB_CREATED,
        Reason.JOB_RUNNING,
        Reason.BUILD_JOB_CREATED,
        Reason.BUILD_JOB_RUNNING,
        Reason.ROLLING_OUT,
        Reason.VERIFYING,
        Reason.SHADOWING,
        Reason.CANARY_STEP,
        Reason.PROMOTING,
        Reason.PROGRESSING,
        Reason.PENDING,
        Reason.SUSPENDED,
    }
)
"""Reasons of a False condition that mean "work in flight", not "something went wrong" (Normal, not Warning)."""


class StageName(StrEnum):
    """The stage a failure belongs to (status.lastFailure.stage)."""

    RESOLVE = "Resolve"
    OPTIMIZE = "Optimize"
    GATE = "Gate"
    BUILD = "Build"
    VERIFY = "Verify"
    DEPLOY = "Deploy"
    RECONCILE = "Reconcile"
    """Not a stage: the operator failed while reconciling (see Reason.RECONCILE_ERROR)."""


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Condition type."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """metadata.generation the condition was computed for."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""


class SourceStatus(ApiModel):
    """The model as fetched."""

    uri: str | None = None
    """URI it came from."""
    digest: str | None = None
    """Resolved sha256 digest."""
    size_bytes: int | None = None
    """Size in bytes."""

    @classmethod
    def from_summary(cls, uri: str, summary: Summary) -> SourceStatus | None:
        """The source as the optimization Job fetched it (None when the summary does not say)."""
        if not summary.source_digest:
            return None
        return cls(uri=uri, digest=summary.source_digest, size_bytes=summary.source_bytes)


class OptimizationStatus(ApiModel):
    """Result of the optimization stage for status.revision."""

    revision: str | None = None
    """Revision these results belong to."""
    job: str | None = None
    """Name of the optimization Job."""
    attempts: int | None = None
    """Jobs started for this revision (retries included)."""
    cached: StrictBool | None = None
    """Results were reused from an earlier run of the same revision."""
    metric: str | None = None
    """Metric name."""
    baseline: float | None = None
    """Metric of the original model."""
    value: float | None = None
    """Metric of the shipped artifact."""
    metric_drop: float | None = None
    """Drop against the baseline."""
    gate: str | None = None
    """Passed, Failed or Skipped."""
    decision: str | None = None
    """What ships: Optimized, Baseline, BestPassing or Blocked."""
    candidate: str | None = None
    """Step chain or auto candidate that ships."""
    original_bytes: int | None = None
    """Size of the original model."""
    optimized_bytes: int | None = None
    """Raw size of the shipped artifact."""
    compression_ratio: float | None = None
    """gzip size of the original over gzip size of the artifact."""
    size_ratio: str | None = None
    """compressionRatio formatted for kubectl (e.g. 8.3x)."""
    latency_p50_ms: float | None = None
    """Median single-sample latency of the artifact."""
    artifact: str | None = None
    """Artifact path in the artifact volume."""
    artifact_digest: str | None = None
    """sha256 of the artifact."""
    artifact_ref: str | None = None
    """oci://REPOSITORY@sha256:... the artifact was pushed to (build disabled: serving pods pull it)."""
    message: str | None = None
    """Gate message with the numbers."""
    completed_at: str | None = None
    """When the Job finished."""

    @classmethod
    def from_summary(
        cls,
        summary: Summary,
        *,
        revision: str,
        job: str | None,
        attempts: int,
        cached: bool,
        completed_at: str | None = None,
    ) -> OptimizationStatus:
        """The status record of an optimizer's summary line (the one mapping between the two)."""
        ratio = summary.compression_ratio
        return cls(
            revision=revision,
            job=job,
            attempts=attempts,
            cached=cached,
            metric=summary.metric_name,
            baseline=summary.baseline,
            value=summary.value,
            metric_drop=summary.drop,
            gate=summary.gate.value if summary.gate else None,
            decision=summary.decision.value if summary.decision else None,
            candidate=summary.candidate,
            original_bytes=summary.original_bytes,
            optimized_bytes=summary.optimized_bytes,
            compression_ratio=ratio,
            size_ratio=f"{ratio:.1f}x" if ratio else None,
            latency_p50_ms=summary.latency_p50_ms,
            artifact=summary.artifact,
            artifact_digest=summary.artifact_digest,
            artifact_ref=summary.artifact_ref,
            message=summary.message,
            completed_at=completed_at,
        )

    def describe(self) -> str:
        """One line for people: the gate message, or the metric and sizes before -> after."""
        if self.message:
            return self.message
        return (
            f"{self.metric or 'metric'} {_fmt(self.baseline)} -> {_fmt(self.value)}, "
            f"size {self.original_bytes} -> {self.optimized_bytes} bytes"
        )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


class ImageStatus(ApiModel):
    """Result of the image build for status.revision."""

    revision: str | None = None
    """Revision the image belongs to."""
    job: str | None = None
    """Name of the build Job."""
    attempts: int | None = None
    """Jobs started for this revision."""
    reference: str | None = None
    """Pushed image, repository@sha256:digest."""
    digest: str | None = None
    """Pushed manifest digest."""
    platforms: list[str] | None = None
    """Platforms in the image."""
    completed_at: str | None = None
    """When the build finished."""


class LastFailure(ApiModel):
    """The most recent failure, kept until a later success of the same stage."""

    stage: str
    """Resolve, Optimize, Gate, Build or Deploy (Reconcile: the operator failed on this object)."""
    reason: str
    """CamelCase reason."""
    message: str = ""
    """Readable detail."""
    revision: str | None = None
    """Revision that failed."""
    time: str
    """When (RFC 3339)."""


class ModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator only."""

    model_config = ConfigDict(extra="ignore")  # kopf may leave its own keys here; never fail on them

    observed_generation: int | None = None
    """metadata.generation the status reflects."""
    phase: Phase | None = None
    """Coarse phase, for people."""
    revision: str | None = None
    """Content-addressed revision the spec asks for (model digest + optimization + build + target)."""
    serving_revision: str | None = None
    """Revision last rolled out, whose pods serve unless Deployed says otherwise (differs from revision during a
    rollout or after a blocked one); what a failed change falls back to. A stalled rollout's Deployed message says
    what serves now: its pods may be gone (a new pod ready for a moment let the old ones go)."""
    serving_image: str | None = None
    """Image serving servingRevision (unset when the stock runtime serves the artifact: build disabled)."""
    serving_artifact: str | None = None
    """Build disabled: the OCI artifact (by digest) each serving pod of servingRevision pulls."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """kstatus Ready / Reconciling / Stalled and one condition per stage."""
    source: SourceStatus | None = None
    """The model as fetched."""
    optimization: OptimizationStatus | None = None
    """Optimization results and gate outcome."""
    image: ImageStatus | None = None
    """Built image."""
    replicas: int | None = None
    """Serving pods (all revisions); statusReplicasPath of the scale subresource."""
    ready_replicas: int | None = None
    """Ready serving pods."""
    updated_replicas: int | None = None
    """Serving pods of the current revision."""
    available_replicas: int | None = None
    """Available serving pods."""
    selector: str | None = None
    """Label selector of serving pods, for the scale subresource (HPA, kubectl scale)."""
    url: str | None = None
    """In-cluster inference endpoint."""
    rollout: RolloutStatus | None = None
    """The last Canary rollout (strategy Canary)."""
    last_failure: LastFailure | None = None
    """Most recent failure."""

    def condition(self, type_: ConditionType | str) -> Condition | None:
        """The condition of ``type_`` (None if the status has none): a method, so the CRD's schema is unchanged."""
        return next((c for c in self.conditions if c.type == type_), None)
