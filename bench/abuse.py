"""Abuse benchmark: the model server as a Pod on the real node, at its default 512Mi memory limit, under hostile
traffic while a steady normal client calls it through its Service.

    flock /run/lock/modelship-node.lock bash -c 'hack/node/down; hack/images/build-all serving && \\
        PYTHONPATH=operator:. python bench/abuse.py [--before-image modelship/serving:before --before-tree T]; \\
        rc=$?; hack/node/down; exit $rc'

Runs on the real node (hack/node; brought up here when it is not, taken down again then). The serving Pod is
rendered by the operator's own code (``modelship.resources.serving``: the Deployment and Service a
ModelDeployment with default ``spec.serving`` gets: 256Mi request, 512Mi limit, probes as rendered), with the
digits CNN int8 model on a hostPath instead of the artifact claim. Then:

1. baseline: the normal client alone (small v2 JSON requests at a steady rate, one keep-alive connection);
2. abuse: the normal client goes on while, from the same machine, abusers send parallel 64 MiB JSON bodies
   (TF Serving ``instances``, Content-Length and chunked), large-but-allowed valid JSON batches, slow uploads
   (a large Content-Length, then a trickle), and hold thousands of idle connections.

Reported (and appended to bench/RESULTS.md): OOM kills and restarts of the container, failed probes (kubelet
``Unhealthy`` events), the normal client's p50/p99 during abuse vs baseline and its errors, how the abusive
requests were answered (413/429/408 vs no answer before the client's timeout), and the server's own counters.
``--before-image`` runs the same against an image of an earlier server (rendered by its own tree's code).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import append_section, cpu_model  # noqa: E402
from tests.e2e.conftest import RealNode, _node_env  # noqa: E402

PY = sys.executable
HACK_NODE = REPO / "hack" / "node"
NAME = "digits"
DEFAULT_IMAGE = "modelship/serving:0.1.0"
MiB = 1 << 20

# =============================================================================================
# the node and kubectl


def kube_json(node: RealNode, *args: str) -> Any:
    return json.loads(node.kubectl(*args, "-o", "json"))


def import_image(env: dict[str, str], image: str) -> None:
    """docker image -> the node's containerd (hack/node/images does it for the standard tags)."""
    ctr = ["ctr", "--address", f"{env['node_run']}/containerd.sock", "-n", "k8s.io", "images", "import", "-"]
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    subprocess.run(ctr, stdin=save.stdout, check=True, capture_output=True)
    if save.wait() != 0:
        raise RuntimeError(f"docker save {image} failed")


# =============================================================================================
# the model and the serving objects


def build_model(work: Path) -> tuple[Path, list[float]]:
    """The digits CNN int8 (float I/O), trained and converted in a subprocess; and one input row."""
    code = (
        "import sys; sys.path.insert(0, {!r}); import modelgen, json; from pathlib import Path; "
        "d = modelgen.build_digits(Path({!r})); print(json.dumps(d.x_test[0].ravel().tolist()))"
    ).format(str(REPO / "tests" / "serve"), str(work / "models"))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([PY, "-c", code], check=True, env=env, capture_output=True, text=True).stdout
    return work / "models" / "digits_int8.tflite", json.loads(out.strip().splitlines()[-1])


RENDER = r"""
import json, sys
from modelship.api.modeldeployment import ModelDeployment
from modelship.config import OperatorConfig
from modelship.resources import serving
md = ModelDeployment.model_validate({
    "apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": sys.argv[1], "namespace": sys.argv[2], "uid": "00000000-0000-0000-0000-000000000001"},
    "spec": {"model": {"uri": "pvc://models/digits/model.tflite", "format": "tflite"},
             "optimization": {"enabled": False}},
})
print(json.dumps({"deployment": serving.deployment(md, sys.argv[3], OperatorConfig(), None, 1),
                  "service": serving.service(md)}))
"""


