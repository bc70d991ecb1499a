"""Under an HPA, on the real control plane (the Deployment, ReplicaSet and HPA controllers, the real scheduler):
a scale-up whose new pods never come up is told (Ready stays True while minReplicas serve, the Capacity condition
and a Warning Event say the scale-up is stalled); a Deployment someone scaled to 0 (which the HPA then leaves
alone) is said so; and switching autoscaling on or off never drops the Deployment's replicas in between (server-side
apply would reset a field the operator stops setting to its default of 1), and a Deployment created under an HPA
leaves its count to the HPA from the start (no handover, let alone one at every reconcile)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, watch

from tests.integration import no_resync
from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_canary import _freeze_pods, _lift_freeze
from tests.integration.test_operator import Cluster, md_doc
from tests.integration.test_ready_routes import AUTO, NO_IP, SERVER, _address_all, _pods, _ready_at, _scale

# no periodic resync: the stall must be told by the operator's own timer, not by a resync that happens to come
operator, k = no_resync.operator, no_resync.k


def _cordon(k: Cluster, on: bool) -> None:
    """Mark every node unschedulable (or schedulable again): pods made now stay Pending, as on a full cluster."""
    for node in k.core.list_node().items:
        k.core.patch_node(node.metadata.name, {"spec": {"unschedulable": on}})


def _events(k: Cluster, reason: str) -> list[Any]:
    events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
    return [e for e in events if e.reason == reason and e.involved_object.kind == "ModelDeployment"]


def _routed_at(k: Cluster, n: int, first: int = 1, ready_timeout: float = 120) -> dict[str, Any]:
    """``n`` running serving pods, those without an address given one from 10.251.0.<first> on (past the ones
    already given), and the ModelDeployment Ready with n/n routed: its object."""
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == n or None,
             timeout=120, description=f"{n} running serving pods")  # fmt: skip
    _address_all(k, first)
    return _ready_at(k, n, timeout=ready_timeout)


def _serving_at(k: Cluster, n: int) -> str:
    return str(_routed_at(k, n)["status"]["revision"])


def test_a_scale_up_whose_pods_never_come_up_is_told(k: Cluster) -> None:
    k.apply(md_doc(podAnnotations=NO_IP, autoscaling=AUTO, rollout={"progressDeadlineSeconds": 30}))
    rev = _serving_at(k, 2)
    try:
        _cordon(k, True)
        _scale(k, 4)  # the HPA asks for 4: the two new pods cannot be scheduled
        up = (f"2/4 replicas of {rev} available, 2/4 endpoints ready in Service digits, autoscaler scaling up "
              "(at least minReplicas 2 serve)")  # fmt: skip
        s = k.wait_md(lambda o: (condition(o, "Ready") or {}).get("message") == up, what="scaling up", timeout=60)
        short = condition(s, "Capacity")
        assert short is not None and (short["status"], short["reason"]) == ("False", "ScalingUp"), short
        # past progressDeadlineSeconds (30 s) without the missing pods: told, by the operator's own timer
        s = k.wait_md(lambda o: (condition(o, "Capacity") or {}).get("reason") == "ScaleUpStalled",
                      what="the scale-up stalled", timeout=90)  # fmt: skip
        stalled = condition(s, "Capacity")
        assert stalled["status"] == "False" and stalled["lastTransitionTime"] == short["lastTransitionTime"]
        assert stalled["message"].startswith(f"2/4 replicas of {rev} available for ")
        assert "progressDeadlineSeconds 30" in stalled["message"], stalled
        ready = condition(s, "Ready")  # traffic is served at minReplicas: Ready, not Stalled, but the message says
        assert (ready["status"], ready["reason"]) == ("True", "Available"), ready
        assert "scale-up stalled" in ready["message"], ready
        assert condition(s, "Stalled")["status"] == "False" and condition(s, "Reconciling")["status"] == "False"
        # Events are posted off the reconcile (the operator's EventPoster): waited for, not read at once
        warned = wait_for(lambda: _events(k, "CapacityScaleUpStalled") or None, timeout=30,
                          description="the CapacityScaleUpStalled Event")  # fmt: skip
        assert warned and warned[0].type == "Warning", warned
        # a scale-up in flight is no news: read once the Event of a later pass is listed (one poster thread posts
        # them in order, so a CapacityScalingUp queued when the shortfall began would be listed by now)
        assert not _events(k, "CapacityScalingUp")
    finally:
        _cordon(k, False)
    # the pods are scheduled and routed: the condition goes, an Event says so
    s = _routed_at(k, 4, first=10, ready_timeout=60)
    assert condition(s, "Capacity") is None
    wait_for(lambda: _events(k, "CapacityScaledUp") or None, timeout=30, description="the CapacityScaledUp Event")


def test_a_deployment_scaled_to_zero_under_an_hpa_is_told(k: Cluster) -> None:
    k.apply(md_doc(podAnnotations=NO_IP, autoscaling=AUTO))
    _serving_at(k, 2)
    _scale(k, 0)  # someone scaled it to 0: the HPA leaves a target at 0 alone (ScalingDisabled)
    s = k.wait_md(lambda o: (condition(o, "Stalled") or {}).get("status") == "True", what="Stalled", timeout=60)
    ready = condition(s, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ScaledToZero"), ready
    assert "scaled to 0" in ready["message"] and "HPA" in ready["message"] and "suspend" in ready["message"]
    assert "raises" not in ready["message"]
    # the HPA controller indeed leaves it at 0, and says why
    def disabled() -> bool | None:
        hpa = client.AutoscalingV2Api(k.api).read_namespaced_horizontal_pod_autoscaler("digits", k.ns)
        return any(c.reason == "ScalingDisabled" for c in hpa.status.conditions or []) or None

    wait_for(disabled, timeout=60, description="the HPA's ScalingDisabled")
    assert k.apps.read_namespaced_deployment("digits", k.ns).spec.replicas == 0
    _scale(k, 2)  # scaled back: serves again
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == 2 or None,
             timeout=120, description="2 running serving pods")  # fmt: skip
    _address_all(k, 20)
    _ready_at(k, 2)


@pytest.mark.parametrize("max_unavailable", ["0", "1"])
def test_fewer_than_min_replicas_past_the_deadline_is_a_stalled_rollout(k: Cluster, max_unavailable: str) -> None:
    """minReplicas raised beyond what a ResourceQuota admits: the HPA raises the Deployment to 2, the ReplicaSet
    cannot create the second pod. The Deployment controller keeps Progressing NewReplicaSetAvailable (a pure scale:
    it runs no progress deadline on it), so without the operator's own deadline the ModelDeployment would stay
    RollingOut for ever: past progressDeadlineSeconds it is Stalled (RolloutStalled), told by the operator's own
    timer (no resync), and serves again once the quota admits the pod. With maxUnavailable 1 the Deployment counts
    itself Available at 1 of 2 (no Available False to time it from): the operator's own Deployed clock does."""
    doc = md_doc(podAnnotations=NO_IP, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3},
                 rollout={"progressDeadlineSeconds": 30, "maxUnavailable": max_unavailable})  # fmt: skip
    k.apply(doc)
    rev = _serving_at(k, 1)
    _freeze_pods(k)
    assert k.core.read_namespaced_resource_quota("no-more-pods", k.ns).spec.hard["pods"] == "1"  # the serving pod
    try:
        doc["spec"]["serving"]["autoscaling"]["minReplicas"] = 2
        k.apply(doc)
        # the HPA raises the count; the quota refuses the pod: a rollout short of minReplicas, not Ready
        s = k.wait_md(lambda o: (condition(o, "Ready") or {}).get("message") == f"1/2 replicas of {rev} available",
                      what="1/2 replicas, rolling out", timeout=90)  # fmt: skip
        assert (condition(s, "Ready")["status"], condition(s, "Stalled")["status"]) == ("False", "False")
        # past progressDeadlineSeconds (30 s): Stalled, by the operator's own timer
        s = k.wait_md(lambda o: (condition(o, "Stalled") or {}).get("status") == "True", what="Stalled", timeout=90)
        deployed = condition(s, "Deployed")
        assert (deployed["status"], deployed["reason"]) == ("False", "RolloutStalled"), deployed
        assert deployed["message"].startswith(f"fewer than minReplicas 2 replicas of {rev} available for more than 30s "
                                              "(progressDeadlineSeconds 30): "), deployed  # fmt: skip
        assert condition(s, "Ready")["reason"] == "RolloutStalled" and s["status"]["lastFailure"]["stage"] == "Deploy"
        # the controller's own record says nothing is wrong: the path its ProgressDeadlineExceeded takes is not it
        dep = k.apps.read_namespaced_deployment("digits", k.ns)
        assert dep.spec.replicas == 2 and (dep.status.available_replicas or 0) == 1
        progressing = next(c for c in dep.status.conditions if c.type == "Progressing")
        assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable"), progressing
        available = next(c for c in dep.status.conditions if c.type == "Available")
        assert available.status == ("True" if max_unavailable == "1" else "False"), available
    finally:
        _lift_freeze(k)
    # the ReplicaSet controller retries its refused create with a growing backoff: a change of the ReplicaSet
    # makes it look now
    for rs in k.apps.list_namespaced_replica_set(k.ns, label_selector=SERVER).items:
        k.apps.patch_namespaced_replica_set(rs.metadata.name, k.ns, {"metadata": {"annotations": {"t/poke": "1"}}})
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == 2 or None,
             timeout=120, description="2 running serving pods")  # fmt: skip
    _address_all(k, 40)
    s = _ready_at(k, 2)
    assert condition(s, "Stalled")["status"] == "False"


