"""Ready means the Service routes to the revision's pods: the operator on the real control plane, with the real
EndpointSlice controller writing the Service's slices, under the chart's RBAC (list/watch of EndpointSlices); and
it stays Ready while an HPA scales a revision that serves."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, watch

from tests.integration import no_resync
from tests.integration.cluster import condition, wait_for
from tests.integration.rollout import NEW_IMAGE
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, build_result, md_doc

# no periodic resync within a test: only a watch event (the slice's) can wake the ModelDeployment
operator, k = no_resync.operator, no_resync.k


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


# Ready under an HPA: while the autoscaler moves the Deployment's spec.replicas (through the scale subresource, as
# the HPA controller does), a revision that is fully rolled out and routed at minReplicas stays Ready, Reconciling
# False; a new revision's rollout, or fewer than minReplicas routed, is Reconciling as without an HPA. Pods come up
# without an address (the kwok Stage), so the test decides when the Service routes to each.

NO_IP = {"modelship.io/test-no-pod-ip": "true"}
AUTO = {"enabled": True, "minReplicas": 2, "maxReplicas": 6}
SERVER = "app.kubernetes.io/instance=digits,app.kubernetes.io/component=server"


class ReadyRecorder:
    """Every (Ready, Reconciling) status a watch of the ModelDeployment delivers, in order: each write the operator
    makes is one watch event, so a flap that lasts a single status write is seen."""

    def __init__(self, k: Cluster) -> None:
        self.k, self._stop = k, threading.Event()
        self.seen: list[tuple[str, str, str, int]] = []
        self.error: Exception | None = None
        rv = k.md()["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        w = watch.Watch()
        stream = w.stream(self.k.custom.list_namespaced_custom_object, GROUP, VERSION, self.k.ns, PLURAL,
                          field_selector="metadata.name=digits", resource_version=rv, timeout_seconds=300)  # fmt: skip
        try:
            for ev in stream:
                obj = ev["object"]
                ready, rec = condition(obj, "Ready") or {}, condition(obj, "Reconciling") or {}
                gen = int((obj.get("status") or {}).get("observedGeneration") or 0)
                self.seen.append((ready.get("status", ""), rec.get("status", ""), ready.get("message", ""), gen))
                if self._stop.is_set():
                    w.stop()
        except Exception as exc:  # the stream broke (the test failed and the cluster went): stop() says so
            self.error = exc

    def stop(self) -> list[tuple[str, str, str, int]]:
        self._stop.set()
        self.k.custom.patch_namespaced_custom_object(  # one more event, so the stream sees the stop
            GROUP, VERSION, self.k.ns, PLURAL, "digits", {"metadata": {"annotations": {"test/recorder": str(id(self))}}}
        )
        self._thread.join(timeout=30)
        assert self.error is None and not self._thread.is_alive(), self.error
        return self.seen


def _pods(k: Cluster) -> dict[str, Any]:
    return {p.metadata.name: p for p in k.core.list_namespaced_pod(k.ns, label_selector=SERVER).items
            if not p.metadata.deletion_timestamp}  # fmt: skip


def _address_all(k: Cluster, first: int) -> int:
    """Give every pod without an address one (as a kubelet would once its network is set up); returns the next
    free host number."""
    for name, pod in sorted(_pods(k).items()):
        if not pod.status.pod_ip and pod.status.phase == "Running":
            ip = f"10.251.0.{first}"
            k.core.patch_namespaced_pod_status(name, k.ns, {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
            first += 1
    return first


def _scale(k: Cluster, replicas: int) -> None:
    """What the HPA controller does: write spec.replicas through the Deployment's scale subresource."""
    k.apps.patch_namespaced_deployment_scale("digits", k.ns, {"spec": {"replicas": replicas}})


def _flaps(k: Cluster) -> list[str]:
    events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
    return sorted(str(e.reason) for e in events if e.reason in ("ReadyRollingOut", "DeployedRollingOut"))


