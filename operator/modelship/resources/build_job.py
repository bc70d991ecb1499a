"""The in-cluster image build Job: receive the revision's optimized artifact, render the model's build context,
build it with rootless BuildKit (default) or Kaniko, push ``spec.build.repository:<revision>``, and leave the pushed
digest in the build container's termination message for the operator to read (``modelship.api.build_result``).

The Job runs in the operator's build namespace (``config.build_namespace``), not the tenant's: the push credentials
live only there (the platform's, per registry: ``config.build_push_secrets``), the build image is the operator's,
and the tenant's namespace can enforce Pod Security "restricted". The artifact claim stays in the tenant's namespace,
so the artifact comes over the network (``modelship.build.handoff``) and is accepted only with the digest the
operator recorded from the optimization Job's summary.

Pod layout::

    initContainers: receive   modelship artifact receive --digest <recorded> (port 8080, token: the Job's uid)
                    context   modelship build context --from <received> --out <context> --expect-digest <recorded>
                              (both: operator image, Pod Security "restricted" container settings)
    containers:     build     buildctl-daemonless.sh ... --metadata-file, digest -> /dev/termination-log
                              or /kaniko/executor ... --digest-file=/dev/termination-log
    volumes:        workspace (emptyDir), tmp, upload token (downward API), buildkit state (emptyDir, bounded),
                    docker config (the build namespace's push Secret for the registry)

Pure: a plain manifest dict from the ModelDeployment, the revision, the recorded digest and the operator config.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..api.build import BuildEngine
from ..api.build_result import DIGEST_PATTERN
from ..api.modeldeployment import ModelDeployment
from ..api.optimization import ExportFormat
from ..config import OperatorConfig
from .meta import (
    RUN_AS_USER,
    build_job_name,
    container_security_context,
)
from .stage_job import fail_job_on_exit_codes, stage_job

WORKSPACE = "/workspace"
RECEIVED_DIR = f"{WORKSPACE}/artifact"
"""Where the receive step extracts the uploaded optimization output."""
CONTEXT_DIR = f"{WORKSPACE}/context"
"""The rendered build context (Dockerfile + model) the builder reads."""
RECEIVE_CONTAINER = "receive"
CONTEXT_CONTAINER = "context"
BUILD_CONTAINER = "build"
TERMINATION_LOG = "/dev/termination-log"
ARTIFACT_DIGEST_ANNOTATION = "modelship.io/artifact-digest"
UNKNOWN_DIGEST = "sha256:" + "0" * 64
"""What `modelship render` shows for the artifact digest, which only the optimization Job's summary gives."""
UPLOAD_PORT = 8080
UPLOAD_TOKEN_DIR = "/etc/modelship/upload"
UPLOAD_TIMEOUT_SECONDS = 300
"""How long a build pod waits for its artifact before it fails (temporarily: the Job's next pod waits again)."""
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
"""Set by the Job controller on a Job's pods: the upload token is the build Job's uid."""

