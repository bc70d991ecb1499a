"""The Canary strategy on the real control plane: the operator (its own ServiceAccount, the chart's RBAC) verifies
a new revision beside the serving one: the candidate's Deployment and Service, the stable pods' mirror
ConfigMap, replica weights, status, Events, promotion, rollback on a failed criterion, and the manual promote /
abort annotations (one naming another revision is ignored, with an Event). kwok's pods are not
processes, so the pods' metrics come from a loopback endpoint this test runs (tests/integration/canary_operator
plants it; the reader's parsing and sums are the real ones)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelship.controller.conditions import rfc3339
from modelship.controller.podmetrics import serving_pods_selector
from modelship_dev import cluster as devcluster
from tests.chart.gitops import EXPECTED, SAMPLES, argocd_health, kstatus, sample_of
from tests.integration.cluster import CRD_DIR, ClusterInfo, apply_manifest, condition, install_crds, wait_for
from tests.integration.operator_harness import OperatorProcess, running_operator
from tests.integration.rollout import NEW_IMAGE, shadow_a_new_revision
from tests.integration.test_operator import (
    GROUP,
    PLURAL,
    VERSION,
    Cluster,
    md_doc,
)
from tests.support import skew as older
from tests.support.servers import loopback_http

CANARY = {
    "strategy": "Canary",
    "canary": {
        "shadow": {"percent": 20, "durationSeconds": 10},
        "steps": [{"weight": 50, "pauseSeconds": 10}],
        # p90: judged once each side has 50 requests in the phase (5 above the quantile)
        "analysis": {"minRequests": 20, "minAgreement": 0.95, "maxLatencyRatio": 2.0, "latencyQuantile": 0.9},
    },
}


class FakeMetrics:
    """What the serving pods' /metrics say, by revision: the stable pods' mirror counters and both latencies."""

    def __init__(self) -> None:
        self.stable = ""
        self.candidate = ""
        self.compared = 0
        self.agreed = 0
        self.candidate_requests = 0
        self.candidate_errors = 0
        self.reads: list[str] = []
        self.by_pod: dict[str, str] = {}
        """What a pod of that name answers instead of its revision's figures."""
        self.lock = threading.Lock()

    def text(self, rev: str) -> str:
        lines = ["# TYPE modelship_request_duration_seconds histogram"]
        with self.lock:
            if rev == self.stable:
                n, errors = 1000 + 10 * self.compared, 0  # the stable pods answer live traffic as it comes
                lines += [
                    "# TYPE modelship_mirror_requests_total counter",
                    f'modelship_mirror_requests_total{{candidate="{self.candidate}",outcome="compared"}} '
                    f"{self.compared}",
                    "# TYPE modelship_mirror_rows_total counter",
                    f'modelship_mirror_rows_total{{candidate="{self.candidate}",result="agree"}} {self.agreed}',
                    f'modelship_mirror_rows_total{{candidate="{self.candidate}",result="disagree"}} '
                    f"{self.compared - self.agreed}",
                ]
            else:
                n, errors = self.candidate_requests, self.candidate_errors
        lines += [
            f'modelship_request_duration_seconds_bucket{{model="digits",protocol="v2",le="0.001"}} {n // 2}',
            f'modelship_request_duration_seconds_bucket{{model="digits",protocol="v2",le="0.0025"}} {n}',
            f'modelship_request_duration_seconds_bucket{{model="digits",protocol="v2",le="+Inf"}} {n}',
            f'modelship_request_duration_seconds_count{{model="digits",protocol="v2"}} {n}',
            "# TYPE modelship_requests_total counter",
            f'modelship_requests_total{{model="digits",protocol="v2",code="200"}} {n - errors}',
            f'modelship_requests_total{{model="digits",protocol="v2",code="500"}} {errors}',
        ]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fake_metrics() -> Iterator[tuple[FakeMetrics, str]]:
    fake = FakeMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            _, rev, pod = self.path.split("/", 2)
            with fake.lock:
                fake.reads.append(pod)
                own = fake.by_pod.get(pod)
            body = (own if own is not None else fake.text(rev)).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with loopback_http(Handler) as url:
        yield fake, url


@pytest.fixture(scope="module")
def operator(api_client: client.ApiClient, fake_metrics: tuple[FakeMetrics, str]) -> Iterator[OperatorProcess]:
    env = {"MODELSHIP_TEST_POD_METRICS": fake_metrics[1]}
    with running_operator(api_client, env, module="tests.integration.canary_operator") as op:
        yield op


@pytest.fixture
def k(api_client: client.ApiClient, namespace: str, operator: OperatorProcess) -> Cluster:
    return Cluster(api_client, namespace)


