"""Attacks, items 5 and 6, as the tenant against the real API server:

- a secret planted in what a failing stage pod says (an environment dump, a URL with userinfo, a bearer token, a
  key=value pair) never reaches the ModelDeployment's status or its Events;
- the build runs in the operator's build namespace, which the tenant can neither read nor write (its Secrets, Jobs
  and Pods), and a tenant's spec.build.pushSecretRef selects nothing there;
- a Job the tenant creates in its own namespace, labelled as another namespace's build Job and carrying a forged
  build result, is not believed: the victim's ModelDeployment builds and serves its own image.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from modelship.api import ModelDeployment, Summary
from modelship.api.report import FailureKind
from modelship.config import OperatorConfig
from modelship.resources.defaults import with_operator_defaults
from modelship.resources.revision import revision
from modelship_dev import cluster as devcluster
from tests.integration.attacks.snapshot import assert_only_children_changed, snapshot
from tests.integration.attacks.tenant import Tenant, md_uid
from tests.integration.cluster import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    create_namespace,
    delete_namespace,
    wait_for,
)
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import IMAGE, REPO, build_result, md_doc

PLANTED = "AKIAPLANTED0000SECRET"
PASSWORD = "hunter2-planted-password"
TOKEN = "eyJplanted.bearer.token"
BUILDS = "modelship-builds-attacks"


@pytest.fixture(scope="module")
def builds(api_client: client.ApiClient) -> Iterator[str]:
    """The operator's build namespace, with the platform's push Secret for the test registry in it."""
    core = client.CoreV1Api(api_client)
    try:
        core.create_namespace({"metadata": {"name": BUILDS}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    secret = {"metadata": {"name": "platform-push"}, "type": "kubernetes.io/dockerconfigjson",
              "stringData": {".dockerconfigjson": json.dumps({"auths": {"registry.local:5000": {"auth": "cGxh"}}})}}
    try:
        core.create_namespaced_secret(BUILDS, secret)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    yield BUILDS
    delete_namespace(api_client, BUILDS)


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient, builds: str) -> Iterator[OperatorProcess]:
    """The operator with a build namespace; a Role there as the chart grants it (build_namespace_rules)."""
    from modelship.rbac import build_namespace_rules
    from tests.integration.cluster import apply_manifest

    rbac = "rbac.authorization.k8s.io/v1"
    apply_manifest(api_client, {"apiVersion": rbac, "kind": "Role", "metadata": {"name": "modelship-builds",
                   "namespace": builds}, "rules": build_namespace_rules()}, force=True)  # fmt: skip
    subject = {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
    apply_manifest(api_client, {"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "modelship-builds",
                   "namespace": builds}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                   "name": "modelship-builds"}, "subjects": [subject]}, force=True)  # fmt: skip
    env = {"MODELSHIP_MAX_JOB_ATTEMPTS": "1", "MODELSHIP_BUILD_NAMESPACE": builds,
           "MODELSHIP_BUILD_PUSH_SECRETS": json.dumps({"registry.local:5000": "platform-push"})}  # fmt: skip
    with running_operator(api_client, env) as op:
        yield op


def test_a_secret_in_a_failing_pods_words_never_reaches_status_or_events(tenant: Tenant) -> None:
    dump = (f"environ({{'HOME': '/tmp', 'AWS_ACCESS_KEY_ID': '{PLANTED}', 'MLFLOW_TRACKING_PASSWORD': '{PASSWORD}'}}) "
            f"GET https://bob:{PASSWORD}@models.example.com/cnn.h5 Authorization: Bearer {TOKEN} "
            f"password={PASSWORD}")  # fmt: skip
    summary = Summary(ok=False, error=f"cannot fetch the model: {dump}"[:1024], failure=FailureKind.PERMANENT).to_line()
    doc = md_doc("leaky", opt_msg=summary)  # the optimizer pod fails (exit 1) with this summary
    annotations = doc["spec"]["optimization"]["job"]["podAnnotations"]
    annotations.update({devcluster.ANNOTATION_FAIL: "Error", devcluster.ANNOTATION_EXIT_CODE: "1"})
    before = snapshot(tenant.admin, tenant.namespace)
    tenant.create_md(doc)
    md = tenant.wait_stalled("leaky", "OptimizationFailed")
    status = json.dumps(md["status"])
    assert "cannot fetch the model" in md["status"]["lastFailure"]["message"]  # the words that help do arrive
    wait_for(lambda: tenant.events("leaky"), timeout=30, description="the Events")
    events = " ".join(f"{e.reason} {e.message}" for e in tenant.events("leaky"))
    for secret in (PLANTED, PASSWORD, TOKEN):
        assert secret not in status, secret
        assert secret not in events, secret
    assert_only_children_changed(before, snapshot(tenant.admin, tenant.namespace), md_uid(tenant, "leaky"))


def test_the_build_namespace_is_out_of_the_tenants_reach(tenant: Tenant, builds: str) -> None:
    core, batch = client.CoreV1Api(tenant.api), client.BatchV1Api(tenant.api)
    assert tenant.forbidden(lambda: core.read_namespaced_secret("platform-push", builds))
    assert tenant.forbidden(lambda: core.list_namespaced_secret(builds))
    assert tenant.forbidden(lambda: batch.list_namespaced_job(builds))
    assert tenant.forbidden(lambda: core.list_namespaced_pod(builds))
    pod = {"metadata": {"name": "steal"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert tenant.forbidden(lambda: core.create_namespaced_pod(builds, pod))


def test_a_tenants_push_secret_ref_selects_nothing_in_the_build_namespace(
    tenant: Tenant, builds: str, api_client: client.ApiClient
) -> None:
    """The build pushes with the platform's Secret for the repository's registry; naming one (even the platform's)
    in spec.build.pushSecretRef changes nothing, and a repository on a registry the platform has no Secret for is
    pushed without any."""
    doc = md_doc("pushy", build_msg=build_result(IMAGE.replace(REPO, "other.example.com/models/digits")))
    doc["spec"]["build"].update(repository="other.example.com/models/digits", pushSecretRef={"name": "platform-push"})
    doc["spec"]["build"]["job"]["podAnnotations"][devcluster.ANNOTATION_DURATION] = "3s"
    tenant.create_md(doc)
    uid = tenant.md("pushy")["metadata"]["uid"]

    def build_job() -> Any:
        jobs = client.BatchV1Api(api_client).list_namespaced_job(builds, label_selector=f"modelship.io/owner-uid={uid}")
        return jobs.items[0] if jobs.items else None

    job = wait_for(build_job, timeout=60, description="the build Job in the build namespace")
    volumes = job.spec.template.spec.volumes
    assert all(v.secret is None for v in volumes), "no Secret for other.example.com: none is mounted"
    assert not client.BatchV1Api(api_client).list_namespaced_job(tenant.namespace,
                                                                 label_selector="app.kubernetes.io/component=build").items


def test_a_forged_build_job_in_the_tenants_namespace_is_not_believed(
    tenant: Tenant, builds: str, api_client: client.ApiClient
) -> None:
    """The tenant learns the victim's revision offline and plants, in its own namespace, a Job labelled as the
    victim's build Job (namespace label and all) whose pod reports an image of the tenant's choosing. Only the build
    namespace may say whose a Job is: the victim builds and serves its own image."""
    victim_ns = create_namespace(api_client, "victim")
    try:
        victim = copy.deepcopy(md_doc("victim"))
        victim["metadata"]["namespace"] = victim_ns
        body = ModelDeployment.from_body({**victim, "metadata": {"name": "victim", "namespace": victim_ns}})
        rev = revision(with_operator_defaults(body, replace(OperatorConfig(), build_namespace=builds)).spec)
        forged_image = f"{REPO}@sha256:" + "66" * 32
        labels = {"app.kubernetes.io/managed-by": "modelship", "app.kubernetes.io/component": "build",
                  "modelship.io/modeldeployment": "victim", "modelship.io/namespace": victim_ns,
                  "modelship.io/revision": rev}  # fmt: skip
        forged = {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "victim-build-forged", "labels": labels},
            "spec": {"template": {
                "metadata": {"labels": labels,
                             "annotations": {devcluster.ANNOTATION_TERMINATION_MESSAGE: build_result(forged_image)}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "busybox"}]}}},
        }  # fmt: skip
        tenant.apply(forged)
        wait_for(lambda: (client.BatchV1Api(api_client).read_namespaced_job("victim-build-forged", tenant.namespace)
                          .status.succeeded), timeout=60, description="the forged Job completed")  # fmt: skip
        from tests.integration.operator_harness import hostpath_volume

        hostpath_volume(api_client, victim_ns, "victim-artifacts")
        before = snapshot(api_client, victim_ns)
        created: Any = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "modelship.io", "v1alpha1", victim_ns, "modeldeployments", victim
        )

        def ready() -> dict[str, Any] | None:
            md: Any = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                "modelship.io", "v1alpha1", victim_ns, "modeldeployments", "victim")
            conds = {c["type"]: c for c in (md.get("status") or {}).get("conditions", [])}
            return md if conds.get("Ready", {}).get("status") == "True" else None  # fmt: skip

        md = wait_for(ready, timeout=120, description="the victim Ready")
        assert md["status"]["image"]["reference"] == IMAGE != forged_image
        batch = client.BatchV1Api(api_client)
        jobs = batch.list_namespaced_job(builds, label_selector="modelship.io/modeldeployment=victim")
        assert [j.metadata.labels["modelship.io/namespace"] for j in jobs.items] == [victim_ns]
        # nothing but the victim's children changed there (and what the control plane writes: the Endpoints the
        # endpoints controller keeps for its Service carry no owner reference)
        assert_only_children_changed(before, snapshot(api_client, victim_ns), created["metadata"]["uid"])
    finally:
        delete_namespace(api_client, victim_ns)
