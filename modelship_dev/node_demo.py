"""`make demo` (hack/demo/demo.py wraps this module): the whole Modelship pipeline for real on this machine
(hack/node: a real kubelet + containerd node beside a kwokctl control plane, CoreDNS and metrics-server, a
local registry, the operator installed with its Helm chart).

Steps: node up (--registry) -> base serving image pushed to the local registry -> CRDs, the `models`
PV/PVC (hostPath) with the examples' files, artifact PVs -> the operator (helm install of the chart) -> apply
examples/linear-regression.yaml and examples/digits-int8.yaml (registry rewritten to the run's own) -> live
stage display until Ready -> call each model by its status.url (the name resolved by the cluster DNS, from
the host and from a Pod in another namespace) and every serving Pod -> reports and endpoints -> wait for
Ctrl-C -> teardown (with --keep: the node and the operator stay up; `make demo-down` ends both).

    python hack/demo/demo.py [--no-wait] [--keep] [--cold] [--skip-digits] [--local-operator] [--timeout S]
                             [--json-timings FILE]
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from modelship_dev import diagnosis, dns, poll

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / "hack" / "node"
NS = "default"
NAME = "linear-regression"  # the seed's case, examples/linear-regression.yaml
DIGITS = "digits-cnn"  # examples/digits-int8.yaml: prune 80% with fine-tuning + full int8, gated on accuracy
EXAMPLES = {NAME: "linear-regression.yaml", DIGITS: "digits-int8.yaml"}
STAGES = ("Resolved", "Optimized", "GatePassed", "ImageBuilt", "Deployed", "Ready")
CLIENT_NS = "modelship-demo-client"  # the demo's client Pods: another namespace than the models'


def node_env() -> dict[str, str]:
    keys = ["CP_BIN", "KUBECONFIG_NODE", "NODE_CACHE", "REGISTRY", "NODE_RUN", "CTR"]
    out = subprocess.run(
        ["bash", "-c", f"source {NODE}/lib.sh && " + " && ".join(f'echo "${{{k}[*]}}"' for k in keys)],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    return dict(zip(keys, out, strict=True))


ENV = node_env()
KUBECTL = [f"{ENV['CP_BIN']}/kubectl", f"--kubeconfig={ENV['KUBECONFIG_NODE']}"]
DEMO = Path(ENV["NODE_CACHE"]) / "demo"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[demo {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def sh(*argv: str, input_text: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(argv), input=input_text, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def kc(*args: str, input_text: str | None = None, check: bool = True) -> str:
    return sh(*KUBECTL, *args, input_text=input_text, check=check)


def kjson(*args: str) -> Any:
    out = kc(*args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_node() -> None:
    say("node: hack/node/up --registry (control plane, containerd, kubelet, registry; images imported)")
    os.environ.setdefault("MODELSHIP_NODE_BUILDKIT_SYS_ADMIN", "1")
    if os.environ["MODELSHIP_NODE_BUILDKIT_SYS_ADMIN"] == "1":
        say(
            "NOTE: the node adds CAP_SYS_ADMIN to the BuildKit container's bounding set (hack/node/runc-buildkit-caps):"
        )
        say("      (hack/node/runc-buildkit-caps): this VM refuses rootless BuildKit newuidmap otherwise")
    sh(str(NODE / "up"), "--registry")
    ctr = ENV["CTR"].split()
    base = f"{ENV['REGISTRY']}/modelship/serving:0.1.0"
    sh(*ctr, "images", "tag", "--force", "docker.io/modelship/serving:0.1.0", base)
    sh(*ctr, "images", "push", "--plain-http", base, check=True)
    say(f"registry: pushed the serving runtime as {base} (the build's FROM)")


def prepare_storage(digits: bool = False) -> Path:
    models = DEMO / "models" / NAME
    artifacts = DEMO / "artifacts"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    models.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    for d in (DEMO, DEMO / "models", models, artifacts):
        d.chmod(0o777)
    if not (models / "model.h5").exists():
        say("models: training the seed example y = 2x - 1 (modelship.optimize.examples.linear)")
        sys.path.insert(0, str(REPO / "operator"))
        from modelship.optimize import examples

        ex = examples.linear(DEMO / "example", claim="c")
        for f in ("model.h5", "eval.npz"):
            shutil.copy(ex.root / "c" / "linear" / f, models / f)
    if digits:
        dig = DEMO / "models" / "digits"
        dig.mkdir(exist_ok=True)
        dig.chmod(0o777)
        if not (dig / "cnn.h5").exists():
            say("models: training the digits CNN on sklearn's 8x8 digits (modelship.optimize.examples.digits)")
            sys.path.insert(0, str(REPO / "operator"))
            from modelship.optimize import examples

            ex = examples.digits(DEMO / "example", kind="cnn", claim="c")
            for src, dst in (("model.h5", "cnn.h5"), ("train.npz", "train.npz"), ("eval.npz", "test.npz")):
                shutil.copy(ex.root / "c" / "digits-cnn" / src, dig / dst)
    pv = [
        {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "demo-models"},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "claimRef": {"namespace": NS, "name": "models"},
                "hostPath": {"path": str(DEMO / "models"), "type": "Directory"},
            },
        },
        {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models", "namespace": NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "demo-models",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]  # fmt: skip
    # One artifact PV per ModelDeployment, pre-bound to the claim the operator makes (<name>-artifacts), all on
    # the same directory (revisions are content-addressed subdirectories, they never collide).
    for name in (NAME, DIGITS) if digits else (NAME,):
        pv_name = f"demo-artifacts-{name}"
        pv.append({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "claimRef": {"namespace": NS, "name": f"{name}-artifacts"},
                "hostPath": {"path": str(artifacts), "type": "Directory"},
            },
        })  # fmt: skip
        # A PV whose claim went with an earlier ModelDeployment keeps that claim's uid in its claimRef (Released,
        # or still Bound until the binder's next look): it never binds again, so it is made anew. That claim is
        # waited out first: deleted in the background (--wait=false), it goes only once the pods mounting it are
        # gone, and a PV checked before that would turn Released under the next claim (which then stays Pending).
        claim = _earlier_claim_gone(name)
        old = kjson("get", "pv", pv_name) or {}
        bound_uid = ((old.get("spec") or {}).get("claimRef") or {}).get("uid")
        if old and bound_uid and bound_uid != claim:
            kc("delete", "pv", pv_name, "--wait=true")
    kc("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": pv}))
    say(f"storage: claim `models` -> hostPath {DEMO / 'models'}; artifacts -> {artifacts}")
    return models


def _earlier_claim_gone(name: str, timeout: float = 180.0) -> str | None:
    """Wait until the artifacts claim of an earlier ModelDeployment ``name`` (deleted, or being deleted) is gone;
    -> the uid of the claim a live ModelDeployment ``name`` holds (its PV stays), else None. Delete the
    ModelDeployment before: one deleted after this returns leaves its claim to go later."""
    claim = f"{name}-artifacts"
    md = kjson("get", "modeldeployment", name, "-n", NS)
    pvc = kjson("get", "pvc", claim, "-n", NS)
    if pvc is None:
        return None
    owners = {r.get("uid") for r in pvc["metadata"].get("ownerReferences") or []}
    if md is not None and not md["metadata"].get("deletionTimestamp") and md["metadata"]["uid"] in owners:
        return str(pvc["metadata"]["uid"])
    say(f"storage: waiting for claim {claim} of an earlier {name} to go (its PV is then made anew)")
    poll.until(lambda: kjson("get", "pvc", claim, "-n", NS) is None,
               pending=f"claim {NS}/{claim} of an earlier {name} not deleted", timeout=timeout)  # fmt: skip
    return None


OPERATOR_NAMESPACE = "modelship-system"
"""The operator's own namespace (the chart's release namespace; the local operator uses it too): the revision
caches live there, one ConfigMap per tenant namespace."""


def forget_revisions() -> None:
    """Cold start on a running cluster: drop the namespace's revision cache (the operator's memory of revisions
    already optimized and built, kept in the operator's namespace), so the next apply optimizes and builds again.
    Call it before the operator starts: a running operator keeps the cache it read in memory."""
    kc("delete", "configmap", "-n", OPERATOR_NAMESPACE, f"modelship-revisions-{NS}", "--ignore-not-found")


def manifest(name: str = NAME) -> dict[str, Any]:
    """The example as committed, with the registry rewritten to the run's own (and, for digits, requests that fit
    this 2-CPU node beside the linear model: the example asks 1 CPU per replica)."""
    md = yaml.safe_load((REPO / "examples" / EXAMPLES[name]).read_text())
    repo = md["spec"]["build"]["repository"]
    md["spec"]["build"]["repository"] = f"{ENV['REGISTRY']}/" + repo.split("/", 1)[1]
    md["spec"]["build"]["baseImage"] = f"{ENV['REGISTRY']}/modelship/serving:0.1.0"
    if name == DIGITS:
        md["spec"]["serving"]["resources"] = {"requests": {"cpu": "200m", "memory": "256Mi"},
                                              "limits": {"cpu": "1", "memory": "512Mi"}}  # fmt: skip
        md["spec"]["optimization"]["job"]["resources"]["requests"]["cpu"] = "500m"
    return md  # type: ignore[no-any-return]


class Operator:
    """The operator as a local process (--local-operator)."""

    def __init__(self, log_name: str = "operator.log") -> None:
        self.log = DEMO / log_name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": ENV["KUBECONFIG_NODE"],
            "PYTHONPATH": str(REPO / "operator"),
            "MODELSHIP_RETRY_BASE_SECONDS": "1",
            "MODELSHIP_RESYNC_SECONDS": "5",
            "MODELSHIP_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            # the admin policy ChartOperator's values set: the build's FROM is the node registry's serving runtime
            "MODELSHIP_POLICY_ALLOWED_IMAGE_PREFIXES": json.dumps([f"{ENV['REGISTRY']}/"]),
        }
        kc("create", "namespace", OPERATOR_NAMESPACE, check=False)
        health, metrics = free_port(), free_port()
        self.health = f"http://127.0.0.1:{health}/healthz"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelship", "operator", "--log-format", "plain",
             "--liveness", self.health, "--metrics-port", str(metrics)],
            env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        proc = self.proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"operator exited {proc.returncode}: see {self.log}")
            urllib.request.urlopen(self.health, timeout=2).close()
            return True

        running(self)
        try:
            poll.until(healthy, pending=f"operator not healthy at {self.health} (see {self.log})", timeout=60,
                       retry=(OSError,))  # fmt: skip
        except BaseException:
            self.stop()  # a fixture whose start failed never stops it
            raise
        say(f"operator: python -m modelship operator (pid {self.proc.pid}, log {self.log})")

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines of its log file."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        running(None)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def keep(self) -> str:
        """Leave it running past the demo (its own session already): hack/node/down stops it by this pid file."""
        if self.proc is None or self.proc.poll() is not None:
            return "operator: not running"
        Path(ENV["NODE_RUN"], "operator.pid").write_text(f"{self.proc.pid}\n")
        return f"operator: left running (pid {self.proc.pid}, log {self.log})"


def restrict_tenant_namespace(namespace: str = NS) -> None:
    """The tenant's namespace enforces Pod Security "restricted" (the API server refuses any other pod there): the
    optimization, export and serving pods all meet it; the build runs in the operator's own namespace."""
    kc("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
       "pod-security.kubernetes.io/enforce-version=latest", "--overwrite")  # fmt: skip
    say(f"namespace {namespace}: Pod Security restricted enforced")


