"""Operator-wide settings (from the Helm chart's values via environment variables).

``ENV`` names every variable the operator reads; the chart sets exactly these (tests/chart/test_render.py checks
both directions, and that each one changes the configuration).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .api.build import REGISTRY_PREFIX_PATTERN, REPOSITORY_MAX_LENGTH, BuildEngine
from .api.policy import Policy, Setting, parse_setting


@dataclass(frozen=True)
class Images:
    """Container images the operator puts into the objects it creates (by digest where the chart pins one)."""

    operator: str = "modelship/operator:0.1.0"
    """The operator's own image: the build Job's init container renders the build context with it."""
    optimizer: str = "modelship/optimizer:0.1.0"
    serving: str = "modelship/serving:0.1.0"
    """The serving runtime on LiteRT (no TensorFlow): serves, and is the base of, ``.tflite`` exports."""
    serving_tensorflow: str | None = None
    """The TensorFlow-capable serving runtime: serves, and is the base of, SavedModel exports (the serving image
    cannot load one). None: the optimizer image, which carries TensorFlow and the serving runtime's dependencies."""
    buildkit: str = "modelship/buildkit:0.1.0"
    kaniko: str = "modelship/kaniko:0.1.0"
    pull_policy: str = "IfNotPresent"

    def serving_for(self, *, savedmodel: bool) -> str:
        """The serving runtime image of an artifact: the TensorFlow-capable one for a SavedModel."""
        if savedmodel:
            return self.serving_tensorflow or self.optimizer
        return self.serving