def test_a_pod_lost_after_a_long_scale_up_has_the_whole_deadline_from_the_drop(k: Cluster) -> None:
    """With maxUnavailable 0 the Deployment's Available condition turned False when the scale-up began (Ready stayed
    True at minReplicas) and keeps that time; a serving pod lost long after (a node drained) drops the revision below
    minReplicas: RollingOut for the rollout's progressDeadlineSeconds from the drop, then Stalled, not Stalled at
    once on the Available condition's old time."""
    k.apply(md_doc(podAnnotations=NO_IP, autoscaling=AUTO, rollout={"progressDeadlineSeconds": 30}))
    rev = _serving_at(k, 2)
    try:
        _cordon(k, True)
        _scale(k, 4)  # the HPA asks for 4: the two new pods cannot be scheduled
        k.wait_md(lambda o: (condition(o, "Capacity") or {}).get("reason") == "ScaleUpStalled",
                  what="the scale-up stalled (Available False for more than 30 s)", timeout=90)  # fmt: skip
        dep = k.apps.read_namespaced_deployment("digits", k.ns)
        available = next(c for c in dep.status.conditions if c.type == "Available")
        assert available.status == "False", available
        # a drain takes one of the two serving pods; its replacement cannot be scheduled either
        victim = sorted(name for name, p in _pods(k).items() if p.status.phase == "Running")[0]
        k.core.delete_namespaced_pod(victim, k.ns, grace_period_seconds=0)
        s = k.wait_md(lambda o: (condition(o, "Deployed") or {}).get("reason") in ("RollingOut", "RolloutStalled"),
                      what="below minReplicas", timeout=60)  # fmt: skip
        deployed = condition(s, "Deployed")
        assert (deployed["status"], deployed["reason"]) == ("False", "RollingOut"), deployed
        assert condition(s, "Stalled")["status"] == "False" and condition(s, "Ready")["status"] == "False"
        # the whole deadline from the drop, told by the operator's own timer
        s = k.wait_md(lambda o: (condition(o, "Stalled") or {}).get("status") == "True", what="Stalled", timeout=90)
        stalled = condition(s, "Deployed")
        assert stalled["reason"] == "RolloutStalled" and stalled["lastTransitionTime"] == deployed["lastTransitionTime"]
        assert stalled["message"].startswith(f"fewer than minReplicas 2 replicas of {rev} available for more than "
                                             "30s (progressDeadlineSeconds 30): "), stalled  # fmt: skip
    finally:
        _cordon(k, False)
    s = _routed_at(k, 4, first=30, ready_timeout=60)
    assert condition(s, "Stalled")["status"] == "False"