class ChartOperator:
    """The operator as users run it: `helm install` of charts/modelship (its CRD, least-privilege RBAC, the
    operator image from containerd), a real Pod talking to the API server through the `kubernetes` Service."""

    RELEASE, NAMESPACE = "modelship", OPERATOR_NAMESPACE

    def __init__(self, log_name: str = "operator.log") -> None:
        """``log_name``: the file in DEMO its Pod's log is saved to when it stops (an e2e module names its own, so
        that the next module's operator does not overwrite it)."""
        self.log = DEMO / log_name
        self.helm = sh("bash", str(REPO / "hack" / "tools" / "install-helm")).strip().splitlines()[-1]
        self.installed = False

    def _helm(self, *args: str, check: bool = True) -> str:
        return sh(self.helm, f"--kubeconfig={ENV['KUBECONFIG_NODE']}", "-n", self.NAMESPACE, *args, check=check)

    def start(self) -> None:
        # Only what the demo wants faster than the defaults: the operator Pod reaches the API server with the
        # chart's in-cluster config (the `kubernetes` Service; its certificate names 10.96.0.1 and
        # kubernetes.default.svc, hack/node/up). The examples build FROM the serving runtime in the run's registry:
        # an image override the platform's admin policy must allow.
        values = {
            # namespaced, the chart's default mode: the demo's namespace only
            "operator": {"resyncSeconds": 5, "logFormat": "plain", "watchNamespaces": [NS]},
            "jobs": {"retryBaseSeconds": 1},
            "policy": {"allowedImagePrefixes": [f"{ENV['REGISTRY']}/"]},
            # a new operator process on every start: it reads the revision caches anew (forget_revisions)
            "podAnnotations": {"modelship.io/demo-start": str(time.time_ns())},
        }
        vfile = DEMO / "chart-values.json"
        vfile.write_text(json.dumps(values))
        restrict_tenant_namespace()
        running(self)
        try:
            self._helm("upgrade", "--install", self.RELEASE, str(REPO / "charts" / "modelship"), "--create-namespace",
                       "-f", str(vfile), "--wait", "--timeout", "180s")  # fmt: skip
        except RuntimeError as exc:  # helm's "context deadline exceeded" says nothing of the operator's Pod
            said = diagnose((), self.NAMESPACE, why="helm install of the operator failed")
            running(None)  # a fixture whose start failed never stops it: later diagnoses must not quote it
            raise RuntimeError(f"{exc}\n{said}") from exc
        self.installed = True
        say(f"operator: helm install charts/modelship -> {self.NAMESPACE}/{self.RELEASE} (in-cluster config)")

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines of its Pod's log (kubectl's error if there is no Pod to read)."""
        return kc("logs", "-n", self.NAMESPACE, f"deploy/{self.RELEASE}", f"--tail={lines}", *TIMEOUT)

    def stop(self) -> None:
        running(None)
        logs = kc("logs", "-n", self.NAMESPACE, f"deploy/{self.RELEASE}", "--tail=-1", check=False)
        if logs:
            self.log.write_text(logs)
            say(f"operator: its log saved to {self.log}")
        self._helm("uninstall", self.RELEASE, "--wait", "--timeout", "60s", check=False)

    def keep(self) -> str:
        """Leave the release installed past the demo (no helm uninstall): hack/node/down ends it with the node."""
        if not self.installed:
            return "operator: not installed"
        where = f"{self.NAMESPACE}/{self.RELEASE}"
        return f"operator: helm release {where} left installed (kubectl logs -n {self.NAMESPACE} deploy/{self.RELEASE})"


_running: list[Operator | ChartOperator] = []
"""The operator this process started and has not stopped yet (at most one): a diagnosis quotes its log."""


def running(op: Operator | ChartOperator | None) -> None:
    """Note ``op`` as the operator now running (None: it stopped)."""
    _running[:] = [op] if op is not None else []


def running_operator() -> Operator | ChartOperator | None:
    return _running[0] if _running else None


TIMEOUT = ("--request-timeout=10s",)
"""A diagnosis' kubectl calls: an API server that does not answer is reported, not waited on."""
LOG_LINES = 80


