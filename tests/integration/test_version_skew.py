"""An operator older than its CRD, on the real control plane: the CRD this operator's models generate plus two
spec fields (one the newer CRD defaults, one a tenant sets) and status fields a newer operator writes
(tests/support/skew.py), installed while the operator runs, as a Helm upgrade or Argo CD applies CRDs before the
operator's image rolls.

- a field the newer CRD only defaults (the API server fills it in on every read) changes nothing for the
  cluster-wide operator, which reads the served CRD: spec changes are reconciled as before;
- a newer operator's status fields are ignored, and kept through this operator's status writes;
- a spec field the tenant sets and this operator does not know: Stalled, reason UnsupportedFields, naming the field
  and this operator's version, a Warning Event; the serving Deployment is untouched; removing the field recovers;
- a namespaced operator (no access to CRDs) cannot tell a default from a setting: the defaulted field stalls.

The module restores the current CRD when it ends (the other modules expect it)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelship import __version__
from modelship.rbac import operator_rules
from tests.integration.cluster import (
    CRD_DIR,
    OPERATOR_NAMESPACE,
    apply_manifest,
    condition,
    ensure_operator_identity,
    install_crds,
    wait_for,
)
from tests.integration.operator_harness import OperatorProcess, token_kubeconfig
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, md_doc, operator  # noqa: F401
from tests.support import skew as newer

NOTE_CONDITION = f"].{newer.NEW_CONDITION_FIELD} is not known to this operator"
"""The operator's log line (once per process) when it reads a condition with the newer operator's field."""
NAMESPACED_IDENTITY = "modelship-operator-namespaced"
"""A ServiceAccount and ClusterRole with the namespaced chart's rules: nothing on CustomResourceDefinitions."""


@pytest.fixture(scope="module", autouse=True)
def current_crd_restored(api_client: client.ApiClient) -> Iterator[None]:
    install_crds(api_client, CRD_DIR)
    try:
        yield
    finally:
        install_crds(api_client, CRD_DIR)


def install_newer_crd(api_client: client.ApiClient, namespace: str) -> None:
    """Apply the newer CRD and wait until the API server validates with it (a strict dry run of a spec that sets
    the new field passes): it serves the new schema from then on."""
    apply_manifest(api_client, newer.newer_crd(), force=True)
    probe = md_doc("probe")
    probe["spec"][newer.SETTING[0]][newer.SETTING[1]] = True
    custom = client.CustomObjectsApi(api_client)

    def served() -> bool:
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, probe, dry_run="All",
                                                   field_validation="Strict")  # fmt: skip
        except ApiException as exc:
            if exc.status in (400, 422):
                return False
            raise
        return True

    wait_for(served, timeout=60, description="the API server serving the newer CRD")


def serving(k: Cluster) -> tuple[int, str]:
    """The serving Deployment's replicas and image."""
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    return int(dep.spec.replicas), str(dep.spec.template.spec.containers[0].image)


def warning_events(k: Cluster, reason: str) -> list[Any]:
    events = k.core.list_namespaced_event(k.ns, field_selector="involvedObject.name=digits").items
    return [e for e in events if e.reason == reason and e.type == "Warning"]


def ready_at_generation(k: Cluster, timeout: float = 120) -> dict[str, Any]:
    return k.wait_condition("Ready", "True", timeout=timeout)


