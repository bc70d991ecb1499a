"""How the model is served: protocol, replicas, resources, hardware target, autoscaling, rollout, exposure."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .common import ApiModel, DnsLabel, DnsSubdomain, Quantity, ResourceRequirements, Toleration, nested
from .rules import Rule, enforce, rules_schema


class Protocol(StrEnum):
    """The protocol advertised in status.url (the server always speaks both)."""

    V2 = "v2"
    TFSERVING = "tfserving"


class HardwareTarget(StrEnum):
    """Where serving pods run."""

    CPU = "cpu"
    GPU = "gpu"
    ARM64 = "arm64"


class GpuSpec(ApiModel):
    """GPUs per serving pod."""

    count: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per pod (limits of resourceName)."""
    resource_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$")] = "nvidia.com/gpu"
    """Extended resource name of the GPU."""


HARDWARE_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.target != 'gpu' || self.gpu.count >= 1",
        message="target gpu needs gpu.count of at least 1",
        check=lambda m: m.target != HardwareTarget.GPU or m.gpu.count >= 1,
        field_path=".gpu.count",
    ),
)


class Hardware(ApiModel):
    """Hardware target and placement of serving pods."""

    model_config = ConfigDict(json_schema_extra=rules_schema(HARDWARE_RULES))

    target: HardwareTarget = HardwareTarget.CPU
    """cpu, gpu (adds GPU limits and tolerations) or arm64 (edge nodes; needs a linux/arm64 image)."""
    gpu: GpuSpec = nested(GpuSpec)
    """GPU request when target is gpu."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Extra node labels serving pods must match."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Extra tolerations of serving pods."""
    runtime_class_name: DnsSubdomain | None = None
    """RuntimeClass of serving pods (e.g. nvidia)."""

    @model_validator(mode="after")
    def _rules(self) -> Hardware:
        enforce(self, HARDWARE_RULES)
        return self


AUTOSCALING_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.maxReplicas >= self.minReplicas",
        message="maxReplicas must be at least minReplicas",
        check=lambda m: m.max_replicas >= m.min_replicas,
        field_path=".maxReplicas",
    ),
    Rule(
        cel="!self.enabled || has(self.targetCPUUtilizationPercentage) || has(self.targetMemoryUtilizationPercentage)",
        message="enabled autoscaling needs a CPU or memory utilization target",
        check=lambda m: (
            not m.enabled
            or m.target_cpu_utilization_percentage is not None
            or m.target_memory_utilization_percentage is not None
        ),
        field_path=".targetCPUUtilizationPercentage",
    ),
)


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler for the serving Deployment; while enabled it owns the replica count."""

    model_config = ConfigDict(json_schema_extra=rules_schema(AUTOSCALING_RULES))

    enabled: StrictBool = False
    """Create an HPA (autoscaling/v2) for the Deployment."""
    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Lower bound of the HPA."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 5
    """Upper bound of the HPA."""
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=70, alias="targetCPUUtilizationPercentage"
    )
    """Average CPU utilization (of requests) the HPA aims for."""
    target_memory_utilization_percentage: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Average memory utilization (of requests) the HPA aims for."""
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """How long the HPA waits before scaling down."""

    @model_validator(mode="after")
    def _rules(self) -> Autoscaling:
        enforce(self, AUTOSCALING_RULES)
        return self


class RolloutStrategy(StrEnum):
    """How a new revision replaces the old one."""

    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"
    CANARY = "Canary"


IntOrPercent = Annotated[str, StringConstraints(pattern=r"^([0-9]+|[0-9]{1,3}%)$")]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class Shadow(ApiModel):
    """The shadow phase: the stable pods mirror a share of their live requests to the candidate, off the request
    path (a client never waits for, nor sees, the candidate), and compare its answers with their own."""

    percent: Annotated[int, Field(ge=1, le=100)] = 20
    """Share of live requests each stable pod mirrors to the candidate, in percent."""
    duration_seconds: Annotated[int, Field(ge=10, le=86400)] = 60
    """How long the shadow phase lasts at least (counted from the candidate's pods being available); it ends
    once every criterion holds over at least analysis.minRequests requests."""


