"""A serving pod's controller reference, checked by uid on the real control plane (controller.replicasets): a pod a
tenant creates naming our Deployment's ReplicaSet, with a uid of its own, with every label of ours, Running and
Ready. The name check alone takes it for ours; read with the ReplicaSet the API server holds under that name (as
the operator's ServiceAccount, the chart's RBAC: get on ReplicaSets), it is refused by the analysis' reader and
counts for no revision, and the figures are those of our pod alone.

The garbage collector deletes such a pod (its owner's uid does not exist) within tens of milliseconds on an idle
control plane: kube-controller-manager is stopped while the pod is read (as when it is down or far behind), and
the time the collector then takes is printed. And a refusal that may change is not final: the pods of a ReplicaSet
orphaned and adopted by the Deployment made again count for their revision once adopted."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kubernetes import client

from modelship.controller.endpoints import PodRevisions
from modelship.controller.kube import Kube
from modelship.controller.podhealth import of_deployment
from modelship.controller.podmetrics import Makers, lifetime, read_pods, serving_pods_selector
from modelship.controller.replicasets import UNSETTLED_SECONDS, ReplicaSetOwners
from tests.integration.cluster import ClusterInfo, wait_for
from tests.integration.test_canary import _controller_manager_paused, _ready_pod
from tests.integration.test_operator import Cluster

LABELS = {"modelship.io/modeldeployment": "digits", "app.kubernetes.io/component": "server",
          "modelship.io/revision": "r1"}  # fmt: skip
FIGURES = (
    "# TYPE modelship_request_duration_seconds histogram\n"
    'modelship_request_duration_seconds_bucket{model="digits",protocol="v2",le="+Inf"} 10\n'
    'modelship_request_duration_seconds_count{model="digits",protocol="v2"} 10\n'
)


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "digits"},
        "spec": {"replicas": 1, "selector": {"matchLabels": LABELS},
                 "template": {"metadata": {"labels": LABELS},
                              "spec": {"containers": [{"name": "server", "image": "example.invalid/server:1"}]}}},
    }  # fmt: skip


def test_a_pod_naming_our_replicaset_with_another_uid_is_refused(
    api_client: client.ApiClient, operator_api_client: client.ApiClient, namespace: str, cluster: ClusterInfo
) -> None:
    k = Cluster(api_client, namespace)
    dep = k.apps.create_namespaced_deployment(namespace, _deployment())
    selector = serving_pods_selector("digits")
    ours = wait_for(lambda: [p for p in k.core.list_namespaced_pod(namespace, label_selector=selector).items
                             if _ready_pod(k, p.metadata.name)], timeout=60, description="our pod Ready")  # fmt: skip
    (real,) = ours
    rs = k.apps.read_namespaced_replica_set(real.metadata.owner_references[0].name, namespace)
    forged = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "forged", "labels": dict(real.metadata.labels),  # pod-template-hash too
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name,
                                          "uid": str(uuid.uuid4()), "controller": True}]},
        "spec": {"containers": [{"name": "server", "image": "example.invalid/forged:1"}]},
    }  # fmt: skip
    fetched: list[str] = []

    def fetch(pod: dict[str, Any], port: int) -> str:
        fetched.append(pod["metadata"]["name"])
        return FIGURES

    kube = Kube(operator_api_client)
    with _controller_manager_paused(cluster):  # no garbage collector, no ReplicaSet controller meanwhile
        k.core.create_namespaced_pod(namespace, forged)
        wait_for(lambda: _ready_pod(k, "forged"), timeout=60, description="the forged pod Running and Ready")
        listed = kube.list("v1", "Pod", namespace, selector)
        by_name = {p["metadata"]["name"]: p for p in listed}
        assert set(by_name) == {real.metadata.name, "forged"}
        assert of_deployment(by_name["forged"], "digits")  # the name check alone takes it for ours
        owners = ReplicaSetOwners(kube)
        ours_by_uid = {"digits": dep.metadata.uid}
        readings = read_pods(owners.vouched(listed, ours_by_uid), 9090, "r2", "r1", fetch,
                             makers=Makers(candidate=None, stable="digits"))  # fmt: skip
        assert fetched == [real.metadata.name] and readings.refused == ("forged",)
        alone = read_pods([by_name[real.metadata.name]], 9090, "r2", "r1", fetch, makers=Makers(None, "digits"))
        assert lifetime(readings) == lifetime(alone)  # the figures are our pod's alone
        uids = {p["metadata"]["uid"] for p in listed}
        revisions = PodRevisions(kube, owners).of(namespace, "digits", uids, (("digits", dep.metadata.uid),))
        assert revisions == {real.metadata.uid: "r1", by_name["forged"]["metadata"]["uid"]: ""}
        # the same pod, read as one of a Deployment of another uid (an earlier one of the name): not ours either
        assert owners.vouched([by_name[real.metadata.name]], {"digits": "another-uid"})[0]["metadata"][
            "ownerReferences"] == []  # fmt: skip
        assert k.core.read_namespaced_pod("forged", namespace)  # it stood Ready all along
    resumed = time.monotonic()
    wait_for(lambda: not k.core.list_namespaced_pod(namespace, field_selector="metadata.name=forged").items,
             timeout=120, description="the garbage collector deleting the forged pod")  # fmt: skip
    print(f"forged pod deleted by the garbage collector {time.monotonic() - resumed:.2f}s after it resumed")


class _Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def test_pods_of_a_replicaset_orphaned_and_adopted_again_count_for_their_revision(
    api_client: client.ApiClient, operator_api_client: client.ApiClient, namespace: str, cluster: ClusterInfo
) -> None:
    """``kubectl delete deployment digits --cascade=orphan`` and the Deployment made again (a new uid): the pass that
    looks before the Deployment controller adopts the orphaned ReplicaSet (kube-controller-manager stopped, so it
    surely does) finds it without a controller and counts its pods for no revision; once adopted, they count for
    theirs again (at the first look ``UNSETTLED_SECONDS`` after that answer; the clock is the test's). Before,
    they stayed foreign until each pod was replaced."""
    k = Cluster(api_client, namespace)
    first = k.apps.create_namespaced_deployment(namespace, _deployment())
    selector = serving_pods_selector("digits")
    (pod,) = wait_for(lambda: [p for p in k.core.list_namespaced_pod(namespace, label_selector=selector).items
                               if _ready_pod(k, p.metadata.name)], timeout=60, description="our pod Ready")  # fmt: skip
    rs_name = pod.metadata.owner_references[0].name
    kube = Kube(operator_api_client)
    clock = _Clock()
    revisions = PodRevisions(kube, ReplicaSetOwners(kube, clock=clock))
    uids = {pod.metadata.uid}
    assert revisions.of(namespace, "digits", uids, (("digits", first.metadata.uid),)) == {pod.metadata.uid: "r1"}
    k.apps.delete_namespaced_deployment("digits", namespace, propagation_policy="Orphan")
    wait_for(lambda: not k.apps.read_namespaced_replica_set(rs_name, namespace).metadata.owner_references,
             timeout=60, description="the ReplicaSet orphaned by the garbage collector")  # fmt: skip
    with _controller_manager_paused(cluster):  # the Deployment made again, not adopting meanwhile
        again = k.apps.create_namespaced_deployment(namespace, _deployment())
        ours = (("digits", again.metadata.uid),)
        assert revisions.of(namespace, "digits", uids, ours) == {pod.metadata.uid: ""}
    wait_for(lambda: (k.apps.read_namespaced_replica_set(rs_name, namespace).metadata.owner_references or [None])[0],
             timeout=60, description="the ReplicaSet adopted by the Deployment made again")  # fmt: skip
    assert k.apps.read_namespaced_replica_set(rs_name, namespace).metadata.owner_references[0].uid == again.metadata.uid
    assert revisions.of(namespace, "digits", uids, ours) == {pod.metadata.uid: ""}  # the answer kept a while
    clock.now += UNSETTLED_SECONDS
    assert revisions.of(namespace, "digits", uids, ours) == {pod.metadata.uid: "r1"}
    assert k.core.read_namespaced_pod(pod.metadata.name, namespace).metadata.uid == pod.metadata.uid  # the same pod
