"""A Secret, ConfigMap or claim the spec names that does not exist, on the real API server with the operator under
the chart's RBAC: no Job is created (its pod would wait in ContainerCreating or Pending with nothing in status), the
stage's condition and Stalled say SecretNotFound / ConfigMapNotFound / ClaimNotFound naming the object, the field
and the namespace, one Warning Event; once the object is created the stage goes on by itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster import condition, wait_for
from tests.integration.operator_harness import OperatorProcess, hostpath_volume
from tests.integration.test_operator import Cluster, md_doc, operator  # noqa: F401 (the operator fixture)


@pytest.fixture
def tenant(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:  # noqa: F811
    return Cluster(api_client, namespace)


def secret_volumes(job: Any) -> set[str]:
    return {v.secret.secret_name for v in job.spec.template.spec.volumes or [] if v.secret is not None}


def warnings(tenant: Cluster, reason: str) -> list[Any]:
    """The Warning Events of ``reason`` on the ModelDeployment, once there is one (the operator posts Events off the
    reconcile: waited for, not read at once)."""

    def listed() -> list[Any]:
        events = tenant.core.list_namespaced_event(tenant.ns, field_selector="involvedObject.name=digits").items
        return [e for e in events if e.reason == reason and e.type == "Warning"]

    return wait_for(listed, timeout=30, description=f"a Warning Event {reason}")


def config_map_volumes(job: Any) -> set[str]:
    return {v.config_map.name for v in job.spec.template.spec.volumes or [] if v.config_map is not None}


def claim_volumes(job: Any) -> set[str]:
    volumes = job.spec.template.spec.volumes or []
    return {v.persistent_volume_claim.claim_name for v in volumes if v.persistent_volume_claim is not None}


def stalled_on(tenant: Cluster, stage_condition: str, reason: str, named: str, field: str) -> dict[str, Any]:
    obj = tenant.wait_condition("Stalled", "True", reason=reason)
    stage = condition(obj, stage_condition)
    assert (stage["status"], stage["reason"]) == ("False", reason), stage
    for words in (named, field, f"namespace {tenant.ns}"):
        assert words in stage["message"], stage["message"]
    assert condition(obj, "Stalled")["message"] == stage["message"]
    assert condition(obj, "Ready")["status"] == "False" and condition(obj, "Reconciling")["status"] == "False"
    assert obj["status"]["lastFailure"]["reason"] == reason
    return obj


def stalled_on_secret(tenant: Cluster, stage_condition: str, secret: str, field: str) -> dict[str, Any]:
    return stalled_on(tenant, stage_condition, "SecretNotFound", f'Secret "{secret}"', field)


def create_secret(tenant: Cluster, name: str, data: dict[str, str], type_: str = "Opaque") -> None:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": type_, "data": encoded}
    tenant.core.create_namespaced_secret(tenant.ns, body)


def test_missing_model_secret_is_stalled_naming_the_field_then_proceeds_once_created(tenant: Cluster) -> None:
    doc = md_doc()
    doc["spec"]["model"]["credentials"] = {"secretRef": {"name": "model-creds"}}
    tenant.apply(doc)
    stalled_on_secret(tenant, "Optimized", "model-creds", "spec.model.credentials.secretRef.name")
    assert tenant.jobs() == []  # no pod left waiting in ContainerCreating

    create_secret(tenant, "model-creds", {"token": "not-a-real-token"})
    job = wait_for(lambda: next(iter(tenant.jobs("optimizer")), None), timeout=90, description="optimization Job")
    assert "model-creds" in secret_volumes(job)
    tenant.wait_condition("Ready", "True", timeout=120)
    assert tenant.md()["status"].get("lastFailure") is None
    # one Warning Event for the stall, however often the operator looked again before the Secret came
    assert len(warnings(tenant, "OptimizedSecretNotFound")) == 1


def secret_reads(op: OperatorProcess) -> float:
    """The operator's existence checks of Secrets so far (one per look while one is missing)."""
    return op.metric("modelship_api_reads_total", 'kind="Secret"')


