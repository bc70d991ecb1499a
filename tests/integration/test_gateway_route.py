"""Exact traffic weights through a Gateway API HTTPRoute, on the real control plane with the real Gateway API CRDs
(standard channel, sigs.k8s.io/gateway-api from the Go module proxy: hack/cluster/gateway-api-crds): the operator
(its own ServiceAccount, the chart's RBAC) creates and owns the route, moves its weights exactly as the steps say
while the analysis (samples from a loopback endpoint, as tests/integration/test_canary.py) passes, sets it back to
the stable Service at promotion and rollback; the route goes with the ModelDeployment; a cluster without the
HTTPRoute CRD leaves the resource Stalled naming the field until the CRD is installed; an HTTPRoute of that name
this ModelDeployment does not own is a NameConflict, left untouched. The NetworkPolicy the operator applies admits
the stable pods to the candidate's."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.cluster import (
    GATEWAY_API_GROUP,
    condition,
    install_gateway_api_crds,
    remove_httproute_crd,
    wait_for,
)
from tests.integration.operator_harness import OperatorProcess
from tests.integration.rollout import deployment_replicas, shadow_a_new_revision
from tests.integration.test_canary import FakeMetrics, fake_metrics, metrics, operator  # noqa: F401
from tests.integration.test_operator import Cluster, md_doc

STEPS = [{"weight": 10, "pauseSeconds": 8}, {"weight": 40, "pauseSeconds": 8}]
ROUTED = {
    "strategy": "Canary",
    "canary": {
        "shadow": {"percent": 20, "durationSeconds": 10},
        "steps": STEPS,
        "analysis": {"minRequests": 20, "minAgreement": 0.95, "maxLatencyRatio": 2.0, "latencyQuantile": 0.9},
        "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public", "sectionName": "http"}],
                                          "hostnames": ["digits.example.com"]}},
    },
}  # fmt: skip
FIELD = "spec.serving.rollout.canary.trafficRouting.gatewayAPI"


@pytest.fixture(autouse=True, scope="module")
def _no_httproute_crd_at_first(api_client: client.ApiClient) -> Iterator[None]:
    """The cluster starts without the HTTPRoute CRD, before this module's operator starts (a cluster that never
    had it; kopf leaves that watch unresolved), and keeps the Gateway API CRDs afterwards (tests/integration/
    test_kinds). Autouse and module-scoped: set up before the module's operator."""
    remove_httproute_crd(api_client)
    yield
    install_gateway_api_crds(api_client)


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


@pytest.fixture
def gateway_api(api_client: client.ApiClient) -> list[str]:
    return install_gateway_api_crds(api_client)


