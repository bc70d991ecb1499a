"""Items 2 and 4: nothing a tenant writes becomes a stage result. The operator reads results only from the Job it
created (controller uid) and from pods that Job controls running its template, deploys only
<spec.build.repository>@sha256:<digest>, and recomputes the gate's verdict from the reported figures."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.integration.attacks.snapshot import assert_only_children_changed, snapshot
from tests.integration.attacks.specs import (
    DIGEST,
    TERMINATION_MESSAGE,
    build_result,
    md_doc,
    opt_summary,
    revision_of,
)
from tests.integration.attacks.tenant import Tenant
from tests.integration.cluster import condition, uid_token, wait_for, wait_job_finished

FORGED = opt_summary(compression_ratio=99.0, candidate="prune+dynamic", message="forged: 99x smaller")
"""What the attacker wants status to say (and the gate to let through)."""


def stage_labels(name: str, component: str, rev: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "modelship", "app.kubernetes.io/component": component,
            "modelship.io/modeldeployment": name, "modelship.io/revision": rev}  # fmt: skip


def nothing_shipped(tenant: Tenant, api_client: client.ApiClient, name: str) -> None:
    assert not client.AppsV1Api(api_client).list_namespaced_deployment(tenant.namespace).items, "nothing deployed"
    builds = client.BatchV1Api(api_client).list_namespaced_job(
        tenant.namespace, label_selector="app.kubernetes.io/component=build"
    )
    assert not builds.items, "nothing built"


def test_a_job_precreated_under_the_expected_name_is_not_adopted(tenant: Tenant, api_client: client.ApiClient) -> None:
    """The tenant creates its ModelDeployment suspended (no Job yet), reads its uid, computes the revision and
    creates `<name>-opt-<revision>-<uid token>` first, with the operator's labels and a pod that reports a forged
    summary, then resumes the ModelDeployment: a 409 on create is not "created"; the Job is a NameConflict."""
    doc = md_doc("forger")
    rev = revision_of(doc, tenant.namespace)
    tenant.create_md({**doc, "spec": {**doc["spec"], "suspend": True}})
    job_name = f"forger-opt-{rev}-{uid_token(tenant.md('forger'))}"
    labels = stage_labels("forger", "optimizer", rev)
    client.BatchV1Api(tenant.api).create_namespaced_job(tenant.namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name, "labels": labels},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": labels, "annotations": {TERMINATION_MESSAGE: FORGED}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "optimize", "image": "attacker/forge:1"}]}}},
    })  # fmt: skip
    wait_job_finished(api_client, tenant.namespace, job_name)
    before = snapshot(api_client, tenant.namespace)
    tenant.apply(doc)  # resumed
    md = tenant.wait_stalled("forger", "NameConflict")
    assert f"Job/{job_name}" in condition(md, "Stalled")["message"]
    assert md["status"]["lastFailure"]["stage"] == "Optimize"
    assert "compressionRatio" not in (md["status"].get("optimization") or {})
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])
    nothing_shipped(tenant, api_client, "forger")


def test_a_forged_pod_in_the_jobs_name_is_never_read(tenant: Tenant, api_client: client.ApiClient) -> None:
    """While the real optimization Job runs (its honest optimizer blocks the revision: the gate fails), the
    tenant adds a pod with the Job's labels, a controller reference to the real Job (and the Job controller's
    tracking finalizer, so the Job counts it), another image, and a termination message saying Passed. The
    operator reads only pods that run the Job's template: the forged figures never reach status, nothing ships."""
    honest = opt_summary(gate="Failed", decision="Blocked", value=0.95, message="gate failed: drop 0.03 > 0.01")
    doc = md_doc("forged-pod", opt_msg=honest)
    doc["spec"]["optimization"]["job"]["podAnnotations"]["modelship.io/test-duration"] = "6s"
    tenant.create_md(doc)
    batch = client.BatchV1Api(api_client)
    rev = revision_of(doc, tenant.namespace)
    job_name = f"forged-pod-opt-{rev}-{uid_token(tenant.md('forged-pod'))}"
    job = wait_for(lambda: batch.read_namespaced_job(job_name, tenant.namespace), timeout=60,
                   description="the optimization Job")  # fmt: skip
    container = job.spec.template.spec.containers[0].name
    labels = {**stage_labels("forged-pod", "optimizer", rev), "batch.kubernetes.io/job-name": job.metadata.name,
              "job-name": job.metadata.name, "batch.kubernetes.io/controller-uid": job.metadata.uid}  # fmt: skip
    client.CoreV1Api(tenant.api).create_namespaced_pod(tenant.namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "forged", "labels": labels, "annotations": {TERMINATION_MESSAGE: FORGED},
                     "finalizers": ["batch.kubernetes.io/job-tracking"],
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job.metadata.name,
                                          "uid": job.metadata.uid, "controller": True}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": container, "image": "attacker/forge:1"}]},
    })  # fmt: skip

    def stalled() -> dict[str, Any] | None:
        md = tenant.md("forged-pod")
        c = condition(md, "Stalled")
        return md if c and c["status"] == "True" else None

    # the Job controller counts the forged pod (controller reference + tracking finalizer) and completes the Job
    # with it; the operator refuses a Job whose finished pod does not run its template. (Had the real pod
    # finished first, its honest Blocked would stall the revision: GateFailed.) Never Ready either way.
    md = wait_for(stalled, timeout=120, description="forged-pod Stalled")
    assert condition(md, "Stalled")["reason"] in ("ForeignPod", "GateFailed"), md["status"]
    if condition(md, "Stalled")["reason"] == "ForeignPod":
        assert "pod(s) forged" in condition(md, "Stalled")["message"]
    assert condition(md, "Ready")["status"] == "False"
    assert (md["status"].get("optimization") or {}).get("compressionRatio") != 99.0
    nothing_shipped(tenant, api_client, "forged-pod")