@pytest.fixture
def metrics(fake_metrics: tuple[FakeMetrics, str]) -> FakeMetrics:
    fake = fake_metrics[0]
    with fake.lock:
        fake.compared = fake.agreed = fake.candidate_requests = fake.candidate_errors = 0
        fake.reads.clear()
        fake.by_pod.clear()
    return fake


def _first_revision_then_a_new_one(
    k: Cluster, metrics: FakeMetrics, rollout: dict[str, Any] = CANARY
) -> tuple[dict[str, Any], str, str]:
    doc = md_doc(rollout=rollout)
    k.apply(doc)
    first = k.wait_condition("Ready", "True", timeout=120)
    old = first["status"]["revision"]
    assert condition(first, "Verified")["reason"] == "NoStableRevision"
    assert "rollout" not in first["status"]
    shadow = shadow_a_new_revision(k, doc)  # same model, another optimization
    new = shadow["status"]["revision"]
    assert new != old and shadow["status"]["rollout"]["candidate"] == new
    with metrics.lock:
        metrics.stable, metrics.candidate = old, new
    return doc, old, new


def _gitops_sample(name: str, obj: dict[str, Any]) -> None:
    """Argo CD's health check and kstatus (Flux) say what they should of this live object: verifying is
    Progressing / InProgress, rolled back Degraded / Failed. MODELSHIP_UPDATE_SAMPLES=1 keeps it as a sample for
    tests/chart/test_gitops_docs.py."""
    assert (argocd_health(obj)["status"], kstatus(obj)) == EXPECTED[name]
    if os.environ.get("MODELSHIP_UPDATE_SAMPLES", "") == "1":
        (SAMPLES / f"{name}.json").write_text(json.dumps(sample_of(obj), indent=2, sort_keys=True) + "\n")


def _deployment(k: Cluster, name: str) -> Any:
    return k.apps.read_namespaced_deployment(name, k.ns)


def _offer(dep: Any) -> dict[str, Any]:
    """The mirror settings a Deployment's pods offer (modelship serve --mirror-offer)."""
    args = dep.spec.template.spec.containers[0].args
    doc: dict[str, Any] = json.loads(args[args.index("--mirror-offer") + 1])
    return doc


def _events(k: Cluster) -> list[Any]:
    return [e for e in k.core.list_namespaced_event(k.ns).items if e.involved_object.kind == "ModelDeployment"]


def _annotate(k: Cluster, **annotations: str) -> None:
    """What ``kubectl annotate md digits modelship.io/<key>=<value>`` does (a merge patch of the metadata)."""
    body = {"metadata": {"annotations": {f"modelship.io/{key}": v for key, v in annotations.items()}}}
    k.custom.patch_namespaced_custom_object(GROUP, VERSION, k.ns, PLURAL, "digits", body)


def _ignored(k: Cluster, annotation: str) -> list[Any]:
    """The Warning Events that say ``annotation`` (key=value) is ignored, once the operator has posted one."""
    return wait_for(lambda: [e for e in _events(k) if e.reason == "VerifiedOverrideIgnored"
                             and e.message.startswith(f"the annotation {annotation} is ignored")],
                    timeout=30, description=f"the Event saying {annotation} is ignored")  # fmt: skip


