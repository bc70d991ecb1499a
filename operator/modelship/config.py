"""Operator-wide settings (from the Helm chart's values via environment variables).

``ENV`` names every variable the operator reads; the chart sets exactly these (tests/chart/test_render.py checks
both directions, and that each one changes the configuration).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .api.build import REGISTRY_PREFIX_PATTERN, REPOSITORY_MAX_LENGTH, BuildEngine


@dataclass(frozen=True)
class Images:
    """Container images the operator puts into the objects it creates (by digest where the chart pins one)."""

    operator: str = "modelship/operator:0.1.0"
    """The operator's own image: the build Job's init container renders the build context with it."""
    optimizer: str = "modelship/optimizer:0.1.0"
    serving: str = "modelship/serving:0.1.0"
    buildkit: str = "modelship/buildkit:0.1.0"
    kaniko: str = "modelship/kaniko:0.1.0"
    pull_policy: str = "IfNotPresent"


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


def _text(raw: str) -> str:
    return raw


ENV: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "MODELSHIP_OPERATOR_IMAGE": ("images.operator", _text),
    "MODELSHIP_OPTIMIZER_IMAGE": ("images.optimizer", _text),
    "MODELSHIP_SERVING_IMAGE": ("images.serving", _text),
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
}
"""Environment variable -> (OperatorConfig field, dotted for nested ones; parser)."""