class CanaryStep(ApiModel):
    """One canary step: the candidate takes this share of live traffic for pauseSeconds."""

    weight: Annotated[int, Field(ge=1, le=90)]
    """Candidate's share of live traffic in percent. Without a Gateway API route the share comes from replica
    counts: the stable Deployment keeps its replicas and the candidate gets round(replicas * weight / (100 -
    weight)) of its own (at least 1), so the share is quantized (status.rollout.weight says what it is)."""
    pause_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    """How long the step holds at least (from the candidate's pods being available) before the next one."""


class Comparison(StrEnum):
    """How two answers to one mirrored request are compared, row by row."""

    AUTO = "Auto"
    """Top1 for an output with more than one value per row (a classifier), else Tolerance."""
    TOP1 = "Top1"
    """The rows agree when their largest output is at the same index."""
    TOLERANCE = "Tolerance"
    """The rows agree when every value is within absoluteTolerance + relativeTolerance * |stable value|."""


class Analysis(ApiModel):
    """What the candidate must show, in every phase, to go on: each criterion is judged over the phase's own
    requests (counted from the phase's start, not over the pods' lifetime) once it has seen minRequests of
    them; the first one that fails rolls the candidate back, and a phase that cannot judge them in time
    (inconclusiveAfterSeconds) rolls it back too. The figures come from the serving pods' metrics endpoints, or
    from Prometheus when the operator's chart names one (analysis.prometheus.url)."""

    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Requests a criterion needs in the current phase before it is judged (mirrored requests for agreement;
    requests the candidate answered for error rate; for the latency ratio, requests on each side, and at least
    ceil(5 / (1 - latencyQuantile)) of them)."""
    max_error_rate: Share = 0.01
    """Largest share of the candidate's requests that may fail (5xx, or no answer to a mirrored request)."""
    max_latency_ratio: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0
    """Largest candidate latency quantile (latencyQuantile, p99 by default) relative to the stable revision's,
    both from the servers' latency histograms over the same window (the current phase)."""
    latency_quantile: Annotated[float, Field(ge=0.5, le=0.999)] = 0.99
    """The latency quantile compared (0.99: p99). The ratio is judged once each side has at least 5 requests
    above it in the phase, i.e. max(minRequests, ceil(5 / (1 - latencyQuantile))) requests each (500 for p99,
    100 for p95): with fewer, the quantile of a histogram is the slowest request or next to it, and one
    scheduler hiccup would decide the verdict. Until then the criterion is Pending and the condition says how
    many requests it has and needs."""
    min_agreement: Share = 0.99
    """Smallest share of mirrored rows on which the candidate's output agrees with the stable revision's."""
    comparison: Comparison = Comparison.AUTO
    """Auto, Top1 (classifiers) or Tolerance (regression outputs)."""
    relative_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Tolerance comparison: allowed difference relative to the stable value."""
    absolute_tolerance: Annotated[float, Field(ge=0.0)] = 0.01
    """Tolerance comparison: allowed absolute difference."""
    inconclusive_after_seconds: Annotated[int, Field(ge=10, le=604800)] = 600
    """How long a phase may go on after its hold time without every criterion judged (fewer than minRequests
    requests, e.g. no traffic) before the rollout is inconclusive: the candidate is rolled back (reason
    AnalysisInconclusive) and the stable revision keeps serving. Default 600 (10 minutes)."""


GatewaySectionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
# A Gateway API hostname (RFC 1123, optionally with one leading wildcard label), as HTTPRoute.spec.hostnames has it.
Hostname = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", max_length=253
    ),
]


class GatewayParentRef(ApiModel):
    """A Gateway the HTTPRoute attaches to (Gateway API ParentReference, kind Gateway)."""

    name: DnsSubdomain
    """Name of the Gateway."""
    namespace: DnsLabel | None = None
    """Namespace of the Gateway (unset: the ModelDeployment's). Another namespace needs the platform's
    policy.allowCrossNamespaceGateways, and the Gateway's listener must admit routes from this namespace
    (allowedRoutes)."""
    section_name: GatewaySectionName | None = None
    """Listener of the Gateway to attach to (unset: every listener that admits the route)."""


class GatewayAPIRouting(ApiModel):
    """Exact per-request weights through a Gateway API HTTPRoute (gateway.networking.k8s.io/v1) the operator
    creates and owns, named like the ModelDeployment: its backends are the stable Service (<name>) and the
    candidate's (<name>-canary), weighted candidate w / stable 100-w at each canary step, candidate 0 in the
    shadow phase, stable 100 otherwise. Needs the Gateway API CRDs on the cluster and a Gateway implementation
    that honours backendRef weights."""

    parent_refs: Annotated[list[GatewayParentRef], Field(min_length=1, max_length=8)]
    """Gateways (and listeners) the route attaches to."""
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = Field(default_factory=list)
    """Hostnames the route matches (unset: those of the listeners)."""


class TrafficRouting(ApiModel):
    """How the candidate gets its share of live traffic (unset: from replica counts behind the one Service)."""

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    """A Gateway API HTTPRoute with exact weights."""


class Canary(ApiModel):
    """A verified rollout: shadow, canary steps, promotion, judged by the analysis; a failed criterion scales
    the candidate to zero and leaves the stable revision serving all traffic. Two Deployments serve behind the
    one Service: <name> (stable) and <name>-canary (candidate). Manual override: annotate the ModelDeployment
    modelship.io/promote=<revision> (promote without waiting) or modelship.io/abort=<revision> (roll back)."""

    shadow: Shadow | None = None
    """Start with a shadow phase (unset: go straight to the canary steps)."""
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=10)] = Field(
        default_factory=lambda: [CanaryStep(weight=50)]
    )
    """Canary steps in order; after the last one holds, the candidate is promoted."""
    analysis: Analysis = nested(Analysis)
    """Criteria the candidate must meet."""
    traffic_routing: TrafficRouting | None = None
    """Exact traffic weights through a Gateway API HTTPRoute (unset: weights from replica counts)."""

    def gateway_api(self) -> GatewayAPIRouting | None:
        """The HTTPRoute settings, when the spec asks for one."""
        return self.traffic_routing.gateway_api if self.traffic_routing else None


ROLLOUT_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.strategy == 'Canary' || !has(self.canary)",
        message="canary is read only with strategy Canary",
        check=lambda m: m.strategy == RolloutStrategy.CANARY or m.canary is None,
        field_path=".canary",
    ),
)


class Rollout(ApiModel):
    """Rollout of a new revision; with RollingUpdate the previous revision serves until the new one is available."""

    model_config = ConfigDict(json_schema_extra=rules_schema(ROLLOUT_RULES))

    strategy: RolloutStrategy = RolloutStrategy.ROLLING_UPDATE
    """RollingUpdate (zero downtime, default), Recreate, or Canary (shadow, canary steps and analysis, then
    promotion or automatic rollback; the first revision of a ModelDeployment is served straight away)."""
    canary: Canary | None = None
    """Phases and analysis of the Canary strategy (defaults when unset)."""
    max_surge: IntOrPercent = "25%"
    """Extra pods during a rolling update (number or percent)."""
    max_unavailable: IntOrPercent = "0"
    """Pods that may be unavailable during a rolling update (number or percent)."""
    progress_deadline_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    """A rollout that makes no progress this long is reported Stalled (the previous pods keep serving)."""
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Old ReplicaSets kept for rollback."""

    @model_validator(mode="after")
    def _rules(self) -> Rollout:
        enforce(self, ROLLOUT_RULES)
        return self

    def canary_spec(self) -> Canary:
        """The Canary strategy's settings (the defaults when the spec leaves them out)."""
        return self.canary or Canary()


class ServiceType(StrEnum):
    """Kubernetes Service type."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ServiceSpec(ApiModel):
    """The Service in front of the serving pods."""

    type: ServiceType = ServiceType.CLUSTER_IP
    """ClusterIP, NodePort or LoadBalancer."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the Service (e.g. for a cloud load balancer)."""


DISRUPTION_RULES: tuple[Rule, ...] = (
    Rule(
        cel="!(has(self.minAvailable) && has(self.maxUnavailable))",
        message="set at most one of minAvailable and maxUnavailable",
        check=lambda m: m.min_available is None or m.max_unavailable is None,
        field_path=".minAvailable",
    ),
)


class DisruptionBudget(ApiModel):
    """A PodDisruptionBudget for the serving pods (created when more than one replica can run)."""

    model_config = ConfigDict(json_schema_extra=rules_schema(DISRUPTION_RULES))

    enabled: StrictBool = True
    """Create the PDB whenever the Deployment can have more than one replica."""
    min_available: IntOrPercent | None = None
    """Pods that must stay available during voluntary disruptions."""
    max_unavailable: IntOrPercent | None = None
    """Pods that may be disrupted at once (default 1 when neither is set)."""

    @model_validator(mode="after")
    def _rules(self) -> DisruptionBudget:
        enforce(self, DISRUPTION_RULES)
        return self


class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy that admits traffic to the serving and metrics ports only from the listed sources."""

    enabled: StrictBool = False
    """Create the NetworkPolicy."""
    allow_from_namespace_labels: dict[str, str] | None = None
    """Namespaces (by label) whose pods may call the model; unset allows the ModelDeployment's own namespace."""
    allow_from_pod_labels: dict[str, str] | None = None
    """Pods (by label) that may call the model; unset allows all pods of the allowed namespaces."""
    allow_metrics_from_namespace_labels: dict[str, str] | None = None
    """Namespaces (by label) whose pods may scrape the metrics port (e.g. Prometheus'); unset allows the same
    pods as the model's port."""


# A byte count: an integer of at least 1000 bytes, or one with a binary (Ki/Mi/Gi) or decimal (k/M/G) suffix.
ByteSize = Annotated[str, StringConstraints(pattern=r"^([1-9][0-9]{3,12}|[1-9][0-9]{0,6}(Ki|Mi|Gi|k|M|G))$")]


class RequestLimits(ApiModel):
    """Bounds on what clients can make one model server hold. Besides these, the server keeps budgets of request
    bytes in flight and of decoded tensor bytes, sized from its memory limit (resources.limits.memory): past
    them requests get 429 with Retry-After instead of the pod being OOM-killed."""

    max_request_bytes: ByteSize | None = None
    """Largest request body, e.g. 16Mi (413 above it). Default: from the memory limit (about 24Mi at 512Mi, at
    most 64Mi). A value larger than the memory limit allows is lowered to what it allows (the server logs it)."""
    max_queued_requests: Annotated[int, Field(ge=1, le=100_000)] = 512
    """Requests waiting for the model; more get 429 at once."""
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024
    """Open client connections per pod; at the limit the longest-idle one is closed, else a new one gets 429."""
    request_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """A request must be received and answered within this (408 while receiving, 504 after)."""


class Batching(ApiModel):
    """Dynamic batching in the model server: concurrent requests coalesced into one invoke."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Largest batch the server forms."""
    max_wait_microseconds: Annotated[int, Field(ge=0, le=1_000_000)] = 500
    """Longest a request waits for others to join its batch."""


SERVING_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.metricsPort != self.port",
        message="metricsPort must differ from port",
        check=lambda m: m.metrics_port != m.port,
        field_path=".metricsPort",
    ),
)