def test_a_good_revision_goes_shadow_canary_promoted(k: Cluster, metrics: FakeMetrics) -> None:
    _, old, new = _first_revision_then_a_new_one(k, metrics)
    # shadow: the candidate's pods outside the Service's selector, the stable pods told where to mirror
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    cand = _deployment(k, "digits-canary")
    labels = cand.spec.template.metadata.labels
    assert labels["modelship.io/revision"] == new and labels["app.kubernetes.io/name"] == "modelship-shadow"
    assert cand.spec.replicas == 1 and cand.spec.template.spec.containers[0].image == NEW_IMAGE
    svc = k.core.read_namespaced_service("digits", k.ns)
    assert not set(svc.spec.selector.items()) <= set(labels.items())
    canary_svc = k.core.read_namespaced_service("digits-canary", k.ns)
    ip = canary_svc.spec.cluster_ip
    offer = _offer(cand)  # the candidate offers to be mirrored to, at its own Service's address
    assert offer["url"] == f"http://{ip}:8080" and offer["percent"] == 20 and offer["candidate"] == new
    stable = _deployment(k, "digits")
    assert stable.spec.template.spec.containers[0].image.endswith("5e" * 32)  # the old image keeps serving
    args = stable.spec.template.spec.containers[0].args  # and its pods read the offer through that Service
    assert args[args.index("--mirror-config") + 1] == f"http://{ip}:9090/mirror"
    assert {p.name: p.port for p in canary_svc.spec.ports} == {"http": 8080, "metrics": 9090}
    # the analysis waits for minRequests (the latency ratio for 50 requests on each side), then the figures pass
    held = k.wait_md(lambda o: any(c["verdict"] == "Pending" for c in o["status"]["rollout"]["criteria"]),
                     what="criteria pending")  # fmt: skip
    assert held["status"]["rollout"]["phase"] == "Shadow" and held["status"]["phase"] == "Verifying"
    _gitops_sample("verifying", held)
    assert condition(held, "Reconciling")["status"] == "True" and condition(held, "Ready")["status"] == "False"
    with metrics.lock:  # 40 answers: enough for minRequests, not for the p90 of the candidate's latency
        metrics.compared = metrics.agreed = 20
        metrics.candidate_requests = 40
    wanted = "LatencyRatio has 40/50 requests on each side (p90 is judged once 5 requests of each side lie above it)"
    few = k.wait_md(lambda o: wanted in (o["status"]["rollout"].get("message") or ""),
                    what="the latency ratio waiting for its requests")  # fmt: skip
    ratio = next(c for c in few["status"]["rollout"]["criteria"] if c["name"] == "LatencyRatio")
    assert ratio["verdict"] == "Pending" and ratio["requests"] == 40 and ratio["required"] == 50
    assert few["status"]["rollout"]["phase"] == "Shadow"
    with metrics.lock:
        metrics.compared = metrics.agreed = 40
        metrics.candidate_requests = 60
    step = k.wait_md(lambda o: o["status"]["rollout"]["phase"] == "Canary", what="canary step 1", timeout=120)
    assert step["status"]["rollout"]["step"] == 1 and step["status"]["rollout"]["weight"] == 50
    # the step's weight from replicas: 2 stable + 2 candidate pods, all behind the one Service
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="step pods available")
    cand = _deployment(k, "digits-canary")
    assert cand.spec.replicas == 2 and cand.status.available_replicas == 2
    assert set(svc.spec.selector.items()) <= set(cand.spec.template.metadata.labels.items())
    # the step is judged on its own requests: the shadow's do not count again
    pending = k.wait_md(lambda o: o["status"]["rollout"].get("window", {}).get("phase", "").startswith("Canary/1/"),
                        what="the step's own analysis window")  # fmt: skip
    assert {c["verdict"] for c in pending["status"]["rollout"]["criteria"]} <= {"Pending", "Passed"}
    with metrics.lock:
        metrics.compared = metrics.agreed = 80
        metrics.candidate_requests = 120
    done = k.wait_condition("Ready", "True", timeout=120)
    s = done["status"]
    assert s["rollout"]["phase"] == "Promoted" and s["servingRevision"] == new and s["rollout"]["weight"] == 100
    assert condition(done, "Verified")["reason"] == "Promoted"
    assert [c["verdict"] for c in s["rollout"]["criteria"]] == ["Passed"] * 3
    assert _deployment(k, "digits").spec.template.spec.containers[0].image == NEW_IMAGE
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")
    wanted = {"VerifiedShadow", "VerifiedCanary", "VerifiedPromoting", "VerifiedPromoted"}
    # Events are posted after the status they explain, from the operator's event thread: wait for them
    wait_for(lambda: wanted <= {e.reason for e in _events(k)}, timeout=30, description="an Event for every step")
    assert any(pod.startswith("digits-canary-") for pod in metrics.reads)  # the candidate's pods were read
    assert old != new


def test_a_pod_someone_labelled_as_the_candidate_does_not_feed_the_analysis(
    k: Cluster, metrics: FakeMetrics
) -> None:
    """Anyone who can create a pod in the namespace can label one like the candidate's pods (here a copy of a real
    candidate pod's labels, made through the API server, Running and Ready on a node) and answer /metrics with
    figures that would decide the rollout (all errors: a rollback). Only the pods the candidate's Deployment made
    are read: the shadow passes on the candidate's own figures."""
    _, old, new = _first_revision_then_a_new_one(k, metrics)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    selector = f"{serving_pods_selector('digits')},modelship.io/revision={new}"
    real = k.core.list_namespaced_pod(k.ns, label_selector=selector).items[0]
    assert real.metadata.owner_references[0].name.startswith("digits-canary-")
    # its labels but the template hash (with it the candidate's ReplicaSet would adopt the pod, then delete it)
    labels = {key: v for key, v in real.metadata.labels.items() if key != "pod-template-hash"}
    forged = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "forged-candidate", "labels": labels},  # no owner reference
              "spec": {"containers": [{"name": "server", "image": "example.invalid/forged:1"}]}}  # fmt: skip
    with metrics.lock:  # what it answers: every request an error
        metrics.by_pod["forged-candidate"] = _all_errors(1000)
    k.core.create_namespaced_pod(k.ns, forged)
    wait_for(lambda: _ready_pod(k, "forged-candidate"), timeout=60, description="the forged pod Running and Ready")
    with metrics.lock:  # the candidate's own figures: a good shadow
        metrics.compared = metrics.agreed = 40
        metrics.candidate_requests = 60
    step = k.wait_md(lambda o: o["status"]["rollout"]["phase"] in ("Canary", "RolledBack"), what="the shadow's end",
                     timeout=120)  # fmt: skip
    rollout = step["status"]["rollout"]
    assert rollout["phase"] == "Canary", rollout.get("message")  # the forged pod read, its errors roll it back
    assert "Failed" not in {c["verdict"] for c in rollout["criteria"]}, rollout["criteria"]
    with metrics.lock:
        reads = list(metrics.reads)
    assert "forged-candidate" not in reads and any(p.startswith("digits-canary-") for p in reads)
    assert _ready_pod(k, "forged-candidate")  # it stood Ready beside the candidate all along
    assert old != new


