"""The in-cluster image build Job: render the model's build context from the artifact claim, build it
with rootless BuildKit (default) or Kaniko, push ``spec.build.repository:<revision>``, and leave the
pushed digest in the build container's termination message for the operator to read
(``modelship.api.build_result.BuildResult``).

Pod layout::

    initContainers: context   modelship build context --from <artifact dir> --out /workspace
                              (operator image, restricted securityContext, artifact claim read-only)
    containers:     build     buildctl-daemonless.sh ... --metadata-file, digest -> /dev/termination-log
                              or /kaniko/executor ... --digest-file=/dev/termination-log
    volumes:        artifacts (claim, read-only), workspace (emptyDir), tmp, buildkit state, docker config

Pure: a plain manifest dict from the ModelDeployment, the revision and the operator config; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ..api.build import BuildEngine
from ..api.modeldeployment import ModelDeployment
from ..config import OperatorConfig
from .meta import (
    RUN_AS_USER,
    build_job_name,
    container_security_context,
)
from .stage_job import fail_job_on_exit_codes, stage_job
from .volumes import artifact_volume

WORKSPACE = "/workspace"
CONTEXT_CONTAINER = "context"
BUILD_CONTAINER = "build"
TERMINATION_LOG = "/dev/termination-log"

# moby/buildkit:rootless layout (the image modelship/buildkit follows it): user 1000, state under ~/.local
BUILDKIT_USER = 1000
BUILDKIT_HOME = "/home/user"
BUILDKIT_STATE = f"{BUILDKIT_HOME}/.local/share/buildkit"
BUILDKIT_DOCKER_CONFIG = f"{BUILDKIT_HOME}/.docker"
BUILDKITD_FLAGS = "--oci-worker-no-process-sandbox"
KANIKO_DOCKER_CONFIG = "/kaniko/.docker"

DEFAULT_BUILD_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"memory": "2Gi"},
}
CONTEXT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}

# The BuildKit container's entrypoint. buildctl's own arguments come after the three positional values, so
# nothing user-controlled is ever interpolated into the script text. buildctl-daemonless.sh starts a
# rootless buildkitd (BUILDKITD_FLAGS), runs the build, and stops it. The metadata file's
# containerimage.digest is the pushed manifest (the index, for several platforms).
BUILDKIT_SCRIPT = r"""set -eu
ref="$1"; repo="$2"; platforms="$3"; shift 3
if [ -n "${MODELSHIP_INSECURE_REGISTRY:-}" ]; then
  # pull the base from (and push to) a plain-HTTP registry: buildkitd's per-registry config
  printf '[registry."%s"]\n  http = true\n  insecure = true\n' "$MODELSHIP_INSECURE_REGISTRY" > /tmp/buildkitd.toml
  BUILDKITD_FLAGS="${BUILDKITD_FLAGS:-} --config /tmp/buildkitd.toml"
  export BUILDKITD_FLAGS
fi
echo "building $ref for $platforms"
buildctl-daemonless.sh build "$@" --metadata-file /tmp/metadata.json
digest="$(grep -o '"containerimage.digest": *"sha256:[0-9a-f]*"' /tmp/metadata.json \
  | grep -o 'sha256:[0-9a-f]*' | head -n 1)"
if [ -z "$digest" ]; then
  echo "buildctl reported no containerimage.digest:" >&2
  cat /tmp/metadata.json >&2
  exit 1
fi
printf '{"ok":true,"image":"%s@%s","digest":"%s","platforms":%s}\n' "$repo" "$digest" "$digest" "$platforms" \
  > /dev/termination-log
