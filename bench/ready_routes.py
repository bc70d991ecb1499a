"""How Ready relates to routing on the real node (hack/node: kubelet + containerd + kube-proxy): for
examples/linear-regression.yaml (3 replicas), cold and warm, the moments after `kubectl apply` when

  available  the Deployment reports its 3 updated replicas available (what made a ModelDeployment Ready before it
             waited for the Service's EndpointSlices)
  slice      the Service's EndpointSlices list 3 ready endpoints (watched, as the operator does)
  Ready      the ModelDeployment's Ready condition turns True (watched)
  answer     the first successful answer of a prediction through the Service's ClusterIP from the host (polled
             every 10 ms; kube-proxy programs the Service after the slice)

each seen by its own thread (watch events, timestamps on one monotonic clock). Prints one row per run and the
medians of the gaps; appends a section to bench/RESULTS.md. Leaves the machine as it was (hack/node/down).

    python bench/ready_routes.py [--warm-runs 4] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubernetes import client, config, watch  # noqa: E402

from bench.apply_to_ready import delete_md, node_with_operator  # noqa: E402
from bench.results import cpu_model, publish  # noqa: E402
from modelship_dev import node_demo as demo  # noqa: E402

REPLICAS = 3
POLL_SECONDS = 0.01


class Run:
    """One apply: the first moment each of the four things was seen (monotonic seconds since the apply)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.t0 = 0.0
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def mark(self, what: str) -> None:
        with self.lock:
            self.seen.setdefault(what, time.monotonic() - self.t0)

    def _watch(self, what: str, list_fn: Any, done: Any, **kw: Any) -> None:
        w = watch.Watch()
        while not self.stop.is_set() and what not in self.seen:
            for ev in w.stream(list_fn, timeout_seconds=5, **kw):
                if ev["type"] != "DELETED" and done(ev["object"]):
                    self.mark(what)
                if self.stop.is_set() or what in self.seen:
                    w.stop()
                    break

    def deployment(self) -> None:
        def done(d: Any) -> bool:
            s = d.status
            return bool(s and (s.available_replicas or 0) >= REPLICAS and (s.updated_replicas or 0) == REPLICAS
                        and (s.replicas or 0) == REPLICAS)  # fmt: skip

        self._watch("available", client.AppsV1Api(self.api).list_namespaced_deployment, done, namespace=demo.NS,
                    field_selector=f"metadata.name={demo.NAME}")  # fmt: skip

    def slices(self) -> None:
        ready: dict[str, set[str]] = {}

        def done(s: Any) -> bool:
            ready[s.metadata.name] = {
                e.target_ref.name for e in s.endpoints or [] if e.target_ref and e.conditions and e.conditions.ready
            }
            return len(set().union(*ready.values())) >= REPLICAS

        self._watch("slice", client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice, done, namespace=demo.NS,
                    label_selector=f"kubernetes.io/service-name={demo.NAME}")  # fmt: skip

    def ready(self) -> None:
        def done(md: Any) -> bool:
            conds = (md.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        custom = client.CustomObjectsApi(self.api)
        self._watch("Ready", custom.list_namespaced_custom_object, done, group="modelship.io", version="v1alpha1",
                    namespace=demo.NS, plural="modeldeployments",
                    field_selector=f"metadata.name={demo.NAME}")  # fmt: skip

    def answer(self) -> None:
        core = client.CoreV1Api(self.api)
        ip = port = None
        while not self.stop.is_set() and ip is None:
            try:
                svc = core.read_namespaced_service(demo.NAME, demo.NS)
                ip, port = svc.spec.cluster_ip, svc.spec.ports[0].port
            except client.ApiException:
                time.sleep(0.05)
        while not self.stop.is_set():
            try:
                y = demo.predict(ip or "", [4.0], port=port or 8080)[0]
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                time.sleep(POLL_SECONDS)
                continue
            assert abs(y - 7.0) < 0.1, y  # the linear model: y = 2x - 1
            self.mark("answer")
            return

    def go(self, timeout: float) -> dict[str, float]:
        threads = [threading.Thread(target=f, daemon=True) for f in (self.deployment, self.slices, self.ready,
                                                                      self.answer)]  # fmt: skip
        self.t0 = time.monotonic()
        demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest()))
        for t in threads:
            t.start()
        deadline = self.t0 + timeout
        while len(self.seen) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        if len(self.seen) < 4:
            raise TimeoutError(f"after {timeout:.0f}s only saw {sorted(self.seen)}")
        return dict(self.seen)


def gaps(run: dict[str, float]) -> dict[str, float]:
    """Milliseconds between the moments (positive: the second came later)."""
    ms = {k: v * 1000 for k, v in run.items()}
    return {
        "slice - available": ms["slice"] - ms["available"],
        "Ready - slice": ms["Ready"] - ms["slice"],
        "answer - slice": ms["answer"] - ms["slice"],
        "Ready - answer": ms["Ready"] - ms["answer"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm-runs", type=int, default=4)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    begin = time.monotonic()
    runs: list[tuple[str, dict[str, float]]] = []
    load: list[float] = []
    with node_with_operator():
        api = config.new_client_from_config(config_file=demo.ENV["KUBECONFIG_NODE"])  # type: ignore[no-untyped-call]
        runs.append(("cold", Run(api).go(900)))
        load.append(os.getloadavg()[0])
        for i in range(args.warm_runs):
            delete_md()
            demo.prepare_storage()
            runs.append((f"warm {i + 1}", Run(api).go(300)))
            load.append(os.getloadavg()[0])
        delete_md()
    names = list(gaps(runs[0][1]))
    rows = [f"| {label} | " + " | ".join(f"{r[k]:.2f}" for k in ("available", "slice", "Ready", "answer")) + " | "
            + " | ".join(f"{g:+.0f}" for g in gaps(r).values()) + " |" for label, r in runs]  # fmt: skip
    med = {n: statistics.median(gaps(r)[n] for _label, r in runs) for n in names}
    text = "\n".join(
        [
            f"## Ready vs routing on the real node (bench/ready_routes.py) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Machine: {os.cpu_count()} CPUs, {cpu_model()}; load (1 min) after each run "
            f"{', '.join(f'{x:.1f}' for x in load)}; one real node (kubelet, containerd, kube-proxy iptables), the "
            f"operator as a local process, examples/linear-regression.yaml ({REPLICAS} replicas). Run took "
            f"{time.monotonic() - begin:.0f} s. Seconds after `kubectl apply`, each moment seen by its own watch (the "
            "answer: a prediction through the ClusterIP from the host, polled every 10 ms); gaps in ms.",
            "",
            "| run | available (s) | slice (s) | Ready (s) | answer (s) | " + " (ms) | ".join(names) + " (ms) |",
            "|---|---:|---:|---:|---:|" + "---:|" * len(names),
            *rows,
            "| **median** | | | | | " + " | ".join(f"**{med[n]:+.0f}**" for n in names) + " |",
            "",
            "available: the Deployment's 3 updated replicas available (Ready before this change); slice: the "
            "Service's EndpointSlices list 3 ready endpoints; Ready: the ModelDeployment's Ready turns True (it now "
            "waits for the slice); answer: the first prediction answered through the Service.",
        ]
    )
    publish(text, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