class ReplicaRecorder:
    """Every spec.replicas of the serving Deployment a watch delivers, in order."""

    def __init__(self, k: Cluster) -> None:
        self.k, self._stop = k, threading.Event()
        self.seen: list[int] = []
        rv = k.apps.read_namespaced_deployment("digits", k.ns).metadata.resource_version
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        w = watch.Watch()
        for ev in w.stream(self.k.apps.list_namespaced_deployment, self.k.ns, field_selector="metadata.name=digits",
                           resource_version=rv, timeout_seconds=120):  # fmt: skip
            self.seen.append(int(ev["object"].spec.replicas))
            if self._stop.is_set():
                w.stop()

    def stop(self) -> list[int]:
        self._stop.set()
        self.k.apps.patch_namespaced_deployment("digits", self.k.ns, {"metadata": {"annotations": {"t/r": "1"}}})
        self._thread.join(timeout=30)
        return self.seen


def test_switching_autoscaling_on_and_off_keeps_the_replicas(k: Cluster) -> None:
    doc = md_doc(podAnnotations=NO_IP)
    doc["spec"]["serving"]["replicas"] = 3
    k.apply(doc)
    _serving_at(k, 3)
    rec = ReplicaRecorder(k)
    # minReplicas 3: the HPA itself never goes below the count it takes over (a scale-down to minReplicas on
    # low usage would hide a drop); a drop to the default 1 shows in the watch
    doc["spec"]["serving"]["autoscaling"] = {**AUTO, "minReplicas": 3}
    gen = k.apply(doc)["metadata"]["generation"]
    k.wait_md(lambda o: (o.get("status") or {}).get("observedGeneration") == gen, what="the new generation seen")
    wait_for(lambda: _hpa_exists(k) or None, timeout=60, description="the HPA")
    # the operator's own apply no longer sets the count (the HPA's next write is not fought); it kept its value
    fields = k.apps.read_namespaced_deployment("digits", k.ns).metadata.managed_fields
    applied = [f for f in fields if f.manager == "modelship-operator" and f.operation == "Apply"]
    assert applied and all("f:replicas" not in (f.fields_v1 or {}).get("f:spec", {}) for f in applied), fields
    seen = rec.stop()
    assert seen and min(seen) == 3, (seen, fields)  # never the default 1 in between
    _ready_at(k, 3)
    # the HPA scales it to 5; autoscaling off with spec.serving.replicas 3: 3, owned by the operator again
    _scale(k, 5)
    wait_for(lambda: len([p for p in _pods(k).values() if p.status.phase == "Running"]) == 5 or None,
             timeout=120, description="5 running serving pods")  # fmt: skip
    _address_all(k, 30)
    _ready_at(k, 5)
    del doc["spec"]["serving"]["autoscaling"]
    k.apply(doc)
    wait_for(lambda: (not _hpa_exists(k)) or None, timeout=60, description="the HPA gone")
    wait_for(lambda: k.apps.read_namespaced_deployment("digits", k.ns).spec.replicas == 3 or None, timeout=60,
             description="the spec's 3 replicas")  # fmt: skip
    _ready_at(k, 3)


