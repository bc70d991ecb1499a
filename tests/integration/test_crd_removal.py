"""A watched CRD deleted under a running operator, on the real control plane: the Gateway API CRDs (v1.6.3) are
installed before the operator starts, so kopf watches HTTPRoutes; the HTTPRoute CRD is then deleted while it runs
(kopf's HTTPRoute watch ends with a 404). The operator must stay up and keep reconciling ModelDeployments, and
must watch HTTPRoutes again once the CRD is back, also where kopf itself never looks again: watching namespaces
(no CRD watch), or cluster-wide when the CRD's last event reached kopf before discovery served it
(controller.rewatch)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from modelship.rbac import operator_rules
from modelship.resources.kinds import HTTP_ROUTE, OURS
from tests.integration.cluster import ensure_operator_identity, install_gateway_api_crds, remove_httproute_crd, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.rollout import deployment_replicas as _replicas
from tests.integration.test_operator import Cluster, md_doc

CYCLES = 3
"""Delete/reinstall rounds: whether kopf's watch of the deleted resource relists (404) before kopf's CRD watch drops
it is a race, so one round may not hit it; the operator must come through every round either way."""
RESTARTED = "a watch-stream ended: restarting the watches"
WATCH_STARTED = "Starting the watch-stream for httproutes.v1.gateway.networking.k8s.io"
SERVED_RESTART = "served by the API server but not watched: restarting the watches"
UNRESOLVED = "Unresolved resources cannot be served"


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    install_gateway_api_crds(api_client)  # before the operator starts: kopf resolves and watches httproutes
    try:
        # DEBUG: kopf logs each watch-stream it starts, the evidence that httproutes are watched again
        with running_operator(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "2", "MODELSHIP_LOG_LEVEL": "DEBUG"}) as op:
            yield op
    finally:
        install_gateway_api_crds(api_client)  # the other modules expect the Gateway API CRDs


def _log(op: OperatorProcess) -> str:
    return op.log_path.read_text(errors="replace")  # all of it (log() keeps the tail)


def _alive(op: OperatorProcess) -> bool:
    return op.proc is not None and op.proc.poll() is None


def test_deleting_a_watched_crd_leaves_the_operator_reconciling_and_watching_it_again(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client, namespace)
    doc = md_doc()
    k.apply(doc)
    k.wait_condition("Ready", "True", timeout=120)
    wait_for(lambda: WATCH_STARTED in _log(operator), timeout=60, description="kopf watching httproutes")
    for round_, replicas in enumerate([3, 1, 2][:CYCLES]):
        started = _log(operator).count(WATCH_STARTED)
        remove_httproute_crd(api_client)
        try:
            doc["spec"]["serving"]["replicas"] = replicas
            k.apply(doc)
            wait_for(lambda r=replicas: _replicas(k) == r or not _alive(operator), timeout=120,
                     description=f"round {round_}: a change made after the CRD went reconciled")  # fmt: skip
            assert _alive(operator), _log(operator)[-3000:]
            assert _replicas(k) == replicas
        finally:
            install_gateway_api_crds(api_client)
        # the CRD is back: httproutes are watched again (kopf's CRD watch, or the restarted watches)
        wait_for(lambda s=started: _log(operator).count(WATCH_STARTED) > s or not _alive(operator), timeout=60,
                 description=f"round {round_}: httproutes watched again")  # fmt: skip
        assert _alive(operator), _log(operator)[-3000:]
    restarts, served = _log(operator).count(RESTARTED), _log(operator).count(SERVED_RESTART)
    print(f"{CYCLES} rounds, {restarts} restarts of the watches for a gone resource, {served} for a served kind")


def test_namespaced_the_crd_deleted_under_the_watch_restarts_the_watches(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Namespaced (kopf's scanning disabled: it does not watch CRDs), kopf's httproutes watch always relists into
    the 404 once the CRD is gone: it used to end the operator. Now the watches start again (without httproutes
    while the CRD is gone), ModelDeployments are still reconciled, and httproutes are watched again once the CRD
    is back."""
    install_gateway_api_crds(api_client)
    ensure_operator_identity(api_client, operator_rules())
    op = OperatorProcess(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "2", "MODELSHIP_LOG_LEVEL": "DEBUG"})
    op.extra_args = ["--namespace", namespace]
    op.start()
    try:
        k = Cluster(api_client, namespace)
        doc = md_doc()
        k.apply(doc)
        k.wait_condition("Ready", "True", timeout=120)
        wait_for(lambda: WATCH_STARTED in _log(op), timeout=60, description="kopf watching httproutes")
        remove_httproute_crd(api_client)
        wait_for(lambda: RESTARTED in _log(op) or not _alive(op), timeout=60, description="the watches restarted")
        assert _alive(op), _log(op)[-3000:]
        doc["spec"]["serving"]["replicas"] = 3
        k.apply(doc)
        wait_for(lambda: _replicas(k) == 3 or not _alive(op), timeout=120,
                 description="a change made after the CRD went reconciled")  # fmt: skip
        assert _alive(op), _log(op)[-3000:]
        assert _replicas(k) == 3
        # kopf never looks for httproutes again by itself here (no CRD watch): the operator's poll of discovery does
        started = _log(op).count(WATCH_STARTED)
        install_gateway_api_crds(api_client)
        wait_for(lambda: _log(op).count(WATCH_STARTED) > started or not _alive(op), timeout=60,
                 description="httproutes watched again once the CRD is back")  # fmt: skip
        assert _alive(op), _log(op)[-3000:]
        assert SERVED_RESTART in _log(op)
    finally:
        op.stop()
        install_gateway_api_crds(api_client)