def test_missing_push_secret_stalls_the_build_after_the_optimization_then_builds(
    tenant: Cluster,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    doc = md_doc()
    doc["spec"]["build"]["pushSecretRef"] = {"name": "push-creds"}
    tenant.apply(doc)
    obj = stalled_on_secret(tenant, "ImageBuilt", "push-creds", "spec.build.pushSecretRef.name")
    assert condition(obj, "Optimized")["status"] == "True"  # the optimization Job mounts no push Secret
    assert tenant.jobs("build") == []

    # the operator looks again more often than the stage may try (MODELSHIP_MAX_JOB_ATTEMPTS=2): waiting for the
    # Secret uses up no attempt, so the build still starts once it exists (it stayed failed for ever before)
    looks = secret_reads(operator)
    wait_for(lambda: secret_reads(operator) >= looks + 4, timeout=90, description="four more looks for the Secret")
    assert not tenant.md()["status"]["image"].get("attempts"), tenant.md()["status"]["image"]
    assert tenant.jobs("build") == []

    config = {"auths": {"registry.local:5000": {"auth": base64.b64encode(b"ci:pass").decode()}}}
    create_secret(tenant, "push-creds", {".dockerconfigjson": json.dumps(config)}, "kubernetes.io/dockerconfigjson")
    job = wait_for(lambda: next(iter(tenant.jobs("build")), None), timeout=90, description="build Job")
    assert "push-creds" in secret_volumes(job)
    tenant.wait_condition("Ready", "True", timeout=120)
    assert len(warnings(tenant, "ImageBuiltSecretNotFound")) == 1


def test_missing_ca_bundle_configmap_is_stalled_naming_the_field_then_proceeds_once_created(tenant: Cluster) -> None:
    doc = md_doc()
    doc["spec"]["model"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    tenant.apply(doc)
    field = "spec.model.credentials.caBundleRef.name"
    stalled_on(tenant, "Optimized", "ConfigMapNotFound", 'ConfigMap "corp-ca"', field)
    assert tenant.jobs() == []  # no pod left waiting in ContainerCreating

    pem = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"
    tenant.core.create_namespaced_config_map(tenant.ns, {"metadata": {"name": "corp-ca"}, "data": {"ca.pem": pem}})
    job = wait_for(lambda: next(iter(tenant.jobs("optimizer")), None), timeout=90, description="optimization Job")
    assert "corp-ca" in config_map_volumes(job)
    tenant.wait_condition("Ready", "True", timeout=120)
    assert tenant.md()["status"].get("lastFailure") is None
    assert len(warnings(tenant, "OptimizedConfigMapNotFound")) == 1


def test_missing_pvc_claim_is_stalled_naming_the_uris_then_proceeds_once_created(tenant: Cluster) -> None:
    doc = md_doc()
    doc["spec"]["model"]["uri"] = "pvc://models/digits/cnn.h5"
    doc["spec"]["optimization"]["data"]["evaluation"]["uri"] = "pvc://models/digits/test.npz"
    tenant.apply(doc)
    obj = stalled_on(tenant, "Optimized", "ClaimNotFound", 'claim "models"', "spec.model.uri")
    assert "spec.optimization.data.evaluation.uri" in condition(obj, "Optimized")["message"]
    assert "digits-artifacts" not in condition(obj, "Optimized")["message"]  # the operator's own claim
    assert tenant.jobs() == []  # no pod left Pending on an unbound claim

    hostpath_volume(tenant.api, tenant.ns, "models")
    claim = {"metadata": {"name": "models"}, "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                                                      "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    tenant.core.create_namespaced_persistent_volume_claim(tenant.ns, claim)
    job = wait_for(lambda: next(iter(tenant.jobs("optimizer")), None), timeout=90, description="optimization Job")
    assert claim_volumes(job) == {"models", "digits-artifacts"}
    tenant.wait_condition("Ready", "True", timeout=120)
    assert len(warnings(tenant, "OptimizedClaimNotFound")) == 1


def test_the_operator_can_tell_a_secret_exists_but_not_read_or_list_it(
    operator_api_client: client.ApiClient, namespace: str, api_client: client.ApiClient
) -> None:
    """get (what the check needs) is granted; list and watch are not, so the operator cannot enumerate Secrets."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "present"}, "stringData": {"k": "v"}})
    ours = client.CoreV1Api(operator_api_client)
    assert ours.read_namespaced_secret("present", namespace).metadata.name == "present"
    for forbidden in (lambda: ours.list_namespaced_secret(namespace), lambda: ours.list_secret_for_all_namespaces()):
        try:
            forbidden()
        except client.ApiException as exc:
            assert exc.status == 403
        else:
            raise AssertionError("the operator could list Secrets")


def test_the_operator_can_tell_a_tenants_configmap_exists_but_not_list_or_write_it(
    operator_api_client: client.ApiClient, namespace: str, api_client: client.ApiClient
) -> None:
    """In a tenant namespace: get (what the check needs) only; the revision caches' writes are its own namespace's."""
    client.CoreV1Api(api_client).create_namespaced_config_map(namespace, {"metadata": {"name": "ca"}, "data": {}})
    ours = client.CoreV1Api(operator_api_client)
    assert ours.read_namespaced_config_map("ca", namespace).metadata.name == "ca"
    refused = (
        lambda: ours.list_namespaced_config_map(namespace),
        lambda: ours.patch_namespaced_config_map("ca", namespace, {"data": {"k": "v"}}),
        lambda: ours.create_namespaced_config_map(namespace, {"metadata": {"name": "planted"}}),
    )
    for forbidden in refused:
        try:
            forbidden()
        except client.ApiException as exc:
            assert exc.status == 403
        else:
            raise AssertionError("the operator could list or write a tenant's ConfigMaps")


def test_missing_ca_bundle_key_is_stalled_naming_key_and_field_then_proceeds_once_added(tenant: Cluster) -> None:
    """The ConfigMap exists but lacks the key: the kubelet would fail the mount of that item. The operator reads that
    ConfigMap's keys (a CA bundle, public data) and says which key, which field, which ConfigMap."""
    pem = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"
    body = {"metadata": {"name": "corp-ca"}, "data": {"tls.crt": pem}}
    tenant.core.create_namespaced_config_map(tenant.ns, body)
    doc = md_doc()
    doc["spec"]["model"]["credentials"] = {"caBundleRef": {"name": "corp-ca", "key": "ca.pem"}}
    tenant.apply(doc)
    field = "spec.model.credentials.caBundleRef.key"
    obj = stalled_on(tenant, "Optimized", "ConfigMapKeyNotFound", 'key "ca.pem"', field)
    assert 'ConfigMap "corp-ca"' in condition(obj, "Optimized")["message"]
    assert tenant.jobs() == []  # no pod left waiting in ContainerCreating

    tenant.core.patch_namespaced_config_map("corp-ca", tenant.ns, {"data": {"ca.pem": pem}})
    job = wait_for(lambda: next(iter(tenant.jobs("optimizer")), None), timeout=90, description="optimization Job")
    assert "corp-ca" in config_map_volumes(job)
    tenant.wait_condition("Ready", "True", timeout=120)
    assert tenant.md()["status"].get("lastFailure") is None
    assert len(warnings(tenant, "OptimizedConfigMapKeyNotFound")) == 1


def test_a_claim_served_rollout_whose_artifact_claim_is_gone_keeps_the_old_deployment_then_proceeds(
    tenant: Cluster,
) -> None:
    """Served from the artifact claim (no image, no registry for the artifact): the claim is deleted. The operator
    does not make an empty one afresh (it would not hold the artifact) and does not roll the Deployment to pods that
    could not start: a change of the serving settings leaves the Deployment as it was, Stalled ClaimNotFound on
    Deployed; once the claim is back (restored by the user) the rollout goes on by itself."""
    doc = md_doc(replicas=1)
    doc["spec"]["build"] = {"enabled": False, "insecureRegistry": True}
    tenant.apply(doc)
    ready = tenant.wait_condition("Ready", "True", timeout=120)
    before = tenant.apps.read_namespaced_deployment("digits", tenant.ns)
    assert "digits-artifacts" in claim_volumes(before)

    # the claim is deleted: held by its protection finalizer (Terminating) while the serving pods mount it, and no
    # new pod can mount it
    tenant.core.delete_namespaced_persistent_volume_claim("digits-artifacts", tenant.ns)
    terminating = tenant.core.read_namespaced_persistent_volume_claim("digits-artifacts", tenant.ns)
    assert terminating.metadata.deletion_timestamp is not None
    doc["spec"]["serving"]["podAnnotations"] = {"example.com/rolled": "yes"}  # a new pod template
    tenant.apply(doc)
    obj = stalled_on(tenant, "Deployed", "ClaimNotFound", 'claim "digits-artifacts"', "artifact claim")
    message = condition(obj, "Deployed")["message"]
    assert f"rollout of revision {ready['status']['revision']}" in message and "being deleted" in message
    assert obj["status"]["servingRevision"] == ready["status"]["revision"]

    def untouched() -> None:
        held = tenant.apps.read_namespaced_deployment("digits", tenant.ns)
        assert held.metadata.generation == before.metadata.generation  # the Deployment untouched
        assert "example.com/rolled" not in (held.spec.template.metadata.annotations or {})

    untouched()
    # the pods are gone (the finalizer dropped, as the protection controller does then): the claim is gone
    tenant.core.patch_namespaced_persistent_volume_claim("digits-artifacts", tenant.ns,
                                                         {"metadata": {"finalizers": None}})  # fmt: skip

    def claim_gone() -> bool:
        try:
            tenant.core.read_namespaced_persistent_volume_claim("digits-artifacts", tenant.ns)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(claim_gone, timeout=30, description="the artifact claim deleted")
    doc["spec"]["serving"]["podAnnotations"]["example.com/again"] = "yes"  # a new generation, reconciled while gone
    tenant.apply(doc)
    still = stalled_on(tenant, "Deployed", "ClaimNotFound", 'claim "digits-artifacts"', "artifact claim")
    assert still["status"]["servingRevision"] == ready["status"]["revision"]
    untouched()
    assert claim_gone()  # no empty claim made afresh: it would not hold the artifact the pods serve

    hostpath_volume(tenant.api, tenant.ns, "digits-artifacts")
    spec = {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}
    claim = {"metadata": {"name": "digits-artifacts"}, "spec": spec}
    tenant.core.create_namespaced_persistent_volume_claim(tenant.ns, claim)
    tenant.wait_condition("Ready", "True", timeout=120)
    rolled = tenant.apps.read_namespaced_deployment("digits", tenant.ns)
    assert rolled.spec.template.metadata.annotations["example.com/rolled"] == "yes"
    assert tenant.md()["status"].get("lastFailure") is None
    assert len(warnings(tenant, "DeployedClaimNotFound")) == 1
