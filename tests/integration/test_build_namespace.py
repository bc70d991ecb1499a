"""Builds in the operator's build namespace, on the real control plane with the chart installed (its RBAC, its
build namespace: the release's): the build Job runs there, bound to its ModelDeployment by namespace and uid labels
(no cross-namespace owner reference), nothing of the build runs in the tenant's namespace but the credential-free
export Job, which gets the build pod's address and its Job's uid as the upload token; the operator deletes the
build Jobs of a ModelDeployment that is gone (on its delete event, and after a restart by the orphan sweep)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from modelship.resources.meta import MODELDEPLOYMENT_NAMESPACE_LABEL, OWNER_UID_LABEL
from modelship_dev import cluster as devcluster
from tests.chart.helm import Helm
from tests.integration.cluster import ClusterInfo, wait_for
from tests.integration.test_chart_install import ChartOperator, Release, helm_bin, installed  # noqa: F401
from tests.integration.test_operator import Cluster, md_doc


@dataclass
class Installed:
    release: Release
    op: ChartOperator


@pytest.fixture(scope="module")
def chart(helm_bin: Helm, cluster: ClusterInfo, api_client: client.ApiClient) -> Iterator[Installed]:  # noqa: F811
    # cluster-wide: each test applies in a fresh namespace (the namespaced default watches the listed ones only)
    with installed(helm_bin, cluster, api_client, "msb", {"operator.clusterWide": True}) as (release, op):
        yield Installed(release, op)


def slow_build(name: str = "digits") -> dict[str, Any]:
    """md_doc whose build pod stays Running a few seconds (kwok), long enough to be seen waiting for its upload."""
    doc = copy.deepcopy(md_doc(name))
    annotations = doc["spec"]["build"]["job"]["podAnnotations"]
    annotations[devcluster.ANNOTATION_DURATION] = "4s"
    annotations[devcluster.ANNOTATION_RECEIVE_RUNNING] = "true"
    return doc


def build_jobs(api: client.ApiClient, namespace: str, tenant: str) -> list[Any]:
    selector = f"app.kubernetes.io/component=build,{MODELDEPLOYMENT_NAMESPACE_LABEL}={tenant}"
    return list(client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=selector).items)


def test_the_build_runs_in_the_build_namespace_and_the_export_carries_no_credentials(
    chart: Installed, api_client: client.ApiClient, namespace: str
) -> None:
    builds_ns = chart.release.namespace
    assert chart.op.env["MODELSHIP_BUILD_NAMESPACE"] == builds_ns
    k = Cluster(api_client, namespace)
    md = k.apply(slow_build())
    k.wait_condition("Ready", "True", timeout=120)
    (job,) = build_jobs(api_client, builds_ns, namespace)
    labels = job.metadata.labels
    assert labels[MODELDEPLOYMENT_NAMESPACE_LABEL] == namespace and labels[OWNER_UID_LABEL] == md["metadata"]["uid"]
    assert not job.metadata.owner_references, "no owner reference across namespaces"
    assert k.jobs("build") == [], "nothing of the build runs in the tenant's namespace"
    (export,) = k.jobs("export")
    assert export.metadata.owner_references[0].uid == md["metadata"]["uid"]
    (container,) = export.spec.template.spec.containers
    args = container.args
    assert args[args.index("--token") + 1] == job.metadata.uid  # the upload token: the build Job's uid
    core = client.CoreV1Api(api_client)
    build_pods = core.list_namespaced_pod(builds_ns, label_selector=f"job-name={job.metadata.name}")
    ips = {p.status.pod_ip for p in build_pods.items}
    assert args[args.index("--to") + 1] in {f"http://{ip}:8080/artifact" for ip in ips}
    spec = export.spec.template.spec
    assert not container.env_from and all(v.secret is None for v in spec.volumes)
    assert spec.automount_service_account_token is False and spec.service_account_name in (None, "default")
    assert container.security_context.run_as_non_root and container.security_context.capabilities.drop == ["ALL"]


def test_the_build_jobs_of_a_deleted_modeldeployment_are_deleted(
    chart: Installed, api_client: client.ApiClient, namespace: str
) -> None:
    builds_ns = chart.release.namespace
    k = Cluster(api_client, namespace)
    k.apply(md_doc())
    k.wait_condition("Ready", "True", timeout=120)
    assert len(build_jobs(api_client, builds_ns, namespace)) == 1
    k.custom.delete_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", "digits")
    wait_for(lambda: not build_jobs(api_client, builds_ns, namespace), timeout=60,
             description="the build Job deleted with its ModelDeployment")  # fmt: skip


def test_build_jobs_orphaned_while_the_operator_was_down_are_swept(
    chart: Installed, api_client: client.ApiClient, namespace: str
) -> None:
    builds_ns = chart.release.namespace
    k = Cluster(api_client, namespace)
    k.apply(md_doc())
    k.wait_condition("Ready", "True", timeout=120)
    assert len(build_jobs(api_client, builds_ns, namespace)) == 1
    chart.op.stop()
    try:
        k.custom.delete_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", "digits")
        wait_for(lambda: not k.custom.list_namespaced_custom_object("modelship.io", "v1alpha1", namespace,
                                                                  "modeldeployments")["items"], timeout=30,
                 description="the ModelDeployment gone")  # fmt: skip
        assert len(build_jobs(api_client, builds_ns, namespace)) == 1  # nobody collected it yet
    finally:
        chart.op.start()
    wait_for(lambda: not build_jobs(api_client, builds_ns, namespace), timeout=60,
             description="the orphaned build Job swept after the restart")  # fmt: skip


def test_a_build_job_the_platforms_quota_forbids_says_the_reason_alone(
    chart: Installed, api_client: client.ApiClient, namespace: str
) -> None:
    """A quota of the build namespace (the platform's) forbids the build pod: the real Job controller says so in a
    FailedCreate Event there, which the operator reads under the chart's Role in that namespace. The tenant's
    ImageBuilt message says the reason alone (not the platform's quota), the operator's log has the words; once the
    quota is gone the build goes on."""
    builds_ns = chart.release.namespace
    core = client.CoreV1Api(api_client)
    quota = "platform-builders-quota"
    core.create_namespaced_resource_quota(builds_ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name=quota), spec=client.V1ResourceQuotaSpec(hard={"pods": "0"})))  # fmt: skip
    try:
        k = Cluster(api_client, namespace)
        k.apply(md_doc())

        def named(obj: dict[str, Any]) -> bool:
            built = next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == "ImageBuilt"), {})
            return built.get("reason") == "BuildJobRunning" and "(FailedCreate)" in built.get("message", "")

        obj = k.wait_md(named, timeout=120, what="ImageBuilt naming a build pod not created")
        (job,) = build_jobs(api_client, builds_ns, namespace)
        built = next(c for c in obj["status"]["conditions"] if c["type"] == "ImageBuilt")
        assert built["message"] == (
            f"build Job {job.metadata.name} running (attempt 1): no pod created (FailedCreate); it runs in the "
            "platform's build namespace: the operator's log says more"
        ), built["message"]
        wait_for(lambda: f"exceeded quota: {quota}" in chart.op.log(), timeout=30,
                 description="the operator's log naming the platform's quota")  # fmt: skip
    finally:
        core.delete_namespaced_resource_quota(quota, builds_ns)
    k.wait_condition("Ready", "True", timeout=180)  # the Job controller's next try (backoff at most 60 s)
