"""Item 8, as the tenant against the real API server: a model source cannot write outside the optimizer's download
directory, and a data set cannot borrow a Secret of another namespace (another tenant's, the platform's).

The sources are a hostile storage server on loopback (tests/support/hostile.py): an S3 listing with ``../`` keys, an
OCI artifact whose layer title or archive member climbs out. The real optimizer runs each spec as its Job would
(``optimizer_run.py``: the operator's Job manifest, the Secrets the kubelet would mount, a fresh process whose
``/tmp`` is the test's); its exit code and summary end the kwok pod of the Job the operator creates, as the suite
runs every stage. Each attack fails its stage with a readable ``Stalled`` reason naming the field, leaves no file
outside the download directory, and changes nothing but the ModelDeployment and what it controls.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship.api.report import FailureKind
from tests.integration.attacks.optimizer_run import Run, arg, optimizer_container, run_as_the_job
from tests.integration.attacks.snapshot import assert_only_children_changed, snapshot
from tests.integration.attacks.specs import GROUP, PLURAL, VERSION, md_doc
from tests.integration.attacks.tenant import Tenant, md_uid
from tests.integration.cluster import OPERATOR_NAMESPACE, condition, create_namespace, delete_namespace, wait_for
from tests.integration.operator_harness import hostpath_volume
from tests.support.hostile import Hostile, hostile_server, plant_oci_artifact, s3_listing, tar_gz

PLANTED = b"planted by the hostile storage server"
UP = "../../../../"
"""Enough ``..`` to climb from the optimizer's download directory (``$TMPDIR/modelship-optimize-*/model/...``) out of
its ``/tmp`` and beyond."""
TFLITE = b"\x1c\x00\x00\x00TFL3" + bytes(56)
"""Enough of a .tflite file for the optimizer to take it as one (served as is: no TensorFlow needed)."""


@pytest.fixture
def store() -> Iterator[Hostile]:
    with hostile_server() as server:
        yield server


def the_operators_job(tenant: Tenant, name: str) -> Any:
    selector = f"modelship.io/modeldeployment={name},app.kubernetes.io/component=optimizer"
    return wait_for(lambda: next(iter(client.BatchV1Api(tenant.admin).list_namespaced_job(
        tenant.namespace, label_selector=selector).items), None), timeout=60,
        description=f"the optimization Job of {name}")  # fmt: skip


def assert_the_run_was_the_jobs(tenant: Tenant, name: str, run: Run) -> Any:
    """The operator's real Job fetches exactly what the offline run fetched, with the same Secrets."""
    job = client.ApiClient().sanitize_for_serialization(the_operators_job(tenant, name))
    real, offline = optimizer_container(job), optimizer_container(run.job)
    for flag in ("--model", "--sources-json"):
        assert arg(real, flag) == arg(offline, flag), flag
    secrets = [v["secret"] for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert secrets == [v["secret"] for v in run.job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    return job


def nothing_shipped(tenant: Tenant) -> None:
    assert not client.AppsV1Api(tenant.admin).list_namespaced_deployment(tenant.namespace).items, "nothing deployed"
    builds = client.BatchV1Api(tenant.admin).list_namespaced_job(
        tenant.namespace, label_selector="app.kubernetes.io/component=build"
    )
    assert not builds.items, "nothing built"


# ------------------------------------------------------------------------------------------- path traversal


def plant(case: str, store: Hostile) -> tuple[str, str]:
    """Plant the case's hostile source; return (spec.model.uri, what the optimizer must say it refused)."""
    if case == "s3-prefix-key":
        escaping = f"model/{UP}escaped"
        store.routes["/bucket/"] = (200, s3_listing("model/saved_model.pb", escaping))
        store.routes["/bucket/model/saved_model.pb"] = (200, b"graph")
        store.routes[f"/bucket/{escaping}"] = (200, PLANTED)
        return "s3://bucket/model", f"refusing object key {escaping!r}"
    if case == "oci-layer-title":
        plant_oci_artifact(store, "evil/model", "v1", title=f"{UP}escaped", blob=PLANTED, unpack=False)
        return f"oci://{store.host}/evil/model:v1", "refusing layer title"
    assert case == "oci-archive-member"
    blob = tar_gz({"saved_model.pb": b"graph", f"{UP}escaped": PLANTED})
    plant_oci_artifact(store, "evil/model", "v1", title="model", blob=blob, unpack=True)
    return f"oci://{store.host}/evil/model:v1", f"refusing archive member '{UP}escaped'"


@pytest.mark.parametrize("case", ["s3-prefix-key", "oci-layer-title", "oci-archive-member"])
def test_a_model_source_cannot_write_outside_the_download_directory(
    tenant: Tenant, store: Hostile, tmp_path: Path, case: str
) -> None:
    uri, refused = plant(case, store)
    doc = md_doc("escape", uri=uri)
    doc["spec"]["model"].update(format="savedmodel", credentials={"endpoint": store.url})
    sandbox = tmp_path / "pod"
    run = run_as_the_job(doc, tenant.namespace, tenant.admin, sandbox)

    # the real optimizer refused the name before it wrote the content: permanently, naming the field
    landed = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == PLANTED]
    assert not landed, f"the hostile source wrote {landed}"
    left = sorted(str(p.relative_to(sandbox)) for p in sandbox.rglob("*") if p.is_file())
    assert left == ["out/report.json", "termination-log"], left  # and /tmp is empty again
    error = run.summary.error or ""
    assert run.exit_code == 1 and run.summary.failure == FailureKind.PERMANENT, run.stderr
    assert error.startswith("spec.model.uri: ") and refused in error, error
    assert "it would leave the download directory" in error, error

    # the operator's Job ends as the real optimizer did: Stalled, naming the field; nothing else changed
    doc["spec"]["optimization"]["job"]["podAnnotations"].update(run.pod_annotations())
    before = snapshot(tenant.admin, tenant.namespace)
    tenant.create_md(doc)
    md = tenant.wait_stalled("escape", "OptimizationFailed")
    message = condition(md, "Stalled")["message"]
    assert "spec.model.uri" in message and refused in message and "leave the download directory" in message
    assert md["status"]["lastFailure"]["stage"] == "Optimize"
    assert_the_run_was_the_jobs(tenant, "escape", run)
    assert_only_children_changed(before, snapshot(tenant.admin, tenant.namespace), md_uid(tenant, "escape"))
    nothing_shipped(tenant)


# ------------------------------------------------------------------------------- another namespace's Secret

KEYS = {"victim": "AKIAVICTIM0000000001", "operator": "AKIAPLATFORM00000001", "tenant": "AKIATENANT0000000001"}


def s3_secret(name: str, key_id: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": f"secret-of-{key_id}"}}  # fmt: skip


@pytest.fixture
def others(api_client: client.ApiClient) -> Iterator[dict[str, tuple[str, str]]]:
    """Secrets no tenant may reach: another tenant's (its own namespace) and the platform's (the operator's
    namespace), each holding the only key the hostile store serves the data set to."""
    core = client.CoreV1Api(api_client)
    victim = create_namespace(api_client, "victim")
    core.create_namespaced_secret(victim, s3_secret("s3-reader", KEYS["victim"]))
    core.create_namespaced_secret(OPERATOR_NAMESPACE, s3_secret("platform-s3", KEYS["operator"]))
    try:
        yield {"victim": (victim, "s3-reader"), "operator": (OPERATOR_NAMESPACE, "platform-s3")}
    finally:
        core.delete_namespaced_secret("platform-s3", OPERATOR_NAMESPACE)
        delete_namespace(api_client, victim)


def borrowing_doc(store: Hostile, secret_ref: dict[str, str]) -> dict[str, Any]:
    """A served-as-is model from the store (no credentials needed) and an evaluation data set the store serves only
    to the other namespace's key, its secretRef naming that namespace's Secret."""
    doc = md_doc("borrower", uri="s3://models/m/model.tflite")
    spec = doc["spec"]
    spec["model"].update(format="tflite", credentials={"endpoint": store.url})
    evaluation = {"uri": "s3://private/eval.npz", "format": "npz",
                  "credentials": {"endpoint": store.url, "secretRef": secret_ref}}  # fmt: skip
    spec["optimization"] = {"enabled": False, "data": {"evaluation": evaluation}, "job": spec["optimization"]["job"]}
    return doc


@pytest.mark.parametrize("whose", ["victim", "operator"])
def test_a_data_set_cannot_borrow_another_namespaces_secret(
    tenant: Tenant, store: Hostile, others: dict[str, tuple[str, str]], tmp_path: Path, whose: str
) -> None:
    owner_ns, secret = others[whose]
    store.routes["/models/m/model.tflite"] = (200, TFLITE)
    store.routes["/private/eval.npz"] = (200, PLANTED)
    store.owners["/private/eval.npz"] = KEYS[whose]
    custom = client.CustomObjectsApi(tenant.api)
    doc = borrowing_doc(store, {"name": secret, "namespace": owner_ns})

    # as kubectl sends it (strict field validation): a secretRef has no namespace
    before = snapshot(tenant.admin, tenant.namespace)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, PLURAL, doc, field_validation="Strict")
    assert refused.value.status == 400, refused.value.body
    assert "spec.optimization.data.evaluation.credentials.secretRef.namespace" in (refused.value.body or "")
    assert_only_children_changed(before, snapshot(tenant.admin, tenant.namespace))

    # a client that does not ask: the API server drops the field, and the name is one of the tenant's namespace,
    # where a tenant may create a Secret under any name (its own keys): the data set is fetched with those
    client.CoreV1Api(tenant.api).create_namespaced_secret(tenant.namespace, s3_secret(secret, KEYS["tenant"]))
    stored = copy.deepcopy(doc)
    stored["spec"]["optimization"]["data"]["evaluation"]["credentials"]["secretRef"] = {"name": secret}
    run = run_as_the_job(stored, tenant.namespace, tenant.admin, tmp_path / "pod")
    error = run.summary.error or ""
    assert run.exit_code == 1 and run.summary.failure == FailureKind.PERMANENT, run.stderr
    assert error.startswith("spec.optimization.data.evaluation.uri: s3://private/eval.npz: access denied"), error
    assert store.keys_seen() == {KEYS["tenant"]}, store.seen  # never the other namespace's key
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == PLANTED]

    doc["spec"]["optimization"]["job"]["podAnnotations"].update(run.pod_annotations())
    owner_secret = client.CoreV1Api(tenant.admin).read_namespaced_secret(secret, owner_ns).metadata.resource_version
    before = snapshot(tenant.admin, tenant.namespace)
    hostpath_volume(tenant.admin, tenant.namespace, "borrower-artifacts")  # the test cluster has no provisioner
    custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, PLURAL, doc)  # no field validation
    assert "namespace" not in tenant.md("borrower")["spec"]["optimization"]["data"]["evaluation"]["credentials"][
        "secretRef"]  # fmt: skip
    md = tenant.wait_stalled("borrower", "OptimizationFailed")
    message = condition(md, "Stalled")["message"]
    assert "spec.optimization.data.evaluation.uri" in message and "access denied" in message, message
    job = assert_the_run_was_the_jobs(tenant, "borrower", run)
    assert job["metadata"]["namespace"] == tenant.namespace  # a Pod mounts Secrets of its own namespace only
    assert [v["secret"]["secretName"] for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v] == [secret]
    assert client.CoreV1Api(tenant.admin).read_namespaced_secret(secret, owner_ns).metadata.resource_version == (
        owner_secret)  # fmt: skip
    assert_only_children_changed(before, snapshot(tenant.admin, tenant.namespace), md_uid(tenant, "borrower"))
    nothing_shipped(tenant)
