"""Reconcile benchmark: N ModelDeployments whose optimization and build results are already cached, from apply
to all Ready, against the API server's own floor (the same Deployments and Services created directly with the
same client), on the local control plane (hack/cluster). Prints the ratio, p50/p99 apply->Ready latency and the
operator's peak memory, and appends a section to bench/RESULTS.md.

    python bench/reconcile.py --n 100 --n 500
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from kubernetes import client, watch  # noqa: E402

from bench.results import append_section, cpu_model  # noqa: E402
from modelship.api import ModelDeployment, Summary  # noqa: E402
from modelship.config import OperatorConfig  # noqa: E402
from modelship.controller import revcache  # noqa: E402
from modelship.rbac import operator_rules  # noqa: E402
from modelship.resources.defaults import with_operator_defaults  # noqa: E402
from modelship.resources.plan import serving_plan  # noqa: E402
from modelship.resources.revision import revision  # noqa: E402
from modelship_dev import cluster as devcluster  # noqa: E402
from tests.integration.cluster import (  # noqa: E402
    OPERATOR_NAMESPACE,
    admin_client,
    apply_manifest,
    create_namespace,
    delete_namespace,
    ensure_operator_identity,
    install_crds,
)
from tests.integration.operator_harness import OperatorProcess  # noqa: E402

IMAGE = "registry.local:5000/models/bench@sha256:" + "be" * 32
GROUP, VERSION, PLURAL = "modelship.io", "v1alpha1", "modeldeployments"


def md_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": "https://models.example.com/bench/model.h5",
                "format": "h5",
                "digest": "sha256:" + "ad" * 32,
            },
            "optimization": {
                "steps": [{"type": "quantize", "quantize": {"mode": "dynamic"}}],
                "data": {"evaluation": {"uri": "https://models.example.com/bench/eval.npz", "format": "npz"}},
            },
            "build": {"repository": "registry.local:5000/models/bench"},
            "serving": {"replicas": 1, "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
        },
    }


def cached_entry() -> tuple[str, str]:
    # the revision the operator computes: of the spec with the operator's defaults filled in
    md = with_operator_defaults(ModelDeployment.from_body(md_doc("x")), OperatorConfig())
    summary = Summary(
        ok=True,
        source_digest="sha256:" + "ad" * 32,
        artifact="model.tflite",
        metric_name="accuracy",
        baseline=0.98,
        value=0.978,
        drop=0.002,
        gate="Passed",
        decision="Optimized",
        candidate="dynamic",
        original_bytes=600000,
        optimized_bytes=160000,
        compression_ratio=3.7,
    )
    return revision(md.spec), json.dumps({"summary": summary.to_line(), "image": IMAGE})


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def wait_all(
    api: client.ApiClient, ns: str, kind: str, names: set[str], start: dict[str, float], timeout: float
) -> dict[str, float]:
    """Watch until every object is Ready (ModelDeployment) / available (Deployment); name -> latency (s)."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    w = watch.Watch()
    if kind == "ModelDeployment":
        lister = client.CustomObjectsApi(api).list_namespaced_custom_object
        args: tuple[Any, ...] = (GROUP, VERSION, ns, PLURAL)
    else:
        lister, args = client.AppsV1Api(api).list_namespaced_deployment, (ns,)
    while len(done) < len(names) and time.monotonic() < deadline:
        for ev in w.stream(lister, *args, timeout_seconds=max(1, int(deadline - time.monotonic()))):
            obj = ev["object"]
            obj = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
            name = obj["metadata"]["name"]
            if name in done or name not in names:
                continue
            st = obj.get("status") or {}
            if kind == "ModelDeployment":
                ok = (
                    any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
                    and st.get("observedGeneration") == obj["metadata"]["generation"]
                )
            else:
                ok = (st.get("availableReplicas") or 0) >= 1 and st.get("observedGeneration") == obj["metadata"][
                    "generation"
                ]
            if ok:
                done[name] = time.monotonic() - start[name]
            if len(done) == len(names):
                w.stop()
                break
    if len(done) < len(names):
        raise SystemExit(f"timed out: {len(done)}/{len(names)} {kind}s ready")
    return done


def apply_all_and_wait(
    api: client.ApiClient, ns: str, kind: str, groups: list[list[dict[str, Any]]], timeout: float
) -> tuple[float, list[float]]:
    """Apply each group (named by its first object, of ``kind``) from 8 threads while a watch waits for every
    one to be ready -> (total seconds, per-object apply->ready seconds)."""
    start: dict[str, float] = {}
    lock = threading.Lock()

    def create(group: list[dict[str, Any]]) -> None:
        t = time.monotonic()
        with lock:
            start[group[0]["metadata"]["name"]] = t
        for o in group:
            apply_manifest(api, o, field_manager="bench")

    waiter: dict[str, float] = {}
    names = {g[0]["metadata"]["name"] for g in groups}
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: waiter.update(wait_all(api, ns, kind, names, start, timeout)))
    with ThreadPoolExecutor(8) as pool:
        th.start()
        list(pool.map(create, groups))
    th.join()
    return time.monotonic() - t0, list(waiter.values())


