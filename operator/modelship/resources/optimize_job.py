"""The optimization Job: fetch and verify the model, run the steps, evaluate, gate, write artifact + report.

Its container writes the one-line optimization Summary to /dev/termination-log, which the operator reads
from the finished Pod.
"""

from __future__ import annotations

import json
from typing import Any

from ..api.modeldeployment import ModelDeployment
from ..api.report import EXIT_CODES, FailureKind
from ..config import OperatorConfig
from .meta import (
    container_security_context,
    optimize_job_name,
    pod_security_context,
)
from .stage_job import fail_job_on_exit_codes, stage_job
from .volumes import artifact_volume, source_volumes, tmp_volume


def artifact_dir(config: OperatorConfig, revision: str) -> str:
    """Where a revision's optimized artifact and report live in the artifact claim."""
    return f"{config.artifacts_mount}/{revision}"


def _credential_env(md: ModelDeployment) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """envFrom entries for the model's (and data sets') credential Secrets; CA bundle as a file."""
    env_from: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    creds = [md.spec.model.credentials]
    data = md.spec.optimization.data
    creds += [d.credentials for d in (data.calibration, data.evaluation, data.fine_tune) if d is not None]
    seen: set[str] = set()
    for c in creds:
        if c is None:
            continue
        if c.secret_ref is not None and c.secret_ref.name not in seen:
            seen.add(c.secret_ref.name)
            env_from.append({"secretRef": {"name": c.secret_ref.name}})
    model_creds = md.spec.model.credentials
    if model_creds is not None and model_creds.endpoint:
        env.append({"name": "MODELSHIP_STORAGE_ENDPOINT", "value": model_creds.endpoint})
    if model_creds is not None and model_creds.ca_bundle_ref is not None:
        env.append({"name": "MODELSHIP_CA_BUNDLE", "value": "/etc/modelship/ca/ca.crt"})
    return env_from, env


def optimize_job(md: ModelDeployment, revision: str, config: OperatorConfig, attempt: int = 1) -> dict[str, Any]:
    """The optimization Job manifest for one revision (attempt > 1 after a failed Job)."""
    spec = md.spec
    job = spec.optimization.job
    out = artifact_dir(config, revision)
    args = [
        "optimize",
        "--model", spec.model.uri,
        "--format", spec.model.format.value,
        "--optimization-json", json.dumps(spec.optimization.wire(), sort_keys=True, separators=(",", ":")),
        "--out", out,
        "--pvc-root", config.pvc_root,
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    if spec.model.digest:
        args += ["--digest", spec.model.digest]
    volumes, mounts = source_volumes(md, config)
    volumes = [artifact_volume(md, read_only=False), tmp_volume(), *volumes]
    mounts = [
        {"name": "artifacts", "mountPath": config.artifacts_mount},
        {"name": "tmp", "mountPath": "/tmp"},
        *mounts,
    ]
    env_from, env = _credential_env(md)
    env = [
        {"name": "TF_USE_LEGACY_KERAS", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        *env,
    ]
    creds = spec.model.credentials
    if creds is not None and creds.ca_bundle_ref is not None:
        volumes.append(
            {
                "name": "ca-bundle",
                "configMap": {
                    "name": creds.ca_bundle_ref.name,
                    "items": [{"key": creds.ca_bundle_ref.key, "path": "ca.crt"}],
                },
            }
        )
        mounts.append({"name": "ca-bundle", "mountPath": "/etc/modelship/ca", "readOnly": True})
    metric = spec.optimization.metric
    if metric.code_ref is not None:
        volumes.append({"name": "metric-code", "configMap": {"name": metric.code_ref.name}})
        mounts.append({"name": "metric-code", "mountPath": "/opt/modelship/metric", "readOnly": True})
        env.append({"name": "PYTHONPATH", "value": "/opt/modelship/metric"})
    container: dict[str, Any] = {
        "name": "optimizer",
        "image": job.image or config.images.optimizer,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": (job.resources.wire() if job.resources else {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        }),
    }  # fmt: skip
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if creds is not None and creds.service_account_name:
        pod_spec["serviceAccountName"] = creds.service_account_name
    return stage_job(
        md,
        name=optimize_job_name(md, revision, attempt),
        component="optimizer",
        revision=revision,
        attempt=attempt,
        settings=job,
        config=config,
        pod_spec=pod_spec,
        # the optimizer exits with this code when the input is at fault (model missing, digest mismatch, a model
        # that cannot load, bad data)
        failure_rules=[fail_job_on_exit_codes("optimizer", [EXIT_CODES[FailureKind.PERMANENT]])],
    )