def render(tree: Path, ns: str, revision: str, image: str, model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and Service the operator of ``tree`` renders for a default ModelDeployment, pointed at
    ``image`` and a hostPath holding ``revision/model.tflite``."""
    out = subprocess.run(
        [PY, "-c", RENDER, NAME, ns, revision], env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objs = json.loads(out)
    dep, svc = objs["deployment"], objs["service"]
    for obj in (dep, svc):
        obj["metadata"].pop("ownerReferences", None)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    c["image"], c["imagePullPolicy"] = image, "Never"
    host = {"name": "artifacts", "hostPath": {"path": str(model_dir), "type": "Directory"}}
    pod["volumes"] = [v if v["name"] != "artifacts" else host for v in pod["volumes"]]
    return dep, svc


# =============================================================================================
# traffic (each generator runs in its own process, on the same machine as the node)


def _request(host: str, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "application/json"}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader, timing: dict[str, float] | None = None) -> tuple[int, bytes]:
    """One response: (status, body); its Server-Timing entries (ms) into ``timing`` when given."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.lower()
        if name == "content-length":
            length = int(value)
        elif name == "server-timing" and timing is not None:
            for entry in value.split(","):
                metric, _, dur = entry.strip().partition(";dur=")
                if not dur:
                    metric, _, dur = entry.strip().partition(";desc=")  # "read": wall clock of the first byte read
                with contextlib.suppress(ValueError):
                    timing[metric] = float(dur)
    body = await reader.readexactly(length) if length else b""
    return status, body


Call = tuple[float, float, str, dict[str, float]]


def normal_client(
    host: str, port: int, row: list[float], rate: float, seconds: float, nice: int | None = None
) -> list[Call]:
    """Small v2 JSON requests at ``rate`` per second on one keep-alive connection (reconnecting after errors):
    (send time, latency s, outcome, the server's own timing in ms) per request; outcome is the status or the
    error. The requests ask for a Server-Timing header (``x-modelship-timing``). ``nice``: this process's
    priority (a client on another machine does not wait for this one's CPUs to read its answers)."""
    if nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    body = json.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": row}]})
    headers = {"Content-Type": "application/json", "x-modelship-timing": "1"}
    req = _request(host, "POST", f"/v2/models/{NAME}/infer", body.encode(), headers)
    out: list[Call] = []

    async def main() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            due = start + n / rate
            n += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t0 = time.monotonic()
            sent = time.time()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                reader, writer = conn
                writer.write(req)
                timing: dict[str, float] = {}
                status, _ = await asyncio.wait_for(_read_response(reader, timing), 10)
                got = time.time()
                if "read" in timing and "total" in timing:  # outside the server: before it read, after it wrote
                    timing["before"] = (timing["read"] - sent) * 1e3
                    timing["after"] = (got - timing.pop("read")) * 1e3 - timing["total"]
                out.append((sent, time.monotonic() - t0, str(status), timing))
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
                out.append((time.time(), time.monotonic() - t0, type(e).__name__, {}))
                if conn is not None:
                    conn[1].close()
                conn = None

    asyncio.run(main())
    return out


def abusers(host: str, port: int, seconds: float, cfg: dict[str, Any]) -> dict[str, Any]:
    """The hostile mix, for ``seconds``. Returns outcome counts per kind of abuse."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cfg.get("cgroup_procs"):
        Path(cfg["cgroup_procs"]).write_text(str(os.getpid()))  # from now on under the abusers' CPU quota
    outcomes: dict[str, dict[str, int]] = {}
    held = {"idle_open": 0, "idle_closed_by_server": 0}

    def count(kind: str, outcome: str) -> None:
        outcomes.setdefault(kind, {}).setdefault(outcome, 0)
        outcomes[kind][outcome] += 1

    async def backoff(outcome: str) -> None:
        """After "busy, retry" (429/503): retry at once (a flood), or after Retry-After (1 s) like a client."""
        if cfg["honor_retry_after"] and outcome in ("429", "503"):
            await asyncio.sleep(1.0)

    big_instances = _big_instances(cfg["big_mib"] * MiB)
    allowed = _big_instances(cfg["allowed_mib"] * MiB)
    deadline = time.monotonic() + seconds
    path_v1 = f"/v1/models/{NAME}:predict"

    async def send_large(kind: str, body: bytes, chunked: bool) -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                count(kind, "connect failed")
                await asyncio.sleep(0.2)
                continue
            if chunked:
                writer.write(f"POST {path_v1} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            else:
                writer.write(f"POST {path_v1} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            answer = asyncio.ensure_future(_read_response(reader))
            view = memoryview(body)
            try:
                for off in range(0, len(body), MiB):
                    if answer.done():
                        break
                    part = view[off : off + MiB]
                    writer.write(b"%x\r\n" % len(part) + part + b"\r\n" if chunked else part)
                    await writer.drain()
                if chunked and not answer.done():
                    writer.write(b"0\r\n\r\n")
                status, _ = await asyncio.wait_for(answer, cfg["client_timeout_s"])
                count(kind, str(status))
                await backoff(str(status))
            except TimeoutError:
                count(kind, "no answer (client timeout)")
            except (OSError, asyncio.IncompleteReadError):
                if answer.done() and not answer.cancelled() and answer.exception() is None:
                    count(kind, str(answer.result()[0]))
                else:
                    count(kind, "connection closed without an answer")
            finally:
                answer.cancel()
                writer.close()

    async def slow_upload() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                count("slow upload", "connect failed")
                await asyncio.sleep(0.5)
                continue
            writer.write(
                f"POST {path_v1} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {cfg['slow_mib'] * MiB}\r\n\r\n".encode()
            )
            answer = asyncio.ensure_future(_read_response(reader))
            try:
                while not answer.done() and time.monotonic() < deadline + cfg["client_timeout_s"]:
                    writer.write(b"[" * 1024)
                    await writer.drain()
                    await asyncio.wait([answer], timeout=cfg["slow_interval_s"])
                if answer.done():
                    count("slow upload", str(answer.result()[0]))
                    await backoff(str(answer.result()[0]))
                else:
                    count("slow upload", "no answer (client timeout)")
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                ok = answer.done() and not answer.cancelled() and answer.exception() is None
                count("slow upload", str(answer.result()[0]) if ok else "connection closed without an answer")
            finally:
                answer.cancel()
                writer.close()

    async def idle_connection() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError):
            count("idle connection", "connect failed")
            return
        held["idle_open"] += 1
        try:
            data = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
            if data.startswith(b"HTTP/1.1 429"):
                count("idle connection", "429")
            else:
                held["idle_closed_by_server"] += 1
                count("idle connection", "closed by the server (idle)")
        except TimeoutError:
            count("idle connection", "still open at the end")
        except OSError:
            count("idle connection", "closed by the server (idle)")
        finally:
            writer.close()

    async def main() -> None:
        tasks = [asyncio.ensure_future(send_large("64 MiB JSON", big_instances, False)) for _ in range(cfg["big"])]
        tasks += [asyncio.ensure_future(send_large("64 MiB JSON, chunked", big_instances, True))
                  for _ in range(cfg["big_chunked"])]  # fmt: skip
        tasks += [asyncio.ensure_future(send_large(f"{cfg['allowed_mib']} MiB valid JSON", allowed, False))
                  for _ in range(cfg["allowed"])]  # fmt: skip
        tasks += [asyncio.ensure_future(slow_upload()) for _ in range(cfg["slow"])]
        for _ in range(cfg["idle"]):
            tasks.append(asyncio.ensure_future(idle_connection()))
            await asyncio.sleep(cfg["idle_ramp_s"] / max(1, cfg["idle"]))
        await asyncio.wait(tasks, timeout=seconds + cfg["client_timeout_s"] + 30)
        for t in tasks:
            t.cancel()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    asyncio.run(main())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"outcomes": outcomes, **held, "cpu_s": cpu, "wall_s": time.monotonic() - t0}


# =============================================================================================
# the abusers' CPU: unconstrained (same machine, same priority), or a cgroup with a CPU quota and the lowest
# weight, as attackers on other machines would be (they cost the node only the traffic they send)


@contextlib.contextmanager
def abuser_cgroup(cpus: float | None) -> Any:
    """A CPU cgroup (v1 or v2) limited to ``cpus`` CPUs at the lowest weight: yields the file a process writes its
    pid to, to join it (None: unconstrained)."""
    if not cpus:
        yield None
        return
    period = 100_000
    quota = max(1000, int(cpus * period))
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / "modelship-abusers"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cpu.shares").write_text("2")
        root_procs = v1 / "cgroup.procs"
    else:
        v2 = Path("/sys/fs/cgroup")
        with contextlib.suppress(OSError):
            (v2 / "cgroup.subtree_control").write_text("+cpu")
        group = v2 / "modelship-abusers"
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota} {period}")
        (group / "cpu.weight").write_text("1")
        root_procs = v2 / "cgroup.procs"
    try:
        yield str(group / "cgroup.procs")
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                root_procs.write_text(pid)
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _big_instances(size: int) -> bytes:
    """A TF Serving row-format body of about ``size`` bytes: valid digits rows (8x8x1 floats)."""
    row = "[" + ",".join(["[" + ",".join(["[0.123456789]"] * 8) + "]"] * 8) + "]"
    n = max(1, size // (len(row) + 1))
    return ('{"instances":[' + ",".join([row] * n) + "]}").encode()


# =============================================================================================
# one scenario


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def scrape(ip: str, port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


#: server counters reported after the abuse
REPORTED = (
    "modelship_budget",
    "modelship_rejected",
    "modelship_http_",
    "modelship_max",
    "modelship_resident",
    "modelship_memory",
)


def histogram_quantile(m0: dict[str, float], m1: dict[str, float], name: str, q: float) -> str:
    """The bucket bound under which a ``q`` share of the observations between two scrapes fall ("<= 5 ms")."""
    buckets: list[tuple[float, float]] = []
    for key, v in m1.items():
        if key.startswith(name + "_bucket{") and 'le="' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), v - m0.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return "n/a"
    for bound, n in buckets:
        if n >= q * buckets[-1][1]:
            return "> 1 s" if bound == float("inf") else f"<= {bound * 1e3:g} ms"
    return "n/a"


def time_split(calls: list[Call], m0: dict[str, float], m1: dict[str, float], seconds: float) -> dict[str, Any]:
    """Where the normal client's time went in one phase: the client's latency, the server's own (Server-Timing:
    first byte read to answer written), the rest (outside the server process: kernel, network, kube-proxy, or
    the server waiting for a CPU before it could read), the wait for a worker and the run; from the server's
    counters between the phase's scrapes: its event loop's lag, the CPU its loop thread waited for, its CPU."""
    ok = [c for c in calls if c[2] == "200" and "total" in c[3]]

    def pcts(values: list[float]) -> tuple[float, float]:
        return percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3

    def delta(name: str) -> float:
        return (m1.get(name, 0.0) - m0.get(name, 0.0)) / max(seconds, 1e-9)

    worst = sorted(ok, key=lambda c: -c[1])[: max(1, len(ok) // 100)]
    return {
        "n": len(ok),
        "client": pcts([c[1] for c in ok]),
        "server": pcts([c[3]["total"] / 1e3 for c in ok]),
        "outside": pcts([c[1] - c[3]["total"] / 1e3 for c in ok]),
        "before": pcts([c[3].get("before", 0.0) / 1e3 for c in ok]),
        "after": pcts([c[3].get("after", 0.0) / 1e3 for c in ok]),
        "recv": pcts([c[3].get("recv", 0.0) / 1e3 for c in ok]),
        "queue": pcts([c[3].get("queue", 0.0) / 1e3 for c in ok]),
        "run": pcts([c[3].get("run", 0.0) / 1e3 for c in ok]),
        "worst_1pct": [{"client_ms": round(c[1] * 1e3, 2), **c[3]} for c in worst],
        "loop_lag_p99": histogram_quantile(m0, m1, "modelship_event_loop_lag_seconds", 0.99),
        "loop_cpu_wait": delta("modelship_event_loop_cpu_wait_seconds_total"),
        "loop_cpu": delta("modelship_event_loop_cpu_seconds_total"),
        "server_cpu": delta("modelship_process_cpu_seconds_total"),
        "rejected_per_s": delta("modelship_http_rejected_requests_total"),
        "loop_lag_over_25ms": round(delta("modelship_event_loop_lag_seconds_count") * seconds
                                    - delta('modelship_event_loop_lag_seconds_bucket{le="0.025"}') * seconds),
        "gc_pauses": {
            gen: (round(delta(f'modelship_gc_pause_seconds_count{{generation="{gen}"}}') * seconds),
                  round(delta(f'modelship_gc_pause_seconds_sum{{generation="{gen}"}}') * seconds * 1e3, 1))
            for gen in "012"
        },
        "gc_p99": histogram_quantile(m0, m1, "modelship_gc_pause_seconds", 0.99),
    }


def container_memory_peak(pod_uid: str) -> int | None:
    """Peak memory of the pod's cgroup (v1 max_usage_in_bytes / v2 memory.peak) on this host, if found."""
    for root, name in (("/sys/fs/cgroup/memory", "memory.max_usage_in_bytes"), ("/sys/fs/cgroup", "memory.peak")):
        for path in Path(root).glob(f"**/*{pod_uid.replace('-', '_')}*/{name}"):
            return int(path.read_text())
        for path in Path(root).glob(f"**/pod{pod_uid}/{name}"):
            return int(path.read_text())
    return None


