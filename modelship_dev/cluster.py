"""A real Kubernetes control plane for tests and local development.

``kwokctl --runtime binary`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
the kwok controller as local processes, all built from the Go module proxy by
``hack/cluster/build-binaries`` into ``${MODELSHIP_CACHE:-/var/cache/modelship}/k8s/<key>/bin``.
Nodes are fake (kwok): this module creates them as Node objects, and the kwok Stages in
``hack/cluster/stages`` drive their pods (Ready, Job completion with a termination message, Job
failure, crash loop; see ``hack/cluster/README.md``).

Standard library only, so ``hack/cluster/up`` works with any Python 3.11.

CLI::

    python -m modelship_dev.cluster up|down|status|kubeconfig [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
HACK_DIR = REPO_ROOT / "hack" / "cluster"
VERSIONS_FILE = HACK_DIR / "versions.env"
STAGES_DIR = HACK_DIR / "stages"

DEFAULT_NAME = "modelship-test"
DEFAULT_CACHE = "/var/cache/modelship"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "etcdctl",
    "kwok",
    "kwokctl",
)

# Test annotations understood by the Stages in hack/cluster/stages.
ANNOTATION_TERMINATION_MESSAGE = "modelship.io/test-termination-message"
ANNOTATION_FAIL = "modelship.io/test-fail"
ANNOTATION_EXIT_CODE = "modelship.io/test-exit-code"
ANNOTATION_DURATION = "modelship.io/test-duration"
ANNOTATION_CRASH = "modelship.io/test-crash"
ANNOTATION_RECEIVE_RUNNING = "modelship.io/test-receive-running"
"""Keeps a build pod's "receive" init container running (waiting for its artifact upload) until the pod completes."""

GPU_RESOURCE = "nvidia.com/gpu"

# First address of --service-cluster-ip-range: the `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"


class DevClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


@dataclass(frozen=True)
class Versions:
    k8s: str
    etcd: str
    kwok: str

    @property
    def key(self) -> str:
        # Must match KEY in hack/cluster/build-binaries.
        return f"k8s-v{self.k8s}_etcd-v{self.etcd}_kwok-v{self.kwok}"


def read_versions(path: Path = VERSIONS_FILE) -> Versions:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise DevClusterError(f"{path}: not KEY=VALUE: {raw!r}")
        values[key.strip()] = value.strip()
    try:
        return Versions(k8s=values["K8S_VERSION"], etcd=values["ETCD_VERSION"], kwok=values["KWOK_VERSION"])
    except KeyError as exc:
        raise DevClusterError(f"{path}: missing {exc.args[0]}") from exc


def cache_root() -> Path:
    return Path(os.environ.get("MODELSHIP_CACHE") or DEFAULT_CACHE)


def bin_dir(versions: Versions | None = None) -> Path:
    return cache_root() / "k8s" / (versions or read_versions()).key / "bin"


def kubeconfig_path(name: str = DEFAULT_NAME) -> Path:
    return cache_root() / f"kubeconfig-{name}"


def missing_binaries(directory: Path | None = None) -> list[str]:
    d = directory or bin_dir()
    return [b for b in BINARIES if not os.access(d / b, os.X_OK)]


@dataclass(frozen=True)
class FakeNode:
    name: str
    arch: str = "amd64"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    extra_resources: Mapping[str, str] = field(default_factory=dict)
    index: int = 0

    def manifest(self) -> dict[str, Any]:
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", **self.extra_resources}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {
                    # kwok manages only nodes with this annotation.
                    "kwok.x-k8s.io/node": "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "beta.kubernetes.io/arch": self.arch,
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self.arch,
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                    **self.labels,
                },
            },
            "spec": {
                # Documentation ranges (RFC 5737 / 3849): nothing ever sends traffic to a fake node.
                "podCIDR": f"198.51.100.{16 * self.index}/28",
                "podCIDRs": [f"198.51.100.{16 * self.index}/28"],
                "taints": [dict(t) for t in self.taints],
            },
            # Kept on create; the node-initialize Stage copies allocatable/capacity/nodeInfo.
            "status": {
                "addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + self.index}"}],
                "allocatable": dict(resources),
                "capacity": dict(resources),
                # Empty strings: the node-initialize Stage fills in kwok's values.
                "nodeInfo": {
                    "architecture": self.arch,
                    "operatingSystem": "linux",
                    **dict.fromkeys(
                        (
                            "bootID",
                            "containerRuntimeVersion",
                            "kernelVersion",
                            "kubeProxyVersion",
                            "kubeletVersion",
                            "machineID",
                            "osImage",
                            "systemUUID",
                        ),
                        "",
                    ),
                },
            },
        }


