"""Serving objects: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy.

One Deployment per ModelDeployment (stable name, so an HPA and kubectl keep pointing at it); a new revision
changes its pod template, and the rolling update keeps the previous revision's pods serving until the new
ones are available.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..api.common import ResourceRequirements
from ..api.modeldeployment import ModelDeployment
from ..api.optimization import ExportFormat
from ..api.serving import HardwareTarget, RolloutStrategy, ServiceType, Serving
from ..config import OperatorConfig
from .artifact import MODEL_DIR, artifact_name, pull_init_container
from .build_job import runtime_image
from .kinds import DEPLOYMENT, HORIZONTAL_POD_AUTOSCALER, NETWORK_POLICY, POD_DISRUPTION_BUDGET, SERVICE
from .meta import (
    NAME_LABEL,
    REVISION_LABEL,
    SERVER_NAME,
    SHADOW_NAME,
    TEMPLATE_ANNOTATION,
    container_security_context,
    labels,
    object_meta,
    pod_security_context,
    selector_labels,
    serving_name,
    tolerations_wire,
)
from .optimize_job import artifact_dir
from .volumes import artifact_volume

HEALTH_LIVE = "/v2/health/live"
HEALTH_READY = "/v2/health/ready"


@dataclass(frozen=True)
class ServedArtifact:
    """The artifact a build-less revision serves: its pinned OCI reference and content digest."""

    reference: str
    """oci://REPOSITORY@sha256:... (the optimization Job's push)."""
    digest: str | None = None
    """sha256 of the artifact's content, checked again after the pull."""


def _int_or_percent(value: str) -> int | str:
    return value if value.endswith("%") else int(value)


