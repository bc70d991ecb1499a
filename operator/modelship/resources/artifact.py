"""Revisions served without a build (``build.enabled: false``): where the optimized artifact is pushed as an OCI
artifact, and how each serving pod pulls its own read-only copy of it (no shared ReadWriteOnce claim, so replicas
on any node work).

The artifact goes to ``spec.build.repository:<revision>`` when the spec names a repository (the build registry's
``<namespace>/<name>`` fills it in when the operator has one it may push to: ``defaults.artifact_registry``), else
to the operator's artifact repository (``MODELSHIP_ARTIFACT_REPOSITORY``) under ``<namespace>/<name>:<revision>``.
With neither, the serving pods mount the ReadWriteOnce artifact claim: they all must run on one node, and
``single_node_warning`` says so when the spec asks for more than one pod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..api.build_result import DIGEST_PATTERN
from ..api.modeldeployment import ModelDeployment
from ..api.optimization import ExportFormat
from ..api.serving import RolloutStrategy
from ..config import OperatorConfig
from .build_job import registry_host
from .defaults import artifact_registry, default_repository
from .meta import artifact_claim_name, container_security_context

MODEL_DIR = "/models"
PUSH_SECRET_MOUNT = "/var/run/modelship/push"
PULL_SECRET_MOUNT = "/var/run/modelship/pull"


@dataclass(frozen=True)
class ArtifactTarget:
    """Where the optimization Job pushes a build-less revision's artifact."""

    reference: str
    """oci://REPOSITORY:REVISION."""
    plain_http: bool


def artifact_name(md: ModelDeployment) -> str:
    """The artifact's file or directory name in the optimizer's output (export format)."""
    return "saved_model" if md.spec.optimization.export.format == ExportFormat.SAVEDMODEL else "model.tflite"


def artifact_repository(md: ModelDeployment, config: OperatorConfig) -> str | None:
    """The repository a build-less revision's artifact is pushed to (no tag); None when an image is built or no
    repository is known."""
    build = md.spec.build
    if build.enabled:
        return None
    if build.repository:
        return build.repository
    if config.artifact_repository:
        return f"{config.artifact_repository.rstrip('/')}/{md.metadata.namespace or 'default'}/{md.metadata.name}"
    return None


def artifact_target(md: ModelDeployment, config: OperatorConfig, revision: str) -> ArtifactTarget | None:
    """Where the artifact goes when no image is built; None when an image is built or no repository is known."""
    repo = artifact_repository(md, config)
    if repo is None:
        return None
    plain = md.spec.build.insecure_registry if md.spec.build.repository else config.artifact_insecure_registry
    return ArtifactTarget(f"oci://{repo}:{revision}", plain)


_DIGEST = DIGEST_PATTERN.strip("^$")
_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def pushed_here(md: ModelDeployment, config: OperatorConfig, reference: str) -> bool:
    """``reference`` is ``oci://<this ModelDeployment's artifact repository>@sha256:<64 hex>``: the only artifact
    a report of its optimization Job may name."""
    repo = artifact_repository(md, config)
    return repo is not None and re.fullmatch(f"oci://{re.escape(repo)}@{_DIGEST}", reference) is not None


def servable(md: ModelDeployment, config: OperatorConfig, reference: str) -> bool:
    """``reference`` may be served to ``md``'s pods: pushed to its repository, or (a revision cache entry of its
    namespace) to the operator's artifact repository under the same namespace, by digest."""
    if pushed_here(md, config, reference):
        return True
    if md.spec.build.enabled or md.spec.build.repository or not config.artifact_repository:
        return False
    namespace = re.escape(f"{config.artifact_repository.rstrip('/')}/{md.metadata.namespace or 'default'}/")
    return re.fullmatch(f"oci://{namespace}{_NAME}@{_DIGEST}", reference) is not None