# moby/buildkit:rootless layout (the image modelship/buildkit follows it): user 1000, state under ~/.local
BUILDKIT_USER = 1000
BUILDKIT_HOME = "/home/user"
BUILDKIT_STATE = f"{BUILDKIT_HOME}/.local/share/buildkit"
BUILDKIT_DOCKER_CONFIG = f"{BUILDKIT_HOME}/.docker"
BUILDKIT_RUNTIME_DIR = f"/run/user/{BUILDKIT_USER}"
BUILDKITD_FLAGS = "--oci-worker-no-process-sandbox"
BUILDKIT_DROPPED_CAPABILITIES = ("NET_RAW", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE", "KILL", "SETPCAP")
KANIKO_DOCKER_CONFIG = "/kaniko/.docker"
CONTEXT_DOCKER_CONFIG = "/etc/modelship/registry"

RECEIVE_EXIT_REFUSED = 1
"""``modelship artifact receive`` refused the upload (not the recorded artifact): the Job fails at once."""

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
        "--local", f"context={CONTEXT_DIR}",
        "--local", f"dockerfile={CONTEXT_DIR}",
        "--opt", f"platform={','.join(platforms)}",
        "--output", output,
    ]  # fmt: skip
    env: list[dict[str, Any]] = [
        {"name": "BUILDKITD_FLAGS", "value": BUILDKITD_FLAGS},
        {"name": "XDG_RUNTIME_DIR", "value": BUILDKIT_RUNTIME_DIR},
        {"name": "HOME", "value": BUILDKIT_HOME},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "workspace", "mountPath": WORKSPACE, "readOnly": True},
        {"name": "buildkitd", "mountPath": BUILDKIT_STATE},
        {"name": "buildkit-home", "mountPath": BUILDKIT_HOME},
        {"name": "buildkit-run", "mountPath": BUILDKIT_RUNTIME_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        # the build's layer store (base image + model layer): bounded, so a build cannot fill the node's disk
        {"name": "buildkitd", "emptyDir": {"sizeLimit": state_size(md, config)}},
        {"name": "buildkit-home", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "buildkit-run", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if build.insecure_registry:
        env.append({"name": "MODELSHIP_INSECURE_REGISTRY", "value": registry_host(repository)})
    if push_secret(md, config) is not None:
        env.append({"name": "DOCKER_CONFIG", "value": BUILDKIT_DOCKER_CONFIG})
        mounts.append({"name": "docker-config", "mountPath": BUILDKIT_DOCKER_CONFIG, "readOnly": True})
    # Rootless BuildKit, NOT privileged, in the operator's build namespace (never a tenant's). What it still needs,
    # exactly, and why:
    # - buildkitd runs as uid 1000 and makes its own user namespace (rootlesskit) in which it is "root" over a subuid
    #   range. Creating it needs unshare(CLONE_NEWUSER) and mount(), which the runtime's default seccomp and AppArmor
    #   profiles deny: both are Unconfined for this one container. That alone puts the pod outside Pod Security
    #   "baseline": the build namespace is labelled privileged (the chart's), tenants' namespaces can be restricted.
    # - the subuid mapping is written by newuidmap/newgidmap, setuid helpers: allowPrivilegeEscalation must stay
    #   true (no_new_privs would defeat them).
    # - capabilities: the bounding set caps what "root" in the user namespace can do, so the ones unpacking image
    #   layers needs stay (chown, fowner, dac_override, fsetid, setuid/setgid, setfcap, mknod for device entries in
    #   base layers); the runtime's other defaults (net_raw, net_bind_service, sys_chroot, audit_write, kill,
    #   setpcap) are dropped.
    # - --oci-worker-no-process-sandbox (BUILDKITD_FLAGS) lets buildkitd run without a new PID namespace and /proc
    #   mount, so procMount stays Default (no Unmasked /proc). The cost: RUN steps would share the build container's
    #   PID namespace; the model Dockerfile has no RUN step, and a base image with ONBUILD triggers (which would
    #   add some) is refused before the build (the context step inspects its config).
    # - the root filesystem is read-only: buildkitd writes only to its bounded state volume, $HOME and
    #   XDG_RUNTIME_DIR (small emptyDirs) and /tmp.
    security: dict[str, Any] = {
        "privileged": False,
        "allowPrivilegeEscalation": True,
        "runAsNonRoot": True,
        "runAsUser": BUILDKIT_USER,
        "runAsGroup": BUILDKIT_USER,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": list(BUILDKIT_DROPPED_CAPABILITIES)},
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
        f"--context=dir://{CONTEXT_DIR}",
        f"--dockerfile={CONTEXT_DIR}/Dockerfile",
        f"--destination={image_reference(md, revision)}",
        f"--digest-file={TERMINATION_LOG}",
        f"--custom-platform={platforms[0]}",
        "--reproducible",
        "--single-snapshot",
    ]
    if build.insecure_registry:
        args += ["--insecure", f"--insecure-registry={registry_host(repository)}"]
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE, "readOnly": True}]
    if push_secret(md, config) is not None:
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


