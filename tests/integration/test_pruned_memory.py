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

from modelship.api.rollout_status import RolloutPhase, RolloutStatus
from modelship.controller.kube import Kube
from modelship.controller.pruning import PrunedStatus
from modelship.controller.statuswrite import StatusWriter
from modelship.controller.store import Store
from tests.integration.cluster import CRD_DIR, apply_manifest, condition, install_crds, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.rollout import NEW_IMAGE
from tests.integration.test_older_crd import older_crd_served
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
    start = op.metric("modelship_reconciles_total")
    wait_for(lambda: op.metric("modelship_reconciles_total") >= start + n, timeout=30,
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


def test_a_dry_run_status_patch_says_whether_the_served_crd_keeps_the_rollout_record(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """What lifts a held Canary under a namespaced operator, which cannot read the CRD and whose held status sends
    no status.rollout: at the retry, the status writer sends the record last found pruned in a dry-run status
    PATCH. The real API server's answer is pruned to the served CRD and nothing is stored; once the current CRD is
    applied, the answer keeps the record and the writer forgets it was pruned. Runs last: it applies the current
    CRD."""
    k = Cluster(api_client, namespace)
    older_crd_served(k)
    k.apply(md_doc())
    now = [0.0]
    writer = StatusWriter(Kube(api_client), Store())  # the served CRD is never read: as a namespaced operator
    writer.pruned = PrunedStatus(retry=600, clock=lambda: now[0])
    record = RolloutStatus(candidate="r2", stable="r1", phase=RolloutPhase.SHADOW,
                           started_at="2026-11-29T10:00:00Z").wire()  # fmt: skip

    def current() -> dict[str, Any]:
        return {key: value for key, value in (k.md().get("status") or {}).items() if key != "kopf"}

    writer.write(k.md(), {**current(), "rollout": record})  # a real write: the older CRD prunes the record
    assert writer.known_pruned() == {"status.rollout"} and "rollout" not in current()
    now[0] += 600  # due: the status sent does not have it (a held Canary's), so a dry run probes it
    writer.write(k.md(), current())
    assert writer.known_pruned() == {"status.rollout"}  # the older CRD prunes it from the dry run's answer too

    install_crds(api_client, CRD_DIR)

    def probed_kept() -> bool:
        now[0] += 600
        writer.write(k.md(), current())
        return writer.known_pruned() == frozenset()

    wait_for(probed_kept, timeout=60, description="a dry-run probe finding status.rollout kept")
    assert "rollout" not in current()  # a dry run: nothing was stored
