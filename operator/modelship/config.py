"""Operator-wide settings (from the Helm chart's values via environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = dict(os.environ if env is None else env)
        d = Images()
        images = Images(
            operator=e.get("MODELSHIP_OPERATOR_IMAGE", d.operator),
            optimizer=e.get("MODELSHIP_OPTIMIZER_IMAGE", d.optimizer),
            serving=e.get("MODELSHIP_SERVING_IMAGE", d.serving),
            buildkit=e.get("MODELSHIP_BUILDKIT_IMAGE", d.buildkit),
            kaniko=e.get("MODELSHIP_KANIKO_IMAGE", d.kaniko),
            pull_policy=e.get("MODELSHIP_IMAGE_PULL_POLICY", d.pull_policy),
        )
        base = cls()
        return cls(
            images=images,
            artifact_storage_size=e.get("MODELSHIP_ARTIFACT_STORAGE_SIZE", base.artifact_storage_size),
            artifact_storage_class=e.get("MODELSHIP_ARTIFACT_STORAGE_CLASS") or None,
            job_ttl_seconds=int(e.get("MODELSHIP_JOB_TTL_SECONDS", base.job_ttl_seconds)),
            max_job_attempts=int(e.get("MODELSHIP_MAX_JOB_ATTEMPTS", base.max_job_attempts)),
            retry_base_seconds=float(e.get("MODELSHIP_RETRY_BASE_SECONDS", base.retry_base_seconds)),
            resync_seconds=float(e.get("MODELSHIP_RESYNC_SECONDS", base.resync_seconds)),
            cluster_domain=e.get("MODELSHIP_CLUSTER_DOMAIN", base.cluster_domain),
        )
