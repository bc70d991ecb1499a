"""Pods really run: the optimizer in a Pod on the real node, then the serving image with its output, 3
replicas, each answering a predict request over the pod network from the host. And the node is a cluster a
user would recognise: the cluster DNS answers for Services from any namespace, the API server's certificate
passes a Pod's in-cluster config, the kubelet refuses anonymous callers, the metrics API reports pod usage."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship_dev import dns
from modelship_dev import node_demo as demo
from modelship_dev.node_demo import predict
from tests.e2e.conftest import RealNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ns(real_node: RealNode) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    real_node.kubectl("create", "namespace", name)
    real_node.wait_for("default SA", lambda: real_node.kubectl("get", "sa", "default", "-n", name, check=False), 60)
    yield name
    real_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _quantity(q: str) -> float:
    """A Kubernetes quantity as metrics-server writes them (123456n, 250m, 51200Ki, 2)."""
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("n", 1e-9), ("u", 1e-6), ("m", 1e-3)):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def _host_volume(path: Path) -> dict[str, Any]:
    return {"name": "data", "hostPath": {"path": str(path), "type": "Directory"}}


@pytest.fixture(scope="module")
def optimized(real_node: RealNode, ns: str) -> dict[str, Any]:
    """`modelship optimize --example linear` in a Pod of the optimizer image; its files on a hostPath."""
    out = real_node.workdir / "opt"
    out.mkdir()
    out.chmod(0o777)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "optimize"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "optimize",
                    "image": "modelship/optimizer:0.1.0",
                    "imagePullPolicy": "Never",
                    "args": ["optimize", "--example", "linear", "--out", "/out"],
                    "volumeMounts": [{"name": "data", "mountPath": "/out"}],
                }
            ],
            "volumes": [_host_volume(out)],
        },
    }
    real_node.apply(pod, ns)

    def finished() -> dict[str, Any] | None:
        p = real_node.get("pod", "optimize", ns)
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    p = real_node.wait_for("optimizer pod to finish", finished, timeout=300, namespace=ns)
    logs = real_node.kubectl("logs", "-n", ns, "optimize", check=False)
    assert p["status"]["phase"] == "Succeeded", f"optimizer pod failed:\n{logs}"
    return {"dir": out, "pod": p, "logs": logs}


def test_node_is_a_real_kubelet(real_node: RealNode) -> None:
    node = json.loads(real_node.kubectl("get", "node", real_node.node_name, "-o", "json"))
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"] == ["10.213.0.1"]


def test_optimizer_runs_in_a_pod(optimized: dict[str, Any]) -> None:
    out: Path = optimized["dir"]
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert summary["ok"] and summary["gate"] == "Passed"
    model = out / summary["artifact"]
    assert "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest() == summary["artifactDigest"]
    # the container really ran on the node: the kubelet reports a real container id and exit code 0
    state = optimized["pod"]["status"]["containerStatuses"][0]
    assert state["containerID"].startswith("containerd://")
    assert state["state"]["terminated"]["exitCode"] == 0


@pytest.fixture(scope="module")
def serving(real_node: RealNode, ns: str, optimized: dict[str, Any]) -> list[str]:
    """The optimizer's output served by 3 replicas behind the Service `linear`; -> the pods' IPs."""
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "linear"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "linear"}},
            "template": {
                "metadata": {"labels": {"app": "linear"}},
                "spec": {
                    "containers": [
                        {
                            "name": "serve",
                            "image": "modelship/serving:0.1.0",
                            "imagePullPolicy": "Never",
                            "args": ["serve", "--model", "/models/model.tflite", "--name", "linear", "--workers", "1"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": 8080},
                                "periodSeconds": 1,
                            },
                            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                            "volumeMounts": [{"name": "data", "mountPath": "/models", "readOnly": True}],
                        }
                    ],
                    "volumes": [_host_volume(optimized["dir"])],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "linear"},
        "spec": {"selector": {"app": "linear"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    real_node.apply(deploy, ns)
    real_node.apply(service, ns)

    def ready_ips() -> list[str] | None:
        pods = json.loads(real_node.kubectl("get", "pods", "-n", ns, "-l", "app=linear", "-o", "json"))["items"]
        ips = [
            p["status"]["podIP"]
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and not p["metadata"].get("deletionTimestamp")
        ]
        return ips if len(ips) == 3 else None

    return real_node.wait_for("3 Ready serving pods", ready_ips, timeout=180, namespace=ns)  # type: ignore[no-any-return]


def test_serving_three_replicas_answer(serving: list[str]) -> None:
    ips = serving
    assert len(set(ips)) == 3 and all(ip.startswith("10.213.0.") for ip in ips)
    for ip in ips:
        ys = predict(ip, [0.0, 1.0, 2.0, 3.0], name="linear")
        assert ys == pytest.approx([-1.0, 1.0, 3.0, 5.0], abs=0.1), (ip, ys)


# In a client Pod: its resolv.conf, then a predict request to argv[1] (a Service's DNS name).
_DNS_CLIENT = """
import json, sys, urllib.request
body = json.dumps({"instances": [[0.0], [4.0]]}).encode()
req = urllib.request.Request(sys.argv[1], data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    answer = json.load(resp)
print(json.dumps({"resolv": open("/etc/resolv.conf").read(), "answer": answer}))
"""


def test_cluster_dns_answers_for_a_service_from_another_namespace(
    real_node: RealNode, ns: str, serving: list[str], namespace: str
) -> None:
    """CoreDNS (the kubelet's clusterDNS) resolves <service>.<namespace>.svc.cluster.local for a Pod of ANOTHER
    namespace, and the host, asking the kube-dns Service, gets the same ClusterIP."""
    name = f"linear.{ns}.svc.cluster.local"
    cluster_ip = real_node.kubectl("get", "service", "linear", "-n", ns, "-o", "jsonpath={.spec.clusterIP}")
    assert dns.query(name) == [cluster_ip]
    with pytest.raises(dns.DnsError, match="NXDOMAIN"):
        dns.query(f"no-such-service.{ns}.svc.cluster.local")
    out = json.loads(demo.pod_python(_DNS_CLIENT, f"http://{name}:8080/v1/models/linear:predict", namespace=namespace))
    # inside the int8 model's calibrated range (x = 0..4): y = 2x - 1
    assert [p[0] for p in out["answer"]["predictions"]] == pytest.approx([-1.0, 7.0], abs=0.1)
    assert f"nameserver {dns.DNS_IP}" in out["resolv"]
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in out["resolv"]


# In a Pod with its ServiceAccount token: in-cluster config as client libraries do it (KUBERNETES_SERVICE_HOST
# and the mounted CA), by the Service IP and by the Service's DNS names; argv[1] is the Pod's namespace.
_IN_CLUSTER = """
import json, os, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
token = open(f"{sa}/token").read()
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
out = {"host": host, "port": port}
for base in (f"https://{host}:{port}", "https://kubernetes.default.svc", "https://kubernetes.default.svc.cluster.local"):
    out[base] = json.load(urllib.request.urlopen(base + "/version", context=ctx, timeout=10))["gitVersion"]
req = urllib.request.Request(f"https://kubernetes.default.svc/api/v1/namespaces/{sys.argv[1]}/secrets",
                             headers={"Authorization": "Bearer " + token})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
except urllib.error.HTTPError as e:
    out["secrets"] = [e.code, json.load(e)["message"]]
print(json.dumps(out))
"""


def test_in_cluster_config_verifies_the_api_server_certificate(real_node: RealNode, namespace: str) -> None:
    """The API server's certificate names the `kubernetes` Service IP and DNS names: a Pod's in-cluster config
    (the environment the kubelet injects + the mounted CA) verifies it, and the token authenticates (RBAC then
    refuses the default ServiceAccount, naming it)."""
    out = json.loads(demo.pod_python(_IN_CLUSTER, namespace, namespace=namespace, service_account=True))
    assert (out["host"], out["port"]) == ("10.96.0.1", "443")
    versions = {v for k, v in out.items() if k.startswith("https://")}
    assert len(versions) == 1 and versions.pop().startswith("v1.")
    code, message = out["secrets"]
    assert code == 403 and f"system:serviceaccount:{namespace}:default" in message


def test_kubelet_serves_a_cluster_ca_certificate_and_refuses_anonymous(real_node: RealNode) -> None:
    """Anyone on the pod network reaches the kubelet's port: it must authenticate them (webhook + client certs),
    and its serving certificate (signed by the cluster CA for the node's IP) is what metrics-server verifies."""
    ca = Path(real_node.kubeconfig).parent / "kwok" / "clusters" / "modelship-node" / "pki" / "ca.crt"
    ctx = ssl.create_default_context(cafile=str(ca))
    for path in ("/pods", "/metrics/resource", "/stats/summary"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"https://10.213.0.1:10250{path}", context=ctx, timeout=10)
        assert err.value.code == 401, path


def test_metrics_api_reports_the_serving_pods(real_node: RealNode, ns: str, serving: list[str]) -> None:
    """metrics-server (behind the aggregation layer, scraping the kubelet over verified TLS) reports CPU and
    memory of every serving pod and of the node: what the HPA controller reads."""
    api = json.loads(real_node.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json"))
    assert {c["type"]: c["status"] for c in api["status"]["conditions"]}["Available"] == "True"
    assert "insecureSkipTLSVerify" not in api["spec"] and api["spec"]["caBundle"]

    def pod_metrics() -> dict[str, dict[str, str]] | None:
        raw = real_node.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods", check=False)
        items = json.loads(raw)["items"] if raw else []
        usage = {
            i["metadata"]["name"]: i["containers"][0]["usage"]
            for i in items
            if i["metadata"]["name"].startswith("linear-") and i["containers"]
        }
        return usage if len(usage) == 3 else None

    usage = real_node.wait_for("metrics of the 3 serving pods", pod_metrics, timeout=120, interval=2)
    for u in usage.values():
        assert _quantity(u["cpu"]) >= 0
        assert _quantity(u["memory"]) > 10e6  # a Python model server holds more than 10 MB
    node = json.loads(real_node.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/nodes/{real_node.node_name}"))
    assert node["usage"]["cpu"] and node["usage"]["memory"]