def _all_errors(n: int) -> str:
    """A model server's /metrics whose ``n`` inference requests were all answered with a 500."""
    return "\n".join([
        "# TYPE modelship_request_duration_seconds histogram",
        f'modelship_request_duration_seconds_bucket{{model="digits",protocol="v2",le="0.001"}} {n}',
        f'modelship_request_duration_seconds_bucket{{model="digits",protocol="v2",le="+Inf"}} {n}',
        f'modelship_request_duration_seconds_count{{model="digits",protocol="v2"}} {n}',
        "# TYPE modelship_requests_total counter",
        f'modelship_requests_total{{model="digits",protocol="v2",code="500"}} {n}',
    ]) + "\n"  # fmt: skip


def _ready_pod(k: Cluster, name: str) -> bool:
    pod = k.core.read_namespaced_pod(name, k.ns)
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                 for c in pod.status.conditions or [])  # fmt: skip


def test_a_revision_without_traffic_is_inconclusive_and_rolled_back(k: Cluster, metrics: FakeMetrics) -> None:
    quick = {**CANARY, "canary": {**CANARY["canary"], "analysis": {**CANARY["canary"]["analysis"],
                                                                    "inconclusiveAfterSeconds": 10}}}  # fmt: skip
    _, old, new = _first_revision_then_a_new_one(k, metrics, quick)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    with metrics.lock:  # a trickle: fewer than minRequests (20) in the phase
        metrics.compared = metrics.agreed = metrics.candidate_requests = 5
    gone = k.wait_condition("Stalled", "True", reason="AnalysisInconclusive", timeout=120)
    s = gone["status"]
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["rollbackCause"] == "AnalysisInconclusive"
    assert s["servingRevision"] == old and s["lastFailure"]["reason"] == "AnalysisInconclusive"
    message = condition(gone, "Ready")["message"]  # two stable pods mirrored 5 each, the candidate answered 5
    assert "ErrorRate has 5/20 requests" in message and "Agreement has 10/20 requests" in message
    assert "LatencyRatio has 5/50 requests on each side (p90 is judged once 5 requests" in message
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")
    warnings = wait_for(lambda: [e for e in _events(k) if e.reason == "VerifiedRolledBack"], timeout=30,
                        description="the rollback's Event")  # fmt: skip
    assert warnings[0].type == "Warning" and "inconclusive" in warnings[0].message and new != old


def test_a_disagreeing_revision_is_rolled_back_and_the_stable_serves(k: Cluster, metrics: FakeMetrics) -> None:
    _, old, new = _first_revision_then_a_new_one(k, metrics)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    with metrics.lock:  # a model trained on another function: it agrees on a third of the rows (each stable pod)
        metrics.compared, metrics.agreed, metrics.candidate_requests = 30, 10, 30
    failed = k.wait_condition("Stalled", "True", reason="AnalysisFailed", timeout=120)
    s = failed["status"]
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["decision"] == "Rollback"
    agreement = next(c for c in s["rollout"]["criteria"] if c["name"] == "Agreement")
    assert agreement["verdict"] == "Failed" and agreement["observed"] == 0.3333 and agreement["requests"] == 60
    assert "Agreement 0.3333 over 60 requests is below the minimum 0.95" in condition(failed, "Ready")["message"]
    assert s["servingRevision"] == old and s["lastFailure"]["stage"] == "Verify"
    _gitops_sample("stalled-analysis-failed", failed)
    assert condition(failed, "Ready")["status"] == "False" and condition(failed, "Reconciling")["status"] == "False"
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")
    stable = _deployment(k, "digits")
    assert stable.spec.template.metadata.labels["modelship.io/revision"] == old
    assert stable.status.available_replicas == 2  # no candidate pod left to offer mirroring: none happens
    warnings = wait_for(lambda: [e for e in _events(k) if e.reason == "VerifiedRolledBack"], timeout=30,
                        description="the rollback's Event")  # fmt: skip
    assert warnings[0].type == "Warning" and "Agreement 0.3333" in warnings[0].message
    assert new != old