def _items(kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    where = ("-n", namespace) if namespace else ()
    return json.loads(kc("get", kind, *where, "-o", "json", *TIMEOUT))["items"]  # type: ignore[no-any-return]


def diagnose(names: Sequence[str], namespace: str = NS, why: str = "") -> str:
    """Why a wait on ``names`` (ModelDeployments in ``namespace``) did not end, as diagnosis.render says it: their
    conditions, the Jobs, pods and events of ``namespace`` and of the operator's namespace (the build Jobs run
    there), the nodes and the tail of the running operator's log. Never raises: what kubectl could not read is
    said in its place."""
    try:
        return _diagnose(names, namespace, why)
    except Exception as exc:  # the diagnosis must not hide the error it explains
        return f"--- diagnosis failed: {type(exc).__name__}: {diagnosis.clip(exc)} ---"


def _diagnose(names: Sequence[str], namespace: str, why: str) -> str:
    now = diagnosis.now_utc()
    sections: list[diagnosis.Section] = []

    def part(title: str, lines: Callable[[], list[str]]) -> None:
        try:
            got = lines()
        except Exception as exc:  # a failing kubectl is reported as such: its own words, not the command line
            said = str(exc)  # sh's "<argv> exited N:\n<out>\n<err>": the section's title says what was run
            why = "exited " + said.split(" exited ", 1)[1] if " exited " in said else said
            got = [f"(could not read: {type(exc).__name__}: {diagnosis.clip(why)})"]
        sections.append(diagnosis.Section(title, got))

    def deployment(name: str) -> list[str]:
        md = json.loads(kc("get", "modeldeployment", name, "-n", namespace, "-o", "json", *TIMEOUT))
        return diagnosis.deployment_lines(name, md)

    def in_namespace(ns: str, kind: str) -> list[str]:
        items = _items(kind, ns)
        if kind == "jobs":
            return diagnosis.job_lines(items, now)
        return diagnosis.pod_lines(items, now) if kind == "pods" else diagnosis.event_lines(items, now)

    for name in names:
        part(f"ModelDeployment {namespace}/{name}", functools.partial(deployment, name))
    for kind in ("jobs", "pods", "events"):
        part(f"{kind} in {namespace}", functools.partial(in_namespace, namespace, kind))
    # before the operator's namespace: render cuts from the end past TOTAL_CHARS, and these say more
    part("nodes", lambda: diagnosis.node_lines(_items("nodes")))
    op = running_operator()
    if op is None:
        sections.append(diagnosis.Section("operator log", ["no operator running (started by this process)"]))
    else:
        title = f"operator log, last {LOG_LINES} lines (the whole log: {op.log})"
        part(title, lambda: diagnosis.log_lines(op.log_tail(LOG_LINES * 25), LOG_LINES))  # probes left out
    if namespace != OPERATOR_NAMESPACE:
        for kind in ("jobs", "pods", "events"):
            part(f"{kind} in {OPERATOR_NAMESPACE}", functools.partial(in_namespace, OPERATOR_NAMESPACE, kind))
    return diagnosis.render(why or f"{', '.join(names) or namespace} at {now:%H:%M:%SZ}", sections)


class Stalled(RuntimeError):
    """A ModelDeployment a wait was on says Stalled True: it will not become Ready by itself."""


def explained(exc: Exception, names: Sequence[str], namespace: str = NS) -> Exception:
    """``exc`` (a wait's TimeoutError or Stalled) again, its message followed by the diagnosis of ``names``
    (also said): raise it ``from exc``."""
    text = diagnose(names, namespace, why=str(exc).splitlines()[0])
    say(text)
    return type(exc)(f"{exc}\n{text}")


def apply_crds(timeout: float = 60.0) -> None:
    """Apply the committed CRDs and wait until the API server serves ModelDeployments (Established). Polls the
    CRD's conditions: `kubectl wait --for=condition=Established` right after the apply fails instead of waiting
    while the new CRD has no conditions yet."""
    kc("apply", "-f", str(REPO / "crds"))

    def established() -> bool:
        crd = kjson("get", "crd", "modeldeployments.modelship.io") or {}
        conds = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
            return True
        raise poll.NotYet(f"conditions {conds}")

    poll.until(established, pending="crd/modeldeployments.modelship.io not Established", timeout=timeout)


def watch(timeout: float, name: str = NAME) -> dict[str, Any]:
    return watch_many(timeout, (name,))[name]


def watch_many(timeout: float, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Live display of every stage condition and pod until all are Ready; -> name: ModelDeployment."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    t_apply = time.monotonic()
    last_pods = ""
    done: dict[str, dict[str, Any]] = {}

    def look() -> dict[str, dict[str, Any]] | None:
        nonlocal last_pods
        for name in names:
            if name in done:
                continue
            md = kjson("get", "modeldeployment", name, "-n", NS) or {}
            st = md.get("status") or {}
            conds = {c["type"]: c for c in st.get("conditions", [])}
            for t in STAGES:
                c = conds.get(t)
                if c and seen.get((name, t)) != (c["status"], c.get("reason", "")):
                    seen[(name, t)] = (c["status"], c.get("reason", ""))
                    mark = {"True": "OK  ", "False": "..  ", "Unknown": "?   "}[c["status"]]
                    who = f"{name:<18} " if len(names) > 1 else ""
                    say(f"  {who}{mark}{t:<11} {c.get('reason', ''):<22} {c.get('message', '')[:100]}")
            if conds.get("Ready", {}).get("status") == "True":
                st["applyToReadySeconds"] = time.monotonic() - t_apply
                done[name] = md
            elif conds.get("Stalled", {}).get("status") == "True":
                raise Stalled(f"{name} stalled: {conds['Stalled'].get('message')}")  # not retried: at once
        pods = kc("get", "pods", "-n", NS, "--no-headers", check=False)
        counts: dict[str, int] = {}
        for ln in pods.splitlines():
            f = ln.split()
            owner = next((n for n in names if f[0].startswith(n + "-")), "")
            rest = f[0][len(owner) + 1 :] if owner else f[0]
            key = f"{owner + '/' if len(names) > 1 and owner else ''}{rest.split('-')[0]}:{f[2]}"
            counts[key] = counts.get(key, 0) + 1
        summary = " ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(counts.items()))
        if summary != last_pods:
            last_pods = summary
            say(f"  pods: {summary or '-'}")
        if len(done) == len(names):
            return done
        raise poll.NotYet("not Ready: " + ", ".join(n for n in names if n not in done))

    try:
        return poll.until(look, pending=f"{', '.join(names)} not all Ready", timeout=timeout, interval=1)
    except (TimeoutError, Stalled) as exc:
        raise explained(exc, names) from exc


def serving_pods(name: str = NAME) -> list[dict[str, Any]]:
    md = kjson("get", "modeldeployment", name, "-n", NS)
    sel = md["status"]["selector"]
    items = kjson("get", "pods", "-n", NS, "-l", sel)["items"]
    return [
        p for p in items
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]  # fmt: skip


def status_url(name: str = NAME) -> str:
    """The ModelDeployment's status.url: http://<service>.<namespace>.svc.cluster.local:<port>/<endpoint>."""
    return str(kjson("get", "modeldeployment", name, "-n", NS)["status"]["url"])


ROUTE_DEADLINE = 30.0
"""Seconds a Service address may take to route after the ModelDeployment is Ready (kube-proxy's lag)."""
_NOT_ROUTED_YET = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT)


def routed(ip: str, port: int, deadline: float = ROUTE_DEADLINE, connect_timeout: float = 2.0) -> float:
    """Wait until kube-proxy routes the Service address ``ip:port`` (a TCP connection to it is accepted) -> the
    seconds waited. A ModelDeployment turns Ready once the Service's EndpointSlices list its revision's pods as
    ready endpoints (the operator waits for them); kube-proxy applies an EndpointSlice change at most once a second
    (iptables minSyncPeriod, 1 s by default and on the node), so for a moment after Ready the Service may still
    refuse connections (kube-proxy's REJECT rule for a Service without ready endpoints) or, before its rules
    exist, leave them unanswered. Those are retried for at most ``deadline`` seconds (any other error is raised
    at once); a wait is said; past the deadline TimeoutError names the address and the last error."""
    t0, tries = time.monotonic(), 0

    def connects() -> bool:
        nonlocal tries
        tries += 1
        socket.create_connection((ip, port), timeout=connect_timeout).close()
        return True

    poll.until(connects, pending=f"{ip}:{port} not routed", timeout=deadline, interval=0.2, retry=_not_routed_yet)
    waited = time.monotonic() - t0
    if tries > 1:
        say(f"{ip}:{port}: routed by kube-proxy after {waited:.2f}s ({tries - 1} connections turned away)")
    return waited


def _not_routed_yet(exc: Exception) -> bool:
    """A connection refused, unreachable or unanswered: kube-proxy has not routed the address yet."""
    return isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno in _NOT_ROUTED_YET)


