"""The operator on the real control plane: Jobs run by the Job controller and completed by kwok Stages with
the termination messages a real optimizer / builder writes; the operator runs as its own ServiceAccount
with exactly the chart's RBAC."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship.api import Summary
from modelship.api.report import FailureKind
from tests.integration.cluster import ClusterInfo, apply_manifest, condition, uid_token, wait_for
from tests.integration.operator_harness import OperatorProcess, hostpath_volume, running_operator

GROUP, VERSION, PLURAL = "modelship.io", "v1alpha1", "modeldeployments"
DIGEST = "sha256:" + "5e" * 32
REPO = "registry.local:5000/models/digits"
IMAGE = f"{REPO}@{DIGEST}"
MSG = "modelship.io/test-termination-message"


def opt_summary(**kw: Any) -> str:
    base: dict[str, Any] = dict(
        ok=True, source_digest="sha256:" + "cd" * 32, source_bytes=608444, artifact="model.tflite",
        artifact_digest="sha256:" + "ef" * 32, metric_name="accuracy", baseline=0.9806, value=0.9833, drop=-0.0027,
        gate="Passed", decision="Optimized", candidate="prune+dynamic", original_bytes=608444, optimized_bytes=161600,
        original_gzip_bytes=560515, optimized_gzip_bytes=54699, compression_ratio=10.25, latency_p50_ms=0.0102,
        message="accuracy 0.9806 -> 0.9833 (drop -0.0027 <= 0.01 absolute)",
    )  # fmt: skip
    base.update(kw)
    if "value" in kw and "drop" not in kw:  # the figures agree: the operator redoes the gate's arithmetic
        base["drop"] = base["baseline"] - base["value"]
    return Summary(**base).to_line()


def build_result(image: str = IMAGE) -> str:
    digest = image.rsplit("@", 1)[1]
    return json.dumps({"ok": True, "image": image, "digest": digest, "platforms": ["linux/amd64"]})


def md_doc(name: str = "digits", *, opt_msg: str | None = None, build_msg: str | None = None,
           opt_annotations: dict[str, str] | None = None, **serving: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "https://models.example.com/digits/cnn.h5", "format": "h5"},
            "optimization": {
                "steps": [
                    {"type": "prune", "prune": {"targetSparsity": 0.8}},
                    {"type": "quantize", "quantize": {"mode": "dynamic"}},
                ],
                "data": {"evaluation": {"uri": "https://models.example.com/digits/test.npz", "format": "npz"}},
                "gate": {"maxDrop": 0.01},
                "job": {"podAnnotations": {MSG: opt_msg or opt_summary(), **(opt_annotations or {})}},
            },
            "build": {
                "repository": REPO,
                "insecureRegistry": True,
                "job": {"podAnnotations": {MSG: build_msg or build_result()}},
            },
            "serving": {"replicas": 2, **serving},
        },
    }


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "2"}) as op:
        yield op


class Cluster:
    """Small typed helpers over the admin client for one test namespace."""

    def __init__(self, api: client.ApiClient, ns: str, volume: bool = True) -> None:
        self.api, self.ns = api, ns
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        if volume:
            hostpath_volume(api, ns, "digits-artifacts")

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        return apply_manifest(self.api, doc, namespace=self.ns, force=True)

    def md(self, name: str = "digits") -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return obj

    def wait_md(
        self, predicate: Any, name: str = "digits", timeout: float = 90, what: str = "status"
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.md(name)
            return obj if predicate(obj) else None

        try:
            return wait_for(probe, timeout=timeout, description=f"{name}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast status: {json.dumps(self.md(name).get('status'), indent=1)}") from None

    def wait_condition(self, type_: str, status: str, name: str = "digits", reason: str | None = None,
                       timeout: float = 90) -> dict[str, Any]:  # fmt: skip
        def ok(obj: dict[str, Any]) -> bool:
            c = condition(obj, type_)
            gen_ok = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
            return bool(c and c["status"] == status and (reason is None or c["reason"] == reason) and gen_ok)

        return self.wait_md(ok, name, timeout, f"{type_}={status} {reason or ''}")

    def jobs(self, component: str | None = None) -> list[Any]:
        sel = "app.kubernetes.io/managed-by=modelship" + (
            f",app.kubernetes.io/component={component}" if component else ""
        )
        return list(self.batch.list_namespaced_job(self.ns, label_selector=sel).items)


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


def test_pipeline_to_ready_with_status_at_each_stage(k: Cluster, operator: OperatorProcess) -> None:
    k.apply(md_doc(opt_annotations={"modelship.io/test-duration": "2s"}))
    # Optimizing: the Job exists and status says so
    s = k.wait_md(lambda o: (o.get("status") or {}).get("phase") == "Optimizing", what="phase Optimizing")
    assert condition(s, "Reconciling")["status"] == "True"
    assert condition(s, "Ready")["status"] == "False"
    (opt_job,) = k.jobs("optimizer")
    rev = s["status"]["revision"]
    assert opt_job.metadata.name == f"digits-opt-{rev}-{uid_token(s)}"
    assert opt_job.metadata.owner_references[0].kind == "ModelDeployment"
    # ... then Ready, with every stage recorded
    s = k.wait_condition("Ready", "True", timeout=120)
    st = s["status"]
    assert st["phase"] == "Ready" and st["revision"] == rev and st["servingRevision"] == rev
    assert st["observedGeneration"] == s["metadata"]["generation"]
    for t in ("Resolved", "Optimized", "GatePassed", "ImageBuilt", "Deployed"):
        assert condition(s, t)["status"] == "True", t
    assert condition(s, "Stalled")["status"] == "False" and condition(s, "Reconciling")["status"] == "False"
    assert st["optimization"]["compressionRatio"] == 10.25 and st["optimization"]["sizeRatio"] == "10.2x"
    assert st["optimization"]["gate"] == "Passed" and st["source"]["digest"] == "sha256:" + "cd" * 32
    assert st["image"]["reference"] == IMAGE and st["image"]["revision"] == rev
    assert st["replicas"] == 2 and st["readyReplicas"] == 2
    assert st["url"] == f"http://digits.{k.ns}.svc.cluster.local:8080/v2/models/digits/infer"
    # the children
    (build_job,) = k.jobs("build")
    assert build_job.metadata.name == f"digits-build-{rev}-{uid_token(s)}"
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    assert dep.spec.template.spec.containers[0].image == IMAGE
    assert dep.spec.template.metadata.labels["modelship.io/revision"] == rev
    svc = k.core.read_namespaced_service("digits", k.ns)
    assert svc.spec.selector["app.kubernetes.io/instance"] == "digits"
    pods = k.core.list_namespaced_pod(
        k.ns, label_selector="app.kubernetes.io/instance=digits,app.kubernetes.io/component=server"
    )
    assert len(pods.items) == 2
    for pod in pods.items:
        node = k.core.read_node(pod.spec.node_name)
        assert node.metadata.labels["kubernetes.io/arch"] == "amd64"
    # printer columns and the scale subresource's selector
    assert st["selector"].startswith("app.kubernetes.io/name=modelship-server")
    # Events tell the story
    wanted, reasons = {"OptimizedOptimized", "ImageBuiltPushed", "ReadyAvailable"}, set()

    def told() -> bool:  # the operator posts Events off the reconcile: ReadyAvailable may follow Ready a moment later
        events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.kind=ModelDeployment").items
        reasons.update(e.reason for e in events)
        return wanted <= reasons

    wait_for(told, timeout=30, description=f"the Events {sorted(wanted)}")
    # the operator never writes spec nor leaves kopf state on the object
    managers = {
        m["manager"] for m in s["metadata"].get("managedFields", []) if "f:spec" in json.dumps(m.get("fieldsV1"))
    }
    assert managers == {"modelship-tests"}, managers
    assert not any(a.startswith("kopf.zalando.org") for a in (s["metadata"].get("annotations") or {}))
    assert not s["metadata"].get("finalizers")
    assert operator.metric("modelship_reconciles_total", 'result="ok"') > 0


def test_same_spec_no_new_job_replicas_only_no_rebuild_new_optimization_new_revision(k: Cluster) -> None:
    doc = md_doc()
    k.apply(doc)
    first = k.wait_condition("Ready", "True", timeout=120)
    rev = first["status"]["revision"]
    jobs_before = sorted(j.metadata.name for j in k.jobs())
    assert len(jobs_before) == 2
    # re-apply the same manifest: nothing new
    k.apply(copy.deepcopy(doc))
    # change only replicas: same revision, Deployment scaled, no Job
    doc["spec"]["serving"]["replicas"] = 3
    k.apply(doc)
    s = k.wait_md(
        lambda o: (o.get("status") or {}).get("readyReplicas") == 3 and condition(o, "Ready")["status"] == "True",
        what="3 ready replicas",
    )
    assert s["status"]["revision"] == rev
    assert sorted(j.metadata.name for j in k.jobs()) == jobs_before
    # change the optimization: a new revision; the old one serves until the new one is available
    new_image = f"{REPO}@sha256:" + "7a" * 32
    doc["spec"]["optimization"]["gate"]["maxDrop"] = 0.02
    new_artifact = "sha256:" + "5e" * 32
    doc["spec"]["optimization"]["job"]["podAnnotations"] = {
        MSG: opt_summary(artifact_digest=new_artifact, candidate="prune+dynamic", value=0.9811),
        "modelship.io/test-duration": "3s",
    }
    doc["spec"]["build"]["job"]["podAnnotations"] = {MSG: build_result(new_image), "modelship.io/test-duration": "4s"}
    k.apply(doc)
    building = k.wait_md(lambda o: (o.get("status") or {}).get("phase") == "Building", what="phase Building")
    assert building["status"]["revision"] != rev
    assert building["status"]["servingRevision"] == rev  # status shows both
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    assert dep.spec.template.metadata.labels["modelship.io/revision"] == rev
    assert dep.status.available_replicas == 3
    done = k.wait_condition("Ready", "True", timeout=120)
    new_rev = done["status"]["revision"]
    assert new_rev != rev and done["status"]["servingRevision"] == new_rev
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    assert dep.spec.template.spec.containers[0].image == new_image
    assert len(k.jobs()) == 4
    # the new revision's own optimization result, not the previous one's left behind in status
    opt = done["status"]["optimization"]
    assert (opt["revision"], opt["artifactDigest"], opt["candidate"]) == (new_rev, new_artifact, "prune+dynamic")
    jobs = {j.metadata.name: j for j in k.jobs()}
    token = uid_token(done)
    opt_job, build_job = jobs[f"digits-opt-{new_rev}-{token}"], jobs[f"digits-build-{new_rev}-{token}"]
    assert opt["completedAt"] == opt_job.status.completion_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert build_job.metadata.creation_timestamp >= opt_job.status.completion_time  # built only after optimizing


def test_job_failure_retries_then_stalls_with_the_reason(k: Cluster) -> None:
    # an OOM kill (exit 137, as a real kubelet reports it) is not the input's fault: retried
    doc = md_doc(opt_annotations={"modelship.io/test-fail": "OOMKilled", "modelship.io/test-exit-code": "137"})
    doc["spec"]["optimization"]["job"]["backoffLimit"] = 0
    k.apply(doc)
    s = k.wait_condition("Stalled", "True", timeout=120)
    stalled = condition(s, "Stalled")
    assert stalled["reason"] == "JobFailed"
    assert "2 attempt" in stalled["message"] and "BackoffLimitExceeded" in stalled["message"]
    assert "OOMKilled" in stalled["message"]
    assert s["status"]["lastFailure"]["stage"] == "Optimize"
    names = sorted(j.metadata.name for j in k.jobs("optimizer"))
    rev = s["status"]["revision"]
    assert names == [f"digits-opt-{rev}-{uid_token(s)}", f"digits-opt-{rev}-{uid_token(s)}-2"]
    assert condition(s, "Ready")["status"] == "False" and condition(s, "Reconciling")["status"] == "False"


def test_corrupt_model_is_a_readable_condition(k: Cluster) -> None:
    bad = Summary(ok=False, error="/mnt/pvc/models/cnn.h5: not a Keras model (HDF5 signature missing; truncated file?)")
    doc = md_doc(opt_msg=bad.to_line(), opt_annotations={"modelship.io/test-fail": "Error"})
    doc["spec"]["optimization"]["job"]["backoffLimit"] = 0
    k.apply(doc)
    s = k.wait_condition("Stalled", "True", timeout=90)
    stalled = condition(s, "Stalled")
    assert stalled["reason"] == "OptimizationFailed"
    assert "HDF5 signature missing" in stalled["message"]
    assert len(k.jobs("optimizer")) == 1  # the optimizer explained itself: no blind retry


def test_missing_model_file_is_stalled_at_the_first_failure(k: Cluster) -> None:
    """A permanent failure (the optimizer exits 1 with its reason) ends the Job at its first pod, by the Job's own
    podFailurePolicy, with the default backoffLimit of 2, and the operator starts no other attempt."""
    missing = Summary(ok=False, error="pvc://models/digits/cnn.h5: /mnt/pvc/models/digits/cnn.h5 does not exist",
                      failure=FailureKind.PERMANENT)  # fmt: skip
    k.apply(md_doc(opt_msg=missing.to_line(), opt_annotations={"modelship.io/test-fail": "Error"}))
    s = k.wait_condition("Stalled", "True", timeout=90)
    stalled = condition(s, "Stalled")
    assert stalled["reason"] == "OptimizationFailed" and "does not exist" in stalled["message"]
    assert "1 attempt" in stalled["message"] and s["status"]["lastFailure"]["stage"] == "Optimize"
    (job,) = k.jobs("optimizer")
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.status == "True" and failed.reason == "PodFailurePolicy"
    pods = k.core.list_namespaced_pod(k.ns, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}").items
    assert len(pods) == 1  # no pod retries inside the Job either
    assert s["status"]["optimization"]["attempts"] == 1


def test_garbage_summary_is_a_readable_condition(k: Cluster) -> None:
    k.apply(md_doc(opt_msg="Traceback (most recent call last):\n  File ...\nMemoryError"))
    s = k.wait_condition("Stalled", "True", timeout=90)
    assert condition(s, "Stalled")["reason"] == "InvalidSummary"
    assert "not valid" in condition(s, "Stalled")["message"]


@pytest.mark.parametrize(("decision", "expect_ready"), [("Blocked", False), ("Baseline", True), ("BestPassing", True)])
def test_gate_failure_follows_on_fail(k: Cluster, decision: str, expect_ready: bool) -> None:
    on_fail = {"Blocked": "Block", "Baseline": "DeployBaseline", "BestPassing": "DeployBestPassing"}[decision]
    # what ships under BestPassing is the earlier step that passed (prune), and its figures are reported
    shipped = {"candidate": "prune", "value": 0.975} if decision == "BestPassing" else {"value": 0.95}
    line = opt_summary(gate="Failed", decision=decision, **shipped,
                       message="accuracy 0.9806 -> 0.95 (drop 0.0306 > 0.01 absolute)")  # fmt: skip
    doc = md_doc(opt_msg=line)
    doc["spec"]["optimization"]["gate"]["onFail"] = on_fail
    k.apply(doc)
    if expect_ready:
        s = k.wait_condition("Ready", "True", timeout=120)
        assert condition(s, "GatePassed")["status"] == "False"
        assert condition(s, "GatePassed")["reason"] == f"GateFailedDeploy{decision}"
    else:
        s = k.wait_condition("Stalled", "True", timeout=90)
        assert condition(s, "GatePassed")["reason"] == "GateFailed"
        assert "drop 0.0306 > 0.01" in condition(s, "Stalled")["message"]
        assert k.jobs("build") == []
        with pytest.raises(ApiException) as info:
            k.apps.read_namespaced_deployment("digits", k.ns)
        assert info.value.status == 404


def test_deleted_or_edited_deployment_is_put_back(k: Cluster) -> None:
    k.apply(md_doc())
    k.wait_condition("Ready", "True", timeout=120)
    k.apps.patch_namespaced_deployment("digits", k.ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "image": "evil/image:latest"}]}}}})  # fmt: skip
    wait_for(lambda: k.apps.read_namespaced_deployment("digits", k.ns).spec.template.spec.containers[0].image == IMAGE,
             timeout=30, description="image restored")  # fmt: skip
    uid = k.apps.read_namespaced_deployment("digits", k.ns).metadata.uid
    k.apps.delete_namespaced_deployment("digits", k.ns)
    wait_for(lambda: k.apps.read_namespaced_deployment("digits", k.ns).metadata.uid != uid, timeout=30,
             description="Deployment recreated")  # fmt: skip
    k.wait_condition("Ready", "True", timeout=60)


def test_kubectl_scale_and_suspend(k: Cluster, cluster: ClusterInfo) -> None:
    k.apply(md_doc())
    k.wait_condition("Ready", "True", timeout=120)
    cluster.kubectl("-n", k.ns, "scale", "md/digits", "--replicas=4")
    s = k.wait_md(lambda o: (o.get("status") or {}).get("readyReplicas") == 4, what="4 ready replicas")
    assert s["spec"]["serving"]["replicas"] == 4
    assert k.apps.read_namespaced_deployment("digits", k.ns).spec.replicas == 4
    jobs = len(k.jobs())
    k.custom.patch_namespaced_custom_object(GROUP, VERSION, k.ns, PLURAL, "digits", {"spec": {"suspend": True}})
    s = k.wait_md(lambda o: (o.get("status") or {}).get("phase") == "Suspended", what="Suspended")
    assert condition(s, "Ready")["reason"] == "Suspended"
    wait_for(lambda: k.apps.read_namespaced_deployment("digits", k.ns).status.replicas in (None, 0), timeout=30,
             description="scaled to zero")  # fmt: skip
    assert k.core.read_namespaced_service("digits", k.ns) is not None
    assert len(k.jobs()) == jobs
    k.custom.patch_namespaced_custom_object(GROUP, VERSION, k.ns, PLURAL, "digits", {"spec": {"suspend": False}})
    s = k.wait_condition("Ready", "True", timeout=60)
    assert s["status"]["readyReplicas"] == 4


def test_gpu_and_arm64_targets_land_on_matching_nodes(k: Cluster) -> None:
    hostpath_volume(k.api, k.ns, "gpu-artifacts")
    hostpath_volume(k.api, k.ns, "edge-artifacts")
    k.apply(md_doc("gpu", hardware={"target": "gpu", "gpu": {"count": 1}}))
    edge = md_doc("edge", hardware={"target": "arm64"})
    edge["spec"]["build"]["platforms"] = ["linux/arm64", "linux/amd64"]
    k.apply(edge)
    for name, check in (
        ("gpu", lambda node: "nvidia.com/gpu" in (node.status.allocatable or {})),
        ("edge", lambda node: node.metadata.labels["kubernetes.io/arch"] == "arm64"),
    ):
        k.wait_condition("Ready", "True", name=name, timeout=120)
        pods = k.core.list_namespaced_pod(
            k.ns, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
        ).items
        assert len(pods) == 2
        for pod in pods:
            assert check(k.core.read_node(pod.spec.node_name)), (name, pod.spec.node_name)


def test_operator_killed_mid_stage_makes_no_duplicates(k: Cluster, operator: OperatorProcess) -> None:
    k.apply(md_doc(opt_annotations={"modelship.io/test-duration": "6s"}))
    k.wait_md(lambda o: (o.get("status") or {}).get("phase") == "Optimizing", what="Optimizing")
    operator.kill()
    try:
        assert len(k.jobs("optimizer")) == 1
    finally:
        operator.start()
    s = k.wait_condition("Ready", "True", timeout=120)
    names = sorted(j.metadata.name for j in k.jobs())
    assert len(names) == 2, names
    assert s["status"]["optimization"]["attempts"] == 1


def test_crashing_pods_are_never_ready(k: Cluster) -> None:
    k.apply(md_doc(podAnnotations={"modelship.io/test-crash": "true"}))
    s = k.wait_md(lambda o: condition(o, "ImageBuilt") is not None and condition(o, "ImageBuilt")["status"] == "True",
                  what="image built")  # fmt: skip
    wait_for(lambda: k.apps.read_namespaced_deployment("digits", k.ns), timeout=30, description="Deployment")
    # give the pods time to be created and crash; Ready must never turn True
    s = k.wait_md(lambda o: (o.get("status") or {}).get("replicas") == 2, what="2 pods exist")
    assert condition(s, "Ready")["status"] == "False"
    assert s["status"]["readyReplicas"] == 0
    assert condition(s, "Reconciling")["status"] == "True"


def test_deleting_the_modeldeployment_removes_its_children(k: Cluster) -> None:
    k.apply(md_doc())
    k.wait_condition("Ready", "True", timeout=120)
    k.custom.delete_namespaced_custom_object(GROUP, VERSION, k.ns, PLURAL, "digits")

    def gone() -> bool:
        return (not k.apps.list_namespaced_deployment(k.ns).items and not k.jobs()
                and not k.core.list_namespaced_service(k.ns).items)  # fmt: skip

    wait_for(gone, timeout=60, description="children garbage-collected")


def test_operator_identity_is_least_privilege(operator_api_client: client.ApiClient, namespace: str) -> None:
    """The operator's own identity cannot list Secrets (it gets one by name, to see that it exists) or read RBAC
    objects: requests outside its rules are refused."""
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(operator_api_client).list_namespaced_secret(namespace)
    assert info.value.status == 403
    with pytest.raises(ApiException) as info:
        client.RbacAuthorizationV1Api(operator_api_client).list_cluster_role()
    assert info.value.status == 403
    # and what it needs is allowed
    client.BatchV1Api(operator_api_client).list_namespaced_job(namespace)
