"""The e2e tier: a REAL one-node cluster on this machine (hack/node/up): kube-apiserver & co. from
hack/cluster, a kubelet and kube-proxy built from the Go module proxy, Debian's containerd + runc + CNI bridge
on a private /24, CoreDNS and metrics-server (Go module proxy, hack/node/addons), our images imported into
containerd (nothing pulled). Torn down by hack/node/down, which
restores the machine (netns, bridge, mounts, cgroups, sysctls, iptables chains, processes, files under /run): the
tier proves it, comparing modelship_dev.hoststate captures taken before up and after down (real_node).

Skipped, with the reason, only where the machine cannot run a node: not root, no kubelet/containerd/CNI
(run hack/node/prepare), or the docker images missing (hack/images/build-all)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelship_dev import hoststate

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_NODE = REPO_ROOT / "hack" / "node"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: the whole pipeline on a real node (hack/node)")


_NODE_VARS = ("NODE_BIN", "CP_BIN", "KUBECONFIG_NODE", "NODE_CACHE", "NODE_RUN", "ADDONS_BIN")


def _node_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", "-c", f'source {HACK_NODE}/lib.sh && echo "{"|".join(f"${k}" for k in _NODE_VARS)}"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    keys = ("node_bin", "cp_bin", "kubeconfig", "node_cache", "node_run", "addons_bin")
    return dict(zip(keys, out.split("|"), strict=True))


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (kubelet, containerd, a bridge)"
    env = _node_env()
    for path, hint in (
        (f"{env['node_bin']}/kubelet", "hack/node/prepare"),
        (f"{env['addons_bin']}/coredns", "hack/node/prepare"),
        (f"{env['addons_bin']}/metrics-server", "hack/node/prepare"),
        (f"{env['cp_bin']}/kube-apiserver", "hack/cluster/build-binaries"),
        ("/usr/bin/containerd", "hack/node/prepare"),
        ("/usr/sbin/runc", "hack/node/prepare"),
        ("/usr/lib/cni/bridge", "hack/node/prepare"),
    ):
        if not os.access(path, os.X_OK):
            return f"{path} missing: run {hint}"
    if shutil.which("docker") is None:
        return "no docker CLI (the images are imported from the local docker engine)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the docker engine is not running: run hack/images/ensure-docker"
    for img in ("modelship/serving:0.1.0", "modelship/optimizer:0.1.0"):
        if subprocess.run(["docker", "image", "inspect", img], capture_output=True).returncode != 0:
            return f"docker image {img} missing: run hack/images/build-all"
    return None


@dataclass
class RealNode:
    kubeconfig: str
    kubectl_bin: str
    node_name: str
    workdir: Path

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def apply(self, obj: dict[str, Any], namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(obj))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json"))  # type: ignore[no-any-return]

    def wait_for(self, what: str, fn: Any, timeout: float = 180, interval: float = 0.5,
                 namespace: str | None = None) -> Any:  # fmt: skip
        """``fn()`` until truthy, at most ``timeout`` seconds; past it AssertionError, followed by the diagnosis of
        ``namespace`` (its Jobs, pods and events: node_demo.diagnose) when one is given."""
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                said = f"timed out after {timeout}s waiting for {what}"
                if namespace is not None:
                    from modelship_dev import node_demo

                    said += "\n" + node_demo.diagnose((), namespace, why=said)
                raise AssertionError(said)
            time.sleep(interval)


_REPORTED: list[tuple[BaseException, str]] = []
"""The setup errors already reported in full, with the test that reported them (a module-scoped fixture's error is
raised again for each of the module's tests: its diagnosis is printed once)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed e2e test's report names the running operator's log file; a fixture error already reported by an
    earlier test of the module is reported again in two lines (the first report holds its diagnosis). A failure's
    short-summary line is its first line: with $CI or $BUILD_NUMBER set (as on CI) pytest prints that message whole,
    and an e2e failure's message carries a diagnosis of up to 20 kB, printed in its FAILURES/ERRORS section already."""
    report = yield
    if not report.failed:
        return report
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and "\n" in (getattr(crash, "message", "") or ""):
        crash.message = crash.message.splitlines()[0]
    demo = sys.modules.get("modelship_dev.node_demo")
    op = demo.running_operator() if demo is not None else None
    if op is not None:
        report.sections.append(("modelship operator", f"its log is saved to {op.log} when it stops"))
    exc = call.excinfo.value if call.excinfo is not None else None
    if call.when != "setup" or exc is None:
        return report
    first = next((nodeid for seen, nodeid in _REPORTED if seen is exc), None)
    if first is None:
        _REPORTED.append((exc, item.nodeid))
    else:
        head = str(exc).splitlines()[0] if str(exc) else ""
        report.longrepr = f"{type(exc).__name__}: {head}\n(the same error as in the setup of {first}: see it there)"
    return report


@pytest.fixture(scope="package")
def real_node() -> Iterator[RealNode]:
    """The node for the whole tier (package scope: down right after the tier's last test, not at the end of the
    whole suite). A node this fixture starts is held to `make demo-down`'s promise: the machine's state the node
    touches (modelship_dev.hoststate) is captured before hack/node/up and must be the same after hack/node/down,
    once every e2e test has used the node; a difference fails the tier's last test (at teardown) and names it."""
    reason = _missing()
    if reason:
        pytest.skip(f"real node unavailable: {reason}")
    env = _node_env()
    # A node somebody else started (make demo) is reused and left running.
    already_up = Path(env["node_run"], "kubelet.pid").exists()
    before = None if already_up else hoststate.capture()
    # BuildKit's newuidmap needs CAP_SYS_ADMIN in its bounding set on this VM (hack/node/runc-buildkit-caps)
    os.environ.setdefault("MODELSHIP_NODE_BUILDKIT_SYS_ADMIN", "1")
    up = subprocess.run([str(HACK_NODE / "up")], capture_output=True, text=True, timeout=1500)
    if up.returncode != 0:
        raise AssertionError(f"hack/node/up failed ({up.returncode}):\n{up.stderr[-4000:]}")
    workdir = Path(env["node_cache"]) / f"e2e-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    workdir.chmod(0o777)
    try:
        yield RealNode(env["kubeconfig"], f"{env['cp_bin']}/kubectl", "modelship-node-0", workdir)
    finally:
        down = None
        if not already_up:
            down = subprocess.run([str(HACK_NODE / "down")], capture_output=True, text=True, timeout=300)
        shutil.rmtree(workdir, ignore_errors=True)
        if before is not None and down is not None:
            left = hoststate.compare(before, hoststate.capture())
            changed = "\n".join(left)
            said = down.stderr[-3000:]
            assert not left, f"hack/node/down left the machine changed (- gone, + new):\n{changed}\ndown said:\n{said}"


@pytest.fixture
def namespace(real_node: RealNode) -> Iterator[str]:
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    real_node.kubectl("create", "namespace", ns)
    real_node.wait_for(
        "default ServiceAccount",
        lambda: real_node.kubectl("get", "sa", "default", "-n", ns, check=False),
        timeout=60,
    )
    try:
        yield ns
    finally:
        real_node.kubectl("delete", "namespace", ns, "--wait=false", check=False)


_REGISTRY_READY: set[Path] = set()
"""The nodes (by their e2e workdir, one per hack/node/up of the real_node fixture) whose registry node_demo.prepare_node
already started and pushed the serving runtime to: the modules after the first skip it (no test stops the registry
or deletes that image)."""


def prepare_pipeline(real_node: RealNode) -> Any:
    """What every pipeline test module needs first: the BuildKit image (else skip), the node's registry and base
    image (node_demo.prepare_node, once per node), the CRDs applied and Established. -> node_demo."""
    from modelship_dev import node_demo as demo

    if subprocess.run(["docker", "image", "inspect", "modelship/buildkit:0.1.0"], capture_output=True).returncode:
        pytest.skip("docker image modelship/buildkit:0.1.0 missing: run hack/node/buildkit-image")
    if real_node.workdir not in _REGISTRY_READY:
        demo.prepare_node()
        _REGISTRY_READY.add(real_node.workdir)
    demo.kc("apply", "-f", str(REPO_ROOT / "crds"))
    real_node.wait_for(
        "CRD established",
        lambda: "True" in demo.kc("get", "crd", "modeldeployments.modelship.io",
                                  "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                  check=False),
        timeout=60,
    )  # fmt: skip
    return demo
