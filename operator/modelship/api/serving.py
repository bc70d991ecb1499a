"""How the model is served: protocol, replicas, resources, hardware target, autoscaling, rollout, exposure."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .common import ApiModel, DnsSubdomain, Quantity, ResourceRequirements, Toleration, nested
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


IntOrPercent = Annotated[str, StringConstraints(pattern=r"^([0-9]+|[0-9]{1,3}%)$")]


class Rollout(ApiModel):
    """Rollout of a new revision; with RollingUpdate the previous revision serves until the new one is available."""

    strategy: RolloutStrategy = RolloutStrategy.ROLLING_UPDATE
    """RollingUpdate (zero downtime, default) or Recreate."""
    max_surge: IntOrPercent = "25%"
    """Extra pods during a rolling update (number or percent)."""
    max_unavailable: IntOrPercent = "0"
    """Pods that may be unavailable during a rolling update (number or percent)."""
    progress_deadline_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    """A rollout that makes no progress this long is reported Stalled (the previous pods keep serving)."""
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Old ReplicaSets kept for rollback."""


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
    """A NetworkPolicy that admits traffic to the serving port only from the listed sources."""

    enabled: StrictBool = False
    """Create the NetworkPolicy."""
    allow_from_namespace_labels: dict[str, str] | None = None
    """Namespaces (by label) whose pods may call the model; unset allows the ModelDeployment's own namespace."""
    allow_from_pod_labels: dict[str, str] | None = None
    """Pods (by label) that may call the model; unset allows all pods of the allowed namespaces."""


class Batching(ApiModel):
    """Dynamic batching in the model server: concurrent requests coalesced into one invoke."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    """Largest batch the server forms."""
    max_wait_microseconds: Annotated[int, Field(ge=0, le=1_000_000)] = 500
    """Longest a request waits for others to join its batch."""


class Serving(ApiModel):
    """How the optimized model is served."""

    protocol: Protocol = Protocol.V2
    """v2 (Open Inference Protocol) or tfserving (TF Serving REST): the endpoint shown in status.url."""
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    """Container and Service port."""
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
    service_account_name: DnsSubdomain | None = None
    """ServiceAccount of serving pods (no API token is mounted either way)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations added to serving pods."""
    shm_size: Quantity | None = None
    """Size of a memory-backed /dev/shm, if the model needs one."""
