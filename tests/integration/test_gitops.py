"""GitOps fit on the real control plane: the operator never writes spec, re-applying the manifest from Git is a
no-op (server-side apply, dry-run and real, under Argo CD's and Flux's field managers), and the Argo CD Lua
health check / kstatus give the expected health on real statuses from the operator in every lifecycle state.

The module captures those statuses once (ready, progressing, stalled by the gate, stalled by a failed Job,
suspended, spec changed but not yet observed, brand new without status). With MODELSHIP_UPDATE_SAMPLES=1 it
writes them to tests/chart/samples/*.json, which tests/chart/test_gitops_docs.py reads without a cluster.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.chart.gitops import CANARY_SAMPLES, EXPECTED, SAMPLES, argocd_health, kstatus, sample_of
from tests.integration.cluster import (
    apply_manifest,
    condition,
    create_namespace,
    delete_namespace,
    wait_for,
)
from tests.integration.operator_harness import OperatorProcess, hostpath_volume, running_operator
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, md_doc, opt_summary

ARGOCD_MANAGER = "argocd-controller"  # Argo CD's field manager with ServerSideApply=true
FLUX_MANAGER = "kustomize-controller"  # Flux's


@pytest.fixture(scope="module")
def gitops_operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    with running_operator(api_client, {"MODELSHIP_MAX_JOB_ATTEMPTS": "2"}) as op:
        yield op


@pytest.fixture(scope="module")
def gitops_ns(api_client: client.ApiClient, gitops_operator: OperatorProcess) -> Iterator[str]:
    ns = create_namespace(api_client, "gitops")
    try:
        yield ns
    finally:
        delete_namespace(api_client, ns)


def distinct(doc: dict[str, Any], i: int) -> dict[str, Any]:
    """Give a scenario its own revision: the operator shares stage results between ModelDeployments of a
    namespace whose inputs hash the same (test pod annotations are not inputs)."""
    doc["spec"]["optimization"]["gate"]["maxDrop"] = round(0.01 + i / 1000, 3)
    return doc


def _apply(api: client.ApiClient, ns: str, doc: dict[str, Any], manager: str = FLUX_MANAGER) -> None:
    hostpath_volume(api, ns, f"{doc['metadata']['name']}-artifacts")
    apply_manifest(api, doc, field_manager=manager, namespace=ns)


@pytest.fixture(scope="module")
def captured(
    api_client: client.ApiClient, gitops_ns: str, gitops_operator: OperatorProcess
) -> dict[str, dict[str, Any]]:
    """Real ModelDeployments in each state, as read from the API server."""
    k = Cluster(api_client, gitops_ns)
    out: dict[str, dict[str, Any]] = {}
    blocked = opt_summary(gate="Failed", decision="Blocked", value=0.95, drop=0.0306,
                          message="accuracy 0.9806 -> 0.95 (drop 0.0306 > 0.01 absolute)")  # fmt: skip
    failing = md_doc("stalled-job-failed", opt_annotations={"modelship.io/test-fail": "OOMKilled"})
    failing["spec"]["optimization"]["job"]["backoffLimit"] = 0
    docs = [
        md_doc("ready"),
        md_doc("progressing", opt_annotations={"modelship.io/test-duration": "300s"}),
        md_doc("stalled-gate", opt_msg=blocked),
        failing,
        md_doc("suspended"),
        md_doc("new-no-status"),
    ]
    git = {d["metadata"]["name"]: distinct(d, i) for i, d in enumerate(docs)}
    for name, doc in git.items():
        if name != "new-no-status":
            _apply(api_client, gitops_ns, copy.deepcopy(doc))

    def observed(o: dict[str, Any]) -> bool:
        return bool((o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"])

    out["progressing"] = k.wait_md(
        lambda o: observed(o) and o["status"].get("phase") == "Optimizing", "progressing", what="Optimizing"
    )
    out["ready"] = k.wait_condition("Ready", "True", name="ready", timeout=120)
    out["stalled-gate"] = k.wait_condition("Stalled", "True", name="stalled-gate", reason="GateFailed")
    out["stalled-job-failed"] = k.wait_condition("Stalled", "True", name="stalled-job-failed", reason="JobFailed")
    k.wait_condition("Ready", "True", name="suspended", timeout=120)
    suspend = copy.deepcopy(git["suspended"])
    suspend["spec"]["suspend"] = True
    apply_manifest(api_client, suspend, field_manager=FLUX_MANAGER, namespace=gitops_ns)  # a commit in Git
    out["suspended"] = k.wait_md(
        lambda o: observed(o) and o["status"].get("phase") == "Suspended", "suspended", what="Suspended"
    )
    # The operator away: a spec change nobody has observed yet, and a brand-new object without status.
    gitops_operator.stop()
    try:
        changed = copy.deepcopy(git["ready"])
        changed["spec"]["serving"]["replicas"] = 3
        apply_manifest(api_client, changed, field_manager=FLUX_MANAGER, namespace=gitops_ns)
        out["spec-not-observed"] = k.md("ready")
        _apply(api_client, gitops_ns, git["new-no-status"])
        out["new-no-status"] = k.md("new-no-status")
    finally:
        gitops_operator.start()
    assert out["spec-not-observed"]["metadata"]["generation"] > out["spec-not-observed"]["status"]["observedGeneration"]
    assert "status" not in out["new-no-status"]
    if os.environ.get("MODELSHIP_UPDATE_SAMPLES", "") == "1":
        SAMPLES.mkdir(parents=True, exist_ok=True)
        for name, obj in out.items():
            (SAMPLES / f"{name}.json").write_text(json.dumps(sample_of(obj), indent=2, sort_keys=True) + "\n")
    return out


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - CANARY_SAMPLES))  # those: tests/integration/test_canary.py
def test_health_of_real_statuses(captured: dict[str, dict[str, Any]], name: str) -> None:
    obj = captured[name]
    argo, flux = EXPECTED[name]
    health = argocd_health(obj)
    assert health["status"] == argo, (health, obj.get("status"))
    assert health["message"]
    assert kstatus(obj) == flux
    # what the committed sample keeps is enough for the same verdict
    assert argocd_health(sample_of(obj))["status"] == argo


def test_degraded_message_is_the_operators_reason(captured: dict[str, dict[str, Any]]) -> None:
    health = argocd_health(captured["stalled-gate"])
    assert health["message"] == condition(captured["stalled-gate"], "Stalled")["message"]
    assert "drop 0.0306 > 0.01" in health["message"]


def test_new_object_gets_status_promptly(
    captured: dict[str, dict[str, Any]], api_client: client.ApiClient, gitops_ns: str
) -> None:
    """kstatus calls an object without status Current: the window must be short once the operator runs."""
    k = Cluster(api_client, gitops_ns)
    s = k.wait_md(lambda o: bool(o.get("status")), "new-no-status", timeout=15, what="first status")
    assert kstatus(s) == "InProgress" and argocd_health(s)["status"] == "Progressing"


def test_operator_never_writes_spec_or_metadata(captured: dict[str, dict[str, Any]], api_client: client.ApiClient,
                                                gitops_ns: str) -> None:  # fmt: skip
    """managedFields: only the applier (Flux here) owns spec; the operator owns status, through /status only."""
    k = Cluster(api_client, gitops_ns)
    for name in ("ready", "suspended", "stalled-gate"):
        obj = k.md(name)
        entries = obj["metadata"]["managedFields"]
        spec_managers = {e["manager"] for e in entries if "f:spec" in (e.get("fieldsV1") or {})}
        assert spec_managers == {FLUX_MANAGER}, (name, spec_managers)
        # everyone but the applier (the operator) wrote status only, through the /status subresource.
        # (Its manager name is not asserted: status patches carry no fieldManager today, so the API server
        # records the client's user agent; see the report on issue #8.)
        others = [e for e in entries if e["manager"] != FLUX_MANAGER]
        assert others, name
        for e in others:
            assert e.get("subresource") == "status" and set(e["fieldsV1"]) == {"f:status"}, (name, e)
        assert not obj["metadata"].get("finalizers"), name  # a stopped operator never blocks a prune
        assert not any(a.startswith("kopf.zalando.org") for a in obj["metadata"].get("annotations") or {}), name


@pytest.mark.parametrize("manager", [ARGOCD_MANAGER, FLUX_MANAGER])
def test_reapplying_the_git_manifest_is_a_no_op(
    api_client: client.ApiClient, gitops_ns: str, gitops_operator: OperatorProcess, manager: str
) -> None:
    """The sync a GitOps tool does every interval: server-side apply of the unchanged manifest, same manager."""
    name = f"drift-{manager.split('-')[0]}"
    doc = distinct(md_doc(name), 10 + len(manager))
    _apply(api_client, gitops_ns, copy.deepcopy(doc), manager=manager)
    k = Cluster(api_client, gitops_ns)
    k.wait_condition("Ready", "True", name=name, timeout=120)
    custom = client.CustomObjectsApi(api_client)

    def get() -> dict[str, Any]:
        obj: Any = custom.get_namespaced_custom_object(GROUP, VERSION, gitops_ns, PLURAL, name)
        return dict(obj)

    def quietly(dry_run: bool) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before = get()
        applied = apply_manifest(api_client, copy.deepcopy(doc), field_manager=manager, namespace=gitops_ns,
                                 dry_run=dry_run)  # fmt: skip
        after = get()
        # no write at all between the two reads, ours included; a status write by the operator in between
        # would make the comparison meaningless: try again
        if before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"]:
            return None
        return before, applied

    before, dry = wait_for(lambda: quietly(True), timeout=30, description="a quiet moment for the dry run")
    assert dry["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert dry["metadata"]["generation"] == before["metadata"]["generation"]
    assert dry["spec"] == before["spec"]
    assert dry["metadata"]["managedFields"] == before["metadata"]["managedFields"]
    assert dry == before  # the whole returned object: nothing would change
    # the real re-apply writes nothing either: resourceVersion and generation stay
    before, real = wait_for(lambda: quietly(False), timeout=30, description="a quiet moment for the re-apply")
    assert real == before
    # a real change in Git is one new generation, observed by the operator
    doc["spec"]["serving"]["replicas"] = 3
    changed = apply_manifest(api_client, copy.deepcopy(doc), field_manager=manager, namespace=gitops_ns)
    assert changed["metadata"]["generation"] == before["metadata"]["generation"] + 1
    k.wait_md(lambda o: (o.get("status") or {}).get("readyReplicas") == 3, name, what="3 ready replicas")