def run_scenario(
    node: RealNode, label: str, tree: Path, image: str, model: Path, row: list[float], args: Any
) -> dict[str, Any]:
    ns = f"abuse-{uuid.uuid4().hex[:6]}"
    revision = "r" + uuid.uuid4().hex[:8]
    model_dir = Path(tempfile.mkdtemp(prefix="modelship-abuse-", dir=args.workdir))
    (model_dir / revision).mkdir()
    (model_dir / revision / "model.tflite").write_bytes(model.read_bytes())
    for p in (model_dir, model_dir / revision):
        p.chmod(0o755)
    (model_dir / revision / "model.tflite").chmod(0o644)
    node.kubectl("create", "namespace", ns)
    try:
        node.wait_for("default ServiceAccount", lambda: node.kubectl("get", "sa", "default", "-n", ns, check=False), 60)
        dep, svc = render(tree, ns, revision, image, model_dir)
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        node.apply(dep, ns)
        node.apply(svc, ns)

        def ready_pod() -> dict[str, Any] | None:
            for p in kube_json(node, "get", "pods", "-n", ns)["items"]:
                conds = {x["type"]: x["status"] for x in p["status"].get("conditions", [])}
                if conds.get("Ready") == "True" and not p["metadata"].get("deletionTimestamp"):
                    return p  # type: ignore[no-any-return]
            return None

        pod = node.wait_for("the serving pod to be Ready", ready_pod, 300)
        pod_name, pod_ip, uid = pod["metadata"]["name"], pod["status"]["podIP"], pod["metadata"]["uid"]
        cluster_ip = node.get("service", svc["metadata"]["name"], ns)["spec"]["clusterIP"]
        port = svc["spec"]["ports"][0]["port"]
        mport = next((p["containerPort"] for p in c["ports"] if p["name"] == "metrics"), port)
        print(f"[{label}] pod {pod_name} {pod_ip}, Service {cluster_ip}:{port}, limits {c['resources']}", flush=True)
        before = scrape(pod_ip, mport)
        start = time.time()

        ctx = mp.get_context("spawn")
        total = args.baseline + args.abuse
        with ctx.Pool(2) as pool, abuser_cgroup(args.abusers_cpus) as cgroup_procs:
            normal = pool.apply_async(normal_client, (cluster_ip, port, row, args.rate, total, args.client_nice))
            time.sleep(args.baseline)
            at_start = scrape(pod_ip, mport)
            abuse_start = time.time()
            cfg = {
                "big": args.big, "big_chunked": args.big_chunked, "big_mib": 64, "allowed": args.allowed,
                "allowed_mib": args.allowed_mib, "slow": args.slow, "slow_mib": 8, "slow_interval_s": 2.0,
                "idle": args.idle, "idle_ramp_s": 5.0, "client_timeout_s": args.client_timeout,
                "honor_retry_after": not args.flood, "cgroup_procs": cgroup_procs,
            }  # fmt: skip
            bad = pool.apply_async(abusers, (cluster_ip, port, args.abuse, cfg))
            calls = normal.get(timeout=total + 120)
            at_end = scrape(pod_ip, mport)
            abuse_end = time.time()
            abuse = bad.get(timeout=args.abuse + args.client_timeout + 120)
        time.sleep(2)
        after = scrape(pod_ip, mport)

        pod = node.get("pod", pod_name, ns)
        status = pod["status"]["containerStatuses"][0]
        last = status.get("lastState", {}).get("terminated", {})
        events = kube_json(node, "get", "events", "-n", ns)["items"]
        probes = [e for e in events if e.get("reason") == "Unhealthy"]
        oom = sum(1 for e in events if "OOM" in (e.get("reason", "") + e.get("message", "")))
        oom = max(oom, 1 if last.get("reason") == "OOMKilled" else 0)
        base = [lat for t, lat, o, _ in calls if t < abuse_start and o == "200"]
        during = [lat for t, lat, o, _ in calls if t >= abuse_start and o == "200"]
        errors = [o for t, _, o, _ in calls if t >= abuse_start and o != "200"]
        split = {
            "alone": time_split([c for c in calls if c[0] < abuse_start], before, at_start, abuse_start - start),
            "abuse": time_split([c for c in calls if c[0] >= abuse_start], at_start, at_end, abuse_end - abuse_start),
        }
        return {
            "label": label,
            "image": image,
            "restarts": status.get("restartCount", 0),
            "last_terminated": last.get("reason", ""),
            "oom_kills": oom,
            "failed_probes": sum(int(e.get("count", 1)) for e in probes),
            "probe_messages": sorted({e.get("message", "")[:120] for e in probes})[:3],
            "baseline": {"n": len(base), "p50": percentile(base, 0.5), "p99": percentile(base, 0.99)},
            "abuse": {
                "n": len(during),
                "p50": percentile(during, 0.5),
                "p99": percentile(during, 0.99),
                "errors": len(errors),
                "error_kinds": sorted(set(errors)),
            },
            "normal_total": len(calls),
            "split": split,
            "abusive": abuse,
            "metrics_before": {k: v for k, v in before.items() if k.startswith(("modelship_budget", "modelship_max"))},
            "metrics_after": {k: v for k, v in after.items() if k.startswith(REPORTED)},
            "memory_peak": container_memory_peak(uid),
        }
    finally:
        node.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# =============================================================================================