def _hpa_exists(k: Cluster) -> bool:
    hpas = client.AutoscalingV2Api(k.api).list_namespaced_horizontal_pod_autoscaler(k.ns).items
    return any(h.metadata.name == "digits" for h in hpas)


def _ok_reconciles(op: OperatorProcess) -> float:
    return op.metric("modelship_reconciles_total", 'result="ok"')


def test_a_deployment_created_under_an_hpa_leaves_its_count_to_the_hpa(k: Cluster, operator: OperatorProcess) -> None:
    # the POST that creates the Deployment leaves spec.replicas out; the API server defaults it to 1 and the
    # creating entry owns it: with minReplicas 1 the handover writes the same value, and the operator's apply that
    # follows must still run (and drop the field from its entry), or every reconcile hands the count over again
    k.apply(md_doc(podAnnotations=NO_IP, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3}))
    _serving_at(k, 1)
    for i in range(3):  # a few more reconciles, each after a change of the Deployment the operator watches
        before = _ok_reconciles(operator)
        k.apps.patch_namespaced_deployment("digits", k.ns, {"metadata": {"annotations": {"t/poke": str(i)}}})
        wait_for(lambda b=before: _ok_reconciles(operator) > b or None, timeout=30,
                 description=f"reconcile {i} after the poke")  # fmt: skip
    fields = k.apps.read_namespaced_deployment("digits", k.ns).metadata.managed_fields
    owners = [(f.manager, f.operation) for f in fields if "f:replicas" in (f.fields_v1 or {}).get("f:spec", {})]
    managers = [(f.manager, f.operation, f.subresource) for f in fields]
    assert ("modelship-operator", "Apply", None) in managers, managers
    assert ("modelship-operator", "Apply") not in owners and ("modelship-operator", "Update") not in owners, owners
    # the creating entry never owned the count (taken out of it as it became the operator's Apply entry): nothing
    # to hand over, not even once
    handed = operator.log_path.read_text(errors="replace").count(f"{k.ns}/digits: handed Deployment digits's")
    assert handed == 0, (handed, fields)
    assert k.apps.read_namespaced_deployment("digits", k.ns).spec.replicas == 1