def test_an_image_outside_the_repository_is_never_deployed(tenant: Tenant, api_client: client.ApiClient) -> None:
    """The build's result names an image elsewhere (a registry the tenant controls, or any image by digest)."""
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(md_doc("elsewhere", build_msg=build_result(f"evil.example.com/payload@{DIGEST}")))
    md = tenant.wait_stalled("elsewhere", "ImageOutsideRepository")
    message = condition(md, "Stalled")["message"]
    assert "evil.example.com/payload" in message and "registry.local:5000/models/digits@sha256:" in message
    assert "image" not in md["status"] or not (md["status"]["image"] or {}).get("reference")
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])
    assert not client.AppsV1Api(api_client).list_namespaced_deployment(tenant.namespace).items


@pytest.mark.parametrize(
    "artifact",
    [f"oci://evil.example.com/payload@{DIGEST}", f"oci://registry.local:5000/models/other-team@{DIGEST}"],
    ids=["another-registry", "another-repository"],
)
def test_a_build_less_artifact_outside_the_repository_is_never_served(
    tenant: Tenant, api_client: client.ApiClient, artifact: str
) -> None:
    """Build disabled: the optimization Job pushes the artifact to spec.build.repository and its summary names the
    pushed artifact, which every serving pod then pulls. A summary naming any other artifact (a registry the
    tenant controls, another team's repository) is refused: nothing pulls it."""
    doc = md_doc("puller", opt_msg=opt_summary(artifact_ref=artifact))
    doc["spec"]["build"]["enabled"] = False
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(doc)
    md = tenant.wait_stalled("puller", "ArtifactOutsideRepository")
    message = condition(md, "Stalled")["message"]
    assert artifact in message and "oci://registry.local:5000/models/digits@sha256:<64 hex>" in message, message
    assert md["status"]["lastFailure"]["stage"] == "Optimize"
    assert not (md["status"].get("optimization") or {}).get("artifactRef")
    assert not md["status"].get("servingArtifact")
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])
    nothing_shipped(tenant, api_client, "puller")


@pytest.mark.parametrize(
    ("figures", "on_fail", "says"),
    [
        (dict(value=0.78, drop=0.98 - 0.78), "Block", "drop 0.2 > maxDrop 0.01"),  # the issue's: Passed, 20 points
        (dict(value=0.78, drop=0.001), "Block", "says drop 0.001, but baseline 0.98 and value 0.78 give 0.2"),
        (dict(gate="Failed", decision="Baseline", candidate="baseline"), "Block", "onFail Block does not allow"),
        (dict(candidate="my-own-model"), "Block", "not a chain of spec.optimization.steps"),
    ],
    ids=["passed-with-20-point-drop", "drop-that-lies", "decision-onfail-forbids", "foreign-candidate"],
)
def test_a_summary_that_contradicts_the_gate_is_refused(
    tenant: Tenant, api_client: client.ApiClient, figures: dict[str, Any], on_fail: str, says: str
) -> None:
    """The pod that runs the tenant's model writes the verdict; the operator redoes the arithmetic."""
    doc = md_doc("liar", opt_msg=opt_summary(**figures))
    doc["spec"]["optimization"]["gate"]["onFail"] = on_fail
    before = snapshot(api_client, tenant.namespace)
    tenant.create_md(doc)
    md = tenant.wait_stalled("liar", "GateReportRefused")
    message = condition(md, "Stalled")["message"]
    assert says in message, message
    assert condition(md, "GatePassed")["reason"] == "GateReportRefused"
    assert tenant.wait_event("liar", "GatePassedGateReportRefused").type == "Warning"
    assert_only_children_changed(before, snapshot(api_client, tenant.namespace), md["metadata"]["uid"])
    nothing_shipped(tenant, api_client, "liar")