def _init_security() -> dict[str, Any]:
    security = container_security_context()
    security.update({"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER})
    return security


def _receive_container(config: OperatorConfig, digest: str) -> dict[str, Any]:
    args = [
        "artifact", "receive",
        "--out", RECEIVED_DIR,
        "--digest", digest,
        "--token-file", f"{UPLOAD_TOKEN_DIR}/token",
        "--port", str(UPLOAD_PORT),
        "--timeout", str(UPLOAD_TIMEOUT_SECONDS),
        "--max-bytes", str(quantity_bytes(config.artifact_storage_size)),
    ]  # fmt: skip
    return {
        "name": RECEIVE_CONTAINER,
        "image": operator_image(config),
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "upload", "containerPort": UPLOAD_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "upload-token", "mountPath": UPLOAD_TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": _init_security(),
        "resources": CONTEXT_RESOURCES,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _savedmodel(md: ModelDeployment) -> bool:
    return md.spec.optimization.export.format == ExportFormat.SAVEDMODEL


def runtime_image(md: ModelDeployment, config: OperatorConfig) -> str:
    """The stock serving runtime for ``md``'s export format: it serves a build-less revision and is the base of a
    built one. A SavedModel needs TensorFlow, which the (LiteRT) serving image lacks: it would exit at start."""
    return config.images.serving_for(savedmodel=_savedmodel(md))


def state_size(md: ModelDeployment, config: OperatorConfig) -> str:
    """Size limit of the BuildKit state volume of ``md``'s build: it holds the base image (compressed blobs and
    unpacked) and the model's layer. A savedmodel export's base is the TensorFlow-capable runtime, about 3.3 GiB
    there before the model (the serving image: about 0.35 GiB), so it gets its own, larger limit."""
    return config.build_state_size_savedmodel if _savedmodel(md) else config.build_state_size


def _context_container(md: ModelDeployment, revision: str, digest: str, config: OperatorConfig) -> dict[str, Any]:
    build = md.spec.build
    args = [
        "build", "context",
        "--from", RECEIVED_DIR,
        "--out", CONTEXT_DIR,
        "--expect-digest", digest,
        "--base-image", build.base_image or runtime_image(md, config),
        "--name", md.metadata.name,
        "--revision", revision,
        "--check-base",  # a base image with ONBUILD triggers is refused before anything is built
    ]  # fmt: skip
    for platform in build.platforms:
        args += ["--platform", platform.value]
    if build.insecure_registry:
        args += ["--insecure-registry", registry_host(build.repository or "")]
    env = [{"name": "HOME", "value": "/tmp"}]
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}, {"name": "tmp", "mountPath": "/tmp"}]
    if push_secret(md, config) is not None:  # to read a private base image's config (never the receive step)
        env.append({"name": "DOCKER_CONFIG", "value": CONTEXT_DOCKER_CONFIG})
        mounts.append({"name": "docker-config", "mountPath": CONTEXT_DOCKER_CONFIG, "readOnly": True})
    return {
        "name": CONTEXT_CONTAINER,
        "image": operator_image(config),
        "imagePullPolicy": config.images.pull_policy,
        "command": ["modelship"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": _init_security(),
        "resources": CONTEXT_RESOURCES,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def build_namespace(md: ModelDeployment, config: OperatorConfig) -> str:
    """Where the ModelDeployment's build Jobs run: the operator's build namespace, else its own."""
    return config.build_namespace or md.metadata.namespace or "default"


def push_secret(md: ModelDeployment, config: OperatorConfig) -> str | None:
    """The Secret (in the build namespace) the build pushes with: the platform's for the repository's registry.
    spec.build.pushSecretRef names a Secret of the tenant's namespace, so it is used only when the build runs
    there (an operator without a build namespace)."""
    registry = registry_host(md.spec.build.repository or "")
    if registry in config.build_push_secrets:
        return config.build_push_secrets[registry]
    ref = md.spec.build.push_secret_ref
    if ref is not None and build_namespace(md, config) == md.metadata.namespace:
        return ref.name
    return None


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i?|k|m)?$")
_FACTORS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}  # fmt: skip


def quantity_bytes(quantity: str) -> int:
    """Bytes of a storage quantity ("2Gi", "500M", "1048576")."""
    m = _QUANTITY.match(quantity.strip())
    if not m or m.group(2) == "m":
        raise ValueError(f"{quantity!r} is not a storage quantity")
    return int(float(m.group(1)) * _FACTORS[m.group(2) or ""])


def build_job(
    md: ModelDeployment, revision: str, artifact_digest: str, config: OperatorConfig, attempt: int = 1
) -> dict[str, Any]:
    """The build Job manifest for one revision (attempt > 1 after a failed Job), in the build namespace.

    ``artifact_digest`` is the artifact's digest as the operator recorded it from the optimization Job's summary:
    the Job builds that artifact or fails. Raises ValueError when the spec cannot be built (build disabled, no
    repository, kaniko asked for several platforms)."""
    spec = md.spec
    build = spec.build
    job = build.job
    if not build.enabled:
        raise ValueError("spec.build.enabled is false: there is nothing to build")
    if build.repository is None:
        raise ValueError("spec.build.repository is not set")
    if not re.fullmatch(DIGEST_PATTERN, artifact_digest):
        raise ValueError(f"artifact digest {artifact_digest!r} is not sha256:<64 hex>")
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

    token = {"path": "token", "fieldRef": {"fieldPath": f"metadata.labels['{CONTROLLER_UID_LABEL}']"}}
    volumes: list[dict[str, Any]] = [
        # the received output and the rendered context: twice the artifact at most
        {"name": "workspace", "emptyDir": {"sizeLimit": f"{2 * quantity_bytes(config.artifact_storage_size)}"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "upload-token", "downwardAPI": {"items": [token], "defaultMode": 0o444}},
        *extra_volumes,
    ]
    secret = push_secret(md, config)
    if secret is not None:
        volumes.append({
            "name": "docker-config",
            "secret": {
                "secretName": secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                "defaultMode": 0o440,
            },
        })  # fmt: skip

    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        "initContainers": [
            _receive_container(config, artifact_digest),
            _context_container(md, revision, artifact_digest, config),
        ],
        "containers": [container],
        "volumes": volumes,
    }
    namespace = build_namespace(md, config)
    return stage_job(
        md,
        name=build_job_name(md, revision, attempt, shared=namespace != md.metadata.namespace),
        component="build",
        revision=revision,
        attempt=attempt,
        settings=job,
        config=config,
        pod_spec=pod_spec,
        annotations={"modelship.io/image": image_reference(md, revision), ARTIFACT_DIGEST_ANNOTATION: artifact_digest},
        # the receive step refuses an upload that is not the recorded artifact, the context step bad input: retrying
        # the same artifact cannot help, so the Job fails at once (nothing arriving in time is retried)
        failure_rules=[
            fail_job_on_exit_codes(RECEIVE_CONTAINER, [RECEIVE_EXIT_REFUSED]),
            fail_job_on_exit_codes(CONTEXT_CONTAINER, [1, 2]),
        ],
        namespace=namespace,
    )
