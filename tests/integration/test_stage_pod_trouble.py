"""A stage Job whose pod the real kube-scheduler cannot place says so in status: the optimization Job's pod asks for a
node label no node has, and the Optimized and Ready messages name the scheduler's reason while the Job keeps
running (no failure, no stall); once a node carries the label the pod runs and the stage goes on by itself."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster import condition
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_operator import Cluster, md_doc, operator  # noqa: F401 (the operator fixture)

LABEL = "modelship.io/test-placement"


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


def test_an_unschedulable_stage_pod_is_named_in_status_until_it_runs(tenant: Cluster) -> None:
    value = f"fits-{uuid.uuid4().hex[:8]}"  # no node carries it yet
    doc = md_doc()
    doc["spec"]["optimization"]["job"]["nodeSelector"] = {LABEL: value}
    tenant.apply(doc)

    def named(obj: dict[str, Any]) -> bool:
        optimized = condition(obj, "Optimized") or {}
        return optimized.get("reason") == "JobRunning" and "node affinity/selector" in optimized.get("message", "")

    obj = tenant.wait_md(named, timeout=90, what="Optimized naming the scheduler's reason")
    optimized = condition(obj, "Optimized")
    (job,) = tenant.jobs("optimizer")
    (pod,) = tenant.core.list_namespaced_pod(
        tenant.ns, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}"
    ).items
    assert optimized["status"] == "False"
    assert optimized["message"].startswith(
        f"optimization Job {job.metadata.name} running (attempt 1): pod {pod.metadata.name} unschedulable: 0/"
    ), optimized["message"]
    scheduled = condition(pod, "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert scheduled.message.split(" preemption:")[0] in optimized["message"]  # the scheduler's own words
    assert condition(obj, "Ready")["message"] == optimized["message"]
    assert (condition(obj, "Stalled") or {}).get("status") != "True" and "lastFailure" not in obj.get("status", {})
    assert job.status.failed is None and not job.status.conditions  # the Job runs on: only the words changed

    node = tenant.core.list_node().items[0].metadata.name
    tenant.core.patch_node(node, {"metadata": {"labels": {LABEL: value}}})
    try:
        obj = tenant.wait_condition("Optimized", "True", timeout=120)
        assert "unschedulable" not in condition(obj, "Optimized")["message"]
    finally:
        tenant.core.patch_node(node, {"metadata": {"labels": {LABEL: None}}})
