"""modelship_dev.cluster's kwokctl configuration for the real node (hack/node/up): what the API server needs beside
a real kubelet, in-cluster clients and an aggregated API, rendered without starting anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from modelship_dev.cluster import KUBERNETES_SERVICE_IP, DevCluster


def _apiserver_args(rendered: str) -> list[dict[str, object]]:
    conf = json.loads(rendered.partition("\n---\n")[0])
    (patch,) = [p for p in conf["componentsPatches"] if p["name"] == "kube-apiserver"]
    return patch["extraArgs"]  # type: ignore[no-any-return]


def test_node_config_adds_sans_kubelet_tls_and_the_aggregation_layer(tmp_path: Path) -> None:
    cluster = DevCluster("node-x")
    rendered = cluster.render_node_config(front_proxy=tmp_path, node_ip="10.213.0.1")
    conf = json.loads(rendered.partition("\n---\n")[0])
    # the serving cert names the `kubernetes` Service IP (its DNS names are kwokctl's defaults) and the node side
    assert (
        conf["options"]["kubeApiserverCertSANs"] == [KUBERNETES_SERVICE_IP, "10.213.0.1"] == ["10.96.0.1", "10.213.0.1"]
    )
    args = {a["key"]: a for a in _apiserver_args(rendered)}
    assert args["service-cluster-ip-range"]["value"] == "10.96.0.0/16"  # the test config is kept
    assert args["bind-address"]["value"] == "0.0.0.0"
    pki = cluster.pki
    assert args["kubelet-client-certificate"]["value"] == str(pki / "admin.crt")
    assert args["kubelet-certificate-authority"]["value"] == str(pki / "ca.crt")
    assert args["requestheader-client-ca-file"]["value"] == str(tmp_path / "front-proxy-ca.crt")
    assert args["requestheader-allowed-names"]["value"] == "front-proxy-client"
    # kwokctl's own --proxy-client-* (its shared admin cert) are replaced in place, not repeated
    for key in ("proxy-client-cert-file", "proxy-client-key-file"):
        assert args[key]["override"] is True and str(args[key]["value"]).startswith(
            str(tmp_path / "front-proxy-client")
        )


def test_node_config_keeps_the_stages_and_leaves_the_test_config_alone(tmp_path: Path) -> None:
    cluster = DevCluster("node-x")
    plain = cluster.render_config()
    node = cluster.render_node_config(front_proxy=tmp_path, node_ip="10.213.0.1")
    assert node.partition("\n---\n")[2] == plain.partition("\n---\n")[2]  # every kwok Stage, unchanged
    assert "kubeApiserverCertSANs" not in plain and "requestheader" not in plain
    node_only = {"bind-address", "kubelet-client-certificate", "requestheader-client-ca-file", "proxy-client-cert-file"}
    assert not node_only & {str(a["key"]) for a in _apiserver_args(plain)}


def test_the_controller_manager_runs_without_leader_election() -> None:
    """The one instance keeps no lease: a pause longer than its renew deadline (a loaded machine, a test that
    stops it to hold a Deployment's status behind) cannot make it exit."""
    conf = json.loads(DevCluster("x").render_config().partition("\n---\n")[0])
    (patch,) = [p for p in conf["componentsPatches"] if p["name"] == "kube-controller-manager"]
    assert {"key": "leader-elect", "value": "false"} in patch["extraArgs"]


def test_a_component_whose_process_is_gone_is_dead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kube-controller-manager exits when the API server is not healthy within 20 s of its start, and nothing
    restarts it: such a cluster is not healthy (up() creates it again)."""
    cluster = DevCluster("x")
    monkeypatch.setattr(cluster, "workdir", tmp_path)
    pids = tmp_path / "clusters" / "x" / "pids"
    pids.mkdir(parents=True)
    (pids / "kube-controller-manager.pid").write_text("999999999\n")  # no such process
    (pids / "kube-scheduler.pid").write_text("not a pid\n")
    (pids / "etcd.pid").write_text(f"{os.getpid()}\n")  # a live process, but not etcd (a reused pid)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (pids / "sleep.pid").write_text(f"{sleeper.pid}\n")  # alive and running what its name says
        assert cluster.dead_components() == ["etcd", "kube-controller-manager", "kube-scheduler"]
        os.kill(sleeper.pid, signal.SIGSTOP)  # left stopped (a test run killed while it held it stopped)
        wait_stopped = time.monotonic() + 10
        while "sleep" not in cluster.dead_components() and time.monotonic() < wait_stopped:
            time.sleep(0.01)
        assert cluster.dead_components() == ["etcd", "kube-controller-manager", "kube-scheduler", "sleep"]
    finally:
        sleeper.kill()
        sleeper.wait()
    cluster.kubeconfig = tmp_path / "kubeconfig"
    cluster.kubeconfig.write_text("")
    monkeypatch.setattr(cluster, "kubectl", lambda *a, **kw: pytest.fail("a cluster with a dead component was asked"))
    assert not cluster.healthy()


def test_a_session_that_did_not_end_marks_the_cluster_not_to_be_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed test session leaves its marker (and, on the cluster, a chart release, an admission policy, an
    older CRD): the next session makes the cluster anew; a session still running (a live Python process) is not
    interrupted, and one that ended removed its marker."""
    monkeypatch.setenv("MODELSHIP_CACHE", str(tmp_path))
    cluster = DevCluster("x")
    assert not cluster.interrupted_session()  # no session ever
    cluster.claim_session()  # this test's own process: a Python session still running
    assert cluster.session_marker.read_text().strip() == str(os.getpid())
    assert not cluster.interrupted_session()
    cluster.session_marker.write_text("999999999\n")  # killed: its pid is gone
    assert cluster.interrupted_session()
    sleeper = subprocess.Popen(["sleep", "60"])  # the pid now runs another program
    try:
        cluster.session_marker.write_text(f"{sleeper.pid}\n")
        assert cluster.interrupted_session()
    finally:
        sleeper.kill()
        sleeper.wait()
    cluster.release_session()
    assert not cluster.session_marker.exists() and not cluster.interrupted_session()