def _scheduling(md: ModelDeployment) -> dict[str, Any]:
    hw = md.spec.serving.hardware
    node_selector = dict(hw.node_selector)
    tolerations = tolerations_wire(hw.tolerations)
    if hw.target == HardwareTarget.ARM64:
        node_selector["kubernetes.io/arch"] = "arm64"
    elif hw.target == HardwareTarget.GPU:
        tolerations.append({"key": hw.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    else:
        node_selector.setdefault("kubernetes.io/arch", "amd64")
    out: dict[str, Any] = {}
    if node_selector:
        out["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        out["tolerations"] = tolerations
    if hw.runtime_class_name:
        out["runtimeClassName"] = hw.runtime_class_name
    return out


DEFAULT_SERVING_RESOURCES = Serving().resources
"""spec.serving.resources when the spec leaves it out (the CRD's default)."""
SAVEDMODEL_RESOURCES = ResourceRequirements(requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "1Gi"})
"""The server's resources for a savedmodel export whose spec keeps the default ones: TensorFlow alone keeps about
630 MB resident (250 MiB charged to the cgroup), so at the default 512Mi limit the server starts with its request
budgets at their minimum (requests over 1 MiB refused with 413); at 1Gi they are about 17 MiB."""


def server_resources(md: ModelDeployment) -> ResourceRequirements:
    """The model server container's resources as the pods get them: spec.serving.resources, but the default ones
    of a savedmodel export are SAVEDMODEL_RESOURCES (a message that names the pods' memory limit reads it here)."""
    resources = md.spec.serving.resources
    if md.spec.optimization.export.format == ExportFormat.SAVEDMODEL and resources == DEFAULT_SERVING_RESOURCES:
        return SAVEDMODEL_RESOURCES
    return resources


def _resources(md: ModelDeployment) -> dict[str, Any]:
    serving = md.spec.serving
    res = server_resources(md).wire()
    if serving.hardware.target == HardwareTarget.GPU:
        gpu = serving.hardware.gpu
        res.setdefault("limits", {})[gpu.resource_name] = str(gpu.count)
        res.setdefault("requests", {})[gpu.resource_name] = str(gpu.count)
    return {k: dict(sorted(v.items())) for k, v in res.items() if v}


def deployment(
    md: ModelDeployment,
    revision: str,
    config: OperatorConfig,
    image: str | None,
    replicas: int | None,
    artifact: ServedArtifact | None = None,
    mirror_from: str | None = None,
) -> dict[str, Any]:
    """The serving Deployment for ``revision``.

    ``image`` is the built image (repository@digest) when the build stage ran. Without a build the stock runtime
    image serves the artifact: each pod's init container pulls its own copy of ``artifact`` (the OCI artifact the
    optimization Job pushed, by digest), or, when none was pushed, the pods mount the artifact claim (one node).
    ``replicas`` is None while an HPA owns the count (the field is then left out, so server-side apply never
    fights the HPA). ``mirror_from`` (Canary strategy) is where the pods read, every second, the mirror
    settings a candidate revision offers: they mirror a share of their requests to it while one runs.
    """
    serving = md.spec.serving
    name = serving_name(md)
    port = serving.port
    limits = serving.limits
    # interpreter workers and memory budgets: the server sizes them from the container's CPU and memory limits
    # (cgroup) itself
    args = ["serve", "--name", name, "--port", str(port), "--host", "0.0.0.0",
            "--metrics-port", str(serving.metrics_port),
            "--max-batch-size", str(serving.batching.max_batch_size),
            "--batch-timeout-us", str(serving.batching.max_wait_microseconds),
            "--max-queue", str(limits.max_queued_requests),
            "--max-connections", str(limits.max_connections),
            "--request-timeout-s", str(limits.request_timeout_seconds)]  # fmt: skip
    if limits.max_request_bytes is not None:
        args += ["--max-request-bytes", limits.max_request_bytes]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    init_containers: list[dict[str, Any]] = []
    if image is None:
        image = serving.image or runtime_image(md, config)
        if artifact is not None:
            init, extra = pull_init_container(md, config, image, artifact.reference, artifact.digest)
            init_containers.append(init)
            volumes += [{"name": "model", "emptyDir": {"sizeLimit": config.artifact_storage_size}}, *extra]
            mounts.append({"name": "model", "mountPath": MODEL_DIR, "readOnly": True})
        else:
            volumes.append(artifact_volume(md, read_only=True))
            mounts.append({"name": "artifacts", "mountPath": MODEL_DIR, "subPath": revision, "readOnly": True})
        args += ["--model", f"{MODEL_DIR}/{artifact_name(md)}"]
    # a built image carries its model and names it in MODELSHIP_MODEL (build/context.py): no --model
    if mirror_from:
        args += ["--mirror-config", mirror_from]
    if serving.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": serving.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    probe_port = "metrics"  # health is on the metrics port too, which inference traffic does not reach
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": serving.metrics_port, "protocol": "TCP"},
        ],
        "env": [{"name": "MODELSHIP_REVISION", "value": revision}],
        "resources": _resources(md),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "startupProbe": {"httpGet": {"path": HEALTH_READY, "port": probe_port},
                         "periodSeconds": 2, "failureThreshold": 150, "timeoutSeconds": 2},
        "readinessProbe": {"httpGet": {"path": HEALTH_READY, "port": probe_port},
                           "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 2},
        "livenessProbe": {"httpGet": {"path": HEALTH_LIVE, "port": probe_port},
                          "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
    }  # fmt: skip
    pod_labels = labels(md, "server", revision)
    pod_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(serving.metrics_port),
        "prometheus.io/path": "/metrics",
        **serving.pod_annotations,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
        **_scheduling(md),
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if serving.service_account_name:
        pod_spec["serviceAccountName"] = serving.service_account_name
    rollout = serving.rollout
    # the Canary strategy verifies a new revision beside this Deployment; promoting rolls it as RollingUpdate
    kind = RolloutStrategy.ROLLING_UPDATE if rollout.strategy == RolloutStrategy.CANARY else rollout.strategy
    strategy: dict[str, Any] = {"type": kind.value}
    if kind == RolloutStrategy.ROLLING_UPDATE:
        strategy["rollingUpdate"] = {
            "maxSurge": _int_or_percent(rollout.max_surge),
            "maxUnavailable": _int_or_percent(rollout.max_unavailable),
        }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md)},
        "strategy": strategy,
        "progressDeadlineSeconds": rollout.progress_deadline_seconds,
        "revisionHistoryLimit": rollout.revision_history_limit,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": dict(sorted(pod_annotations.items()))},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        **DEPLOYMENT.type_meta(),
        "metadata": object_meta(md, name, "server", revision, {TEMPLATE_ANNOTATION: template_digest(spec["template"])}),
        "spec": spec,
    }