echo "pushed $repo@$digest"
"""


def registry_host(repository: str) -> str:
    """The registry part of a repository (docker.io when the first component is not a host)."""
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def operator_image(config: OperatorConfig) -> str:
    """The image that runs `modelship build context` (the operator's own image)."""
    return config.images.operator


def image_reference(md: ModelDeployment, revision: str) -> str:
    """Where the build pushes: repository:revision."""
    repository = md.spec.build.repository
    if repository is None:
        raise ValueError("spec.build.repository is not set")
    return f"{repository}:{revision}"


def _buildkit_container(
    md: ModelDeployment, revision: str, config: OperatorConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    build = md.spec.build
    repository = build.repository or ""
    ref = image_reference(md, revision)
    platforms = [p.value for p in build.platforms]
    output = f"type=image,name={ref},push=true"
    if build.insecure_registry:
        output += ",registry.insecure=true"
    args = [
        ref, repository, json.dumps(platforms, separators=(",", ":")),
        "--frontend", "dockerfile.v0",
        "--local", f"context={WORKSPACE}",
        "--local", f"dockerfile={WORKSPACE}",
        "--opt", f"platform={','.join(platforms)}",
        "--output", output,
    ]  # fmt: skip
    env: list[dict[str, Any]] = [{"name": "BUILDKITD_FLAGS", "value": BUILDKITD_FLAGS}]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": WORKSPACE, "readOnly": True},
        {"name": "buildkitd", "mountPath": BUILDKIT_STATE},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "buildkitd", "emptyDir": {}},
    ]
    if build.insecure_registry:
        env.append({"name": "MODELSHIP_INSECURE_REGISTRY", "value": registry_host(repository)})
    if build.push_secret_ref is not None:
        env.append({"name": "DOCKER_CONFIG", "value": BUILDKIT_DOCKER_CONFIG})
        mounts.append({"name": "docker-config", "mountPath": BUILDKIT_DOCKER_CONFIG, "readOnly": True})
    # Rootless BuildKit, NOT privileged. The trade-off, exactly:
    # - buildkitd runs as uid 1000 and makes its own user namespace (rootlesskit) in which it is "root"
    #   over a subuid range. Creating it needs unshare(CLONE_NEWUSER) and mount(), which the runtime's
    #   default seccomp profile and AppArmor profile deny: both are Unconfined for this one container.
    # - the subuid mapping is written by newuidmap/newgidmap, setuid helpers: allowPrivilegeEscalation must
    #   stay true (no_new_privs would defeat them). Nothing else gets more privilege than a default pod.
    # - capabilities are the runtime's default set, none added: they bound what buildkitd may do as root
    #   inside its namespace (chown while unpacking layers, mounts for snapshots), so dropping ALL breaks it.
    # - --oci-worker-no-process-sandbox (BUILDKITD_FLAGS) lets buildkitd run without a new PID namespace
    #   and /proc mount, so procMount stays Default (no Unmasked /proc). The cost: RUN steps would share the
    #   build container's PID namespace. The model Dockerfile has no RUN step, so nothing executes there.
    # - the root filesystem stays writable: rootlesskit and buildkitd write under $HOME and /run/user/1000.
    # The pod is therefore outside Pod Security "restricted" and "baseline" (Unconfined seccomp/AppArmor):
    # run builds in a namespace labelled pod-security.kubernetes.io/enforce=privileged, or use Kaniko.
    security: dict[str, Any] = {
        "privileged": False,
        "allowPrivilegeEscalation": True,
        "runAsNonRoot": True,
        "runAsUser": BUILDKIT_USER,
        "runAsGroup": BUILDKIT_USER,
        "readOnlyRootFilesystem": False,
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    }
    container: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": build.job.image or config.images.buildkit,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["/bin/sh", "-c", BUILDKIT_SCRIPT, "modelship-build"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": security,
    }
    return container, volumes