def test_a_promote_annotation_promotes_the_candidate_mid_phase(k: Cluster, metrics: FakeMetrics) -> None:
    _, old, new = _first_revision_then_a_new_one(k, metrics)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    with metrics.lock:  # the analysis has too few requests for a verdict: the shadow phase holds
        metrics.compared = metrics.agreed = metrics.candidate_requests = 5
    # an annotation naming another revision than the candidate (here the stable one) is ignored, with an Event
    _annotate(k, promote=old)
    noted = k.wait_md(lambda o: o["status"]["rollout"].get("ignoredOverrides") == [f"modelship.io/promote={old}"],
                      what="the stale annotation noted")  # fmt: skip
    # the look that saw it held the phase: too few requests for a verdict
    assert noted["status"]["rollout"]["phase"] == "Shadow" and noted["status"]["rollout"]["decision"] == "Wait"
    assert noted["status"]["servingRevision"] == old
    warning = _ignored(k, f"modelship.io/promote={old}")[0]
    assert warning.type == "Warning" and f"not the candidate {new}" in warning.message
    for n in (6, 7):  # two more looks at the phase (new figures in its status), the annotation still there
        with metrics.lock:
            metrics.compared = metrics.agreed = metrics.candidate_requests = n
        look = k.wait_md(lambda o, n=n: {c["requests"] for c in o["status"]["rollout"]["criteria"]} >= {n, 2 * n},
                         what=f"the look at {n} requests")  # fmt: skip
        assert look["status"]["rollout"]["phase"] == "Shadow"
        assert look["status"]["rollout"]["ignoredOverrides"] == [f"modelship.io/promote={old}"]
    assert len(_ignored(k, f"modelship.io/promote={old}")) == 1  # said once, not at every look
    # naming the candidate: promoted at once, the analysis skipped
    _annotate(k, promote=new)
    done = k.wait_condition("Ready", "True", timeout=120)
    s = done["status"]
    assert s["rollout"]["phase"] == "Promoted" and s["rollout"]["decision"] == "Promote"
    assert s["servingRevision"] == new and s["rollout"]["weight"] == 100 and s["rollout"]["mirrorPercent"] == 0
    assert condition(done, "Verified")["reason"] == "Promoted"
    assert (condition(done, "Stalled") or {}).get("status") != "True" and "rollbackCause" not in s["rollout"]
    stable = _deployment(k, "digits")  # the candidate gets every request: the stable Deployment runs it
    assert stable.spec.template.spec.containers[0].image == NEW_IMAGE
    assert stable.spec.template.metadata.labels["modelship.io/revision"] == new
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")
    events = wait_for(lambda: (lambda es: es if {"VerifiedPromoting", "VerifiedPromoted"} <= {e.reason for e in es}
                                          else None)(_events(k)),
                      timeout=30, description="the promotion's Events")  # fmt: skip
    promoting = next(e for e in events if e.reason == "VerifiedPromoting")
    assert f"promoted by the annotation modelship.io/promote={new}" in promoting.message
    assert "VerifiedCanary" not in {e.reason for e in events}  # no canary step ran
    assert len([e for e in events if e.reason == "VerifiedOverrideIgnored"]) == 1