class Serving(ApiModel):
    """How the optimized model is served."""

    model_config = ConfigDict(json_schema_extra=rules_schema(SERVING_RULES))

    protocol: Protocol = Protocol.V2
    """v2 (Open Inference Protocol) or tfserving (TF Serving REST): the endpoint shown in status.url."""
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    """Container and Service port (inference)."""
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9090
    """Container port of /metrics and the health checks the probes use; not exposed by the Service."""
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Desired replicas (ignored while autoscaling is enabled); the scale subresource writes this field."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    """Runtime image when build is disabled (default: the operator's configured serving image)."""
    resources: ResourceRequirements = nested(
        lambda: ResourceRequirements(requests={"cpu": "250m", "memory": "256Mi"}, limits={"memory": "512Mi"})
    )
    """Resources of the model server container."""
    hardware: Hardware = nested(Hardware)
    """Hardware target and placement."""
    autoscaling: Autoscaling = nested(Autoscaling)
    """Horizontal autoscaling."""
    rollout: Rollout = nested(Rollout)
    """Rollout of new revisions."""
    service: ServiceSpec = nested(ServiceSpec)
    """The Service."""
    disruption_budget: DisruptionBudget = nested(DisruptionBudget)
    """PodDisruptionBudget."""
    network_policy: NetworkPolicySpec = nested(NetworkPolicySpec)
    """NetworkPolicy."""
    batching: Batching = nested(Batching)
    """Dynamic batching."""
    limits: RequestLimits = nested(RequestLimits)
    """Bounds on request size, queue, connections and time."""
    service_account_name: DnsSubdomain | None = None
    """ServiceAccount of serving pods (no API token is mounted either way)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to serving pods."""
    shm_size: Quantity | None = None
    """Size of a memory-backed /dev/shm, if the model needs one."""

    @model_validator(mode="after")
    def _rules(self) -> Serving:
        enforce(self, SERVING_RULES)
        return self