def template_digest(template: dict[str, Any]) -> str:
    """A digest of a pod template as the operator renders it (TEMPLATE_ANNOTATION on the serving Deployment; the
    mount check's memory of a template it looked at): equal templates, equal digests."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def desired_replicas(md: ModelDeployment) -> int | None:
    """Replicas to write on the Deployment: 0 when suspended, None while an HPA owns the count."""
    if md.spec.suspend:
        return 0
    if md.spec.serving.autoscaling.enabled:
        return None
    return md.spec.serving.replicas


def service(md: ModelDeployment) -> dict[str, Any]:
    serving = md.spec.serving
    meta = object_meta(md, serving_name(md), "server", annotations=serving.service.annotations or None)
    return {
        **SERVICE.type_meta(),
        "metadata": meta,
        "spec": {
            "type": serving.service.type.value,
            "selector": selector_labels(md),
            "ports": [{"name": "http", "port": serving.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def horizontal_pod_autoscaler(md: ModelDeployment) -> dict[str, Any] | None:
    auto = md.spec.serving.autoscaling
    if not auto.enabled or md.spec.suspend:
        return None
    metrics: list[dict[str, Any]] = []
    if auto.target_cpu_utilization_percentage is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": auto.target_cpu_utilization_percentage}}})  # fmt: skip
    if auto.target_memory_utilization_percentage is not None:
        metrics.append({"type": "Resource", "resource": {"name": "memory", "target": {
            "type": "Utilization", "averageUtilization": auto.target_memory_utilization_percentage}}})  # fmt: skip
    return {
        **HORIZONTAL_POD_AUTOSCALER.type_meta(),
        "metadata": object_meta(md, serving_name(md), "server"),
        "spec": {
            "scaleTargetRef": {**DEPLOYMENT.type_meta(), "name": serving_name(md)},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": auto.scale_down_stabilization_seconds}},
        },
    }


def pod_disruption_budget(md: ModelDeployment) -> dict[str, Any] | None:
    """A PDB, only when more than one replica can run (a PDB over one replica blocks node drains)."""
    serving = md.spec.serving
    budget = serving.disruption_budget
    most = serving.autoscaling.max_replicas if serving.autoscaling.enabled else serving.replicas
    if not budget.enabled or most < 2 or md.spec.suspend:
        return None
    spec: dict[str, Any] = {"selector": {"matchLabels": selector_labels(md)}}
    if budget.min_available is not None:
        spec["minAvailable"] = _int_or_percent(budget.min_available)
    else:
        spec["maxUnavailable"] = _int_or_percent(budget.max_unavailable or "1")
    return {
        **POD_DISRUPTION_BUDGET.type_meta(),
        "metadata": object_meta(md, serving_name(md), "server"),
        "spec": spec,
    }


def network_policy(md: ModelDeployment, operator_namespace: str | None = None) -> dict[str, Any] | None:
    """Ingress to every serving pod of the ModelDeployment: the stable Deployment's and, under the Canary
    strategy, the candidate's (live or shadow; its pods carry another app.kubernetes.io/name while the Service
    does not select them). The model's port admits the allowed callers; the metrics port the scrapers. With the
    Canary strategy the ModelDeployment's own serving pods (the stable ones: they mirror requests to the
    candidate and read its offer on the metrics port) may reach both ports, and the operator's namespace
    (``operator_namespace``) the metrics port: the analysis reads every serving pod's figures there."""
    policy = md.spec.serving.network_policy
    if not policy.enabled:
        return None
    peer: dict[str, Any] = {}
    if policy.allow_from_namespace_labels is not None:
        peer["namespaceSelector"] = {"matchLabels": dict(sorted(policy.allow_from_namespace_labels.items()))}
    else:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": md.metadata.namespace or ""}}
    if policy.allow_from_pod_labels is not None:
        peer["podSelector"] = {"matchLabels": dict(sorted(policy.allow_from_pod_labels.items()))}
    scrapers = peer
    metrics_from = policy.allow_metrics_from_namespace_labels
    if metrics_from is not None:
        scrapers = {"namespaceSelector": {"matchLabels": dict(sorted(metrics_from.items()))}}
    serving = md.spec.serving
    callers, readers = [peer], [scrapers]
    if serving.rollout.strategy == RolloutStrategy.CANARY:
        own_pods = {"podSelector": {"matchLabels": selector_labels(md)}}  # this namespace's stable serving pods
        callers.append(own_pods)
        readers.append(own_pods)
        if operator_namespace:
            readers.append({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}})
    pods = {k: v for k, v in selector_labels(md).items() if k != NAME_LABEL}
    return {
        **NETWORK_POLICY.type_meta(),
        "metadata": object_meta(md, serving_name(md), "server"),
        "spec": {
            "podSelector": {
                "matchLabels": pods,
                "matchExpressions": [{"key": NAME_LABEL, "operator": "In", "values": [SERVER_NAME, SHADOW_NAME]}],
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": callers, "ports": [{"port": serving.port, "protocol": "TCP"}]},
                {"from": readers, "ports": [{"port": serving.metrics_port, "protocol": "TCP"}]},
            ],
        },
    }


def service_url(md: ModelDeployment, config: OperatorConfig) -> str:
    serving = md.spec.serving
    host = f"{serving_name(md)}.{md.metadata.namespace}.svc.{config.cluster_domain}:{serving.port}"
    path = (
        f"/v2/models/{md.metadata.name}/infer"
        if serving.protocol.value == "v2"
        else f"/v1/models/{md.metadata.name}:predict"
    )
    return f"http://{host}{path}"


__all__ = [
    "REVISION_LABEL",
    "ServiceType",
    "artifact_dir",
    "deployment",
    "desired_replicas",
    "horizontal_pod_autoscaler",
    "network_policy",
    "pod_disruption_budget",
    "service",
    "service_url",
]