def test_an_abort_annotation_rolls_back_and_the_stable_serves(k: Cluster, metrics: FakeMetrics) -> None:
    _, old, new = _first_revision_then_a_new_one(k, metrics)
    k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")
    with metrics.lock:  # a good shadow phase: on to the canary step, whose own figures then stay too few
        metrics.compared = metrics.agreed = 40
        metrics.candidate_requests = 60
    step = k.wait_md(lambda o: o["status"]["rollout"]["phase"] == "Canary"
                     and o["status"]["rollout"].get("phaseStartedAt") is not None,
                     what="canary step 1 with its pods available", timeout=120)  # fmt: skip
    assert step["status"]["rollout"]["weight"] == 50 and _deployment(k, "digits-canary").spec.replicas == 2
    # an abort of another revision is ignored: the step goes on
    _annotate(k, abort="r0000000000")
    noted = k.wait_md(lambda o: o["status"]["rollout"].get("ignoredOverrides") == ["modelship.io/abort=r0000000000"],
                      what="the stale annotation noted")  # fmt: skip
    assert noted["status"]["rollout"]["phase"] == "Canary" and noted["status"]["rollout"]["weight"] == 50
    assert "not the candidate" in _ignored(k, "modelship.io/abort=r0000000000")[0].message
    # naming the candidate: rolled back at once, though no criterion failed
    _annotate(k, abort=new)
    gone = k.wait_condition("Stalled", "True", reason="RolloutAborted", timeout=120)
    s = gone["status"]
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["rollbackCause"] == "Aborted"
    assert s["rollout"]["decision"] == "Rollback" and s["rollout"]["weight"] == 0 and s["rollout"]["mirrorPercent"] == 0
    assert "Failed" not in {c["verdict"] for c in s["rollout"]["criteria"]}
    assert f"aborted by the annotation modelship.io/abort={new}" in condition(gone, "Ready")["message"]
    assert condition(gone, "Ready")["status"] == "False" and condition(gone, "Reconciling")["status"] == "False"
    assert s["servingRevision"] == old and s["lastFailure"]["reason"] == "RolloutAborted"
    assert "ignoredOverrides" not in s["rollout"]  # the abort annotation names the candidate now
    # the stable revision serves everything: the candidate's pods leave the Service, the stable ones stay
    cand = wait_for(lambda: (lambda d: d if d.spec.replicas == 0 and not d.status.replicas else None)(
                        _deployment(k, "digits-canary")),
                    timeout=60, description="the candidate's pods gone")  # fmt: skip
    assert cand.spec.template.metadata.labels["modelship.io/revision"] == new
    stable = _deployment(k, "digits")
    assert stable.spec.template.metadata.labels["modelship.io/revision"] == old
    assert stable.spec.template.spec.containers[0].image.endswith("5e" * 32)
    assert stable.spec.replicas == 2 and stable.status.available_replicas == 2
    warnings = wait_for(lambda: [e for e in _events(k) if e.reason == "VerifiedRolledBack"], timeout=30,
                        description="the rollback's Event")  # fmt: skip
    assert warnings[0].type == "Warning" and "aborted by the annotation" in warnings[0].message


# A Canary rollout under an HPA: the autoscaler moves the stable Deployment's spec.replicas (through its scale
# subresource, as the HPA controller does) in the middle of a phase, and the new pods cannot start (a ResourceQuota
# that admits no more pods stands for a cluster out of capacity, or pods slow to load their model). The phase's
# clock must go on (the stable pods still serve at minReplicas), the candidate must follow the live count without
# restarting its phase, and the rollout must get promoted.

AUTO = {"enabled": True, "minReplicas": 2, "maxReplicas": 8}


def _hpa_scale(k: Cluster, replicas: int, name: str = "digits") -> None:
    """What the HPA controller does: write spec.replicas through the Deployment's scale subresource."""
    k.apps.patch_namespaced_deployment_scale(name, k.ns, {"spec": {"replicas": replicas}})