def service_address(name: str = NAME) -> tuple[str, int]:
    """Where status.url points: the address its host name resolves to through the cluster DNS (the Service's
    ClusterIP, routed to the pods by kube-proxy) and its port, once kube-proxy routes it (``routed``)."""
    ip, _, port = dns.resolve_url(status_url(name))
    routed(ip, port)
    return ip, port


def by_name(url: str) -> str:
    """``url`` with its host resolved by the cluster DNS (CoreDNS through the kube-dns Service), as a pod would:
    the host has no cluster DNS of its own, and the demo leaves the host's resolver alone. Returned once
    kube-proxy routes the address (``routed``)."""
    ip, _, port = dns.resolve_url(url)
    routed(ip, port)
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{ip}:{port}"))


def http_json(url: str, body: Any = None, timeout: float = 30) -> Any:
    """GET (no body) or POST JSON; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def predict(ip: str, xs: list[float], name: str = NAME, port: int = 8080) -> list[float]:
    """TF Serving REST predict of one-feature instances -> one output each."""
    out = http_json(f"http://{ip}:{port}/v1/models/{name}:predict", {"instances": [[x] for x in xs]}, timeout=10)
    return [p[0] for p in out["predictions"]]


def v2_request(url: str, xs: list[float]) -> dict[str, Any]:
    """Open Inference Protocol v2 request body for ``url`` (a status.url ending in /infer) with one-feature
    instances ``xs``: the input's name and datatype from the model's metadata (GET of the model path)."""
    meta = http_json(by_name(url.rsplit("/infer", 1)[0]))
    inp = meta["inputs"][0]
    return {"inputs": [{"name": inp["name"], "shape": [len(xs), 1], "datatype": inp["datatype"], "data": xs}]}


def infer(url: str, xs: list[float]) -> list[float]:
    """POST to status.url (v2 infer) by name from the host -> one output per instance."""
    out = http_json(by_name(url), v2_request(url, xs), timeout=10)
    return [float(v) for v in out["outputs"][0]["data"]]


# Runs in a client Pod (the serving image's Python): POST argv[2] (JSON) to argv[1], print the answer.
_POST_JSON = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    print(json.dumps(json.load(resp)))
"""


