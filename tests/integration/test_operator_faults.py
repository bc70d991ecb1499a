"""Loud failures against the real API server: an error the operator cannot plan around (here a manifest builder
that raises, planted by tests/integration/faulty_operator.py) is logged with the object's name, counted, retried
a bounded number of times, and then the ModelDeployment is Stalled with the error in status and an Event; once
the cause is gone the next resync brings it back to Ready."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.cluster import condition, wait_for
from tests.integration.faulty_operator import FAULT_ANNOTATION
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, md_doc

ERROR = "kaniko builds one platform per run: use engine buildkit for linux/amd64 + linux/arm64"


@pytest.fixture(scope="module")
def faulty_operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, module="tests.integration.faulty_operator") as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, faulty_operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def test_builder_error_ends_stalled_with_the_error_in_status_and_an_event(
    k: Cluster, faulty_operator: OperatorProcess
) -> None:
    doc = md_doc()
    doc["metadata"]["annotations"] = {FAULT_ANNOTATION: ERROR}
    k.apply(doc)
    s = k.wait_condition("Stalled", "True", reason="ReconcileError", timeout=120)
    st = s["status"]
    stalled = condition(s, "Stalled")
    assert ERROR in stalled["message"] and "ValueError" in stalled["message"]
    assert condition(s, "Ready")["status"] == "False" and condition(s, "Reconciling")["status"] == "False"
    assert st["phase"] == "Failed" and st["observedGeneration"] == s["metadata"]["generation"]
    assert st["lastFailure"]["stage"] == "Reconcile" and ERROR in st["lastFailure"]["message"]
    assert condition(s, "Optimized") is not None  # the stage conditions the last good reconcile wrote stay
    assert k.jobs("build") == []  # nothing half-made

    def warning() -> list[client.CoreV1Event]:
        events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
        return [e for e in events if e.reason == "ReadyReconcileError"]

    # the operator posts Events off the reconcile: waited for, not read at once (a CI run read none yet)
    (event,) = wait_for(warning, timeout=30, description="the ReadyReconcileError Event")
    assert event.type == "Warning" and ERROR in event.message
    # logged with the object's name, counted
    assert f"{k.ns}/digits" in faulty_operator.log() and ERROR in faulty_operator.log()
    assert 'modelship_reconcile_errors_total{error="ValueError"}' in faulty_operator.metrics()
    assert "modelship_reconcile_give_ups_total 1.0" in faulty_operator.metrics()
    # the cause goes away (an annotation: no new generation): the next resync reconciles it to Ready
    k.custom.patch_namespaced_custom_object(
        GROUP, VERSION, k.ns, PLURAL, "digits", {"metadata": {"annotations": {FAULT_ANNOTATION: None}}}
    )
    ready = k.wait_condition("Ready", "True", timeout=120)
    assert "lastFailure" not in ready["status"] and condition(ready, "Stalled")["status"] == "False"
    wait_for(lambda: k.jobs("build"), timeout=10, description="the build Job")
