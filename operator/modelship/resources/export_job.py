"""The export Job: in the tenant's namespace, it uploads a revision's optimized artifact from the artifact claim
(mounted read-only) to one build pod waiting for it in the build namespace (``modelship artifact send``; see
``modelship.build.handoff``). It holds no credentials: the upload token is the build Job's uid, which only lets it
hand over this one artifact, and the build pod accepts nothing but the digest the operator recorded.

Pure: a plain manifest dict; Pod Security "restricted" like every pod the operator puts in a tenant's namespace.
"""

from __future__ import annotations

from typing import Any

from ..api.jobs import JobSettings
from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .meta import container_security_context, export_job_name, pod_security_context
from .optimize_job import artifact_dir
from .stage_job import fail_job_on_exit_codes, stage_job
from .volumes import artifact_volume, tmp_volume

EXPORT_CONTAINER = "export"
EXPORT_DEADLINE_SECONDS = 600
EXPORT_RESOURCES: dict[str, Any] = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
BUILD_POD_ANNOTATION = "modelship.io/build-pod"
"""On an export Job: the build pod it uploads to (an export Job is found again by it, whatever its name)."""
EXIT_REFUSED = 1
"""The build pod refused the artifact (or the claim holds no usable output): a retry cannot help."""


def export_job(
    md: ModelDeployment, revision: str, config: OperatorConfig, *, build_pod: str, address: str, token: str,
    port: int, attempt: int,
) -> dict[str, Any]:  # fmt: skip
    """The export Job for one build pod (at ``address``:``port``, token its Job's uid)."""
    args = [
        "artifact", "send",
        "--from", artifact_dir(config, revision),
        "--to", f"http://{_host(address)}:{port}/artifact",
        "--token", token,
    ]  # fmt: skip
    container: dict[str, Any] = {
        "name": EXPORT_CONTAINER,
        "image": config.images.operator,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "volumeMounts": [
            {"name": "artifacts", "mountPath": config.artifacts_mount, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": container_security_context(),
        "resources": EXPORT_RESOURCES,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    settings = JobSettings(
        node_selector=md.spec.optimization.job.node_selector,
        tolerations=md.spec.optimization.job.tolerations,
        active_deadline_seconds=EXPORT_DEADLINE_SECONDS,
        backoff_limit=2,
    )
    pod_spec = {
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            artifact_volume(md, read_only=True),
            {**tmp_volume(), "emptyDir": {"sizeLimit": _tmp_size(config)}},
        ],
    }
    return stage_job(
        md,
        name=export_job_name(md, revision, build_pod),
        component="export",
        revision=revision,
        attempt=attempt,
        settings=settings,
        config=config,
        pod_spec=pod_spec,
        annotations={BUILD_POD_ANNOTATION: build_pod},
        failure_rules=[fail_job_on_exit_codes(EXPORT_CONTAINER, [EXIT_REFUSED])],
    )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _tmp_size(config: OperatorConfig) -> str:
    """The upload is packed in /tmp first: room for the artifact and its report."""
    return config.artifact_storage_size