def pod_python(code: str, *args: str, namespace: str = CLIENT_NS, service_account: bool = False,
               timeout: float = 120) -> str:  # fmt: skip
    """Run ``python -c code args...`` in a one-shot Pod of the serving image in ``namespace`` (created if
    missing) -> its output. The Pod has the cluster's DNS and Service routing like any workload, and its
    ServiceAccount token only with ``service_account``. Deleted afterwards; a failure raises with its output."""
    kc("create", "namespace", namespace, check=False)
    pod = f"client-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": service_account, "enableServiceLinks": False,
            "containers": [{"name": "client", "image": "modelship/serving:0.1.0", "imagePullPolicy": "Never",
                            "command": ["python", "-c", code, *args],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}],
        },
    }  # fmt: skip
    deadline = time.monotonic() + timeout  # one deadline for both waits
    # the namespace's default ServiceAccount is made by the controller
    poll.until(lambda: kc("get", "serviceaccount", "default", "-n", namespace, check=False) != "",
               pending=f"no default ServiceAccount in {namespace}", timeout=timeout)  # fmt: skip
    kc("apply", "-f", "-", input_text=json.dumps(manifest))
    try:

        def finished() -> str:
            phase = ((kjson("get", "pod", pod, "-n", namespace) or {}).get("status") or {}).get("phase")
            if phase not in ("Succeeded", "Failed"):
                raise poll.NotYet(f"still {phase}")
            return str(phase)

        try:
            phase = poll.until(finished, pending=f"client pod {namespace}/{pod} not finished",
                               timeout=max(0.0, deadline - time.monotonic()))  # fmt: skip
        except TimeoutError as exc:
            raise explained(exc, (), namespace) from exc
        logs = kc("logs", "-n", namespace, pod, check=False)
        if phase != "Succeeded":
            raise RuntimeError(f"client pod {namespace}/{pod} failed:\n{logs[-2000:]}")
        return logs
    finally:
        kc("delete", "pod", pod, "-n", namespace, "--wait=false", check=False)