def _freeze_pods(k: Cluster) -> None:
    """A ResourceQuota admitting exactly the pods that run now: no new pod can be created until it is lifted."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-more-pods"},
             "spec": {"hard": {"pods": "100"}}}  # fmt: skip
    k.core.create_namespaced_resource_quota(k.ns, quota)

    def used() -> int | None:
        st = k.core.read_namespaced_resource_quota("no-more-pods", k.ns).status
        return int(st.used["pods"]) if st and st.used and "pods" in st.used else None

    n = wait_for(used, timeout=30, description="the quota controller counting the pods")
    k.core.patch_namespaced_resource_quota("no-more-pods", k.ns, {"spec": {"hard": {"pods": str(n)}}})
    wait_for(lambda: (k.core.read_namespaced_resource_quota("no-more-pods", k.ns).status.hard or {}).get("pods")
             == str(n) or None, timeout=30, description="the quota in force")  # fmt: skip


def _lift_freeze(k: Cluster) -> None:
    k.core.delete_namespaced_resource_quota("no-more-pods", k.ns)


def _blocked(k: Cluster, name: str, replicas: int) -> Any:
    """The Deployment ``name`` asked for ``replicas`` (the controller saw it) but runs fewer: its new pods are
    refused."""

    def probe() -> Any:
        dep = _deployment(k, name)
        st = dep.status
        return dep if (dep.spec.replicas == replicas and st.observed_generation == dep.metadata.generation
                       and (st.replicas or 0) < replicas) else None  # fmt: skip

    return wait_for(probe, timeout=30, description=f"{name} at {replicas} replicas, its new pods refused")


def _shadowing_under_an_hpa(k: Cluster, metrics: FakeMetrics) -> dict[str, Any]:
    """A Canary ModelDeployment under an HPA, Ready, then shadowing a new revision with the shadow's clock running
    (no requests: the shadow cannot pass while the test runs); its object."""
    doc = md_doc(rollout=CANARY, autoscaling=AUTO)
    k.apply(doc)
    old = k.wait_condition("Ready", "True", timeout=120)["status"]["revision"]
    new = shadow_a_new_revision(k, doc)["status"]["revision"]
    with metrics.lock:
        metrics.stable, metrics.candidate = old, new
    return k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="shadow pods available")


def test_an_hpa_scaling_the_stable_pods_mid_phase_keeps_the_phase_clock_and_promotes(
    k: Cluster, metrics: FakeMetrics
) -> None:
    s = _shadowing_under_an_hpa(k, metrics)
    new, started = s["status"]["rollout"]["candidate"], s["status"]["rollout"]["phaseStartedAt"]

    # mid-shadow the HPA scales the stable Deployment to 4; its 2 new pods cannot start
    _freeze_pods(k)
    _hpa_scale(k, 4)
    _blocked(k, "digits", 4)
    seen: set[str | None] = set()

    def shadow_seen(o: dict[str, Any]) -> bool:
        r = o["status"]["rollout"]
        if r["phase"] == "Shadow":
            seen.add(r.get("phaseStartedAt"))
        return bool(r["phase"] != "Shadow")

    with metrics.lock:  # figures that pass: the shadow ends once its 10 s hold ran, the scale or not
        metrics.compared = metrics.agreed = 40
        metrics.candidate_requests = 60
    step = k.wait_md(shadow_seen, what="the shadow passed while the HPA scales", timeout=60)
    assert seen == {started}, seen  # the clock never restarted
    assert step["status"]["rollout"]["phase"] == "Canary", step["status"]["rollout"]
    assert _deployment(k, "digits").status.available_replicas == 2  # it passed with minReplicas serving

    # the canary step: its pods (a new template, live) are a rollout: it starts once they all serve. The candidate
    # follows the live count the HPA set: 4 stable, so 4 candidate pods for 50%
    _lift_freeze(k)
    s = k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, what="the step's pods serve",
                  timeout=90)  # fmt: skip
    started = s["status"]["rollout"]["phaseStartedAt"]
    assert _deployment(k, "digits-canary").spec.replicas == 4 and s["status"]["rollout"]["weight"] == 50
    # the HPA scales to 6 and no new pod can start: the candidate is asked for 6 too (its share of the live
    # count), and the step's clock goes on: its 10 s hold runs out with the step waiting only for its own requests
    _freeze_pods(k)
    _hpa_scale(k, 6)
    _blocked(k, "digits", 6)
    _blocked(k, "digits-canary", 6)
    held = k.wait_md(lambda o: (o["status"]["rollout"].get("message") or "").startswith("canary step 1: ")
                     and " requests" in o["status"]["rollout"]["message"],
                     what="the step's hold run out at 6", timeout=30)  # fmt: skip
    rollout = held["status"]["rollout"]
    assert rollout["phaseStartedAt"] == started and rollout["weight"] == 50, rollout
    assert _deployment(k, "digits").status.available_replicas == 4
    with metrics.lock:
        metrics.compared = metrics.agreed = 80
        metrics.candidate_requests = 120
    promoting = k.wait_md(lambda o: o["status"]["rollout"]["phase"] != "Canary", what="the step passed", timeout=60)
    assert promoting["status"]["rollout"]["phase"] in ("Promoting", "Promoted"), promoting["status"]["rollout"]
    # promotion rolls the stable Deployment to the candidate: a rollout, which needs room for its pods
    _lift_freeze(k)
    _hpa_scale(k, 5)  # and the HPA moves again while it rolls
    done = k.wait_condition("Ready", "True", timeout=120)
    s = done["status"]
    assert s["rollout"]["phase"] == "Promoted" and s["servingRevision"] == new
    assert _deployment(k, "digits").spec.template.spec.containers[0].image == NEW_IMAGE
    k.wait_md(lambda o: _deployment(k, "digits-canary").spec.replicas == 0, what="the candidate's Deployment at 0")


@contextmanager
def _controller_manager_paused(cluster: ClusterInfo) -> Iterator[None]:
    """kube-controller-manager of the test cluster stopped (SIGSTOP) for the block: the Deployment controller sees
    nothing, so a Deployment's status stays behind its generation, as it does for the controller's lag on a busy
    cluster, for as long as the block lasts. It runs with no leader election (modelship_dev.cluster), so no lease
    can lapse while it is stopped."""
    if cluster.name == "external":
        pytest.skip("the control plane is not this test run's (MODELSHIP_KUBECONFIG): its processes are not ours")
    pids = devcluster.DevCluster(cluster.name).workdir / "clusters" / cluster.name / "pids"
    pid = int((pids / "kube-controller-manager.pid").read_text().strip())
    assert b"kube-controller-manager" in Path(f"/proc/{pid}/cmdline").read_bytes()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_rollout_restart_mid_phase_is_not_taken_for_the_rolled_out_template(
    k: Cluster, metrics: FakeMetrics, cluster: ClusterInfo
) -> None:
    """A `kubectl rollout restart` of the stable Deployment mid-shadow (under an HPA, whose writes the phase trusts
    before the controller has observed them) changes its template but not the ModelDeployment's generation: while
    the controller has not observed it, its status still says the old template is rolled out, and the phase must
    not take it for that: its clock restarts, and starts again on the restarted template once it is rolled out."""
    s = _shadowing_under_an_hpa(k, metrics)
    started, templates = s["status"]["rollout"]["phaseStartedAt"], s["status"]["rollout"]["phaseTemplates"]
    before = _deployment(k, "digits")
    assert before.status.observed_generation == before.metadata.generation
    # stamps have whole seconds: the restarted clock must be able to start in a later second than this one
    wait_for(lambda: rfc3339(datetime.now(UTC)) > started or None, timeout=5, description="a second past the start")

    restart = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": datetime.now(UTC).isoformat()}}}}}  # fmt: skip
    with _controller_manager_paused(cluster):
        k.apps.patch_namespaced_deployment("digits", k.ns, restart)
        # the operator looks (the Deployment's watch event) while the status still describes the old template
        held = k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is None,
                         what="the phase's clock stopped on the restart", timeout=45)  # fmt: skip
        lagging = _deployment(k, "digits")
        assert lagging.status.observed_generation < lagging.metadata.generation  # the controller never saw it
    assert held["status"]["rollout"]["phase"] == "Shadow"
    assert held["status"]["rollout"]["message"] == "waiting for the stable pods of shadow", held["status"]["rollout"]
    # the controller rolls the restarted template out: the clock starts again, on it
    again = k.wait_md(lambda o: o["status"]["rollout"].get("phaseStartedAt") is not None, timeout=90,
                      what="the shadow's clock started on the restarted template")  # fmt: skip
    rollout = again["status"]["rollout"]
    assert rollout["phase"] == "Shadow" and rollout["phaseStartedAt"] > started, rollout
    assert rollout["phaseTemplates"]["stable"] != templates["stable"]
    assert rollout["phaseTemplates"]["candidate"] == templates["candidate"]


def _ok_reconciles(op: OperatorProcess) -> float:
    return op.metric("modelship_reconciles_total", 'result="ok"')


def test_an_older_crd_that_prunes_phase_templates_keeps_the_phase_clock_through_an_hpa_scale(
    k: Cluster, metrics: FakeMetrics, cluster: ClusterInfo, api_client: client.ApiClient, operator: OperatorProcess
) -> None:
    """An installed CRD older than the operator drops status.rollout.phaseTemplates (Helm never upgrades crds/):
    an HPA scale the Deployment controller has not observed yet is trusted on the ModelDeployment's generation, as
    before the field, and the phase's clock goes on (requiring the templates, never there, restarted it at nearly
    every scale, and the phase never ended). Last in the module: the operator's memory of the pruned field goes
    with it; the current CRD is applied again when it ends."""
    apply_manifest(api_client, older.older_crd(status=(("rollout", "phaseTemplates"),), spec=()), force=True)
    try:
        started = _shadowing_under_an_hpa(k, metrics)["status"]["rollout"]["phaseStartedAt"]
        # the operator found the field pruned from its writes (its Warning Event names it)
        wait_for(lambda: [e for e in _events(k) if e.reason == "CRDOlderThanOperator"
                          and "status.rollout.phaseTemplates" in e.message] or None,
                 timeout=60, description="the Event naming the pruned phaseTemplates")  # fmt: skip
        assert "phaseTemplates" not in k.md()["status"]["rollout"]
        with _controller_manager_paused(cluster):
            before = _ok_reconciles(operator)
            _hpa_scale(k, 4)
            # looks of the operator after the scale (its watch event, the phase's requeue) at a lagging status
            wait_for(lambda: _ok_reconciles(operator) >= before + 3 or None, timeout=45,
                     description="three reconciles after the scale")  # fmt: skip
            lagging = _deployment(k, "digits")
            assert lagging.status.observed_generation < lagging.metadata.generation  # the controller never saw it
            rollout = k.md()["status"]["rollout"]
        assert (rollout["phase"], rollout.get("phaseStartedAt")) == ("Shadow", started), rollout
    finally:
        install_crds(api_client, CRD_DIR)