def test_a_newer_crd_under_a_ready_resource_keeps_it_reconciled_and_a_newer_operators_status_kept(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess  # noqa: F811 (cluster-wide: lists CRDs)
) -> None:
    k = Cluster(api_client, namespace)
    doc = md_doc()
    k.apply(doc)
    ready_at_generation(k)
    install_newer_crd(api_client, namespace)
    defaulted = k.md()["spec"][newer.DEFAULTED[0]][newer.DEFAULTED[1]]
    assert defaulted == newer.DEFAULTED_VALUE  # the API server defaults it on every read

    # a newer operator's status fields: top level, inside an object this operator writes, in a condition. Written
    # again until this operator has read them: its own write of a status read before ours replaces the conditions
    # list whole (two writers of one list, as in any merge patch)
    def newer_status_read() -> bool:
        if NOTE_CONDITION in operator.log_path.read_text(errors="replace"):
            return True
        status = k.md()["status"]
        conditions = copy.deepcopy(status["conditions"])
        for c in conditions:
            if c["type"] == "Ready":
                c[newer.NEW_CONDITION_FIELD] = "info"
        written = {newer.NEW_STATUS: "written by a newer operator", "conditions": conditions,
                   newer.NEW_NESTED_STATUS[0]: {newer.NEW_NESTED_STATUS[1]: 1.5}}  # fmt: skip
        k.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "digits",
                                                       {"status": written})  # fmt: skip
        k.apply({**doc, "metadata": {**doc["metadata"], "labels": {"poke": str(time.monotonic_ns())}}})
        return False

    wait_for(newer_status_read, timeout=60, interval=1.0, description="the operator reading the newer status")

    # a spec change is reconciled as before: the defaulted field asks for nothing
    doc["spec"]["serving"]["replicas"] = 3
    k.apply(doc)
    after = k.wait_md(
        lambda o: (o.get("status") or {}).get("replicas") == 3 and condition(o, "Ready")["status"] == "True"
        and o["status"].get("observedGeneration") == o["metadata"]["generation"],
        what="Ready with 3 replicas", timeout=120,
    )  # fmt: skip
    assert serving(k)[0] == 3
    assert condition(after, "Stalled")["status"] == "False"
    st = after["status"]
    assert "3/3 replicas" in condition(after, "Ready")["message"]  # the operator rewrote the Ready condition...
    assert condition(after, "Ready")[newer.NEW_CONDITION_FIELD] == "info"  # ...and kept the newer operator's field
    assert st[newer.NEW_STATUS] == "written by a newer operator"
    assert st[newer.NEW_NESTED_STATUS[0]][newer.NEW_NESTED_STATUS[1]] == 1.5
    assert st[newer.NEW_NESTED_STATUS[0]]["revision"] == st["revision"]  # its own fields there are still written
    assert st.get("servingRevision") == st["revision"] and st.get("url")


def test_an_unknown_spec_setting_stalls_naming_it_and_leaves_what_serves_alone(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess  # noqa: F811 (cluster-wide: lists CRDs)
) -> None:
    install_newer_crd(api_client, namespace)
    k = Cluster(api_client, namespace)
    doc = md_doc()
    k.apply(doc)
    ready = ready_at_generation(k)
    served_revision = ready["status"]["servingRevision"]
    before = serving(k)

    doc["spec"][newer.SETTING[0]][newer.SETTING[1]] = True
    doc["spec"]["serving"]["replicas"] = 4  # nothing of this change may be applied either
    k.apply(doc)
    stalled = k.wait_condition("Stalled", "True", reason="UnsupportedFields", timeout=60)
    message = condition(stalled, "Stalled")["message"]
    assert "spec.serving.turbo (true)" in message, message
    assert f"modelship {__version__}" in message and "Upgrade the operator" in message, message
    assert f"revision {served_revision} keeps serving" in message, message
    assert "warmup" not in message  # the defaulted field is tolerated, not reported
    assert condition(stalled, "Ready")["reason"] == "UnsupportedFields"
    wait_for(lambda: warning_events(k, "ReadyUnsupportedFields"), timeout=30,
             description="a Warning Event ReadyUnsupportedFields")  # fmt: skip
    st = stalled["status"]
    assert st["servingRevision"] == served_revision and st.get("url")  # status still says who serves
    assert st["lastFailure"]["reason"] == "UnsupportedFields"
    assert serving(k) == before  # the Deployment is untouched: same replicas, same image

    del doc["spec"][newer.SETTING[0]][newer.SETTING[1]]
    k.apply(doc)
    ready_at_generation(k)
    assert serving(k)[0] == 4


def test_a_namespaced_operator_cannot_read_the_crd_and_stalls_on_a_defaulted_field(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess  # noqa: F811 (cluster-wide: lists CRDs)
) -> None:
    """No list on CRDs (the namespaced chart): a field the newer CRD defaults is not told from a setting."""
    operator.stop()  # the cluster-wide operator would reconcile this namespace too
    install_newer_crd(api_client, namespace)
    ensure_operator_identity(api_client, operator_rules(cluster_scope=False), service_account=NAMESPACED_IDENTITY,
                             cluster_role=NAMESPACED_IDENTITY)  # fmt: skip
    rules = operator_rules(cluster_scope=False)
    assert not [r for r in rules if "customresourcedefinitions" in r["resources"]]
    op = OperatorProcess(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "2"})
    op.kubeconfig = token_kubeconfig(api_client, OPERATOR_NAMESPACE, NAMESPACED_IDENTITY, op.workdir / "kubeconfig")
    op.extra_args = ["--namespace", namespace]
    op.start()
    try:
        k = Cluster(api_client, namespace)
        k.apply(md_doc())
        stalled = k.wait_condition("Stalled", "True", reason="UnsupportedFields", timeout=60)
        message = condition(stalled, "Stalled")["message"]
        assert f'spec.serving.warmup ("{newer.DEFAULTED_VALUE}")' in message, message
        assert "cannot read the installed CRD" in message, message
        assert not k.jobs()  # nothing was created for it
    finally:
        op.stop()
        print(op.log()[-3000:])
