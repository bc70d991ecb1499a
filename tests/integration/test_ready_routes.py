"""Ready means the Service routes to the revision's pods: the operator on the real control plane, with the real
EndpointSlice controller writing the Service's slices, under the chart's RBAC (list/watch of EndpointSlices)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.cluster import condition
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import Cluster, md_doc


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    # no periodic resync within a test: only a watch event (the slice's) can wake the ModelDeployment
    with running_operator(api_client, {"MODELSHIP_RESYNC_SECONDS": "3600"}) as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def _slice_pods(k: Cluster, service: str) -> dict[str, bool]:
    """pod name -> ready, as the Service's EndpointSlices (the EndpointSlice controller's) list them now."""
    slices = client.DiscoveryV1Api(k.api).list_namespaced_endpoint_slice(
        k.ns, label_selector=f"kubernetes.io/service-name={service}"
    )
    return {
        ep.target_ref.name: bool(ep.conditions.ready)
        for s in slices.items
        for ep in s.endpoints or []
        if ep.target_ref is not None
    }


def _address(k: Cluster, pod: str, ip: str) -> None:
    """Give the pod its address, as a kubelet would once its network is set up."""
    k.core.patch_namespaced_pod_status(pod, k.ns, {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})


def test_ready_waits_for_the_service_to_route_to_the_pods(k: Cluster) -> None:
    """The Deployment's pods are available but have no address yet (a kwok Stage holds their IPs back), so the
    EndpointSlice controller lists none of them: not Ready, Reconciling with what is missing. Once they have
    addresses the Service's slices list them as ready and the slice change alone (no resync) makes it Ready."""
    k.apply(md_doc(podAnnotations={"modelship.io/test-no-pod-ip": "true"}))
    s = k.wait_md(lambda o: (o.get("status") or {}).get("readyReplicas") == 2
                  and "endpoints ready" in (condition(o, "Ready") or {}).get("message", ""),
                  what="2 available replicas, waiting for endpoints", timeout=120)  # fmt: skip
    rev = s["status"]["revision"]
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    assert dep.status.available_replicas == 2  # the Deployment is done: only the Service lags
    ready = condition(s, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RollingOut")
    assert ready["message"] == f"2/2 replicas of {rev} available, 0/2 endpoints ready in Service digits"
    assert condition(s, "Reconciling")["status"] == "True" and condition(s, "Deployed")["status"] == "False"
    assert "servingRevision" not in s["status"]
    # the slices are the EndpointSlice controller's, labelled with the Service's labels (what the watch selects)
    slices = client.DiscoveryV1Api(k.api).list_namespaced_endpoint_slice(
        k.ns, label_selector="kubernetes.io/service-name=digits,app.kubernetes.io/managed-by=modelship"
    )
    assert slices.items and _slice_pods(k, "digits") == {}
    svc_uid = k.core.read_namespaced_service("digits", k.ns).metadata.uid
    assert all(s.metadata.owner_references[0].uid == svc_uid for s in slices.items)
    pods = k.core.list_namespaced_pod(k.ns, label_selector="app.kubernetes.io/instance=digits,"
                                      "app.kubernetes.io/component=server").items  # fmt: skip
    assert len(pods) == 2 and all(not p.status.pod_ip for p in pods)
    # one pod gets its address: the Service lists it, the message follows; still not Ready
    first, second = sorted(pods, key=lambda p: p.metadata.name)
    _address(k, first.metadata.name, "10.250.0.1")
    s = k.wait_md(lambda o: "1/2 endpoints ready" in condition(o, "Ready")["message"], what="1/2 endpoints")
    assert condition(s, "Ready")["status"] == "False" and _slice_pods(k, "digits") == {first.metadata.name: True}
    _address(k, second.metadata.name, "10.250.0.2")
    s = k.wait_condition("Ready", "True", timeout=30)  # no resync in this module: the slice's event did it
    assert _slice_pods(k, "digits") == {first.metadata.name: True, second.metadata.name: True}
    assert condition(s, "Ready")["message"] == f"2/2 replicas of {rev} available and ready endpoints of Service digits"
    assert s["status"]["servingRevision"] == rev and condition(s, "Reconciling")["status"] == "False"