def _route(k: Cluster, name: str = "digits") -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = k.custom.get_namespaced_custom_object(GATEWAY_API_GROUP, "v1", k.ns, "httproutes", name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _weights(route: dict[str, Any] | None) -> tuple[int, int] | None:
    if route is None:
        return None
    refs = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    return refs["digits"], refs["digits-canary"]


class RouteWatch:
    """Polls the route's weights in the background: every pair it ever had, in order."""

    def __init__(self, k: Cluster) -> None:
        self.k, self.seen = k, list[tuple[int, int]]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            w = _weights(_route(self.k))
            if w is not None and (not self.seen or self.seen[-1] != w):
                self.seen.append(w)
            time.sleep(0.2)

    def __enter__(self) -> RouteWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _pass_phase(k: Cluster, metrics: FakeMetrics, key: str) -> None:  # noqa: F811
    """Once the phase's own analysis window has started (``key``: Shadow/0/, Canary/1/...), its requests: 40 more
    of each, all agreeing (each phase is judged on its own requests)."""
    def started(o: dict[str, Any]) -> bool:
        phase = str((o["status"]["rollout"].get("window") or {}).get("phase", ""))
        return phase.startswith(key) and not phase.endswith("/-")

    k.wait_md(started, what=f"the analysis window of {key}", timeout=120)
    with metrics.lock:
        metrics.compared += 40
        metrics.agreed += 40
        metrics.candidate_requests += 60  # the p90 latency ratio needs 50 on each side


def _first_then_new(k: Cluster, metrics: FakeMetrics, rollout: dict[str, Any]) -> tuple[str, str]:  # noqa: F811
    doc = md_doc(rollout=rollout)
    k.apply(doc)
    first = k.wait_condition("Ready", "True", timeout=120)
    old = first["status"]["revision"]
    shadow = shadow_a_new_revision(k, doc)
    new = shadow["status"]["revision"]
    with metrics.lock:
        metrics.stable, metrics.candidate = old, new
    return old, new


def test_without_the_httproute_crd_it_stalls_naming_the_field_until_the_crd_comes(
    api_client: client.ApiClient, k: Cluster
) -> None:
    remove_httproute_crd(api_client)  # already so when this test runs first, as it does
    try:
        k.apply(md_doc(rollout=ROUTED))
        stalled = k.wait_condition("Stalled", "True", reason="TrafficRoutingUnavailable", timeout=120)
        message = condition(stalled, "Stalled")["message"]
        assert message.startswith(f"{FIELD}: ") and "gateway.networking.k8s.io/v1" in message, message
        assert condition(stalled, "Ready")["status"] == "False"
        assert stalled["status"]["lastFailure"]["reason"] == "TrafficRoutingUnavailable"
        # the operator keeps working (no crash loop): the first revision is still built and served by its Service
        wait_for(lambda: deployment_replicas(k) == 2, timeout=120, description="the first revision's Deployment")
        assert k.md()["status"]["phase"] != "Ready"
    finally:
        install_gateway_api_crds(api_client)
    # the CRDs installed: the operator looks again by itself (every 30 s) and creates the route
    ready = k.wait_condition("Ready", "True", timeout=120)
    assert condition(ready, "Verified")["reason"] == "NoStableRevision"
    assert _weights(_route(k)) == (100, 0)


def test_the_route_takes_exactly_each_steps_weight_and_returns_to_stable(
    k: Cluster,
    metrics: FakeMetrics,  # noqa: F811
    gateway_api: list[str],
) -> None:
    with RouteWatch(k) as watch:
        old, new = _first_then_new(k, metrics, ROUTED)
        route = _route(k)
        assert route is not None and _weights(route) == (100, 0)  # shadow: the candidate gets no live request
        meta = route["metadata"]
        md = k.md()
        assert meta["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        assert meta["ownerReferences"][0]["controller"] is True
        assert route["spec"]["parentRefs"] == [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": "public",
                                                "sectionName": "http"}]  # fmt: skip
        assert route["spec"]["hostnames"] == ["digits.example.com"]
        # the candidate's pods never join the stable Service (the route weighs the two Services)
        cand = k.apps.read_namespaced_deployment("digits-canary", k.ns)
        svc = k.core.read_namespaced_service("digits", k.ns)
        assert not set(svc.spec.selector.items()) <= set(cand.spec.template.metadata.labels.items())
        _pass_phase(k, metrics, "Shadow/0/")
        for i, step in enumerate(STEPS, start=1):
            w = step["weight"]
            _pass_phase(k, metrics, f"Canary/{i}/")
            held = k.wait_md(lambda o, i=i: (o["status"]["rollout"]["phase"], o["status"]["rollout"]["step"])
                             == ("Canary", i) and o["status"]["rollout"].get("phaseStartedAt") is not None,
                             what=f"canary step {i} with its pods", timeout=120)  # fmt: skip
            r = held["status"]["rollout"]
            assert r["weight"] == w and r["route"] == {"name": "digits", "stableWeight": 100 - w, "candidateWeight": w}
            assert _weights(_route(k)) == (100 - w, w)
            # the candidate has the replicas its share warrants: ceil(2 * w / 100), at least 1
            assert k.apps.read_namespaced_deployment("digits-canary", k.ns).spec.replicas == 1
        done = k.wait_condition("Ready", "True", timeout=120)
        assert done["status"]["rollout"]["phase"] == "Promoted" and done["status"]["servingRevision"] == new
        wait_for(lambda: _weights(_route(k)) == (100, 0), timeout=30, description="route back to stable 100")
        assert done["status"]["rollout"]["route"] == {"name": "digits", "stableWeight": 100, "candidateWeight": 0}
        time.sleep(0.5)  # one more poll of the watcher
    # every weight the route ever had, in order: exactly the steps', nothing in between
    assert watch.seen == [(100, 0), (90, 10), (60, 40), (100, 0)], watch.seen
    assert old != new
    # the route goes with its ModelDeployment (garbage collector)
    k.custom.delete_namespaced_custom_object("modelship.io", "v1alpha1", k.ns, "modeldeployments", "digits")
    wait_for(lambda: _route(k) is None, timeout=60, description="HTTPRoute garbage collected")


def test_a_rollback_sends_everything_back_to_stable(
    k: Cluster,
    metrics: FakeMetrics,  # noqa: F811
    gateway_api: list[str],
) -> None:
    old, _ = _first_then_new(k, metrics, ROUTED)
    _pass_phase(k, metrics, "Shadow/0/")  # good enough for the shadow phase
    k.wait_md(lambda o: o["status"]["rollout"]["phase"] == "Canary" and o["status"]["rollout"].get("phaseStartedAt")
              is not None, what="canary step 1 with its pods", timeout=120)  # fmt: skip
    assert _weights(_route(k)) == (90, 10)
    k.wait_md(lambda o: (o["status"]["rollout"].get("window") or {}).get("phase", "").startswith("Canary/1/"),
              what="the step's own analysis window", timeout=120)  # fmt: skip
    with metrics.lock:  # then the candidate fails half of its requests
        metrics.candidate_requests += 200
        metrics.candidate_errors += 100
    failed = k.wait_condition("Stalled", "True", reason="AnalysisFailed", timeout=120)
    assert failed["status"]["rollout"]["phase"] == "RolledBack" and failed["status"]["servingRevision"] == old
    assert _weights(_route(k)) == (100, 0)
    assert failed["status"]["rollout"]["route"] == {"name": "digits", "stableWeight": 100, "candidateWeight": 0}


def test_an_httproute_it_does_not_own_is_left_untouched(k: Cluster, gateway_api: list[str]) -> None:
    theirs = {
        "apiVersion": f"{GATEWAY_API_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "digits", "labels": {"team": "web"}},
        "spec": {"parentRefs": [{"name": "other"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
    }
    k.custom.create_namespaced_custom_object(GATEWAY_API_GROUP, "v1", k.ns, "httproutes", theirs)
    k.apply(md_doc(rollout=ROUTED))
    stalled = k.wait_condition("Stalled", "True", reason="NameConflict", timeout=120)
    assert "HTTPRoute/digits" in condition(stalled, "Stalled")["message"]
    route = _route(k)
    assert route is not None and route["spec"]["parentRefs"][0]["name"] == "other"
    assert not route["metadata"].get("ownerReferences")


def test_the_network_policy_admits_the_stable_pods_to_the_candidate(k: Cluster, gateway_api: list[str]) -> None:
    rollout = copy.deepcopy(ROUTED)
    k.apply(md_doc(rollout=rollout, networkPolicy={"enabled": True, "allowFromPodLabels": {"role": "gateway"}}))
    k.wait_condition("Ready", "True", timeout=120)
    np = client.NetworkingV1Api(k.api).read_namespaced_network_policy("digits", k.ns)
    selector = np.spec.pod_selector
    assert selector.match_labels == {"app.kubernetes.io/instance": "digits", "modelship.io/modeldeployment": "digits"}
    (expr,) = selector.match_expressions
    assert (expr.key, expr.operator, sorted(expr.values)) == ("app.kubernetes.io/name", "In",
                                                               ["modelship-server", "modelship-shadow"])  # fmt: skip
    model_rule, metrics_rule = np.spec.ingress
    stable_pods = {"app.kubernetes.io/name": "modelship-server", "app.kubernetes.io/instance": "digits",
                   "modelship.io/modeldeployment": "digits"}  # fmt: skip
    for rule, port in ((model_rule, 8080), (metrics_rule, 9090)):
        assert [p.port for p in rule.ports] == [port]
        peers = [p.pod_selector.match_labels for p in rule._from if p.pod_selector and not p.namespace_selector]
        assert stable_pods in peers, (port, peers)
    operator_ns = [p.namespace_selector.match_labels for p in metrics_rule._from
                   if p.namespace_selector and not p.pod_selector]  # fmt: skip
    assert {"kubernetes.io/metadata.name": "modelship-system"} in operator_ns