def call_from_pod(url: str, body: Any, namespace: str = CLIENT_NS) -> Any:
    """POST ``body`` to ``url`` from a Pod in ``namespace`` (the name resolved by the pod's cluster DNS, the
    request routed by kube-proxy) -> the decoded answer."""
    return json.loads(pod_python(_POST_JSON, url, json.dumps(body), namespace=namespace).strip().splitlines()[-1])


REPORT_KEYS = ("decision", "candidate", "gate", "metric", "baseline", "value", "metricDrop", "originalBytes",
               "optimizedBytes", "sizeRatio", "artifactDigest", "job", "message")  # fmt: skip


def print_optimization(title: str, opt: dict[str, Any]) -> None:
    print(f"\n=== {title}optimization report (status.optimization) ===")
    for k in REPORT_KEYS:
        print(f"  {k:<15} {opt.get(k)}")


def digits_accuracy(url: str, samples: int = 120) -> tuple[float, int]:
    """Held-out digits to status.url (v2 infer; the name resolved by the cluster DNS) -> (accuracy, samples)."""
    import numpy as np

    test = np.load(DEMO / "models" / "digits" / "test.npz")
    x, y = test["x"][:samples].astype(np.float32), test["y"][:samples]
    infer_url = by_name(url)
    meta = http_json(infer_url.rsplit("/infer", 1)[0])
    inp = meta["inputs"][0]
    out = http_json(infer_url, {"inputs": [{"name": inp["name"], "shape": list(x.shape), "datatype": "FP32",
                                            "data": x.ravel().tolist()}]})  # fmt: skip
    probs = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(len(x), -1)
    return float((probs.argmax(axis=1) == y).mean()), len(x)