@dataclass(frozen=True)
class PrometheusConfig:
    """Where the Canary analysis reads its figures when the chart names a Prometheus server (else straight from
    the serving pods' metrics endpoints)."""

    url: str | None = None
    """Base URL of the Prometheus HTTP API (http(s)://host:port[/prefix]); None: read the pods."""
    token_file: str | None = None
    """File holding a bearer token sent with every query (read at each query: a rotated token is picked up)."""
    ca_file: str | None = None
    """PEM bundle that verifies an https server (system roots when unset)."""
    revision_label: str = "modelship_io_revision"
    """Label carrying the serving pod's modelship.io/revision in Prometheus (a pod-label labelmap or a
    PodMonitor's podTargetLabels write it as modelship_io_revision)."""
    namespace_label: str = "namespace"
    """Label carrying the pod's namespace."""
    name_label: str = "modelship_io_modeldeployment"
    """Label carrying the pod's modelship.io/modeldeployment (two ModelDeployments of one namespace may serve the
    same revision)."""
    timeout_seconds: float = 5.0
    """Deadline of one query (connect, send, read)."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the pure builders need besides the ModelDeployment itself."""

    images: Images = field(default_factory=Images)
    artifact_storage_size: str = "2Gi"
    """Size of the per-ModelDeployment artifact claim (optimized models, build contexts)."""
    artifact_storage_class: str | None = None
    """StorageClass of the artifact claim (cluster default when unset)."""
    pvc_root: str = "/mnt/pvc"
    """Where Jobs mount the claims named by pvc:// URIs."""
    artifacts_mount: str = "/artifacts"
    """Where Jobs and (build disabled) serving pods mount the artifact claim."""
    job_ttl_seconds: int = 3600
    """ttlSecondsAfterFinished of stage Jobs (results are recorded in status first)."""
    max_job_attempts: int = 3
    """Jobs started per stage and revision before the ModelDeployment is Stalled."""
    retry_base_seconds: float = 10.0
    """Wait before the second attempt of a failed stage Job; doubles for each further attempt."""
    resync_seconds: float = 60.0
    """Every ModelDeployment is reconciled at least this often (drift the watches did not report)."""
    cluster_domain: str = "cluster.local"
    build_registry: str | None = None
    """Default repository prefix (e.g. registry.example.com/models): an enabled build whose spec names no
    repository pushes to <build_registry>/<namespace>/<name>. None: such a spec is Stalled (InvalidSpec)."""
    build_engine: BuildEngine = BuildEngine.BUILDKIT
    """Engine of the builds whose spec names none."""
    artifact_repository: str | None = None
    """Registry path where optimization Jobs push the artifacts of revisions served without a build (each serving
    pod pulls its own copy); unset: such revisions are served from the artifact claim (one node only)."""
    artifact_insecure_registry: bool = False
    """Talk to the artifact repository over plain HTTP."""
    operator_namespace: str | None = None
    """The operator's own namespace (the chart sets the release namespace): the revision caches live there, out
    of tenants' reach, and it is never a tenant namespace. None: no revision cache (every ModelDeployment runs
    its Jobs)."""
    revision_cache_entries: int = 64
    """Most revisions one tenant namespace's cache keeps (least recently used evicted first)."""
    revision_cache_bytes: int = 256 * 1024
    """Most bytes of entries one tenant namespace's cache keeps (a ConfigMap holds at most 1 MiB)."""
    exclude_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})
    """Namespaces the operator never acts in: a ModelDeployment there is Stalled (NamespaceExcluded) and nothing
    is created. The operator's own namespace is always excluded too (``excluded``)."""

    def excluded(self, namespace: str) -> bool:
        """The platform excludes ``namespace`` (``exclude_namespaces`` and the operator's own namespace)."""
        return namespace in self.exclude_namespaces or namespace == self.operator_namespace

    build_namespace: str | None = None
    """Where build Jobs run (the operator's own namespace in the chart): push credentials live only there, and the
    tenants' namespaces can enforce Pod Security "restricted". None: the ModelDeployment's namespace (an operator
    run outside the chart, for development)."""
    build_state_size: str = "4Gi"
    """Size limit of a build pod's BuildKit state volume (base image and model layers)."""
    build_state_size_savedmodel: str = "8Gi"
    """The same for the build of a savedmodel export, whose base is the TensorFlow-capable runtime
    (``images.serving_for(savedmodel=True)``; the optimizer image by default: about 0.75 GiB of compressed layers
    that BuildKit keeps next to 2.54 GiB unpacked, where the serving image is about 0.35 GiB)."""
    build_push_secrets: Mapping[str, str] = field(default_factory=dict)
    """Registry host -> Secret (kubernetes.io/dockerconfigjson) in the build namespace that build Jobs push to that
    registry with (and pull the base image from)."""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    """The Canary analysis' Prometheus server (unset: the pods' own metrics endpoints)."""
    policy: Policy = field(default_factory=Policy)
    """What tenants may set (``api.policy``): the operator refuses a spec that breaks it, as the chart's admission
    policy does."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """The configuration from ``ENV``'s variables (unset or empty: the default). ValueError names the variable
        whose value is not usable."""
        e = os.environ if env is None else env
        config = cls()
        for name, (path, parse) in ENV.items():
            raw = e.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from None
            config = _set(config, path, value)
        return config


def _set(config: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    return replace(config, **{head: _set(getattr(config, head), rest, value) if rest else value})


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("not an integer") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _seconds(*, zero: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ValueError("must be at least 0" if zero else "must be more than 0")
        return value

    return parse


def _registry(raw: str) -> str:
    value = raw.rstrip("/")
    if not re.fullmatch(REGISTRY_PREFIX_PATTERN, value) or len(value) > REPOSITORY_MAX_LENGTH:
        raise ValueError("not a registry host with an optional path, e.g. registry.example.com/models")
    return value


def _engine(raw: str) -> BuildEngine:
    try:
        return BuildEngine(raw)
    except ValueError:
        raise ValueError(f"not one of {', '.join(e.value for e in BuildEngine)}") from None


def _setting(setting: Setting) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        return parse_setting(setting, raw)

    return parse


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _dns_label(raw: str) -> str:
    if len(raw) > 63 or not _DNS_LABEL.match(raw):
        raise ValueError("not a namespace name")
    return raw


def _push_secrets(raw: str) -> Mapping[str, str]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError("not a JSON object of registry host -> Secret name") from None
    if not isinstance(value, dict) or not all(k and isinstance(v, str) for k, v in value.items()):
        raise ValueError("not a JSON object of registry host -> Secret name")
    bad = [v for v in value.values() if len(v) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", v)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a Secret name")
    return dict(sorted(value.items()))


def _text(raw: str) -> str:
    return raw


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError("not true or false")
    return value in ("true", "1")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _namespace(raw: str) -> str:
    if not _DNS_LABEL.match(raw):
        raise ValueError("not a namespace name (a DNS label)")
    return raw


def _namespaces(raw: str) -> frozenset[str]:
    """Comma-separated namespace names."""
    return frozenset(_namespace(n.strip()) for n in raw.split(",") if n.strip())


def _bytes(raw: str) -> int:
    value = _integer(1024)(raw)
    if value > 900 * 1024:
        raise ValueError("must be at most 921600 (a ConfigMap holds at most 1 MiB)")
    return value


def _http_url(raw: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", raw):
        raise ValueError("not an http(s):// URL without query or fragment")
    return raw.rstrip("/")


def _label_name(raw: str) -> str:
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", raw):
        raise ValueError("not a Prometheus label name")
    return raw


ENV: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "MODELSHIP_OPERATOR_IMAGE": ("images.operator", _text),
    "MODELSHIP_OPTIMIZER_IMAGE": ("images.optimizer", _text),
    "MODELSHIP_SERVING_IMAGE": ("images.serving", _text),
    "MODELSHIP_SERVING_TENSORFLOW_IMAGE": ("images.serving_tensorflow", _text),
    "MODELSHIP_BUILDKIT_IMAGE": ("images.buildkit", _text),
    "MODELSHIP_KANIKO_IMAGE": ("images.kaniko", _text),
    "MODELSHIP_IMAGE_PULL_POLICY": ("images.pull_policy", _text),
    "MODELSHIP_ARTIFACT_STORAGE_SIZE": ("artifact_storage_size", _text),
    "MODELSHIP_ARTIFACT_STORAGE_CLASS": ("artifact_storage_class", _text),
    "MODELSHIP_JOB_TTL_SECONDS": ("job_ttl_seconds", _integer(0)),
    "MODELSHIP_MAX_JOB_ATTEMPTS": ("max_job_attempts", _integer(1)),
    "MODELSHIP_RETRY_BASE_SECONDS": ("retry_base_seconds", _seconds(zero=True)),
    "MODELSHIP_RESYNC_SECONDS": ("resync_seconds", _seconds(zero=False)),
    "MODELSHIP_CLUSTER_DOMAIN": ("cluster_domain", _text),
    "MODELSHIP_BUILD_REGISTRY": ("build_registry", _registry),
    "MODELSHIP_BUILD_ENGINE": ("build_engine", _engine),
    "MODELSHIP_ARTIFACT_REPOSITORY": ("artifact_repository", _registry),
    "MODELSHIP_ARTIFACT_INSECURE_REGISTRY": ("artifact_insecure_registry", _flag),
    "MODELSHIP_OPERATOR_NAMESPACE": ("operator_namespace", _namespace),
    "MODELSHIP_REVISION_CACHE_ENTRIES": ("revision_cache_entries", _integer(1)),
    "MODELSHIP_REVISION_CACHE_BYTES": ("revision_cache_bytes", _bytes),
    "MODELSHIP_EXCLUDE_NAMESPACES": ("exclude_namespaces", _namespaces),
    "MODELSHIP_BUILD_NAMESPACE": ("build_namespace", _dns_label),
    "MODELSHIP_BUILD_PUSH_SECRETS": ("build_push_secrets", _push_secrets),
    "MODELSHIP_BUILD_STATE_SIZE": ("build_state_size", _text),
    "MODELSHIP_BUILD_STATE_SIZE_SAVEDMODEL": ("build_state_size_savedmodel", _text),
    "MODELSHIP_PROMETHEUS_URL": ("prometheus.url", _http_url),
    "MODELSHIP_PROMETHEUS_TOKEN_FILE": ("prometheus.token_file", _text),
    "MODELSHIP_PROMETHEUS_CA_FILE": ("prometheus.ca_file", _text),
    "MODELSHIP_PROMETHEUS_REVISION_LABEL": ("prometheus.revision_label", _label_name),
    "MODELSHIP_PROMETHEUS_NAMESPACE_LABEL": ("prometheus.namespace_label", _label_name),
    "MODELSHIP_PROMETHEUS_NAME_LABEL": ("prometheus.name_label", _label_name),
    "MODELSHIP_PROMETHEUS_TIMEOUT_SECONDS": ("prometheus.timeout_seconds", _seconds(zero=False)),
    **{s.env: (f"policy.{s.attribute}", _setting(s)) for s in Setting},
}
"""Environment variable -> (OperatorConfig field, dotted for nested ones; parser)."""