def baseline(api: client.ApiClient, n: int) -> tuple[float, list[float]]:
    ns = create_namespace(api, f"bench-base-{n}")
    try:
        config = OperatorConfig()
        objs = []
        for i in range(n):
            doc = copy.deepcopy(md_doc(f"m{i}"))
            doc["metadata"].update(namespace=ns, uid=f"00000000-0000-0000-0000-{i:012d}")
            md = ModelDeployment.from_body(doc)
            plan = serving_plan(md, revision(md.spec), config, IMAGE)
            for o in (plan.deployment, plan.service):
                o["metadata"].pop("ownerReferences", None)
            objs.append([plan.deployment, plan.service])
        return apply_all_and_wait(api, ns, "Deployment", objs, 900)
    finally:
        delete_and_wait(api, ns)


def operator_run(api: client.ApiClient, op: OperatorProcess, n: int) -> tuple[float, list[float]]:
    ns = create_namespace(api, f"bench-op-{n}")
    try:
        rev, entry = cached_entry()
        # the namespace's revision cache, where the operator keeps it (its own namespace, keyed by tenant namespace)
        cache = {"metadata": {"name": revcache.configmap_name(ns), "labels": revcache.labels(ns)}, "data": {rev: entry}}
        client.CoreV1Api(api).create_namespaced_config_map(OPERATOR_NAMESPACE, cache)
        docs = [md_doc(f"m{i}") for i in range(n)]
        for d in docs:
            d["metadata"]["namespace"] = ns
        return apply_all_and_wait(api, ns, "ModelDeployment", [[d] for d in docs], 1800)
    finally:
        delete_and_wait(api, ns)


def delete_and_wait(api: client.ApiClient, ns: str, timeout: float = 600) -> None:
    """Delete a namespace and wait until it is gone, so one run's garbage collection never overlaps the next."""
    delete_namespace(api, ns)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(ns)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1)
    raise SystemExit(f"namespace {ns} still terminating after {timeout:.0f}s")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, action="append", help="ModelDeployments per run (repeatable; default 100 and 500)")
    ap.add_argument("--cluster", default="modelship-bench")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    sizes = args.n or [100, 500]
    dc = devcluster.DevCluster(args.cluster)
    dc.up()
    api = admin_client(dc.kubeconfig)
    install_crds(api)
    core = client.CoreV1Api(api)
    for i in range(3):  # room for 2 x 500 pods beside the cluster's own nodes
        node = devcluster.FakeNode(f"bench-{i}", index=8 + i, extra_resources={"pods": "1000"}).manifest()
        try:
            core.create_node(node)
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    ensure_operator_identity(api, operator_rules())
    op = OperatorProcess(api, env={"MODELSHIP_RESYNC_SECONDS": "300"})
    op.extra_args = ["--workers", str(args.workers)]
    op.start()
    rows = []
    try:
        for n in sizes:
            base_total, base_lat = baseline(api, n)
            ours_total, ours_lat = operator_run(api, op, n)
            rows.append((n, base_total, ours_total, base_lat, ours_lat))
            print(
                f"N={n}: baseline {base_total:.1f}s, operator {ours_total:.1f}s, ratio {ours_total / base_total:.2f}x; "
                f"apply->Ready p50 {statistics.median(ours_lat):.2f}s p99 {percentile(ours_lat, 0.99):.2f}s "
                f"(baseline p50 {statistics.median(base_lat):.2f}s p99 {percentile(base_lat, 0.99):.2f}s)",
                flush=True,
            )
        assert op.proc is not None
        rss = peak_rss_mib(op.proc.pid)
        counters = [
            ln
            for ln in op.metrics().splitlines()
            if ln.startswith(
                (
                    "modelship_reconciles_total",
                    "modelship_api_writes_total",
                    "modelship_reconcile_duration_seconds_sum",
                    "modelship_reconcile_duration_seconds_count",
                    "modelship_api_request_duration_seconds_sum",
                    "modelship_api_request_duration_seconds_count",
                )
            )
        ]
        print("\n".join(counters))
        print(f"operator peak RSS: {rss:.0f} MiB")
    finally:
        op.stop()
        dc.down()
    if not args.no_record:
        record(rows, rss, args.workers)
    return 0


def record(rows: list[tuple[int, float, float, list[float], list[float]]], rss: float, workers: int) -> None:
    cpu = cpu_model()
    lines = [
        f"\n## Reconcile (bench/reconcile.py) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), local control plane (kube-apiserver "
        f"v{devcluster.read_versions().k8s} via kwok, fake nodes). Operator: {workers} reconcile workers, results "
        "cached (revision cache), so each ModelDeployment goes straight to Deployment + Service.",
        "",
        "| N | baseline: Deployments+Services direct (s) | operator: apply -> all Ready (s) | ratio | "
        "p50 apply->Ready (s) | p99 apply->Ready (s) | baseline p50 / p99 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, bt, ot, bl, ol in rows:
        lines.append(
            f"| {n} | {bt:.1f} | {ot:.1f} | {ot / bt:.2f}x | {statistics.median(ol):.2f} | "
            f"{percentile(ol, 0.99):.2f} | {statistics.median(bl):.2f} / {percentile(bl, 0.99):.2f} |"
        )
    lines.append(f"\nOperator peak RSS over the whole run: {rss:.0f} MiB.\n")
    append_section("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
