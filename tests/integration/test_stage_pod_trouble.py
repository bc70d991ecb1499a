"""A stage Job whose pod the real kube-scheduler cannot place says so in status: the optimization Job's pod asks for a
node label no node has, and the Optimized and Ready messages name the scheduler's reason while the Job keeps
running (no failure, no stall); once a node carries the label the pod runs and the stage goes on by itself."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import OperatorProcess
from tests.integration.test_operator import Cluster, md_doc, operator  # noqa: F401 (the operator fixture)

LABEL = "modelship.io/test-placement"


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


def event_reads(op: OperatorProcess) -> float:
    """The operator's lists of a Job's Events so far (one per look at a Job without a pod)."""
    return op.metric("modelship_api_reads_total", 'kind="Event"')


def running_with(tenant: Cluster, words: str, what: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Wait until Optimized says the Job runs and names ``words``: the ModelDeployment, that condition, the Job."""

    def named(obj: dict[str, Any]) -> bool:
        optimized = condition(obj, "Optimized") or {}
        return optimized.get("reason") == "JobRunning" and words in optimized.get("message", "")

    obj = tenant.wait_md(named, timeout=90, what=f"Optimized naming {what}")
    (job,) = tenant.jobs("optimizer")
    return obj, condition(obj, "Optimized"), job


def test_an_unschedulable_stage_pod_is_named_in_status_until_it_runs(tenant: Cluster) -> None:
    value = f"fits-{uuid.uuid4().hex[:8]}"  # no node carries it yet
    doc = md_doc()
    doc["spec"]["optimization"]["job"]["nodeSelector"] = {LABEL: value}
    tenant.apply(doc)
    obj, optimized, job = running_with(tenant, "node affinity/selector", "the scheduler's reason")
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


def test_a_stage_job_whose_pod_a_quota_forbids_names_the_quota_until_it_is_lifted(
    tenant: Cluster,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    """The real Job controller cannot create the optimization pod (a ResourceQuota of no pods): no pod exists, the
    controller says why only in FailedCreate Events on the Job (one per try, each naming another generated pod). The
    Optimized message names the quota, and the operator's further looks at the Events write no status while the
    cause stays; once the quota is gone the controller's next try creates the pod and the stage goes on by itself."""
    quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="no-pods"),
                                   spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}))  # fmt: skip
    tenant.core.create_namespaced_resource_quota(tenant.ns, quota)
    tenant.apply(md_doc())
    obj, optimized, job = running_with(tenant, "exceeded quota: no-pods", "the quota that forbids the pod")
    assert optimized["status"] == "False"
    assert optimized["message"] == (
        f"optimization Job {job.metadata.name} running (attempt 1): no pod created (FailedCreate): the pod is "
        "forbidden: exceeded quota: no-pods, requested: pods=1, limited: pods=0"
    ), optimized["message"]
    assert condition(obj, "Ready")["message"] == optimized["message"]
    assert (condition(obj, "Stalled") or {}).get("status") != "True" and "lastFailure" not in obj.get("status", {})
    pods = tenant.core.list_namespaced_pod(
        tenant.ns, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}"
    )
    assert pods.items == [] and not job.status.active  # no pod: only the Job controller's Events tell why
    said = [
        e
        for e in tenant.core.list_namespaced_event(tenant.ns).items
        if e.reason == "FailedCreate" and e.involved_object.uid == job.metadata.uid
    ]
    assert said and all(e.source.component == "job-controller" for e in said)

    version, reads = tenant.md()["metadata"]["resourceVersion"], event_reads(operator)
    wait_for(lambda: event_reads(operator) >= reads + 2, timeout=60,
             description="two more looks at the Job's Events")  # fmt: skip
    assert tenant.md()["metadata"]["resourceVersion"] == version  # the same words: no status write per look

    tenant.core.delete_namespaced_resource_quota("no-pods", tenant.ns)
    obj = tenant.wait_condition("Optimized", "True", timeout=180)  # the controller's backoff is at most 60 s
    assert "FailedCreate" not in condition(obj, "Optimized")["message"]
