"""A watched CRD deleted under a running operator, on the real control plane: the Gateway API CRDs (v1.6.3) are
installed before the operator starts, so kopf watches HTTPRoutes; the HTTPRoute CRD is then deleted while it runs
(kopf's HTTPRoute watch ends with a 404). The operator must stay up and keep reconciling ModelDeployments, and
must watch HTTPRoutes again once the CRD is back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from modelship.rbac import operator_rules
from tests.integration.cluster import ensure_operator_identity, install_gateway_api_crds, remove_httproute_crd, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.rollout import deployment_replicas as _replicas
from tests.integration.test_operator import Cluster, md_doc

CYCLES = 3
"""Delete/reinstall rounds: whether kopf's watch of the deleted resource relists (404) before kopf's CRD watch drops
it is a race, so one round may not hit it; the operator must come through every round either way."""
RESTARTED = "a watch-stream ended: restarting the watches"
WATCH_STARTED = "Starting the watch-stream for httproutes.v1.gateway.networking.k8s.io"


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
    restarts = _log(operator).count(RESTARTED)
    print(f"{CYCLES} rounds, {restarts} restarts of the watches")


def test_namespaced_the_crd_deleted_under_the_watch_restarts_the_watches(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Namespaced (kopf's scanning disabled: it does not watch CRDs), kopf's httproutes watch always relists into
    the 404 once the CRD is gone: it used to end the operator. Now the watches start again (without httproutes,
    until the operator's next start: README) and ModelDeployments are still reconciled."""
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
    finally:
        op.stop()
        install_gateway_api_crds(api_client)