def _kaniko_container(
    md: ModelDeployment, revision: str, config: OperatorConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    build = md.spec.build
    repository = build.repository or ""
    platforms = [p.value for p in build.platforms]
    if len(platforms) != 1:
        raise ValueError(
            "kaniko builds one platform per run: use engine buildkit for "
            f"{' + '.join(platforms)} (or list a single platform)"
        )
    args = [
        f"--context=dir://{WORKSPACE}",
        f"--dockerfile={WORKSPACE}/Dockerfile",
        f"--destination={image_reference(md, revision)}",
        f"--digest-file={TERMINATION_LOG}",
        f"--custom-platform={platforms[0]}",
        "--reproducible",
        "--single-snapshot",
    ]
    if build.insecure_registry:
        args += ["--insecure", f"--insecure-registry={registry_host(repository)}"]
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE, "readOnly": True}]
    if build.push_secret_ref is not None:
        mounts.append({"name": "docker-config", "mountPath": KANIKO_DOCKER_CONFIG, "readOnly": True})
    # Kaniko unpacks the base image into its own root filesystem and snapshots it, so it runs as uid 0
    # inside the container with a writable root and the runtime's default capabilities (chown/fowner while
    # unpacking). It needs no privilege beyond that: not privileged, no escalation, RuntimeDefault seccomp,
    # which keeps the pod within Pod Security "baseline" (not "restricted", which forbids uid 0).
    security: dict[str, Any] = {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "readOnlyRootFilesystem": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": build.job.image or config.images.kaniko,
        "imagePullPolicy": config.images.pull_policy,
        "args": args,
        "volumeMounts": mounts,
        "securityContext": security,
    }
    return container, []


def _context_container(md: ModelDeployment, revision: str, artifact_dir: str, config: OperatorConfig) -> dict[str, Any]:
    build = md.spec.build
    security = container_security_context()
    security.update({"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER})
    args = [
        "build", "context",
        "--from", artifact_dir,
        "--out", WORKSPACE,
        "--base-image", build.base_image or config.images.serving,
        "--name", md.metadata.name,
        "--revision", revision,
    ]  # fmt: skip
    return {
        "name": CONTEXT_CONTAINER,
        "image": operator_image(config),
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [
            {"name": "artifacts", "mountPath": config.artifacts_mount, "readOnly": True},
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": security,
        "resources": CONTEXT_RESOURCES,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def build_job(
    md: ModelDeployment, revision: str, artifact_dir: str, config: OperatorConfig, attempt: int = 1
) -> dict[str, Any]:
    """The build Job manifest for one revision (attempt > 1 after a failed Job).

    ``artifact_dir`` is the optimization output inside the artifact claim as the pod sees it (e.g.
    /artifacts/<revision>). Raises ValueError when the spec cannot be built (build disabled, no repository,
    kaniko asked for several platforms)."""
    spec = md.spec
    build = spec.build
    job = build.job
    if not build.enabled:
        raise ValueError("spec.build.enabled is false: there is nothing to build")
    if build.repository is None:
        raise ValueError("spec.build.repository is not set")
    if not artifact_dir.startswith("/"):
        raise ValueError(f"artifact_dir {artifact_dir!r} must be an absolute path inside the pod")
    if build.engine == BuildEngine.KANIKO:
        container, extra_volumes = _kaniko_container(md, revision, config)
        pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    else:
        container, extra_volumes = _buildkit_container(md, revision, config)
        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": BUILDKIT_USER,
            "runAsGroup": BUILDKIT_USER,
            "fsGroup": BUILDKIT_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    container["resources"] = job.resources.wire() if job.resources else DEFAULT_BUILD_RESOURCES
    container["terminationMessagePath"] = TERMINATION_LOG
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"

    volumes: list[dict[str, Any]] = [
        artifact_volume(md, read_only=True),
        {"name": "workspace", "emptyDir": {"sizeLimit": config.artifact_storage_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        *extra_volumes,
    ]
    if build.push_secret_ref is not None:
        volumes.append({
            "name": "docker-config",
            "secret": {
                "secretName": build.push_secret_ref.name,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                "defaultMode": 0o440,
            },
        })  # fmt: skip

    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        "initContainers": [_context_container(md, revision, artifact_dir, config)],
        "containers": [container],
        "volumes": volumes,
    }
    return stage_job(
        md,
        name=build_job_name(md, revision, attempt),
        component="build",
        revision=revision,
        attempt=attempt,
        settings=job,
        config=config,
        pod_spec=pod_spec,
        annotations={"modelship.io/image": image_reference(md, revision)},
        # the context step refuses bad input (missing artifact, digest mismatch): retrying the same artifact
        # cannot help, so the Job fails at once
        failure_rules=[fail_job_on_exit_codes(CONTEXT_CONTAINER, [1, 2])],
    )