def report_digits(md: dict[str, Any]) -> None:
    st = md["status"]
    print_optimization(f"{DIGITS}: ", st.get("optimization", {}))
    print(f"  image           {(st.get('image') or {}).get('reference')}")
    acc, n = digits_accuracy(st["url"])
    print(f"  status.url {st['url']}: accuracy {acc:.3f} on {n} held-out digits "
          f"({len(serving_pods(DIGITS))} Ready pods)")  # fmt: skip


def report(md: dict[str, Any], models: Path) -> None:
    st = md["status"]
    print_optimization(f"{NAME}: ", st.get("optimization", {}))
    print(f"  source digest   {st['source']['digest']} (file: {sha256(models / 'model.h5')})")
    print(f"\n=== image ===\n  {(st.get('image') or {}).get('reference')}")
    pods = serving_pods()
    url = st["url"]
    xs = [0.0, 1.0, 2.0, 3.0]
    print("\n=== endpoint (y = 2x - 1) ===")
    print(f"  status.url {url}")
    print(f"    from the host (the name resolved by CoreDNS): x={xs} -> {[round(y, 3) for y in infer(url, xs)]}")
    answer = call_from_pod(url, v2_request(url, xs))
    print(f"    from a Pod in namespace {CLIENT_NS} (its own cluster DNS, kube-proxy): "
          f"x={xs} -> {[round(float(y), 3) for y in answer['outputs'][0]['data']]}")  # fmt: skip
    for p in pods:
        ip = p["status"]["podIP"]
        ys = predict(ip, [0.0, 1.0, 2.0, 3.0])
        print(f"  pod {p['metadata']['name']} http://{ip}:8080/v1/models/{NAME}:predict  x=[0,1,2,3] -> "
              f"{[round(y, 3) for y in ys]}  (y = 2x - 1)")  # fmt: skip
        digests = [c.get("imageID") for c in p["status"].get("containerStatuses", [])]
        print(f"      image {p['spec']['containers'][0]['image']}  running {digests}")
    addr = urllib.parse.urlsplit(by_name(url)).netloc
    print(f"  try (from the host, {addr} being what CoreDNS answers for the name): curl -s -X POST "
          f"http://{addr}/v1/models/{NAME}:predict -d '{{\"instances\": [[5.0]]}}'")  # fmt: skip