# report


def render_report(results: list[dict[str, Any]], args: Any, load: tuple[float, float]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"## Abuse on the real node (bench/abuse.py) — {now}",
        "",
        f"Machine: {os.cpu_count()} CPUs, {cpu_model()}; one real node (hack/node). The server is the Pod the "
        "operator renders for a default `spec.serving` (memory request 256Mi, limit 512Mi enforced by the "
        "kubelet; probes as rendered), digits CNN int8, reached through its Service (ClusterIP, kube-proxy). "
        f"Normal client: {args.rate:g} small v2 JSON requests/s on one keep-alive connection, {args.baseline:g} s "
        f"alone then {args.abuse:g} s under abuse: {args.big} x 64 MiB `instances` bodies (Content-Length) and "
        f"{args.big_chunked} chunked, in a loop; {args.allowed} x {args.allowed_mib} MiB valid JSON batches; "
        f"{args.slow} slow uploads (Content-Length 8 MiB, 1 KiB every 2 s); {args.idle} idle connections. "
        + (
            "Refused abusers retry at once (a connection flood). "
            if args.flood
            else "Refused abusers retry after Retry-After (1 s); everything else at once. "
        )
        + (
            "Abusers and normal client run on the same 2 CPUs as the node"
            + (
                f"; the abusers in a CPU cgroup of their own (quota {args.abusers_cpus:g} CPU, lowest weight: "
                "attackers on other machines cost the node only their traffic). "
                if args.abusers_cpus
                else ", at the same priority as the node (the abusers unconstrained). "
            )
            + (
                f"The normal client runs at nice {args.client_nice} (it reads its answers when they arrive, as "
                "a client on another machine would). "
                if args.client_nice is not None
                else ""
            )
        )
        + f"Load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after (other jobs share this machine).",
        "",
        "| server | OOM kills | restarts | failed probes | normal p50 / p99 ms alone | normal p50 / p99 ms "
        "under abuse | p99 ratio | normal errors under abuse | abusive answered 413/429/408 | abusive "
        "without an answer | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, a = r["baseline"], r["abuse"]
        answered = unanswered = total = 0
        for kind, outcomes in r["abusive"]["outcomes"].items():
            if kind == "idle connection":
                continue
            for outcome, n in outcomes.items():
                total += n
                if outcome in ("413", "429", "408"):
                    answered += n
                elif not outcome.isdigit():
                    unanswered += n
        ratio = a["p99"] / b["p99"] if b["p99"] else float("nan")
        peak = f"{r['memory_peak'] / MiB:.0f} MiB" if r.get("memory_peak") else "n/a"
        out.append(
            f"| {r['label']} | {r['oom_kills']} | {r['restarts']} | {r['failed_probes']} | "
            f"{b['p50'] * 1e3:.1f} / {b['p99'] * 1e3:.1f} | {a['p50'] * 1e3:.1f} / {a['p99'] * 1e3:.1f} | "
            f"{ratio:.2f}x | {a['errors']} of {a['n'] + a['errors']} | {answered} of {total} "
            f"({answered / max(1, total):.0%}) | {unanswered} | {peak} |"
        )
    out += [
        "",
        "Where the normal client's time went (Server-Timing of each request: `server` from its first byte read to its "
        "answer written; `outside` = client - server: kernel, network, kube-proxy, or the server waiting for a CPU "
        "before reading; the server's counters over the phase: its event loop's lag p99 (bucket), CPU seconds per "
        "second its loop thread waited for a CPU, the server's CPU per second; the abusers' own CPU per second):",
        "",
        "| server | phase | client p50 / p99 ms | server p50 / p99 ms | outside p50 / p99 ms "
        "| before the server read p99 ms | after it wrote p99 ms | wait for a worker p99 ms | run p99 ms "
        "| loop lag p99 | loop CPU wait s/s | server CPU s/s "
        "| HTTP refusals /s | abusers' CPU s/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ab = r["abusive"]
        for phase, sp in r["split"].items():
            if not sp["n"]:
                continue
            abuser_cpu = f"{ab['cpu_s'] / max(ab['wall_s'], 1e-9):.2f}" if phase == "abuse" else "-"
            out.append(
                f"| {r['label']} | {phase} | {sp['client'][0]:.1f} / {sp['client'][1]:.1f} | "
                f"{sp['server'][0]:.2f} / {sp['server'][1]:.2f} | {sp['outside'][0]:.1f} / {sp['outside'][1]:.1f} | "
                f"{sp['before'][1]:.1f} | {sp['after'][1]:.1f} | "
                f"{sp['queue'][1]:.2f} | {sp['run'][1]:.2f} | {sp['loop_lag_p99']} | {sp['loop_cpu_wait']:.3f} | "
                f"{sp['server_cpu']:.2f} | {sp['rejected_per_s']:.0f} | {abuser_cpu} |"
            )
    out.append("")
    for r in results:
        for phase, sp in r["split"].items():
            gcs = ", ".join(f"gen {g}: {n} taking {ms:g} ms" for g, (n, ms) in sp["gc_pauses"].items())
            out.append(
                f"- {r['label']}, {phase}: event loop lag over 25 ms x{sp['loop_lag_over_25ms']}; garbage "
                f"collections {gcs}; the slowest 1% of normal requests (ms): "
                + "; ".join(
                    f"client {w['client_ms']:g} = before {w.get('before', 0):.1f} + server {w['total']:.1f} "
                    f"(queue {w.get('queue', 0):.1f}, run {w.get('run', 0):.1f}) + after {w.get('after', 0):.1f}"
                    for w in sp["worst_1pct"]
                )
            )
    out.append("")
    for r in results:
        kinds = "; ".join(
            f"{kind}: " + ", ".join(f"{o} x{n}" for o, n in sorted(v.items()))
            for kind, v in r["abusive"]["outcomes"].items()
        )
        line = f"- {r['label']} ({r['image']}): abusive outcomes {kinds}"
        if r["abuse"]["errors"]:
            line += f"; normal-client errors {r['abuse']['error_kinds']}"
        if r["last_terminated"]:
            line += f"; last termination {r['last_terminated']}"
        if r["probe_messages"]:
            line += f"; probe failures: {r['probe_messages']}"
        out.append(line)
        m = r["metrics_after"]
        if m:
            out.append("  server counters after: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(m.items())))
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="the server's image (another tag is imported into the node)")
    ap.add_argument("--tree", default=str(REPO / "operator"), help="operator/ whose code renders --image's Pod")
    ap.add_argument("--before-image", help="also run an earlier server image (imported into the node here)")
    ap.add_argument("--before-tree", help="operator/ of that earlier version (renders its Pod)")
    ap.add_argument("--baseline", type=float, default=20.0)
    ap.add_argument("--abuse", type=float, default=75.0)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-chunked", type=int, default=1)
    ap.add_argument("--allowed", type=int, default=2)
    ap.add_argument("--allowed-mib", type=int, default=16)
    ap.add_argument("--slow", type=int, default=64)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--client-timeout", type=float, default=30.0)
    ap.add_argument(
        "--flood", action="store_true", help="abusers retry at once after 429/503 (default: after Retry-After)"
    )
    ap.add_argument(
        "--abusers-cpus",
        type=float,
        default=None,
        help="run the abusers in a CPU cgroup with this quota (CPUs) and the lowest weight, as attackers on other "
        "machines would be (default: unconstrained, on the same CPUs at the same priority as the node)",
    )
    ap.add_argument(
        "--client-nice",
        type=int,
        default=None,
        help="the normal client's nice value (e.g. -10: it reads its answers at once, as a client on another "
        "machine would; default: the same priority as everything else)",
    )
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    args = ap.parse_args()

    env = _node_env()
    started = False
    if not Path(env["node_run"], "kubelet.pid").exists():
        subprocess.run([str(HACK_NODE / "up")], check=True)
        started = True
    args.workdir = args.workdir or env["node_cache"]
    node = RealNode(env["kubeconfig"], f"{env['cp_bin']}/kubectl", "modelship-node-0", Path(args.workdir))
    load0 = os.getloadavg()[0]
    try:
        work = Path(tempfile.mkdtemp(prefix="modelship-abuse-"))
        print("building the digits model ...", flush=True)
        model, row = build_model(work)
        runs = []
        if args.image != DEFAULT_IMAGE:
            import_image(env, args.image)  # hack/node/up imports the standard tags only
        if args.before_image:
            import_image(env, args.before_image)
            tree = Path(args.before_tree or args.tree)
            runs.append(run_scenario(node, "before", tree, f"docker.io/{args.before_image}", model, row, args))
        label = "this tree" + (f", abusers <= {args.abusers_cpus:g} CPU" if args.abusers_cpus else "") + (
            f", normal client nice {args.client_nice}" if args.client_nice is not None else ""
        )
        runs.append(run_scenario(node, label, Path(args.tree), f"docker.io/{args.image}", model, row, args))
    finally:
        if started:
            subprocess.run([str(HACK_NODE / "down")], check=False)
    report = render_report(runs, args, (load0, os.getloadavg()[0]))
    print(json.dumps(runs, indent=1, default=str))
    print(report)
    if not args.no_append:
        append_section(report, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
