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
from .artifact import push_args_and_mounts
from .meta import (
    container_security_context,
    optimize_job_name,
    pod_security_context,
)
from .stage_job import fail_job_on_exit_codes, stage_job
from .volumes import artifact_volume, source_access, source_volumes, tmp_volume


def artifact_dir(config: OperatorConfig, revision: str) -> str:
    """Where a revision's optimized artifact and report live in the artifact claim."""
    return f"{config.artifacts_mount}/{revision}"


def optimize_job(md: ModelDeployment, revision: str, config: OperatorConfig, attempt: int = 1) -> dict[str, Any]:
    """The optimization Job manifest for one revision (attempt > 1 after a failed Job)."""
    spec = md.spec
    job = spec.optimization.job
    out = artifact_dir(config, revision)
    args = [
        "optimize",
        "--model", spec.model.uri,
        "--optimization-json", json.dumps(spec.optimization.wire(), sort_keys=True, separators=(",", ":")),
        "--out", out,
        "--pvc-root", config.pvc_root,
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    if spec.model.format is not None:
        args += ["--format", spec.model.format.value]
    if spec.model.digest:
        args += ["--digest", spec.model.digest]
    sources, source_vols, source_mounts = source_access(md)
    args += ["--sources-json", json.dumps(sources, sort_keys=True, separators=(",", ":"))]
    push_args, push_vols, push_mounts = push_args_and_mounts(md, config, revision)
    args += push_args
    if spec.model.allow_code:  # the platform's policy allowed it (the operator refuses the spec otherwise)
        args.append("--allow-code")
    volumes, mounts = source_volumes(md, config)
    volumes = [artifact_volume(md, read_only=False), tmp_volume(), *volumes, *source_vols, *push_vols]
    mounts = [
        {"name": "artifacts", "mountPath": config.artifacts_mount},
        {"name": "tmp", "mountPath": "/tmp"},
        *mounts,
        *source_mounts,
        *push_mounts,
    ]
    env = [
        {"name": "TF_USE_LEGACY_KERAS", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
    ]
    creds = spec.model.credentials
    metric = spec.optimization.metric
    if metric.code_ref is not None and spec.model.allow_code:  # code runs only where the spec opted in
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