def node_down() -> None:
    """hack/node/down: the machine as it was (its output goes to the user's terminal)."""
    subprocess.run([str(NODE / "down")], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-wait", action="store_true", help="tear down right after the report")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the cluster AND the operator running on exit (make demo-down ends both)",
    )
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json-timings", default=None)
    ap.add_argument("--cold", action="store_true", help="forget cached revisions: optimize and build again")
    ap.add_argument("--skip-digits", action="store_true", help="only the seed's linear-regression example")
    ap.add_argument("--local-operator", action="store_true", help="run the operator as a local process, not the chart")
    args = ap.parse_args(argv)
    op: Operator | ChartOperator = Operator() if args.local_operator else ChartOperator()
    rc = 1

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        DEMO.mkdir(parents=True, exist_ok=True)
        prepare_node()
        apply_crds()
        names = (NAME,) if args.skip_digits else (NAME, DIGITS)
        for name in names:  # before the storage: it waits out their claims and makes their PVs anew
            kc("delete", "modeldeployment", name, "-n", NS, "--ignore-not-found", "--wait=true")
        models = prepare_storage(digits=DIGITS in names)
        if args.cold:
            forget_revisions()
        op.start()
        for name in names:
            say(f"apply examples/{EXAMPLES[name]} (build.repository -> {ENV['REGISTRY']}/...)")
            kc("apply", "-n", NS, "-f", "-", input_text=json.dumps(manifest(name)))
        if DIGITS in names:
            say(f"  ({DIGITS}: requests lowered to 200m CPU per replica and 500m for the optimizer to fit 2 CPUs)")
        mds = watch_many(args.timeout, names)
        secs = {name: md["status"]["applyToReadySeconds"] for name, md in mds.items()}
        say("Ready: " + ", ".join(f"{n} apply -> Ready in {t:.1f}s" for n, t in secs.items()))
        report(mds[NAME], models)
        if DIGITS in mds:
            report_digits(mds[DIGITS])
        if args.json_timings:
            Path(args.json_timings).write_text(json.dumps({"applyToReadySeconds": secs[NAME], "all": secs}))
        rc = 0
        if not args.no_wait and not args.keep:
            print("\nThe demo is up. Ctrl-C tears it down.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        rc = 0 if rc == 0 else 130
    except Exception as exc:
        say(f"FAILED: {exc}")
        say(f"operator log: {op.log}; node logs: {ENV['NODE_CACHE']}/logs")
    finally:
        if args.keep:
            say(op.keep())
            say(f"kept: the node and the operator (KUBECONFIG={ENV['KUBECONFIG_NODE']}); `make demo-down` ends both")
        else:
            op.stop()
            say("teardown: hack/node/down")
            node_down()
    return rc


if __name__ == "__main__":
    sys.exit(main())
