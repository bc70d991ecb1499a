"""The whole pipeline on the real node, driven by the operator installed with its Helm chart (a real Pod, the
chart's defaults: in-cluster config): examples/linear-regression.yaml -> optimize Job (a real Pod) -> BuildKit
build Job (a real Pod) pushing to the run's own registry -> 3 serving Pods running exactly the pushed digest ->
predict y = 2x - 1 by status.url (the cluster DNS name), from the host and from another namespace; a new
revision rolled out and the HPA scaling out and in under load, with zero failed requests.

Same steps as `make demo` (modelship_dev/node_demo.py, imported here)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelship_dev import dns
from modelship_dev import node_demo as demo
from tests.e2e.conftest import RealNode, prepare_pipeline

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployed(real_node: RealNode) -> Iterator[tuple[ModuleType, dict[str, Any], Path]]:
    prepare_pipeline(real_node)
    # before the storage: prepare_storage waits out the claim of the one deleted, and makes its PV anew
    demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    models = demo.prepare_storage()
    op = demo.ChartOperator(log_name="operator-test_pipeline.log")  # helm install: the operator as a real Pod
    demo.forget_revisions()  # a node reused from `make demo` remembers the revision: this tier wants it cold
    op.start()
    try:
        demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest()))
        md = demo.watch(600)
        yield demo, md, models
    finally:
        op.stop()
        demo.kc(
            "delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False
        )


def _sha(p: Path) -> str:
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def test_optimization_ran_in_a_pod_and_report_matches(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, models = deployed
    st = md["status"]
    opt = st["optimization"]
    assert st["source"]["digest"] == _sha(models / "model.h5")
    artifact = demo.DEMO / "artifacts" / opt["revision"] / opt["artifact"]
    assert artifact.exists(), f"no artifact at {artifact}"
    assert opt["artifactDigest"] == _sha(artifact)
    report = json.loads((artifact.parent / "report.json").read_text())
    assert report["summary"]["artifactDigest"] == opt["artifactDigest"]
    assert opt["gate"] == "Passed"
    pod = demo.kjson("get", "pods", "-n", demo.NS, "-l", f"job-name={opt['job']}")["items"][0]
    cs = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded" and cs["containerID"].startswith("containerd://")


def test_the_operator_is_the_charts_pod(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """helm install of charts/modelship on the real node: the operator Pod (its image imported into containerd,
    the chart's ServiceAccount and RBAC) is what created the stage Jobs."""
    demo, md, _ = deployed
    ns, name = demo.ChartOperator.NAMESPACE, demo.ChartOperator.RELEASE
    pods = demo.kjson("get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={name}")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == name and pod["spec"]["nodeName"] == "modelship-node-0"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    # the chart's defaults: in-cluster config through the `kubernetes` Service, nothing pointing elsewhere
    env = {e["name"] for c in pod["spec"]["containers"] for e in c.get("env", [])}
    assert not env & {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"}
    logs = demo.kc("logs", "-n", ns, pod["metadata"]["name"], "--tail=-1")
    assert f"{demo.NS}/{demo.NAME}: created Job {md['status']['optimization']['job']}" in logs


def test_image_built_in_a_pod_pushed_and_served_by_digest(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, _ = deployed
    img = md["status"]["image"]
    digest = img["digest"]
    # the build ran in the operator's namespace (the tenant's enforces Pod Security restricted, which rootless
    # BuildKit is not), its artifact handed over by a credential-free export Job in the tenant's namespace
    build = demo.kjson("get", "pods", "-n", demo.ChartOperator.NAMESPACE, "-l", f"job-name={img['job']}")["items"]
    assert any(p["status"]["phase"] == "Succeeded" for p in build)
    assert not demo.kjson("get", "pods", "-n", demo.NS, "-l", f"job-name={img['job']}")["items"]
    exports = demo.kjson("get", "jobs", "-n", demo.NS, "-l", "app.kubernetes.io/component=export")["items"]
    assert any((j.get("status") or {}).get("succeeded") for j in exports), exports
    # the registry of this run really has that manifest
    repo = img["reference"].split("@")[0]
    host, path = repo.split("/", 1)
    req = demo.urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{digest}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
            "application/vnd.docker.distribution.manifest.v2+json"
        },
        method="HEAD",
    )
    with demo.urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Docker-Content-Digest"] == digest
    pods = demo.serving_pods()
    assert len(pods) == 3
    for p in pods:
        assert p["spec"]["containers"][0]["image"].endswith("@" + digest)
        assert [c["imageID"].split("@")[-1] for c in p["status"]["containerStatuses"]] == [digest]


def test_three_replicas_answer_y_equals_2x_minus_1(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, _, _ = deployed
    pods = demo.serving_pods()
    assert len(pods) == 3
    for p in pods:
        ys = demo.predict(p["status"]["podIP"], [0.0, 1.0, 2.0, 3.0])
        assert ys == pytest.approx([-1.0, 1.0, 3.0, 5.0], abs=0.05)


def test_scale_to_one_and_back_to_three(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    demo, md, _ = deployed
    selector = md["status"]["selector"]

    def settled(n: int) -> bool:
        pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", selector)["items"]
        return len(pods) == n and len(demo.serving_pods()) == n

    for n in (1, 3):
        patch = json.dumps({"spec": {"serving": {"replicas": n}}})
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=merge", "-p", patch)
        deadline = time.monotonic() + 180
        while not settled(n):
            assert time.monotonic() < deadline, f"never exactly {n} Ready serving pods\n{demo.diagnose((demo.NAME,))}"
            time.sleep(1)
        for p in demo.serving_pods():
            assert demo.predict(p["status"]["podIP"], [4.0]) == pytest.approx([7.0], abs=0.05)


def test_status_url_answers_by_name_from_the_host_and_another_namespace(
    deployed: tuple[ModuleType, dict[str, Any], Path], namespace: str
) -> None:
    """status.url names the Service (<name>.<namespace>.svc.cluster.local): CoreDNS resolves it to the Service's
    ClusterIP for the host, and a Pod in ANOTHER namespace calls it by that name (its cluster DNS, kube-proxy)."""
    demo, md, _ = deployed
    url = md["status"]["url"]
    svc = demo.kjson("get", "service", "-n", demo.NS, "-l", f"modelship.io/modeldeployment={demo.NAME}")["items"][0]
    port, host = svc["spec"]["ports"][0]["port"], f"{svc['metadata']['name']}.{demo.NS}.svc.cluster.local"
    assert url == f"http://{host}:{port}/v2/models/{demo.NAME}/infer"
    assert dns.resolve_url(url) == (svc["spec"]["clusterIP"], host, port)
    for _ in range(6):  # 3 endpoints: every one of several connections answers right
        assert demo.infer(url, [0.0, 10.0]) == pytest.approx([-1.0, 19.0], abs=0.1)
    answer = demo.call_from_pod(url, demo.v2_request(url, [0.0, 10.0]), namespace=namespace)
    assert answer["model_name"] == demo.NAME
    assert answer["outputs"][0]["data"] == pytest.approx([-1.0, 19.0], abs=0.1)


class _LoadLoop(threading.Thread):
    """Predicts through the Service (its address from the cluster DNS, as a client caching the name would), one
    new connection per request, ``pause`` seconds apart, until stopped; counts every outcome."""

    def __init__(self, demo: ModuleType, url: str, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.demo, self.pause = demo, pause
        self.ip, _, self.port = dns.resolve_url(url)
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(self.pause):
            try:
                ys = self.demo.predict(self.ip, [4.0], port=self.port)
                if ys != pytest.approx([7.0], abs=0.1):
                    self.errors.append(f"wrong answer {ys}")
                else:
                    self.ok += 1
            except Exception as exc:  # every failure counts, whatever its kind
                self.errors.append(f"{type(exc).__name__}: {exc}")


def test_new_revision_rolls_out_with_no_failed_request(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """A spec change (dynamic -> float16 quantization) is a new revision: optimized and built again while the
    old pods serve, then rolled out; a load loop through the Service throughout sees zero failed requests."""
    demo, _, _ = deployed
    before = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
    old_rev, old_digest = before["status"]["revision"], before["status"]["image"]["digest"]
    loops = [_LoadLoop(demo, before["status"]["url"]) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        patch = [{"op": "replace", "path": "/spec/optimization/steps/0/quantize/mode", "value": "float16"}]
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(patch))

        def rolled_out() -> dict[str, Any] | None:
            md = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
            st = md.get("status") or {}
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            if st.get("observedGeneration") != md["metadata"]["generation"] or conds.get("Ready") != "True":
                return None
            new_digest = (st.get("image") or {}).get("digest")
            if st.get("revision") == old_rev or new_digest == old_digest:
                return None
            pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", st["selector"])["items"]
            running = [[c["imageID"].split("@")[-1] for c in p["status"].get("containerStatuses", [])] for p in pods]
            return md if len(pods) == 3 and all(r == [new_digest] for r in running) else None

        deadline = time.monotonic() + 600
        while (md := rolled_out()) is None:
            assert time.monotonic() < deadline, f"the new revision never rolled out\n{demo.diagnose((demo.NAME,))}"
            assert all(loop.is_alive() for loop in loops)
            time.sleep(1)
        # a few more requests against the new pods only
        after = [loop.ok + len(loop.errors) + 20 for loop in loops]
        while any(loop.ok + len(loop.errors) < n for loop, n in zip(loops, after, strict=True)):
            assert time.monotonic() < deadline and all(loop.is_alive() for loop in loops)
            time.sleep(0.1)
    finally:
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.join(30)
    assert md["status"]["optimization"]["candidate"] != before["status"]["optimization"]["candidate"] or (
        md["status"]["optimization"]["artifactDigest"] != before["status"]["optimization"]["artifactDigest"]
    )
    errors = [e for loop in loops for e in loop.errors]
    served = sum(loop.ok for loop in loops)
    print(f"rollout: {served} requests answered through the Service, {len(errors)} failed")
    assert errors == [], errors[:10]
    assert served > 50


LOW_MEMORY = "24Mi"
"""A memory limit the serving runtime cannot start in: its Python, numpy and the LiteRT interpreter alone take
about 45 MB, so the kernel OOM-kills it while it imports (OOMKilled, exit code 137; the container starts, so not a
CreateContainerError)."""


def _put(path: str, value: Any) -> dict[str, Any]:
    """A JSON patch operation that sets ``path`` to ``value``, or removes it for None (absent before)."""
    return {"op": "add", "path": path, "value": value} if value is not None else {"op": "remove", "path": path}


def test_a_memory_limit_it_cannot_start_in_stalls_as_a_crash_loop_while_the_old_pods_serve(
    deployed: tuple[ModuleType, dict[str, Any], Path],
) -> None:
    """The crash-loop judgement against a real kubelet: spec.serving.resources.limits.memory lowered to a value the
    server is OOM-killed in (a new template of the same revision, progressDeadlineSeconds 30). The surge pod
    crash-loops; ContainerHealthy and then Deployed say ServingCrashLoop naming OOMKilled and the spec field to
    raise, Stalled True; the three pods that served before keep answering through the Service all along (zero
    failed requests); the limit restored, the revision is Ready again with no stall left."""
    demo, _, _ = deployed
    before = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
    rev, serving = before["status"]["revision"], before["spec"]["serving"]
    old_pods = {p["metadata"]["name"] for p in demo.serving_pods()}
    assert len(old_pods) == 3
    resources = json.loads(json.dumps(serving.get("resources") or {}))
    for part in ("requests", "limits"):  # a request above the limit would be an invalid pod, not a crash
        resources.setdefault(part, {})["memory"] = LOW_MEMORY
    rollout = {**(serving.get("rollout") or {}), "progressDeadlineSeconds": 30}
    restore = [_put("/spec/serving/resources", serving.get("resources")),
               _put("/spec/serving/rollout", serving.get("rollout"))]  # fmt: skip

    def md_now() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        md = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
        current = (md.get("status") or {}).get("observedGeneration") == md["metadata"]["generation"]
        return md, {c["type"]: c for c in md["status"].get("conditions", [])} if current else {}

    def wait(what: str, fn: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := fn()):
            assert time.monotonic() < deadline, (f"{what}: not after {timeout:.0f}s; status {md_now()[0]['status']}\n"
                                                 f"{demo.diagnose((demo.NAME,))}")  # fmt: skip
            assert loop.is_alive()
            time.sleep(1)
        return value

    loop = _LoadLoop(demo, before["status"]["url"], pause=0.1)
    loop.start()
    patched = False
    try:
        patch = [_put("/spec/serving/resources", resources), _put("/spec/serving/rollout", rollout)]
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(patch))
        patched = True

        def stalled() -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
            md, conds = md_now()
            stall, deployed_ = conds.get("Stalled", {}), conds.get("Deployed", {})
            done = stall.get("status") == "True" and deployed_.get("reason") == "ServingCrashLoop"
            return (md, conds) if done else None

        md, conds = wait("Deployed ServingCrashLoop and Stalled", stalled, 300)
        ok_at_stall = loop.ok
        deployed_, healthy = conds["Deployed"], conds.get("ContainerHealthy", {})
        print(f"crash loop: Deployed {deployed_['message']}")
        assert deployed_["status"] == "False" and conds["Ready"]["status"] == "False", conds
        for said in (deployed_["message"], healthy.get("message", "")):
            assert "last terminated OOMKilled (exit code 137)" in said, said
            assert f"its memory limit is {LOW_MEMORY}: raise spec.serving.resources.limits.memory" in said, said
        assert (healthy.get("status"), healthy.get("reason")) == ("False", "ServingCrashLoop"), healthy
        assert md["status"]["revision"] == md["status"]["servingRevision"] == rev  # a new template, same revision
        # the real kubelet's word for the new pods: OOM-killed, restarted, not a container that could not be made
        pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", md["status"]["selector"])["items"]
        new = [p for p in pods if p["metadata"]["name"] not in old_pods]
        assert new and all(p["spec"]["containers"][0]["resources"]["limits"]["memory"] == LOW_MEMORY for p in new)
        last = [(c.get("lastState") or {}).get("terminated") or (c.get("state") or {}).get("terminated") or {}
                for p in new for c in p["status"].get("containerStatuses", [])]  # fmt: skip
        assert any(t.get("reason") == "OOMKilled" and t.get("exitCode") == 137 for t in last), last
        # the pods that served before are the ones that serve during the stall, and they answer through the Service
        assert {p["metadata"]["name"] for p in demo.serving_pods()} == old_pods
        wait("requests answered through the Service during the stall", lambda: loop.ok >= ok_at_stall + 20, 60)

        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(restore))
        patched = False

        def recovered() -> bool:
            conds = md_now()[1]
            if conds.get("Ready", {}).get("status") != "True" or conds.get("Stalled", {}).get("status") == "True":
                return False
            pods = demo.serving_pods()
            limits = {p["spec"]["containers"][0]["resources"]["limits"].get("memory") for p in pods}
            return len(pods) == 3 and LOW_MEMORY not in limits and "ContainerHealthy" not in conds

        wait("Ready again with the limit restored", recovered, 180)
    finally:
        loop.stop.set()
        loop.join(30)
        if patched:  # a failure above: the next tests get the spec they expect back (their own failures say theirs)
            demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(restore),
                    check=False)  # fmt: skip
    md = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
    assert md["status"]["revision"] == rev and md["spec"]["serving"] == serving
    print(f"crash loop: {loop.ok} requests answered through the Service, {len(loop.errors)} failed")
    assert loop.errors == [], loop.errors[:10]


def test_hpa_scales_out_under_load_and_back_in(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """Autoscaling on CPU for real: metrics-server (behind the aggregation layer) feeds the HPA the operator made.
    Under load through the Service it adds pods (1 -> >= 2 Ready, every one answering); once the load stops,
    the spec's short scale-down stabilization brings it back to 1. A light load loop through the Service runs
    throughout, scale-out and scale-in: zero failed requests."""
    demo, _, _ = deployed
    # The HPA scales 2 pods in to 1 only when their average use is under half the 50% target (ceil(2 * u / 50) =
    # 1), so the light loop (~5 requests/s, 2.5 per pod, a few ms of CPU each when the caches are cold) plus the
    # server's idle CPU must sit well under 25% of the request, also on a loaded CI machine: 250m per pod puts it
    # near 8%; the heavy loops drive one pod far above 55% of it (hundreds of millicores).
    serving = {
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50,
                        "scaleDownStabilizationSeconds": 10},
    }  # fmt: skip
    demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=merge", "-p",
            json.dumps({"spec": {"serving": serving}}))  # fmt: skip
    md = demo.kjson("get", "modeldeployment", demo.NAME, "-n", demo.NS)
    selector, url = md["status"]["selector"], md["status"]["url"]

    def hpa() -> dict[str, Any]:
        items = demo.kjson("get", "hpa", "-n", demo.NS, "-l", f"modelship.io/modeldeployment={demo.NAME}")["items"]
        assert len(items) == 1, items
        return items[0]  # type: ignore[no-any-return]

    def settled_at(n: int) -> bool:
        """Exactly n pods, all Ready and with the new requests (no pod of the previous template left)."""
        pods = demo.kjson("get", "pods", "-n", demo.NS, "-l", selector)["items"]
        requests = {p["spec"]["containers"][0]["resources"]["requests"]["cpu"] for p in pods}
        return len(pods) == n and len(demo.serving_pods()) == n and requests == {"250m"}

    def wait(what: str, fn: Any, timeout: float) -> float:
        t = time.monotonic()
        while not fn():
            assert time.monotonic() - t < timeout, (f"{what}: not after {timeout:.0f}s; HPA status {hpa()['status']}\n"
                                                    f"{demo.diagnose((demo.NAME,))}")  # fmt: skip
            time.sleep(1)
        return time.monotonic() - t

    assert hpa()["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 10
    wait("the HPA brings the Deployment to minReplicas 1", lambda: settled_at(1), 300)
    wait("the HPA reads CPU from the metrics API", lambda: any(
        m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
        for m in hpa()["status"].get("currentMetrics") or []), 120)  # fmt: skip
    light = _LoadLoop(demo, url, pause=0.2)
    heavy = [_LoadLoop(demo, url) for _ in range(3)]
    light.start()
    try:
        for loop in heavy:
            loop.start()
        scale_out = wait("a second Ready pod under load", lambda: len(demo.serving_pods()) >= 2, 300)
        pods = demo.serving_pods()
        for p in pods:  # every pod the HPA added serves
            assert demo.predict(p["status"]["podIP"], [4.0]) == pytest.approx([7.0], abs=0.05)
        print(f"HPA: {len(pods)} Ready pods {scale_out:.1f} s after the load started; status {hpa()['status']}")
        for loop in heavy:
            loop.stop.set()
        for loop in heavy:
            loop.join(30)
        scale_in = wait("back to 1 pod after the load stopped", lambda: settled_at(1), 300)
        print(f"HPA: back to 1 pod {scale_in:.1f} s after the load stopped (scale-down stabilization 10 s)")
    finally:
        for loop in (*heavy, light):
            loop.stop.set()
        for loop in (*heavy, light):
            loop.join(30)
    errors = [e for loop in (*heavy, light) for e in loop.errors]
    served = sum(loop.ok for loop in (*heavy, light))
    print(f"HPA: {served} requests answered through the Service during scale-out and scale-in, {len(errors)} failed")
    assert errors == [], errors[:10]
    assert light.ok > 20 and served > light.ok


def test_digits_example_pruned_int8_gated_and_served_over_v2(deployed: tuple[ModuleType, dict[str, Any], Path]) -> None:
    """examples/digits-int8.yaml as `make demo` applies it: prune 80% with fine-tuning + full int8 in the optimizer
    Pod, accuracy gate, BuildKit build, served over the Open Inference Protocol v2 through its Service."""
    demo, _, _ = deployed
    demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--wait=true")  # free the 2 CPUs
    demo.prepare_storage(digits=True)
    demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(demo.manifest(demo.DIGITS)))
    try:
        md = demo.watch(600, demo.DIGITS)
        opt = md["status"]["optimization"]
        assert (opt["decision"], opt["gate"], opt["candidate"]) == ("Optimized", "Passed", "prune+int8")
        assert opt["baseline"] - opt["value"] <= 0.01 + 1e-9  # the gate's maxDrop
        report = json.loads((demo.DEMO / "artifacts" / opt["revision"] / "report.json").read_text())
        assert report["summary"]["artifactDigest"] == opt["artifactDigest"]
        artifact = demo.DEMO / "artifacts" / opt["revision"] / opt["artifact"]
        assert artifact.stat().st_size == opt["optimizedBytes"] < opt["originalBytes"] / 3
        digest = md["status"]["image"]["digest"]
        pods = demo.serving_pods(demo.DIGITS)
        assert len(pods) == 2  # autoscaling.minReplicas: the HPA raised the Deployment before Ready
        assert all([c["imageID"].split("@")[-1] for c in p["status"]["containerStatuses"]] == [digest] for p in pods)
        accuracy, n = demo.digits_accuracy(md["status"]["url"])
        assert n == 120 and accuracy >= opt["value"] - 0.05  # held-out digits by status.url, int8 model
    finally:
        demo.kc("delete", "modeldeployment", demo.DIGITS, "-n", demo.NS, "--ignore-not-found", "--wait=false")
