"""An operator newer than its CRD, where the API server prunes status fields the operator reads back as its memory
of what serves: a CRD of 2026-11-27 (tests/support/skew.py OLDER_READ_BACK_STATUS) has no status.servingArtifact,
status.optimization.artifactRef or status.rollout. What serves must never change because such a field was pruned:

- a build-less revision whose serving pods pull their artifact from a registry keeps pulling it at every later
  reconcile (status.optimization.artifactRef pruned: the operator's record of the push is gone);
- a next revision the accuracy gate blocks leaves the serving Deployment as it is (status.servingArtifact pruned):
  before, the operator re-rendered the previous revision without its artifact pull, mounting the artifact claim
  instead, and said MultiNode False;
- a Canary rollout, whose record (status.rollout) is nowhere else, is held: Stalled, reason CRDOlderThanOperator,
  no candidate started.

The module restores the current CRD when it ends (the other modules expect it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.integration.cluster import CRD_DIR, apply_manifest, condition, install_crds, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.rollout import NEW_IMAGE
from tests.integration.test_older_crd import metric, older_crd_served
from tests.integration.test_operator import DIGEST, IMAGE, MSG, Cluster, build_result, md_doc, opt_summary
from tests.support import skew as older

REGISTRY = "registry.local:5000/tenants"


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient) -> Iterator[OperatorProcess]:
    """The cluster-wide operator resyncing every second, with a build registry, under the CRD of 2026-11-27."""
    status = (*older.OLDER_READ_BACK_STATUS, older.OLDER_RECOMPUTED_STATUS)
    apply_manifest(api_client, older.older_crd(status=status), force=True)
    try:
        env = {"MODELSHIP_RESYNC_SECONDS": "1", "MODELSHIP_BUILD_REGISTRY": REGISTRY}
        with running_operator(api_client, env) as op:
            yield op
    finally:
        install_crds(api_client, CRD_DIR)


def build_less(namespace: str, *, blocked: bool = False) -> dict[str, Any]:
    """A build-less ModelDeployment whose optimizer reports the push the operator asked for; ``blocked``: a next
    revision (another sparsity) whose accuracy gate fails with onFail Block."""
    ref = f"oci://{REGISTRY}/{namespace}/digits@{DIGEST}"
    figures: dict[str, Any] = {}
    if blocked:
        figures = dict(gate="Failed", decision="Blocked", value=0.95,
                       message="accuracy 0.9806 -> 0.95 (drop 0.0306 > 0.01 absolute)")  # fmt: skip
    doc = md_doc(opt_msg=opt_summary(artifact_ref=ref, **figures), replicas=2)
    doc["spec"]["build"] = {"enabled": False, "insecureRegistry": True}
    if blocked:
        doc["spec"]["optimization"]["steps"][0]["prune"]["targetSparsity"] = 0.7
    return doc


def serving_template(k: Cluster) -> dict[str, Any]:
    dep = k.apps.read_namespaced_deployment("digits", k.ns)
    out: dict[str, Any] = k.api.sanitize_for_serialization(dep.spec.template)
    return out


def pulls(template: dict[str, Any], ref: str) -> bool:
    """The serving pods pull ``ref`` and mount no claim."""
    spec = template["spec"]
    inits = spec.get("initContainers") or []
    claims = [v for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v]
    return len(inits) == 1 and inits[0]["args"][:2] == ["pull", ref] and not claims


def more_reconciles(op: OperatorProcess, n: int) -> None:
    start = metric(op, "modelship_reconciles_total")
    wait_for(lambda: metric(op, "modelship_reconciles_total") >= start + n, timeout=30,
             description=f"{n} more reconciles")  # fmt: skip


def test_what_serves_never_changes_because_a_read_back_field_is_pruned(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client, namespace)
    older_crd_served(k)
    ref = f"oci://{REGISTRY}/{namespace}/digits@{DIGEST}"
    k.apply(build_less(namespace))
    ready = k.wait_condition("Ready", "True", timeout=120)
    st = ready["status"]
    assert "servingArtifact" not in st and "artifactRef" not in st["optimization"]  # pruned by the older CRD
    served = serving_template(k)
    assert pulls(served, ref), served["spec"]
    rev = st["servingRevision"]

    # later reconciles (one a second) render the revision the same: its pods keep pulling the artifact
    more_reconciles(operator, 5)
    assert serving_template(k) == served
    now = k.md()
    assert condition(now, "Ready")["status"] == "True" and all(
        c["type"] != "MultiNode" for c in now["status"]["conditions"]
    ), now["status"]["conditions"]

    # a next revision the gate blocks: the revision that serves is left exactly as it is
    k.apply(build_less(namespace, blocked=True))
    stalled = k.wait_condition("Stalled", "True", reason="GateFailed", timeout=120)
    assert stalled["status"]["servingRevision"] == rev
    more_reconciles(operator, 5)
    assert serving_template(k) == served
    conditions = k.md()["status"]["conditions"]
    assert all(c["type"] != "MultiNode" for c in conditions), conditions
    deployed = next(c for c in conditions if c["type"] == "Deployed")
    assert deployed["reason"] == "PreviousRevisionServing" and rev in deployed["message"], deployed


CANARY = {
    "strategy": "Canary",
    "canary": {"shadow": {"percent": 20, "durationSeconds": 10}, "steps": [{"weight": 50, "pauseSeconds": 10}]},
}


def test_a_canary_rollout_is_held_while_its_record_is_pruned(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """Without status.rollout a Canary rollout would start again at every look (Shadow for ever, an Event each
    time): the candidate is not started, the revision that serves keeps serving, Stalled says why."""
    k = Cluster(api_client, namespace)
    older_crd_served(k)
    doc = md_doc(rollout=CANARY)
    k.apply(doc)
    ready = k.wait_condition("Ready", "True", timeout=120)
    rev = ready["status"]["servingRevision"]
    served = serving_template(k)
    assert served["spec"]["containers"][0]["image"] == IMAGE

    doc["spec"]["optimization"]["gate"]["maxDrop"] = 0.02  # a new revision, built as NEW_IMAGE
    doc["spec"]["build"]["job"]["podAnnotations"] = {MSG: build_result(NEW_IMAGE)}
    k.apply(doc)
    stalled = k.wait_condition("Stalled", "True", reason="CRDOlderThanOperator", timeout=120)
    verified = condition(stalled, "Verified")
    assert verified["reason"] == "CRDOlderThanOperator" and "status.rollout" in verified["message"], verified
    assert "kubectl apply --server-side -f crds/" in verified["message"]
    assert condition(stalled, "ImageBuilt")["status"] == "True"  # the candidate is built, not started
    assert stalled["status"]["servingRevision"] == rev and stalled["status"]["revision"] != rev
    more_reconciles(operator, 5)
    assert serving_template(k) == served
    names = [d.metadata.name for d in k.apps.list_namespaced_deployment(namespace).items]
    assert names == ["digits"], names  # no candidate Deployment
    assert k.wait_condition("Stalled", "True", reason="CRDOlderThanOperator")["status"]["servingRevision"] == rev