CPU_NODES = ("cpu-amd64-0", "cpu-amd64-1")
ARM_NODE = "cpu-arm64-0"
GPU_NODE = "gpu-amd64-0"

FAKE_NODES: tuple[FakeNode, ...] = (
    FakeNode(CPU_NODES[0], index=0),
    FakeNode(CPU_NODES[1], index=1),
    FakeNode(ARM_NODE, arch="arm64", index=2),
    FakeNode(
        GPU_NODE,
        index=3,
        labels={"nvidia.com/gpu.present": "true"},
        taints=({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"},),
        extra_resources={GPU_RESOURCE: "2"},
    ),
)


def _log(msg: str) -> None:
    print(f"[devcluster] {msg}", file=sys.stderr, flush=True)


class DevCluster:
    """One kwokctl cluster named ``name`` running from the cached binaries."""

    def __init__(self, name: str = DEFAULT_NAME, versions: Versions | None = None) -> None:
        self.name = name
        self.versions = versions or read_versions()
        self.bin = bin_dir(self.versions)
        self.kubeconfig = kubeconfig_path(name)
        self.workdir = cache_root() / "kwok"
        self.config_path = cache_root() / "clusters" / name / "kwokctl.yaml"

    # ------------------------------------------------------------------ plumbing
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.workdir)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _run(
        self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DevClusterError(
                f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def kwokctl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self._run([str(self.bin / "kwokctl"), *args], check=check, timeout=timeout)

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return self._run(argv, input_text=input_text, check=check, timeout=timeout)

    def require_binaries(self) -> None:
        missing = missing_binaries(self.bin)
        if missing:
            raise DevClusterError(f"missing {', '.join(missing)} in {self.bin}: run hack/cluster/build-binaries first")

    # ------------------------------------------------------------------ config
    def render_config(self) -> str:
        """kwokctl configuration (JSON documents are valid YAML) followed by every Stage."""
        b = self.bin
        conf = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeVersion": f"v{self.versions.k8s}",
                "etcdVersion": f"v{self.versions.etcd}",
                "kwokVersion": f"v{self.versions.kwok}",
                "kubeApiserverBinary": str(b / "kube-apiserver"),
                "kubeControllerManagerBinary": str(b / "kube-controller-manager"),
                "kubeSchedulerBinary": str(b / "kube-scheduler"),
                "kubectlBinary": str(b / "kubectl"),
                "etcdBinary": str(b / "etcd"),
                "etcdctlBinary": str(b / "etcdctl"),
                "kwokControllerBinary": str(b / "kwok"),
                "cacheDir": str(self.workdir / "cache"),
                "quietPull": True,
            },
            "componentsPatches": [
                {
                    "name": "kube-apiserver",
                    "extraArgs": [
                        # room for thousands of Services (the reconcile benchmark makes 2 x 500); never routed
                        {"key": "service-cluster-ip-range", "value": "10.96.0.0/16"},
                        # as OpenShift does: an owner reference that blocks deletion needs update on the owner's
                        # finalizers, so a missing RBAC verb shows here rather than on a customer's cluster
                        {"key": "enable-admission-plugins", "value": "OwnerReferencesPermissionEnforcement"},
                    ],
                },
                {
                    "name": "kube-controller-manager",
                    "extraArgs": [
                        # its FlexVolume prober creates this directory when missing: the cluster's own, removed
                        # with it, not /usr/libexec/kubernetes/... left on the machine
                        {
                            "key": "flex-volume-plugin-dir",
                            "value": str(self.workdir / "clusters" / self.name / "volume-plugins"),
                        },
                        # the one instance: without a lease to keep, a pause (a loaded machine, a test that stops
                        # it to hold a status behind) can never make it exit on a missed renew deadline
                        {"key": "leader-elect", "value": "false"},
                    ],
                },
            ],
        }
        stages = sorted(STAGES_DIR.glob("*.yaml"))
        if not stages:
            raise DevClusterError(f"no kwok Stages in {STAGES_DIR}")
        docs = [json.dumps(conf, indent=2)]
        docs += [p.read_text() for p in stages]
        return "\n---\n".join(d.strip("\n") for d in docs) + "\n"

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        proc = self.kwokctl("get", "clusters", check=False)
        return self.name in proc.stdout.split()

    def dead_components(self) -> list[str]:
        """The components (etcd, kube-apiserver, kube-controller-manager, ...) whose process kwokctl started and
        that no longer runs (gone, a zombie, its pid now another program's, or stopped): kube-controller-manager,
        for one, exits when the API server is not healthy within its 20 s at start (a loaded machine), and nothing
        restarts it (no Job controller, no garbage collector)."""
        pids = self.workdir / "clusters" / self.name / "pids"
        dead = []
        for path in sorted(pids.glob("*.pid")):
            try:
                proc = Path(f"/proc/{int(path.read_text().strip())}")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                ours = path.stem.encode() in (proc / "cmdline").read_bytes()  # not a reused pid
            except (OSError, ValueError, IndexError):
                state, ours = "gone", False
            # stopped (T, t) counts too: a test run killed while it held the controller manager stopped leaves it so
            if not ours or state in ("Z", "X", "T", "t"):
                dead.append(path.stem)
        return dead

    def healthy(self) -> bool:
        if not self.kubeconfig.exists() or self.dead_components():
            return False
        proc = self.kubectl("get", "--raw=/readyz", check=False, timeout=15)
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    def config_current(self) -> bool:
        """The running cluster was created from the configuration this checkout renders (its kwok Stages, its
        components' flags): a Stage added since is not in a cluster that was reused."""
        try:
            return self.config_path.read_text() == self.render_config()
        except FileNotFoundError:
            return False

    def server_version(self) -> str:
        out = self.kubectl("version", "-o", "json").stdout
        return str(json.loads(out)["serverVersion"]["gitVersion"])

    # ------------------------------------------------------------------ lifecycle
    def up(self, *, timeout: float = 120) -> float:
        """Create the cluster (or reuse a healthy one) and its fake nodes; returns seconds taken. A component that
        exits while the cluster comes up (kube-controller-manager gives up on an API server still starting on a
        loaded machine) gets the cluster created once more."""
        try:
            return self._up(timeout=timeout)
        except DevClusterError as exc:
            dead = self.dead_components()
            if not dead:
                raise
            _log(f"cluster {self.name}: {', '.join(dead)} exited while it came up ({exc}); creating it again")
            self._delete(check=False)
            return self._up(timeout=timeout)

    def _up(self, *, timeout: float) -> float:
        t0 = time.monotonic()
        self.require_binaries()
        if self.exists():
            if not self.healthy():
                _log(f"cluster {self.name} exists but is not healthy: recreating it")
                self._delete(check=False)
            elif not self.config_current():
                _log(f"cluster {self.name} runs another configuration (kwok Stages or flags changed): recreating it")
                self._delete(check=False)
            else:
                _log(f"reusing running cluster {self.name}")
        if not self.exists():
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(self.render_config())
            _log(f"creating cluster {self.name} (kwokctl --runtime binary, binaries from {self.bin})")
            self.kwokctl(
                "create",
                "cluster",
                f"--name={self.name}",
                f"--config={self.config_path}",
                "--runtime=binary",
                "--kubeconfig=",
                f"--wait={int(timeout)}s",
                timeout=timeout + 30,
            )
        kubeconfig = self.kwokctl("get", "kubeconfig", f"--name={self.name}").stdout
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(kubeconfig)
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)
        self._wait_ready(deadline=t0 + timeout)
        self.ensure_nodes()
        remaining = max(5.0, t0 + timeout - time.monotonic())
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            "node",
            *[n.name for n in FAKE_NODES],
            f"--timeout={int(remaining)}s",
            timeout=remaining + 10,
        )
        self._wait_default_service_account(deadline=t0 + timeout)
        elapsed = time.monotonic() - t0
        _log(f"cluster {self.name} ready in {elapsed:.1f}s; kubeconfig: {self.kubeconfig}")
        return elapsed

    def _wait_ready(self, *, deadline: float) -> None:
        while not self.healthy():
            if dead := self.dead_components():
                raise DevClusterError(f"{', '.join(dead)} of {self.name} exited; see {self.logs_hint()}")
            if time.monotonic() > deadline:
                raise DevClusterError(f"kube-apiserver of {self.name} not ready; see {self.logs_hint()}")
            time.sleep(0.25)

    def _wait_default_service_account(self, *, deadline: float) -> None:
        # Pods need the ServiceAccount that kube-controller-manager creates in every namespace.
        while self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode != 0:
            if dead := self.dead_components():
                raise DevClusterError(f"{', '.join(dead)} of {self.name} exited; see {self.logs_hint()}")
            if time.monotonic() > deadline:
                raise DevClusterError("ServiceAccount default/default never appeared (kube-controller-manager?)")
            time.sleep(0.25)

    def ensure_nodes(self) -> None:
        existing = set(self.kubectl("get", "nodes", "-o", "name").stdout.split())
        missing = [n.manifest() for n in FAKE_NODES if f"node/{n.name}" not in existing]
        if missing:
            # create (not apply): a Node's status is kept only on create.
            doc = {"apiVersion": "v1", "kind": "List", "items": missing}
            self.kubectl("create", "-f", "-", input_text=json.dumps(doc))

    def _delete(self, *, check: bool) -> None:
        # kwokctl removes the cluster's context from --kubeconfig (it rejects an empty path): point
        # it at our own kubeconfig, which goes away anyway, never at ~/.kube/config.
        self.kwokctl("delete", "cluster", f"--name={self.name}", f"--kubeconfig={self.kubeconfig}", check=check)
        self.kubeconfig.unlink(missing_ok=True)

    # ------------------------------------------------------------------ test sessions
    @property
    def session_marker(self) -> Path:
        """Written by a test session while it uses this cluster (its pid), removed when it ends."""
        return cache_root() / f"session-{self.name}.pid"

    def interrupted_session(self) -> bool:
        """A test session that used this cluster did not end (killed: a CI timeout, ^C twice, a machine stop): what
        it left (a chart release and its cluster-wide admission policy, an older CRD a test applies for a while, a
        stopped controller manager) would fail the next session's tests, so the cluster is not to be reused. A
        session still running (its pid alive, a Python process) is not interrupted."""
        try:
            text = self.session_marker.read_text()
        except FileNotFoundError:
            return False
        try:
            alive = b"python" in Path(f"/proc/{int(text.strip())}/cmdline").read_bytes()
        except (OSError, ValueError):
            alive = False
        return not alive

    def claim_session(self) -> None:
        self.session_marker.parent.mkdir(parents=True, exist_ok=True)
        self.session_marker.write_text(f"{os.getpid()}\n")

    def release_session(self) -> None:
        self.session_marker.unlink(missing_ok=True)

    def down(self) -> None:
        if self.exists():
            _log(f"deleting cluster {self.name}")
            self._delete(check=True)
        else:
            _log(f"cluster {self.name} does not exist")
        self.kubeconfig.unlink(missing_ok=True)

    def logs_hint(self) -> str:
        return str(self.workdir / "clusters" / self.name / "logs")

    @property
    def pki(self) -> Path:
        """kwokctl's PKI of this cluster: ca.crt/ca.key and the admin cert every component shares."""
        return self.workdir / "clusters" / self.name / "pki"

    def render_node_config(self, *, front_proxy: Path, node_ip: str) -> str:
        """The kwokctl configuration of the control plane beside a REAL node (hack/node/up): the test config
        plus what a kubelet, in-cluster clients and an aggregated API need.

        - the serving certificate names the ``kubernetes`` Service IP (its DNS names are kwokctl defaults)
          and the node-facing address, so a Pod's in-cluster config verifies it with the chart's defaults;
        - the API server listens beyond loopback (kube-proxy sends the Service to the advertised host address);
        - it calls the kubelet by InternalIP with a client certificate and verifies the kubelet's serving
          certificate (hack/node/pki signs it with the cluster CA): the kubelet needs no anonymous access;
        - the aggregation layer: requests proxied to metrics-server carry the caller's identity in headers,
          signed by a front-proxy client certificate from its own CA (``front_proxy``, hack/node/pki).
        """
        first, sep, rest = self.render_config().partition("\n---\n")
        conf = json.loads(first)
        conf["options"]["kubeApiserverCertSANs"] = [KUBERNETES_SERVICE_IP, node_ip]
        pki = self.pki
        args = {
            "kubelet-preferred-address-types": "InternalIP",
            "bind-address": "0.0.0.0",
            "kubelet-client-certificate": str(pki / "admin.crt"),
            "kubelet-client-key": str(pki / "admin.key"),
            "kubelet-certificate-authority": str(pki / "ca.crt"),
            "requestheader-client-ca-file": str(front_proxy / "front-proxy-ca.crt"),
            "requestheader-allowed-names": "front-proxy-client",
            "requestheader-username-headers": "X-Remote-User",
            "requestheader-group-headers": "X-Remote-Group",
            "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        }
        # kwokctl points the aggregator's client certificate at its shared admin cert: replace it in place.
        overrides = {
            "proxy-client-cert-file": str(front_proxy / "front-proxy-client.crt"),
            "proxy-client-key-file": str(front_proxy / "front-proxy-client.key"),
        }
        for patch in conf["componentsPatches"]:
            if patch["name"] == "kube-apiserver":
                patch["extraArgs"] += [{"key": k, "value": v} for k, v in args.items()]
                patch["extraArgs"] += [{"key": k, "value": v, "override": True} for k, v in overrides.items()]
        return json.dumps(conf, indent=2) + sep + rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelship_dev.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "kubeconfig", "config", "node-config"])
    parser.add_argument("--name", default=os.environ.get("MODELSHIP_CLUSTER_NAME", DEFAULT_NAME))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (up)")
    parser.add_argument("--front-proxy-dir", type=Path, help="node-config: the aggregation layer's PKI (hack/node/pki)")
    parser.add_argument("--node-ip", help="node-config: the real node's address")
    args = parser.parse_args(argv)
    cluster = DevCluster(args.name)
    try:
        if args.command == "up":
            cluster.up(timeout=args.timeout)
            print(cluster.kubeconfig)
        elif args.command == "down":
            cluster.down()
        elif args.command == "kubeconfig":
            print(cluster.kubeconfig)
        elif args.command == "config":
            sys.stdout.write(cluster.render_config())
        elif args.command == "node-config":
            if args.front_proxy_dir is None or args.node_ip is None:
                parser.error("node-config needs --front-proxy-dir and --node-ip")
            sys.stdout.write(cluster.render_node_config(front_proxy=args.front_proxy_dir, node_ip=args.node_ip))
        else:
            if cluster.exists() and cluster.healthy():
                print(f"{cluster.name}: running, {cluster.server_version()}, kubeconfig {cluster.kubeconfig}")
            else:
                print(f"{cluster.name}: not running")
                return 1
    except DevClusterError as exc:
        _log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
