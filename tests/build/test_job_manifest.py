"""The in-cluster build Job, field by field, and through kubernetes-validate (strict, 1.34)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from modelship.api.build_result import BuildResult
from modelship.config import Images, OperatorConfig
from modelship.resources import build_job as bj
from modelship.resources.meta import build_job_name

from .support import UID, make_md

K8S_VERSION = "1.34"
CONFIG = OperatorConfig()
REV = "r0123456789"
ARTIFACT_DIGEST = "sha256:" + "ef" * 32
REPO = "registry.local:5000/models/digits"
DIGEST = "sha256:" + "ab" * 32


def job_for(build: dict[str, Any] | None = None, attempt: int = 1, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    return bj.build_job(make_md(build or {"repository": REPO}), REV, ARTIFACT_DIGEST, config, attempt)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any], name: str = "build") -> dict[str, Any]:
    spec = pod(job)
    (c,) = [c for c in spec["containers"] + spec["initContainers"] if c["name"] == name]
    return c


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def volumes(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod(job)["volumes"]}


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def walk(obj: Any) -> Any:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


# --- common to both engines ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["buildkit", "kaniko"])
def test_job_metadata_owner_and_limits(engine: str) -> None:
    build = {
        "repository": REPO,
        "engine": engine,
        "job": {"activeDeadlineSeconds": 900, "backoffLimit": 1, "podAnnotations": {"b": "2", "a": "1"}},
    }
    job = job_for(build)
    md = make_md(build)
    validate(job)
    meta = job["metadata"]
    assert meta["name"] == build_job_name(md, REV, 1) == f"digits-build-{REV}-6f1f2c7e"  # the uid's first digits
    assert meta["namespace"] == "ml"
    assert meta["labels"]["app.kubernetes.io/component"] == "build"
    assert meta["labels"]["modelship.io/revision"] == REV
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelship"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modelship.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "digits",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"]["modelship.io/image"] == f"{REPO}:{REV}"
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["ttlSecondsAfterFinished"] == CONFIG.job_ttl_seconds
    tmpl = spec["template"]
    assert tmpl["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert tmpl["metadata"]["labels"] == meta["labels"]
    p = tmpl["spec"]
    assert p["restartPolicy"] == "Never"
    assert p["automountServiceAccountToken"] is False
    # a refused upload (not the recorded artifact) or context (bad artifact) fails the Job at once; evictions do not
    # count
    rules = spec["podFailurePolicy"]["rules"]
    assert [(r["action"], r["onExitCodes"]["containerName"]) for r in rules[:2]] == [
        ("FailJob", "receive"), ("FailJob", "context")]  # fmt: skip


@pytest.mark.parametrize("engine", ["buildkit", "kaniko"])
def test_nothing_privileged_no_host_access(engine: str) -> None:
    job = job_for({"repository": REPO, "engine": engine, "pushSecretRef": {"name": "push"}})
    p = pod(job)
    for key, value in walk(job):
        assert key != "privileged" or value is False
        assert key not in ("hostPath", "hostNetwork", "hostPID", "hostIPC", "hostPort")
    for c in p["containers"] + p["initContainers"]:
        assert c["securityContext"]["privileged"] is False if "privileged" in c["securityContext"] else True
        assert "add" not in c["securityContext"].get("capabilities", {}), "no capability is ever added"
        assert c["terminationMessagePath"] == "/dev/termination-log"
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("engine", ["buildkit", "kaniko"])
def test_init_containers_receive_the_artifact_and_render_the_context(engine: str) -> None:
    job = job_for({"repository": REPO, "engine": engine})
    receive, init = container(job, "receive"), container(job, "context")
    assert pod(job)["initContainers"] == [receive, init]
    assert init["image"] == receive["image"] == "modelship/operator:0.1.0"
    assert init["command"] == ["modelship"]
    assert init["args"] == [
        "build", "context", "--from", "/workspace/artifact", "--out", "/workspace/context",
        "--expect-digest", ARTIFACT_DIGEST, "--base-image", CONFIG.images.serving, "--name", "digits",
        "--revision", REV, "--check-base", "--platform", "linux/amd64",
    ]  # fmt: skip
    m = mounts(init)
    assert m["/workspace"]["name"] == "workspace" and not m["/workspace"].get("readOnly")
    v = volumes(job)
    assert "artifacts" not in v, "the artifact comes over the network, not from the tenant's claim"
    assert "emptyDir" in v["workspace"]
    # the restricted profile for the step that reads the claim
    sc = init["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the build reads the workspace read-only
    assert mounts(container(job))["/workspace"]["readOnly"] is True


def test_base_image_and_images_follow_spec_and_config() -> None:
    config = OperatorConfig(images=Images(serving="reg/serving@sha256:" + "12" * 32, buildkit="reg/bk:1"))
    job = job_for({"repository": REPO, "baseImage": "reg/custom:2"}, config=config)
    args = container(job, "context")["args"]
    assert args[args.index("--base-image") + 1] == "reg/custom:2"
    assert container(job)["image"] == "reg/bk:1"
    job = job_for({"repository": REPO, "job": {"image": "reg/bk:pinned"}}, config=config)
    assert container(job)["image"] == "reg/bk:pinned"
    args = container(job, "context")["args"]
    assert args[args.index("--base-image") + 1] == config.images.serving


def test_attempts_get_their_own_name() -> None:
    job = job_for(attempt=3)
    assert job["metadata"]["name"] == f"digits-build-{REV}-6f1f2c7e-3"
    assert job["metadata"]["annotations"]["modelship.io/attempt"] == "3"
    assert job_for() == job_for(), "deterministic"


def test_placement_and_resources() -> None:
    build = {
        "repository": REPO,
        "job": {
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
            "tolerations": [{"key": "builds", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        },
    }
    job = job_for(build)
    validate(job)
    p = pod(job)
    assert p["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert p["tolerations"] == [{"key": "builds", "operator": "Exists", "effect": "NoSchedule"}]
    assert container(job)["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}


def test_refuses_what_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="enabled is false"):
        job_for({"enabled": False})
    with pytest.raises(ValueError, match="not sha256"):
        bj.build_job(make_md({"repository": REPO}), REV, "artifacts/x", CONFIG)


# --- BuildKit (default) -----------------------------------------------------------------------------


def test_buildkit_rootless_security_context() -> None:
    job = job_for()
    validate(job)
    c = container(job)
    assert c["image"] == CONFIG.images.buildkit
    assert c["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": True,  # newuidmap/newgidmap are setuid helpers
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["NET_RAW", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE", "KILL", "SETPCAP"]},
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
    }
    psc = pod(job)["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000 and psc["fsGroup"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, "only the build container is Unconfined"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BUILDKITD_FLAGS"] == "--oci-worker-no-process-sandbox"
    m = mounts(c)
    assert m["/home/user/.local/share/buildkit"]["name"] == "buildkitd"
    assert volumes(job)["buildkitd"]["emptyDir"] == {"sizeLimit": CONFIG.build_state_size}


def test_buildkit_command_pushes_repository_revision_and_writes_the_digest() -> None:
    c = container(job_for())
    assert c["command"][:2] == ["/bin/sh", "-c"]
    script = c["command"][2]
    assert "buildctl-daemonless.sh build" in script and "--metadata-file" in script
    assert "containerimage.digest" in script and "> /dev/termination-log" in script
    args = c["args"]
    assert args[:3] == [f"{REPO}:{REV}", REPO, '["linux/amd64"]']
    buildctl = args[3:]
    assert buildctl[:2] == ["--frontend", "dockerfile.v0"]
    assert "context=/workspace/context" in buildctl and "dockerfile=/workspace/context" in buildctl
    assert buildctl[buildctl.index("--opt") + 1] == "platform=linux/amd64"
    assert buildctl[buildctl.index("--output") + 1] == f"type=image,name={REPO}:{REV},push=true"


def test_buildkit_multi_platform() -> None:
    job = job_for({"repository": REPO, "platforms": ["linux/amd64", "linux/arm64"]})
    validate(job)
    args = container(job)["args"]
    assert args[2] == '["linux/amd64","linux/arm64"]'
    assert args[args.index("--opt") + 1] == "platform=linux/amd64,linux/arm64"


def test_buildkit_push_secret_and_insecure_registry() -> None:
    job = job_for({"repository": REPO, "pushSecretRef": {"name": "regcred"}, "insecureRegistry": True})
    validate(job)
    c = container(job)
    assert volumes(job)["docker-config"]["secret"] == {
        "secretName": "regcred",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        "defaultMode": 0o440,
    }
    assert mounts(c)["/home/user/.docker"] == {
        "name": "docker-config",
        "mountPath": "/home/user/.docker",
        "readOnly": True,
    }
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DOCKER_CONFIG"] == "/home/user/.docker"
    assert env["MODELSHIP_INSECURE_REGISTRY"] == "registry.local:5000"
    assert c["args"][c["args"].index("--output") + 1].endswith(",push=true,registry.insecure=true")
    # the receive step (which talks to the export pod) never sees the credentials; the context step reads the base
    # image's config with them (read-only), and speaks plain HTTP to the insecure registry as the build does
    assert all(m["name"] != "docker-config" for m in container(job, "receive")["volumeMounts"])
    ctx = container(job, "context")
    assert mounts(ctx)["/etc/modelship/registry"] == {"name": "docker-config", "mountPath": "/etc/modelship/registry",
                                                      "readOnly": True}  # fmt: skip
    assert {"name": "DOCKER_CONFIG", "value": "/etc/modelship/registry"} in ctx["env"]
    assert ctx["args"][ctx["args"].index("--insecure-registry") + 1] == "registry.local:5000"


def test_no_secret_no_docker_config() -> None:
    job = job_for()
    assert "docker-config" not in volumes(job)
    assert "DOCKER_CONFIG" not in {e["name"] for e in container(job)["env"]}


@pytest.mark.parametrize(
    ("metadata", "platforms"),
    [
        # buildctl writes the metadata file indented (jq-like) or compact: both must work
        ({"containerimage.config.digest": "sha256:" + "cc" * 32, "containerimage.digest": DIGEST}, ["linux/amd64"]),
        ({"containerimage.descriptor": {"digest": "sha256:" + "dd" * 32}, "containerimage.digest": DIGEST}, []),
    ],
)
@pytest.mark.parametrize("indent", [2, None])
def test_buildkit_wrapper_script_runs(
    tmp_path: Path, metadata: dict[str, Any], platforms: list[str], indent: int | None
) -> None:
    """Run the container's real shell wrapper with a stand-in buildctl-daemonless.sh."""
    job = job_for({"repository": REPO, "platforms": platforms or ["linux/amd64", "linux/arm64"]})
    c = container(job)
    script = c["command"][2].replace("/tmp/", f"{tmp_path}/").replace("/dev/termination-log", str(tmp_path / "term"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "buildctl-daemonless.sh"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        'while [ $# -gt 0 ]; do if [ "$1" = --metadata-file ]; then out="$2"; fi; shift; done\n'
        f"cat > \"$out\" <<'EOF'\n{json.dumps(metadata, indent=indent)}\nEOF\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "BUILDKITD_FLAGS": "--oci-worker-no-process-sandbox"}
    proc = subprocess.run(
        ["/bin/sh", "-c", script, *c["command"][3:], *c["args"]], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = BuildResult.from_line((tmp_path / "term").read_text())
    assert result.image == f"{REPO}@{DIGEST}" and result.digest == DIGEST
    assert result.platforms == (platforms or ["linux/amd64", "linux/arm64"])
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:2] == ["build", "--frontend"] and argv[-2] == "--metadata-file"


def test_buildkit_wrapper_fails_without_a_digest(tmp_path: Path) -> None:
    c = container(job_for())
    script = c["command"][2].replace("/tmp/", f"{tmp_path}/").replace("/dev/termination-log", str(tmp_path / "term"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "buildctl-daemonless.sh").write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --metadata-file ] && out="$2"; shift; done\necho {} > "$out"\n'
    )
    (bindir / "buildctl-daemonless.sh").chmod(0o755)
    proc = subprocess.run(
        ["/bin/sh", "-c", script, "x", *c["args"]],
        env={"PATH": f"{bindir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "no containerimage.digest" in proc.stderr
    assert not (tmp_path / "term").exists()


# --- Kaniko ---------------------------------------------------------------------------------------------


def test_kaniko_variant() -> None:
    job = job_for({"repository": REPO, "engine": "kaniko", "platforms": ["linux/arm64"]})
    validate(job)
    c = container(job)
    assert c["image"] == CONFIG.images.kaniko
    assert "command" not in c  # the executor is the image's entrypoint
    assert c["args"][:4] == [
        "--context=dir:///workspace/context",
        "--dockerfile=/workspace/context/Dockerfile",
        f"--destination={REPO}:{REV}",
        "--digest-file=/dev/termination-log",
    ]
    assert "--custom-platform=linux/arm64" in c["args"]
    assert not any(a.startswith("--insecure") for a in c["args"])
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0 and sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "appArmorProfile" not in sc
    assert pod(job)["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    # the bare digest Kaniko leaves is completed into a BuildResult
    r = BuildResult.from_termination_message(DIGEST, REPO, ["linux/arm64"])
    assert r.image == f"{REPO}@{DIGEST}"


def test_kaniko_secret_and_insecure() -> None:
    build = {"repository": REPO, "engine": "kaniko", "pushSecretRef": {"name": "regcred"}, "insecureRegistry": True}
    job = job_for(build)
    validate(job)
    c = container(job)
    assert mounts(c)["/kaniko/.docker"] == {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True}
    assert volumes(job)["docker-config"]["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    assert "--insecure" in c["args"]
    assert "--insecure-registry=registry.local:5000" in c["args"]


def test_kaniko_refuses_two_platforms() -> None:
    with pytest.raises(ValueError, match="kaniko builds one platform"):
        job_for({"repository": REPO, "engine": "kaniko", "platforms": ["linux/amd64", "linux/arm64"]})


@pytest.mark.parametrize(
    ("repository", "host"),
    [
        ("registry.local:5000/models/digits", "registry.local:5000"),
        ("localhost/models/x", "localhost"),
        ("ghcr.io/org/model", "ghcr.io"),
        ("library/model", "docker.io"),
    ],
)
def test_registry_host(repository: str, host: str) -> None:
    assert bj.registry_host(repository) == host
