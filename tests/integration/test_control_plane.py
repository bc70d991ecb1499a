"""The test control plane itself: a real API server, controllers, scheduler and kwok fake nodes.

These pin down the behaviour the operator's integration tests rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError

from modelship_dev import cluster as devcluster
from tests.integration.cluster import (
    CRD_DIR,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    TEST_FIELD_MANAGER,
    ClusterInfo,
    apply_manifest,
    close_client,
    condition,
    job_pods,
    service_account_client,
    unique_name,
    wait_for,
    wait_job_finished,
    whoami,
)

MD_CRD = "modeldeployments.modelship.io"
AMD64_NODES = {*devcluster.CPU_NODES, devcluster.GPU_NODE}


def _api(cls: Callable[[client.ApiClient], object], api_client: client.ApiClient) -> Any:
    """A typed-as-Any API: the generated models make every field Optional, which adds nothing in tests."""
    return cls(api_client)


def _job(name: str, annotations: dict[str, str]) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="example.invalid/job:1")],
                ),
            ),
        ),
    )


def _pod(name: str, **spec: Any) -> Any:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="example.invalid/pod:1")], **spec),
    )


def _running_pod(core: Any, namespace: str, name: str) -> Any:
    def probe() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" else None

    return wait_for(probe, timeout=60, description=f"pod {namespace}/{name} Running")


def _deployment(name: str, replicas: int, annotations: dict[str, str] | None = None) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=annotations),
                spec=client.V1PodSpec(
                    node_selector={"kubernetes.io/arch": "amd64"},
                    containers=[client.V1Container(name="server", image="example.invalid/server:1")],
                ),
            ),
        ),
    )


# ---------------------------------------------------------------------------- API server


def test_api_server_version_matches_pin(api_client: client.ApiClient, cluster: ClusterInfo) -> None:
    info = _api(client.VersionApi, api_client).get_code()
    assert info.git_version == cluster.expected_version
    assert info.git_tree_state == "clean"
    # The kubectl the tests use is built at the same version (no client/server skew).
    out = cluster.kubectl("version", "--client", "-o", "json").stdout
    assert f'"gitVersion": "{cluster.expected_version}"' in out


def test_fake_nodes_are_ready_with_their_shapes(api_client: client.ApiClient) -> None:
    core = _api(client.CoreV1Api, api_client)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for fake in devcluster.FAKE_NODES:
        node = nodes[fake.name]
        ready = condition(node, "Ready")
        assert ready is not None and ready.status == "True", fake.name
        assert node.metadata.labels["kubernetes.io/arch"] == fake.arch
    gpu = nodes[devcluster.GPU_NODE]
    assert gpu.status.allocatable[devcluster.GPU_RESOURCE] == "2"
    assert gpu.status.capacity[devcluster.GPU_RESOURCE] == "2"
    assert gpu.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert [(t.key, t.value, t.effect) for t in gpu.spec.taints] == [(devcluster.GPU_RESOURCE, "present", "NoSchedule")]
    assert nodes[devcluster.ARM_NODE].status.node_info.architecture == "arm64"


# ---------------------------------------------------------------------------- Jobs via kwok Stages


def test_job_completes_with_termination_message(api_client: client.ApiClient, namespace: str) -> None:
    message = '{"digest": "sha256:' + "a" * 64 + '", "accuracy": 0.97}'
    batch = _api(client.BatchV1Api, api_client)
    batch.create_namespaced_job(namespace, _job("ok", {devcluster.ANNOTATION_TERMINATION_MESSAGE: message}))

    job = wait_job_finished(api_client, namespace, "ok")
    assert condition(job, "Complete").status == "True"
    assert job.status.succeeded == 1

    (pod,) = job_pods(api_client, namespace, "ok")
    assert pod.spec.node_name in {n.name for n in devcluster.FAKE_NODES}
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    assert terminated.message == message


def test_plain_job_completes_without_message(api_client: client.ApiClient, namespace: str) -> None:
    _api(client.BatchV1Api, api_client).create_namespaced_job(namespace, _job("plain", {}))
    job = wait_job_finished(api_client, namespace, "plain")
    assert condition(job, "Complete").status == "True"
    (pod,) = job_pods(api_client, namespace, "plain")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert not terminated.message


def test_job_annotated_to_fail_is_failed_with_reason(api_client: client.ApiClient, namespace: str) -> None:
    annotations = {
        devcluster.ANNOTATION_FAIL: "AccuracyGateFailed",
        devcluster.ANNOTATION_TERMINATION_MESSAGE: "accuracy dropped by 0.12 > 0.05",
    }
    _api(client.BatchV1Api, api_client).create_namespaced_job(namespace, _job("bad", annotations))

    job = wait_job_finished(api_client, namespace, "bad")
    failed = condition(job, "Failed")
    assert failed is not None and failed.status == "True"
    assert failed.reason == "BackoffLimitExceeded"
    assert condition(job, "Complete") is None
    assert job.status.failed == 1

    (pod,) = job_pods(api_client, namespace, "bad")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 1
    assert terminated.reason == "AccuracyGateFailed"
    assert terminated.message == "accuracy dropped by 0.12 > 0.05"


def test_job_with_duration_annotation_is_observably_running(api_client: client.ApiClient, namespace: str) -> None:
    # modelship.io/test-duration keeps the pod Running for a while, so "Job in progress" states
    # can be observed; without it Job pods finish as soon as they start.
    annotations = {devcluster.ANNOTATION_DURATION: "3s", devcluster.ANNOTATION_TERMINATION_MESSAGE: "done"}
    _api(client.BatchV1Api, api_client).create_namespaced_job(namespace, _job("slow", annotations))

    def running() -> Any:
        pods = job_pods(api_client, namespace, "slow")
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = wait_for(running, timeout=60, interval=0.1, description="Job pod Running")
    assert condition(pod, "Ready").status == "True"
    job = wait_job_finished(api_client, namespace, "slow")
    assert condition(job, "Complete").status == "True"
    (pod,) = job_pods(api_client, namespace, "slow")
    assert pod.status.container_statuses[0].state.terminated.message == "done"


# ---------------------------------------------------------------------------- scheduling


def test_deployment_pods_become_ready_on_amd64_nodes(api_client: client.ApiClient, namespace: str) -> None:
    apps = _api(client.AppsV1Api, api_client)
    apps.create_namespaced_deployment(namespace, _deployment("web", replicas=2))

    def ready() -> Any:
        d = apps.read_namespaced_deployment("web", namespace)
        return d if (d.status.ready_replicas or 0) == 2 and (d.status.available_replicas or 0) == 2 else None

    wait_for(ready, timeout=60, description="Deployment web 2/2 ready")
    pods = _api(client.CoreV1Api, api_client).list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name in devcluster.CPU_NODES  # amd64 and not the tainted GPU node
        assert pod.status.phase == "Running"
        assert condition(pod, "Ready").status == "True"
        assert pod.status.container_statuses[0].ready is True


def test_crashing_pods_never_become_ready(api_client: client.ApiClient, namespace: str) -> None:
    apps = _api(client.AppsV1Api, api_client)
    core = _api(client.CoreV1Api, api_client)
    apps.create_namespaced_deployment(
        namespace, _deployment("crashy", replicas=1, annotations={devcluster.ANNOTATION_CRASH: "true"})
    )

    def crash_looping() -> Any:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=crashy").items:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == "CrashLoopBackOff":
                return pod
        return None

    pod = wait_for(crash_looping, timeout=60, description="crashy pod in CrashLoopBackOff")
    status = pod.status.container_statuses[0]
    assert status.ready is False
    assert status.restart_count > 0
    assert status.last_state.terminated.exit_code == 1
    assert pod.status.phase == "Running"
    assert condition(pod, "Ready").status == "False"
    deployment = apps.read_namespaced_deployment("crashy", namespace)
    assert not deployment.status.ready_replicas
    assert not deployment.status.available_replicas


def test_arm64_node_selector_lands_on_arm64_node(api_client: client.ApiClient, namespace: str) -> None:
    core = _api(client.CoreV1Api, api_client)
    core.create_namespaced_pod(namespace, _pod("arm", node_selector={"kubernetes.io/arch": "arm64"}))
    pod = _running_pod(core, namespace, "arm")
    assert pod.spec.node_name == devcluster.ARM_NODE
    assert condition(pod, "Ready").status == "True"


def test_gpu_pod_with_toleration_lands_on_gpu_node(api_client: client.ApiClient, namespace: str) -> None:
    core = _api(client.CoreV1Api, api_client)
    gpu = {devcluster.GPU_RESOURCE: "1"}
    toleration = client.V1Toleration(key=devcluster.GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    pod = _pod("gpu", tolerations=[toleration])
    pod.spec.containers[0].resources = client.V1ResourceRequirements(limits=gpu, requests=gpu)
    core.create_namespaced_pod(namespace, pod)
    running = _running_pod(core, namespace, "gpu")
    assert running.spec.node_name == devcluster.GPU_NODE


def test_gpu_pod_without_toleration_is_unschedulable(api_client: client.ApiClient, namespace: str) -> None:
    core = _api(client.CoreV1Api, api_client)
    gpu = {devcluster.GPU_RESOURCE: "1"}
    pod = _pod("no-toleration")
    pod.spec.containers[0].resources = client.V1ResourceRequirements(limits=gpu, requests=gpu)
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> Any:
        p = core.read_namespaced_pod("no-toleration", namespace)
        c = condition(p, "PodScheduled")
        return c if c is not None and c.reason == "Unschedulable" else None

    scheduled = wait_for(unschedulable, timeout=60, description="PodScheduled=False/Unschedulable")
    assert scheduled.status == "False"
    assert "untolerated taint" in scheduled.message or "Insufficient nvidia.com/gpu" in scheduled.message
    assert not core.read_namespaced_pod("no-toleration", namespace).spec.node_name


# ---------------------------------------------------------------------------- API machinery


@pytest.mark.parametrize("propagation", ["Foreground", "Background"])
def test_garbage_collection_deletes_owned_objects(
    api_client: client.ApiClient, namespace: str, propagation: str
) -> None:
    core = _api(client.CoreV1Api, api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=True
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref]))
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy=propagation)

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(lambda: gone("owned"), timeout=60, description="owned ConfigMap garbage-collected")
    wait_for(lambda: gone("owner"), timeout=60, description="owner ConfigMap deleted")


def test_server_side_apply_field_manager_conflicts(api_client: client.ApiClient, namespace: str) -> None:
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": namespace},
        "data": {"owned-by-a": "a", "shared": "from-a"},
    }
    apply_manifest(api_client, cm, field_manager="manager-a")

    # Another manager changing a field manager-a owns is a 409 Conflict ...
    other = {**cm, "data": {"shared": "from-b"}}
    with pytest.raises(ConflictError) as excinfo:
        apply_manifest(api_client, other, field_manager="manager-b")
    assert "manager-a" in str(excinfo.value.body)

    # ... setting it to the same value makes it co-owned without a conflict ...
    apply_manifest(api_client, {**cm, "data": {"shared": "from-a", "b-only": "b"}}, field_manager="manager-b")

    # ... and force=True takes the field over.
    result = apply_manifest(api_client, {**cm, "data": {"shared": "forced"}}, field_manager="manager-c", force=True)
    assert result["data"] == {"owned-by-a": "a", "shared": "forced", "b-only": "b"}
    managers = {m["manager"]: m for m in result["metadata"]["managedFields"]}
    assert {"manager-a", "manager-b", "manager-c"} <= set(managers)
    assert "f:shared" in str(managers["manager-c"]["fieldsV1"])
    assert "f:shared" not in str(managers["manager-a"]["fieldsV1"])

    # Dropping a field from manager-a's apply removes the field it solely owns.
    apply_manifest(api_client, {**cm, "data": {}}, field_manager="manager-a")
    data = _api(client.CoreV1Api, api_client).read_namespaced_config_map("ssa", namespace).data
    assert data == {"shared": "forced", "b-only": "b"}


def test_service_account_without_rights_is_forbidden(api_client: client.ApiClient, namespace: str) -> None:
    core = _api(client.CoreV1Api, api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    nobody = service_account_client(api_client, namespace, "nobody", expiration_seconds=600)
    try:
        assert whoami(nobody) == f"system:serviceaccount:{namespace}:nobody"
        with pytest.raises(ApiException) as excinfo:
            _api(client.CoreV1Api, nobody).list_namespaced_pod(namespace)
        assert excinfo.value.status == 403
        with pytest.raises(ApiException) as excinfo:
            _api(client.BatchV1Api, nobody).create_namespaced_job(namespace, _job("sneaky", {}))
        assert excinfo.value.status == 403
    finally:
        close_client(nobody)


def test_operator_service_account_identity(operator_api_client: client.ApiClient) -> None:
    assert whoami(operator_api_client) == f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"


# ---------------------------------------------------------------------------- ModelDeployment CRD


def _require_md_crd(crds: list[str]) -> None:
    if MD_CRD not in crds:
        pytest.fail(f"{MD_CRD} not installed from {CRD_DIR}: {crds}")


def _minimal_md(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "pvc://models/linear-regression/model.h5", "format": "h5"},
            "serving": {"replicas": replicas},
        },
    }


def test_modeldeployment_crd_is_established_and_served(api_client: client.ApiClient, crds: list[str]) -> None:
    _require_md_crd(crds)
    crd = _api(client.ApiextensionsV1Api, api_client).read_custom_resource_definition(MD_CRD)
    assert condition(crd, "Established").status == "True"
    assert condition(crd, "NamesAccepted").status == "True"
    served = {v.name: v for v in crd.spec.versions if v.served}
    assert "v1alpha1" in served
    scale = served["v1alpha1"].subresources.scale
    assert scale.spec_replicas_path == ".spec.serving.replicas"
    assert served["v1alpha1"].subresources.status is not None
    # Discovery serves the kind and its short name.
    resources = _api(client.CustomObjectsApi, api_client).get_api_resources("modelship.io", "v1alpha1")
    md = next(r for r in resources.resources if r.name == "modeldeployments")
    assert md.kind == "ModelDeployment"
    assert "md" in (md.short_names or [])


def test_kubectl_scale_writes_serving_replicas(
    api_client: client.ApiClient, cluster: ClusterInfo, namespace: str, crds: list[str]
) -> None:
    _require_md_crd(crds)
    name = unique_name("scale")
    apply_manifest(api_client, _minimal_md(name, namespace, replicas=1), field_manager=TEST_FIELD_MANAGER)

    out = cluster.kubectl("scale", f"md/{name}", "-n", namespace, "--replicas=5").stdout
    assert "scaled" in out

    custom = _api(client.CustomObjectsApi, api_client)
    obj = custom.get_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", name)
    assert obj["spec"]["serving"]["replicas"] == 5
    scale = custom.get_namespaced_custom_object_scale("modelship.io", "v1alpha1", namespace, "modeldeployments", name)
    assert scale["spec"]["replicas"] == 5