def _route_seen(op: OperatorProcess, name: str) -> bool:
    """The operator's HTTPRoute watch delivered an event of the route ``name`` (its handler logs each at DEBUG)."""
    return f"{HTTP_ROUTE.kind}/{name} rv" in _log(op)


def test_namespaced_the_gateway_api_installed_after_the_start_is_watched_without_a_restart_of_the_operator(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The README's old caveat: a namespaced operator started before the Gateway API CRDs were installed never
    watched HTTPRoutes until it was restarted (kopf resolves resources at its start and, with no CRD watch, never
    again), so a change to a route did not wake its ModelDeployment. Deterministic: kopf has no other path here
    than the operator's poll of discovery."""
    remove_httproute_crd(api_client)
    ensure_operator_identity(api_client, operator_rules())
    op = OperatorProcess(api_client, {"MODELSHIP_LOG_LEVEL": "DEBUG"})
    op.extra_args = ["--namespace", namespace]
    op.start()
    try:
        wait_for(lambda: UNRESOLVED in _log(op) or not _alive(op), timeout=60,
                 description="kopf looked for httproutes and found none")  # fmt: skip
        assert _alive(op), _log(op)[-3000:]
        assert WATCH_STARTED not in _log(op)
        install_gateway_api_crds(api_client)  # returns once discovery serves httproutes
        served = time.monotonic()
        wait_for(lambda: WATCH_STARTED in _log(op) or not _alive(op), timeout=60,
                 description="httproutes watched once the CRD is installed")  # fmt: skip
        assert _alive(op), _log(op)[-3000:]
        print(f"httproutes watched {time.monotonic() - served:.1f} s after discovery served them")
        assert SERVED_RESTART in _log(op)
        assert op.metric("modelship_watch_restarts_total", 'reason="served"') >= 1
        # the watch delivers: a route of ours made now reaches the operator
        route = {**HTTP_ROUTE.type_meta(), "metadata": {"name": "probe", "labels": dict(OURS)}, "spec": {}}
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            HTTP_ROUTE.group, HTTP_ROUTE.version, namespace, HTTP_ROUTE.plural, route
        )
        wait_for(lambda: _route_seen(op, "probe") or not _alive(op), timeout=60,
                 description="the operator's HTTPRoute watch delivering the new route")  # fmt: skip
        assert _alive(op), _log(op)[-3000:]
    finally:
        op.stop()
        install_gateway_api_crds(api_client)