def _ready_at(k: Cluster, n: int, timeout: float = 120) -> dict[str, Any]:
    def ok(o: dict[str, Any]) -> bool:
        st = o.get("status") or {}
        ready = condition(o, "Ready") or {}
        return (
            ready.get("status") == "True"
            and ready.get("message", "").startswith(f"{n}/{n} replicas")
            and "and ready endpoints" in ready.get("message", "")
            and st.get("observedGeneration") == o["metadata"]["generation"]
        )

    return k.wait_md(ok, what=f"Ready with {n}/{n} routed", timeout=timeout)


def test_ready_holds_while_the_autoscaler_scales_a_healthy_revision(k: Cluster) -> None:
    k.apply(md_doc(podAnnotations=NO_IP, autoscaling=AUTO))
    # the HPA controller raises the new Deployment (1 replica) to minReplicas; both pods get addresses
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == 2 or None,
             timeout=120, description="two running serving pods")  # fmt: skip
    host = _address_all(k, 1)
    s = _ready_at(k, 2)
    rev = s["status"]["revision"]
    since = condition(s, "Ready")["lastTransitionTime"]
    # the operator posts its Events in order, off the reconcile: once ReadyAvailable is listed, the first rollout's
    # RollingOut Events are too, and `before` holds them all
    wait_for(lambda: [e for e in k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
                      if e.reason == "ReadyAvailable"], timeout=30, description="the ReadyAvailable Event")  # fmt: skip
    before = _flaps(k)
    rec = ReadyRecorder(k)

    # the autoscaler scales up to 4: the new pods are available but not routed yet (no address)
    _scale(k, 4)
    up = (f"4/4 replicas of {rev} available, 2/4 endpoints ready in Service digits, autoscaler scaling up "
          "(at least minReplicas 2 serve)")  # fmt: skip
    s = k.wait_md(lambda o: (condition(o, "Ready") or {}).get("message") == up, what="Ready saying the scale-up",
                  timeout=60)  # fmt: skip
    ready = condition(s, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Available", ready
    assert condition(s, "Reconciling")["status"] == "False" and condition(s, "Deployed")["status"] == "True"
    # the new pods are routed: back to the full message
    host = _address_all(k, host)
    _ready_at(k, 4, timeout=60)

    # and down to 3
    _scale(k, 3)
    wait_for(lambda: len(_pods(k)) == 3 or None, timeout=60, description="3 serving pods")
    s = _ready_at(k, 3, timeout=60)
    assert condition(s, "Ready")["lastTransitionTime"] == since
    seen = rec.stop()
    assert seen and all((r, c) == ("True", "False") for r, c, _m, _g in seen), seen
    assert _flaps(k) == before

    # fewer than minReplicas routed: Reconciling, as without an HPA
    _scale(k, 2)
    wait_for(lambda: len(_pods(k)) == 2 or None, timeout=60, description="2 serving pods")
    _ready_at(k, 2, timeout=60)
    one = sorted(_pods(k))[0]
    k.core.patch_namespaced_pod_status(one, k.ns, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "ReadinessProbeFailed"}]}})  # fmt: skip
    s = k.wait_md(lambda o: (condition(o, "Ready") or {}).get("status") == "False", what="not Ready", timeout=60)
    assert condition(s, "Ready")["reason"] == "RollingOut" and condition(s, "Reconciling")["status"] == "True"
    # the EndpointSlice controller or the ReplicaSet controller may see the pod's readiness first
    down = (f"1/2 replicas of {rev} available",
            f"2/2 replicas of {rev} available, 1/2 endpoints ready in Service digits")  # fmt: skip
    assert condition(s, "Ready")["message"] in down, condition(s, "Ready")
    k.core.patch_namespaced_pod_status(one, k.ns, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": ""}]}})  # fmt: skip
    s = _ready_at(k, 2, timeout=60)

    # a new revision under the HPA at 4: Reconciling until every replica of it is routed, not only minReplicas
    _scale(k, 4)
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == 4 or None,
             timeout=60, description="4 running serving pods")  # fmt: skip
    host = _address_all(k, host)
    _ready_at(k, 4, timeout=60)
    doc = md_doc(podAnnotations=NO_IP, autoscaling=AUTO)
    doc["spec"]["build"]["job"]["podAnnotations"]["modelship.io/test-termination-message"] = build_result(NEW_IMAGE)
    doc["spec"]["optimization"]["gate"]["maxDrop"] = 0.02
    k.apply(doc)

    def new_pods() -> list[str]:
        return sorted(n for n, p in _pods(k).items()
                      if p.spec.containers[0].image == NEW_IMAGE and p.status.phase == "Running")  # fmt: skip

    # the rolling update replaces pods one by one: address each new pod as it comes, two of the four at the end
    addressed: set[str] = set()

    def rolled() -> bool | None:
        nonlocal host
        for name in new_pods():
            if name not in addressed and len(addressed) < 2:
                ip = f"10.251.0.{host}"
                k.core.patch_namespaced_pod_status(name, k.ns, {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
                addressed.add(name)
                host += 1
        dep = k.apps.read_namespaced_deployment("digits", k.ns)
        st = dep.status  # of the generation the controller observed: the new template's only once it did
        return (dep.spec.template.spec.containers[0].image == NEW_IMAGE
                and st.observed_generation == dep.metadata.generation
                and st.updated_replicas == 4 and st.replicas == 4 and st.available_replicas == 4
                and len(new_pods()) == 4 and len(addressed) == 2) or None  # fmt: skip

    wait_for(rolled, timeout=120, description="the new revision's 4 pods available")
    s = k.wait_md(lambda o: "2/4 endpoints ready" in (condition(o, "Ready") or {}).get("message", "")
                  and o["status"]["revision"] != rev and o["status"].get("servingRevision") != rev,
                  what="the new revision waiting for its endpoints")  # fmt: skip
    new = s["status"]["revision"]
    # the controller rolled the new revision out (every pod it wanted available) and minReplicas of it are routed:
    # it serves (servingRevision), and the two not routed yet are a Capacity shortfall, not a rollout
    ready = condition(s, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available"), ready
    assert ready["message"] == (f"4/4 replicas of {new} available, 2/4 endpoints ready in Service digits, "
                                "autoscaler scaling up (at least minReplicas 2 serve)")  # fmt: skip
    assert s["status"]["servingRevision"] == new
    assert (condition(s, "Capacity") or {}).get("reason") == "ScalingUp", condition(s, "Capacity")
    host = _address_all(k, host)
    s = _ready_at(k, 4, timeout=60)
    assert s["status"]["servingRevision"] == new

    # a serving setting changes the pod template, not the revision: from the first status of the new generation on
    # (its pass still sees the old template live) Reconciling, until the new template's pods are routed
    rec = ReadyRecorder(k)
    doc["spec"]["serving"]["podAnnotations"] = {**NO_IP, "example.com/team": "vision"}
    gen = k.apply(doc)["metadata"]["generation"]

    def settled() -> dict[str, Any] | None:
        nonlocal host
        host = _address_all(k, host)  # each pod of the new template, as it comes
        o = k.md()
        ready = condition(o, "Ready") or {}
        fresh = all(p.metadata.annotations.get("example.com/team") == "vision" for p in _pods(k).values())
        full = f"4/4 replicas of {new} available and ready endpoints of Service digits"
        ok = (ready.get("status") == "True" and o["status"].get("observedGeneration") == gen and fresh
              and ready.get("message") == full)  # fmt: skip
        return o if ok else None

    wait_for(settled, timeout=120, description="the new template's pods routed")
    seen = [x for x in rec.stop() if x[3] == gen]
    assert seen and seen[0][:2] == ("False", "True"), seen
