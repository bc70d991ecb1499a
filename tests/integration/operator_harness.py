"""Run the real operator (``python -m modelship operator``) as a subprocess against the test cluster,
authenticated as its own ServiceAccount with exactly the chart's RBAC rules."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from modelship.rbac import operator_rules
from tests.integration.cluster import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    REPO_ROOT,
    ensure_operator_identity,
    wait_for,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_kubeconfig(admin: client.ApiClient, namespace: str, service_account: str, path: Path, hours: int = 2) -> Path:
    """A kubeconfig holding a TokenRequest token of namespace/service_account (what the kubelet mounts)."""
    core = client.CoreV1Api(admin)
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600)
    )
    token = core.create_namespaced_service_account_token(service_account, namespace, req).status.token
    conf = admin.configuration
    cluster: dict[str, Any] = {"server": conf.host}
    if conf.ssl_ca_cert:
        cluster["certificate-authority"] = conf.ssl_ca_cert
    else:
        cluster["insecure-skip-tls-verify"] = True
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def service_account_kubeconfig(admin: client.ApiClient, path: Path, hours: int = 2) -> Path:
    """A kubeconfig for the operator's ServiceAccount, as a Pod would have."""
    return token_kubeconfig(admin, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, path, hours)


def operator_pythonpath() -> str:
    return f"{REPO_ROOT / 'operator'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


class LocalOperator:
    """A ``python -m modelship ...`` operator process on this host: start it, wait for its liveness endpoint,
    read its metrics and log, stop or kill it. Subclasses say how it is configured and call ``_spawn``."""

    proc: subprocess.Popen[bytes] | None
    health_port: int
    metrics_port: int
    log_path: Path
    module = "modelship"
    """The module run with ``python -m`` (a test may run the operator with a fault planted)."""

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )
        wait_for(self._healthy, timeout=60, description="operator liveness endpoint")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of the samples of ``name`` whose labels contain ``labels`` (0 when none is exported yet): the
        sample lines only, never the # HELP/# TYPE lines that name the metric too."""
        found = re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", self.metrics(), re.MULTILINE)
        return sum(float(m.group(2)) for m in found if labels in (m.group(1) or ""))

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crashed or evicted operator."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path.exists() else ""


class OperatorProcess(LocalOperator):
    def __init__(self, admin: client.ApiClient, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="modelship-operator-"))
        self.kubeconfig = service_account_kubeconfig(admin, self.workdir / "kubeconfig")
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "operator.log"
        self.health_port = 0
        self.metrics_port = 0
        self.extra_args: list[str] = []

    def start(self) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": operator_pythonpath(),
            "MODELSHIP_RETRY_BASE_SECONDS": "1",
            "MODELSHIP_RESYNC_SECONDS": "5",
            "MODELSHIP_JOB_TTL_SECONDS": "600",
            "MODELSHIP_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,  # the revision caches live there, as in the chart
            **self.extra_env,
        }
        self._spawn(
            [
                "operator",
                "--log-format",
                "plain",
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                *self.extra_args,
            ],
            env,
        )


def hostpath_volume(admin: client.ApiClient, namespace: str, claim: str, size: str = "5Gi") -> str:
    """A PersistentVolume pre-bound to one claim: the test cluster has no storage provisioner."""
    name = f"pv-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(admin).create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"modelship.io/test": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/modelship-test/{name}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
    )
    return name


@contextlib.contextmanager
def running_operator(
    api_client: client.ApiClient, env: dict[str, str] | None = None, module: str = "modelship"
) -> Iterator[OperatorProcess]:
    """The operator as its own ServiceAccount with exactly the chart's rules, for the length of a test module."""
    ensure_operator_identity(api_client, operator_rules())
    op = OperatorProcess(api_client, env=env)
    op.module = module
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(op.log()[-5000:])