def push_args_and_mounts(
    md: ModelDeployment, config: OperatorConfig, revision: str
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Optimizer arguments, volumes and mounts to push the artifact (nothing when an image is built)."""
    target = artifact_target(md, config, revision)
    if target is None:
        return [], [], []
    args = ["--push-to", target.reference]
    if target.plain_http:
        args.append("--push-plain-http")
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    secret = md.spec.build.push_secret_ref
    if secret is not None and md.spec.build.repository:
        volumes.append({"name": "push-credentials", "secret": {"secretName": secret.name, "defaultMode": 0o400}})
        mounts.append({"name": "push-credentials", "mountPath": PUSH_SECRET_MOUNT, "readOnly": True})
        args += ["--push-credentials-dir", PUSH_SECRET_MOUNT]
    return args, volumes, mounts


PULL_CONTAINER = "pull-model"
"""The serving pods' init container that pulls the artifact (build-less serving from a registry)."""


def pull_init_container(
    md: ModelDeployment, config: OperatorConfig, image: str, reference: str, digest: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(init container, extra volumes): pull ``reference`` (pinned by digest) into the pod's own /models."""
    build = md.spec.build
    plain = build.insecure_registry if build.repository else config.artifact_insecure_registry
    args = ["pull", reference, "--out", MODEL_DIR]
    if digest:
        args += ["--digest", digest]
    if plain:
        args.append("--plain-http")
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = [{"name": "model", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    if build.push_secret_ref is not None and build.repository:
        volumes.append(
            {"name": "pull-credentials", "secret": {"secretName": build.push_secret_ref.name, "defaultMode": 0o400}}
        )
        mounts.append({"name": "pull-credentials", "mountPath": PULL_SECRET_MOUNT, "readOnly": True})
        args += ["--credentials-dir", PULL_SECRET_MOUNT]
    container = {
        "name": PULL_CONTAINER,
        "image": image,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    return container, volumes


_NO_REGISTRY = (
    "neither the spec (spec.build.repository) nor the operator (artifacts.repository, build.registry) names one"
)


def _pods_beside_each_other(md: ModelDeployment) -> str | None:
    """What makes more than one serving pod mount the claim at once, if anything does."""
    serving = md.spec.serving
    if serving.autoscaling.enabled and serving.autoscaling.max_replicas > 1:
        return f"an HPA that scales to {serving.autoscaling.max_replicas} replicas"
    if not serving.autoscaling.enabled and serving.replicas > 1 and not md.spec.suspend:
        return f"{serving.replicas} replicas"
    if serving.rollout.strategy == RolloutStrategy.CANARY:
        return "a Canary rollout (the candidate's pods run beside the stable ones)"
    return None


def single_node_warning(md: ModelDeployment, config: OperatorConfig) -> str | None:
    """Why serving ``md``'s revision from its artifact claim confines every pod to one node, when the spec asks for
    more than one pod (replicas, an HPA, a Canary candidate); None when one pod is all it asks for. ``md`` is the
    effective spec (``defaults.with_operator_defaults``)."""
    pods = _pods_beside_each_other(md)
    if pods is None:
        return None
    if not config.build_registry or config.artifact_repository:
        why = _NO_REGISTRY
    elif artifact_registry(config) is None:
        host = registry_host(default_repository(config.build_registry, "namespace", "name"))
        why = (
            f"the build registry ({host}) is pushed to with the platform's Secret (build.pushSecrets), which the "
            "optimization Job in this namespace cannot use"
        )
    else:
        repository = default_repository(config.build_registry, md.metadata.namespace or "default", md.metadata.name)
        why = f"the build registry's repository for it, {repository}, is not a valid repository"
    return (
        f"the serving pods ({pods}) mount the ReadWriteOnce artifact claim {artifact_claim_name(md)}: a pod "
        "scheduled on another node than the one holding it cannot start (Multi-Attach), so all must run on one "
        f"node. No registry receives the artifact ({why}): set spec.build.repository (with spec.build.pushSecretRef "
        "if it needs credentials) or the chart's artifacts.repository, and each pod pulls its own copy."
    )
