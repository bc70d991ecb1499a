"""apply -> Ready of examples/linear-regression.yaml on the real node (hack/node: kubelet + containerd + kube-proxy),
cold and warm, against the floor measured in the same run: the very same serving pods (the Deployment the operator
made, with the built image, same probes, 3 replicas) applied directly, without the operator.

  cold   fresh control plane, empty registry, no cached revision: optimize Job + BuildKit build Job + rollout
  warm   the ModelDeployment deleted and applied again: the revision is cached, straight to the rollout
  floor  kubectl apply of the same Deployment + Service -> 3 Ready pods (the image is in containerd for both)

Leaves the machine as it was (hack/node/down). Prints a table; appends a section to bench/RESULTS.md.

    python bench/apply_to_ready.py [--warm-runs 3] [--floor-runs 3] [--no-append]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.results import cpu_model, publish  # noqa: E402
from modelship_dev import node_demo as demo  # noqa: E402  (make demo's steps: node, storage, operator, watch)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def job_seconds(name: str) -> float:
    job = demo.kjson("get", "job", name, "-n", demo.NS)
    st = job["status"]
    return (_ts(st["completionTime"]) - _ts(job["metadata"]["creationTimestamp"])).total_seconds()


@contextlib.contextmanager
def node_with_operator() -> Iterator[None]:
    """A fresh node (hack/node/up with an empty registry), the CRDs, the example's storage and the operator as a
    local process; the operator stopped and the node down again afterwards, whatever happened."""
    os.environ.setdefault("MODELSHIP_NODE_BUILDKIT_SYS_ADMIN", "1")
    down = [str(REPO / "hack" / "node" / "down")]
    subprocess.run(down, capture_output=True, check=False)
    shutil.rmtree(Path(demo.ENV["NODE_CACHE"]) / "registry", ignore_errors=True)
    op = demo.Operator()
    try:
        demo.DEMO.mkdir(parents=True, exist_ok=True)
        demo.prepare_node()
        demo.apply_crds()
        demo.prepare_storage()
        op.start()
        yield
    finally:
        op.stop()
        subprocess.run(down, capture_output=True, check=False)


def apply_and_wait() -> dict[str, Any]:
    demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest()))
    return demo.watch(900)  # type: ignore[no-any-return]


def delete_md() -> None:
    demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    wait_no_pods(f"modelship.io/modeldeployment={demo.NAME}")


def wait_no_pods(selector: str) -> None:
    deadline = time.monotonic() + 180
    while demo.kjson("get", "pods", "-n", demo.NS, "-l", selector)["items"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"pods {selector} still there after 180s")
        time.sleep(0.5)


def floor_objects(dep: dict[str, Any], svc: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's Deployment and Service, renamed and relabelled so nothing of the operator selects them."""
    labels = {"app": "floor"}
    d = copy.deepcopy(dep)
    d["metadata"] = {"name": "floor", "namespace": dep["metadata"]["namespace"], "labels": labels}
    d.pop("status", None)
    d["spec"]["selector"] = {"matchLabels": labels}
    d["spec"]["template"]["metadata"] = {"labels": labels}
    d["spec"]["replicas"] = 3
    s = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "floor", "namespace": svc["metadata"]["namespace"], "labels": labels},
        "spec": {"selector": labels, "ports": svc["spec"]["ports"]},
    }
    return [d, s]


def floor_run(objs: list[dict[str, Any]]) -> float:
    t0 = time.monotonic()
    demo.kc("apply", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    deadline = t0 + 300
    while (demo.kjson("get", "deployment", "floor", "-n", demo.NS).get("status") or {}).get("readyReplicas") != 3:
        if time.monotonic() > deadline:
            raise TimeoutError("floor Deployment never had 3 ready replicas")
        time.sleep(0.2)
    took = time.monotonic() - t0
    svc = demo.kjson("get", "service", "floor", "-n", demo.NS)
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    while True:  # the floor really serves: y(4) = 7 through its Service (kube-proxy may lag a moment)
        try:
            y = demo.predict(ip, [4.0], port=port)[0]
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert abs(y - 7.0) < 0.1, y
    demo.kc("delete", "deployment,service", "floor", "-n", demo.NS, "--wait=true")
    wait_no_pods("app=floor")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm-runs", type=int, default=3)
    ap.add_argument("--floor-runs", type=int, default=3)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    begin = time.monotonic()
    with node_with_operator():
        cold = apply_and_wait()
        rev = cold["status"]["revision"]
        t_cold = cold["status"]["applyToReadySeconds"]
        t_opt = job_seconds(cold["status"]["optimization"]["job"])
        t_build = job_seconds(cold["status"]["image"]["job"])
        dep = demo.kjson("get", "deployment", "-n", demo.NS, "-l", f"modelship.io/modeldeployment={demo.NAME}")
        svc = demo.kjson("get", "service", "-n", demo.NS, "-l", f"modelship.io/modeldeployment={demo.NAME}")
        floor = floor_objects(dep["items"][0], svc["items"][0])
        warm: list[float] = []
        for _ in range(args.warm_runs):
            delete_md()
            demo.prepare_storage()
            md = apply_and_wait()
            assert md["status"]["revision"] == rev and md["status"]["optimization"].get("cached") is True
            warm.append(md["status"]["applyToReadySeconds"])
        delete_md()
        floors = [floor_run(floor) for _ in range(args.floor_runs)]
    f, w = statistics.median(floors), statistics.median(warm)
    rows = [
        ("floor: Deployment + Service applied directly", f, 1.0, ", ".join(f"{x:.1f}" for x in floors)),
        ("warm: revision cached", w, w / f, ", ".join(f"{x:.1f}" for x in warm)),
        ("cold: optimize + build + rollout", t_cold, t_cold / f, f"{t_cold:.1f}"),
    ]
    text = "\n".join(
        [
            f"## Apply -> Ready on the real node (bench/apply_to_ready.py) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"Machine: {os.cpu_count()} CPUs, {cpu_model()}; one real node (kubelet, containerd, kube-proxy built "
            "from the Go proxy / Debian), the operator as a local process, examples/linear-regression.yaml "
            f"(3 replicas). Run took {time.monotonic() - begin:.0f} s. Medians; the serving image is already in "
            "containerd for the floor and warm runs (cold pulls it from the run's registry).",
            "",
            "| run | apply -> Ready (s) | vs floor | runs (s) |",
            "|---|---:|---:|---|",
            *(f"| {name} | {secs:.1f} | {ratio:.2f}x | {runs} |" for name, secs, ratio, runs in rows),
            "",
            f"Cold breakdown: optimization Job {t_opt:.1f} s, BuildKit build Job {t_build:.1f} s (creation -> "
            f"completion), the rest ({t_cold - t_opt - t_build:.1f} s) is scheduling, the rollout and the operator.",
        ]
    )
    publish(text, append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
