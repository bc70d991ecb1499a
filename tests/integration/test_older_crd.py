"""An operator newer than its CRD, on the real control plane: the CRD this operator's models generate minus one
spec field with a default and two status fields the operator writes (tests/support/skew.py), as after an image
rolled before its CRD was applied (`helm upgrade` never upgrades CRDs; a GitOps tool that syncs CRDs last).

- the cluster-wide operator reads the CRD and logs every field it lacks (gauge
  modelship_crd_skew{direction="older"});
- the API server drops the status fields from every write, without an error; the operator finds them in its
  write's answer, says so once (a Warning Event naming them) and leaves them out of its next writes: further
  reconciles send no status patch at all;
- a tenant's setting of the spec field the older CRD lacks: rejected naming it under strict field validation
  (kubectl's default), dropped without an error otherwise.

The module restores the current CRD when it ends (the other modules expect it)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.cluster import CRD_DIR, apply_manifest, install_crds, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.test_operator import GROUP, PLURAL, VERSION, Cluster, md_doc
from tests.support import skew as older

OLDER_REASON = "CRDOlderThanOperator"
STRICT_ERROR = 'strict decoding error: unknown field "spec.serving.batching"'


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    """The cluster-wide operator resyncing every second, under the older CRD."""
    apply_manifest(api_client, older.older_crd(), force=True)
    try:
        env = {"MODELSHIP_MAX_JOB_ATTEMPTS": "2", "MODELSHIP_RESYNC_SECONDS": "1"}
        with running_operator(api_client, env) as op:
            yield op
    finally:
        install_crds(api_client, CRD_DIR)


def status_patches(op: OperatorProcess) -> float:
    return op.metric("modelship_api_writes_total", 'kind="ModelDeployment/status",verb="patch"')


def older_crd_served(k: Cluster) -> None:
    """Wait until the API server validates with the older CRD: a strict dry run setting the field it lacks fails."""
    probe = md_doc("probe")
    probe["spec"][older.OLDER_DEFAULTED[0]][older.OLDER_DEFAULTED[1]] = {"maxBatchSize": 32}

    def served() -> bool:
        try:
            k.custom.create_namespaced_custom_object(GROUP, VERSION, k.ns, PLURAL, probe, dry_run="All",
                                                     field_validation="Strict")  # fmt: skip
        except ApiException as exc:
            return exc.status == 400 and STRICT_ERROR in json.loads(exc.body)["message"]
        return False

    wait_for(served, timeout=60, description="the API server serving the older CRD")


def test_status_fields_an_older_crd_prunes_are_reported_once_and_not_sent_again(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client, namespace)
    older_crd_served(k)
    k.apply(md_doc())
    ready = k.wait_condition("Ready", "True", timeout=120)
    st = ready["status"]
    assert older.OLDER_RECOMPUTED_STATUS[0] not in st and st["readyReplicas"] == 2  # pruned; its neighbours kept
    assert older.OLDER_STATUS[1] not in st[older.OLDER_STATUS[0]] and st[older.OLDER_STATUS[0]]["sizeRatio"]

    def warned() -> list[str]:
        events = k.core.list_namespaced_event(namespace, field_selector="involvedObject.name=digits").items
        return [e.message for e in events if e.reason == OLDER_REASON and e.type == "Warning"]

    fields = ("status.updatedReplicas", "status.optimization.compressionRatio")
    # this object is told of each field its status goes without, once, whether its own write found the field
    # pruned or another object's did first (a cluster-wide operator: other modules' objects may still be there)
    messages = wait_for(lambda: all(any(f in m for m in warned()) for f in fields) and warned(), timeout=30,
                        description=f"Warning Events {OLDER_REASON} naming {', '.join(fields)}")  # fmt: skip
    for field in fields:
        assert len([m for m in messages if field in m]) == 1, messages
    assert "kubectl apply --server-side -f crds/" in messages[0]
    # the cluster-wide operator read the CRD at startup and named every field it lacks, the spec field too
    log = operator.log()
    assert ("CRD is older than this operator (modelship " in log and "it lacks spec.serving.batching, "
            "status.optimization.compressionRatio, status.updatedReplicas." in log), log[-3000:]  # fmt: skip
    assert operator.metric("modelship_crd_skew", 'direction="older"') == 3
    assert operator.metric("modelship_crd_skew", 'direction="newer"') == 0

    # from now on, reconciles (one a second) send no status patch: before this change, one each (the same patch
    # again: the resourceVersion did not move, so no watch event, no hot loop, but a write per reconcile for ever)
    rv, patches = k.md()["metadata"]["resourceVersion"], status_patches(operator)
    reconciles = operator.metric("modelship_reconciles_total")
    wait_for(lambda: operator.metric("modelship_reconciles_total") >= reconciles + 5, timeout=30,
             description="five more reconciles")  # fmt: skip
    assert status_patches(operator) == patches
    assert k.md()["metadata"]["resourceVersion"] == rv
    assert sorted(warned()) == sorted(messages)  # said once each

    # a spec change still reaches status: the left-out fields are the only ones left out
    doc = md_doc()
    doc["spec"]["serving"]["replicas"] = 3
    k.apply(doc)
    after = k.wait_md(lambda o: (o.get("status") or {}).get("readyReplicas") == 3, what="3 ready replicas")
    assert older.OLDER_RECOMPUTED_STATUS[0] not in after["status"]


def test_a_spec_field_an_older_crd_lacks_is_rejected_under_strict_validation_and_dropped_otherwise(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client, namespace)
    older_crd_served(k)
    doc = md_doc("tenant")
    doc["metadata"]["namespace"] = namespace
    doc["spec"][older.OLDER_DEFAULTED[0]][older.OLDER_DEFAULTED[1]] = {"maxBatchSize": 32}
    with pytest.raises(ApiException) as strict:  # kubectl apply/create: --validate=strict since 1.27
        k.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc, field_validation="Strict")
    assert strict.value.status == 400 and STRICT_ERROR in json.loads(strict.value.body)["message"]
    # a client that does not ask for strict validation (the API server's default is Warn): created, field dropped
    created = k.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    assert older.OLDER_DEFAULTED[1] not in created["spec"][older.OLDER_DEFAULTED[0]]
    assert created["spec"]["serving"]["replicas"] == 2
