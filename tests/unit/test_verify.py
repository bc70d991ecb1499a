"""The Canary strategy through the whole plan (pure): objects, weights, status, conditions and Events from the
first reconcile of a new revision to its promotion or rollback."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from modelship.controller.canary import Histogram, Samples
from modelship.controller.canary_trouble import FINAL, RETRY, RETRY_BY_SPEC, UNTOLD
from modelship.controller.conditions import parse_rfc3339, rfc3339
from modelship.controller.observe import DeploymentObservation, JobState, Observed, deployment_observation
from modelship.controller.phasewindow import PodFigures, PodReading, Readings
from modelship.controller.plan import Plan, plan
from modelship.controller.podhealth import ContainerHealth, PodHealth
from modelship.controller.stages.phase_pods import candidate_pods_wanted
from modelship.controller.stages.pod_causes import candidate_trouble
from modelship.resources.canary import candidate_template
from modelship.resources.revision import revision
from modelship.resources.serving import deployment as serving_deployment
from tests.support.endpoints import routed
from tests.unit.test_plan import CONFIG, NOW, cond, deployment, job, make_md, summary

CANARY = {
    "strategy": "Canary",
    "canary": {
        "shadow": {"percent": 20, "durationSeconds": 60},
        "steps": [{"weight": 50, "pauseSeconds": 30}],
        "analysis": {"minRequests": 50, "latencyQuantile": 0.9},
    },
}
OLD = "rold"
BOUNDS = (0.001, 0.01, float("inf"))


def samples(agreed: int = 100, n: int = 100) -> Samples:
    lat = Histogram(BOUNDS, (n, n, n))
    return Samples(mirrored=n, rows_agreed=agreed, rows_compared=n, candidate_requests=n, candidate_latency=lat,
                   stable_latency=Histogram(BOUNDS, (5 * n, 5 * n, 5 * n)), pods=3)  # fmt: skip


def md_with(status: dict[str, Any] | None = None, **annotations: str) -> Any:
    md = make_md(
        build=False,
        serving={"replicas": 2, "rollout": CANARY},
        status={"servingRevision": OLD} if status is None else status,
    )
    md.metadata.annotations.update(annotations)
    return md


def new_revision() -> tuple[Any, str, list[Any]]:
    """A spec with a new revision whose optimization succeeded: its ModelDeployment, revision and Jobs."""
    md = md_with()
    rev = revision(md.spec)
    return md, rev, [job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]


def by_name(p: Plan, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in p.apply if o["kind"] == kind and o["metadata"]["name"] == name)


def canary_obs(rev: str, replicas: int, live: bool) -> DeploymentObservation:
    return deployment(rev, CONFIG.images.serving, replicas=replicas, available=replicas, name="digits-canary",
                      live=live)  # fmt: skip


def args(p: Plan, name: str) -> list[str]:
    return list(by_name(p, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"])


def offer(p: Plan) -> dict[str, Any] | None:
    """The mirror settings the candidate's pods offer the stable ones (--mirror-offer), if any."""
    a = args(p, "digits-canary")
    return json.loads(a[a.index("--mirror-offer") + 1]) if "--mirror-offer" in a else None


def test_a_new_revision_goes_shadow_canary_promoted() -> None:
    md, rev, jobs = new_revision()
    stable = deployment(OLD, CONFIG.images.serving)
    # 1. the candidate's pods in the shadow phase: not selected by the Service; the stable keeps serving
    p1 = plan(md, Observed(jobs=jobs, deployment=stable), CONFIG, NOW)
    dep = by_name(p1, "Deployment", "digits")
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == OLD
    assert "--mirror-config" not in args(p1, "digits")  # the candidate's Service has no address yet
    cand = by_name(p1, "Deployment", "digits-canary")
    labels = cand["spec"]["template"]["metadata"]["labels"]
    assert labels["modelship.io/revision"] == rev and labels["app.kubernetes.io/name"] == "modelship-shadow"
    assert cand["spec"]["replicas"] == 1 and "--mirror-config" not in args(p1, "digits-canary")
    svc = by_name(p1, "Service", "digits")
    assert not set(svc["spec"]["selector"].items()) <= set(labels.items())  # the shadow is not behind the Service
    assert set(by_name(p1, "Service", "digits-canary")["spec"]["selector"].items()) <= set(labels.items())
    assert offer(p1) is None
    s1 = p1.status
    assert s1["phase"] == "Verifying" and s1["servingRevision"] == OLD
    assert s1["rollout"]["phase"] == "Shadow" and s1["rollout"]["candidate"] == rev and s1["rollout"]["stable"] == OLD
    assert cond(s1, "Verified")["reason"] == "Shadowing" and cond(s1, "Deployed")["reason"] == "Verifying"
    assert cond(s1, "Reconciling")["status"] == "True" and cond(s1, "Ready")["status"] == "False"
    assert p1.requeue_after == 5.0
    assert [e.reason for e in p1.events if e.reason.startswith("Verified")] == ["VerifiedShadow"]
    # 2. the shadow pods are up and the candidate's Service has an address: mirroring starts, the clock runs
    # (not before the candidate's Service lists its pod as a ready endpoint: the stable pods could not reach it)
    obs = Observed(jobs=jobs, deployment=stable, canary=canary_obs(rev, 1, False), canary_service_ip="10.96.0.9",
                   samples=samples(n=10))  # fmt: skip
    assert "phaseStartedAt" not in plan(md_with(s1), obs, CONFIG, NOW).status["rollout"]
    obs = Observed(**{**obs.__dict__, "canary_endpoints": routed((rev, 1), service="digits-canary")})
    p2 = plan(md_with(s1), obs, CONFIG, NOW)
    # the stable pods read what the candidate offers, through its Service's metrics port; it offers its own address
    assert args(p2, "digits")[-2:] == ["--mirror-config", "http://10.96.0.9:9090/mirror"]
    assert offer(p2) == {"url": "http://10.96.0.9:8080", "percent": 20, "candidate": rev, "comparison": "auto",
                         "rtol": 0.05, "atol": 0.01}  # fmt: skip
    ports = by_name(p2, "Service", "digits-canary")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", 8080), ("metrics", 9090)]
    r2 = p2.status["rollout"]
    assert r2["phaseStartedAt"] == "2026-11-26T12:00:00Z" and r2["decision"] == "Wait"
    assert [c["verdict"] for c in r2["criteria"]] == ["Pending"] * 3
    # 3. the shadow held its time with every criterion passing: canary step 1 at 50% (2 stable + 2 candidate)
    later = NOW + timedelta(seconds=61)
    p3 = plan(md_with(p2.status), Observed(**{**obs.__dict__, "samples": samples()}), CONFIG, later)
    r3 = p3.status["rollout"]
    assert (r3["phase"], r3["step"], r3["weight"]) == ("Canary", 1, 50)
    cand = by_name(p3, "Deployment", "digits-canary")
    assert cand["spec"]["replicas"] == 2
    assert cand["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "modelship-server"
    assert [c["observed"] for c in r3["criteria"]] == [0.0, 1.0, 1.0]
    assert any(e.reason == "VerifiedCanary" and "canary step 1 at 50%" in e.message for e in p3.events)
    # 4. the step's pods are live and the step held: promoting rolls the stable Deployment to the candidate
    obs4 = Observed(**{**obs.__dict__, "canary": canary_obs(rev, 2, True), "samples": samples(),
                       "endpoints": routed((OLD, 2), (rev, 2))})  # fmt: skip
    p4 = plan(md_with(p3.status), obs4, CONFIG, later + timedelta(seconds=1))
    p4 = plan(md_with(p4.status), obs4, CONFIG, later + timedelta(seconds=32))
    assert p4.status["rollout"]["phase"] == "Promoting"
    assert by_name(p4, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    assert by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] == 2  # serving until the stable rolled
    # 5. the stable Deployment runs the candidate: promoted, the candidate's Deployment at zero, Ready
    obs5 = Observed(**{**obs4.__dict__, "deployment": deployment(rev, CONFIG.images.serving), "samples": None,
                       "endpoints": routed((rev, 2))})  # fmt: skip
    p5 = plan(md_with(p4.status), obs5, CONFIG, later + timedelta(seconds=40))
    s5 = p5.status
    assert s5["rollout"]["phase"] == "Promoted" and s5["rollout"]["weight"] == 100
    assert s5["servingRevision"] == rev and s5["phase"] == "Ready"
    assert cond(s5, "Verified")["reason"] == "Promoted" and cond(s5, "Ready")["status"] == "True"
    assert by_name(p5, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    # and it stays so
    p6 = plan(md_with(s5), Observed(**{**obs5.__dict__, "canary": canary_obs(rev, 0, True)}), CONFIG, later)
    assert p6.status["phase"] == "Ready" and cond(p6.status, "Verified")["reason"] == "Promoted"


def test_a_disagreeing_candidate_is_rolled_back_and_the_resource_stalls_with_the_numbers() -> None:
    md, rev, jobs = new_revision()
    stable = deployment(OLD, CONFIG.images.serving)
    p1 = plan(md, Observed(jobs=jobs, deployment=stable), CONFIG, NOW)
    obs = Observed(jobs=jobs, deployment=stable, canary=canary_obs(rev, 1, False), canary_service_ip="10.96.0.9",
                   samples=samples(agreed=40))  # fmt: skip
    p2 = plan(md_with(p1.status), obs, CONFIG, NOW + timedelta(seconds=5))
    s = p2.status
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["decision"] == "Rollback"
    agreement = next(c for c in s["rollout"]["criteria"] if c["name"] == "Agreement")
    assert agreement == {"name": "Agreement", "observed": 0.4, "threshold": 0.99, "requests": 100, "required": 50,
                         "verdict": "Failed"}  # fmt: skip
    assert cond(s, "Stalled")["status"] == "True" and cond(s, "Stalled")["reason"] == "AnalysisFailed"
    assert "Agreement 0.4 over 100 requests is below the minimum 0.99" in cond(s, "Ready")["message"]
    assert s["servingRevision"] == OLD and s["phase"] == "Failed"
    assert s["lastFailure"]["stage"] == "Verify" and s["lastFailure"]["reason"] == "AnalysisFailed"
    assert by_name(p2, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    assert by_name(p2, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == OLD
    # no candidate pod left to offer mirroring: the stable pods mirror nothing
    assert any(e.reason == "VerifiedRolledBack" and e.type == "Warning" for e in p2.events)
    # it stays rolled back (no new analysis, no requeue), the stable serving, until the spec changes
    p3 = plan(md_with(s), Observed(**{**obs.__dict__, "samples": None}), CONFIG, NOW + timedelta(seconds=60))
    assert p3.status["rollout"] == s["rollout"] and cond(p3.status, "Stalled")["status"] == "True"
    assert not [e for e in p3.events if e.reason.startswith("Verified")]


def test_abort_and_promote_annotations_name_the_candidate() -> None:
    md, rev, jobs = new_revision()
    stable = deployment(OLD, CONFIG.images.serving)
    p1 = plan(md, Observed(jobs=jobs, deployment=stable), CONFIG, NOW)
    aborted = plan(md_with(p1.status, **{"modelship.io/abort": rev}), Observed(jobs=jobs, deployment=stable), CONFIG,
                   NOW)  # fmt: skip
    assert cond(aborted.status, "Stalled")["reason"] == "RolloutAborted"
    promoted = plan(md_with(aborted.status, **{"modelship.io/promote": rev}), Observed(jobs=jobs, deployment=stable),
                    CONFIG, NOW)  # fmt: skip
    assert promoted.status["rollout"]["phase"] == "Promoting"
    dep = by_name(promoted, "Deployment", "digits")
    assert dep["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    stale = plan(md_with(p1.status, **{"modelship.io/abort": "someotherrev"}), Observed(jobs=jobs, deployment=stable),
                 CONFIG, NOW)  # fmt: skip
    assert stale.status["rollout"]["phase"] == "Shadow"


def test_an_override_naming_another_revision_is_ignored_with_one_warning() -> None:
    md, rev, jobs = new_revision()
    obs = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving))
    p1 = plan(md, obs, CONFIG, NOW)
    stale = {"modelship.io/abort": OLD, "modelship.io/promote": "r" + "9" * 12}
    p2 = plan(md_with(p1.status, **stale), obs, CONFIG, NOW + timedelta(seconds=5))
    ro = p2.status["rollout"]
    assert ro["phase"] == "Shadow" and cond(p2.status, "Stalled")["status"] != "True"
    assert ro["ignoredOverrides"] == ["modelship.io/promote=r999999999999", f"modelship.io/abort={OLD}"]
    warnings = [e for e in p2.events if e.reason == "VerifiedOverrideIgnored"]
    assert [e.type for e in warnings] == ["Warning", "Warning"]
    assert all(f"not the candidate {rev}" in e.message for e in warnings)
    # noted once: the next looks post nothing about them while they stay
    p3 = plan(md_with(p2.status, **stale), obs, CONFIG, NOW + timedelta(seconds=10))
    assert p3.status["rollout"]["ignoredOverrides"] == ro["ignoredOverrides"]
    assert not [e for e in p3.events if e.reason == "VerifiedOverrideIgnored"]
    # one changed: only it is noted; both gone: nothing is ignored any more
    p4 = plan(md_with(p3.status, **{**stale, "modelship.io/abort": "r" + "8" * 12}), obs, CONFIG,
              NOW + timedelta(seconds=15))  # fmt: skip
    assert [e.message.split(" is ignored")[0] for e in p4.events if e.reason == "VerifiedOverrideIgnored"] == [
        "the annotation modelship.io/abort=r888888888888"
    ]
    p5 = plan(md_with(p4.status), obs, CONFIG, NOW + timedelta(seconds=20))
    assert "ignoredOverrides" not in p5.status["rollout"] and p5.status["rollout"]["phase"] == "Shadow"


def test_the_first_revision_is_served_at_once_and_other_strategies_are_untouched() -> None:
    md = md_with(status={})
    rev = revision(md.spec)
    p = plan(md, Observed(jobs=[job("optimizer", rev, JobState.SUCCEEDED, msg=summary())]), CONFIG, NOW)
    assert by_name(p, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == rev
    assert not [o for o in p.apply if o["metadata"]["name"] == "digits-canary" and o["kind"] == "Deployment"]
    assert cond(p.status, "Verified")["reason"] == "NoStableRevision" and "rollout" not in p.status
    plain = make_md(build=False, status={"servingRevision": OLD})
    p2 = plan(plain, Observed(jobs=[job("optimizer", revision(plain.spec), JobState.SUCCEEDED, msg=summary())],
                              deployment=deployment(OLD, CONFIG.images.serving)), CONFIG, NOW)  # fmt: skip
    assert {o["kind"] for o in p2.apply} == {"Deployment", "Service", "PodDisruptionBudget"}
    assert "Verified" not in [c["type"] for c in p2.status["conditions"]]


def readings(cand_requests: float, compared: float, agreed: float, cand_errors: float = 0) -> Readings:
    """The pods' own cumulative counters (no Prometheus): one stable pod mirroring, one candidate pod."""
    lat = Histogram(BOUNDS, (cand_requests, cand_requests, cand_requests))
    created = NOW - timedelta(hours=1)
    return Readings((
        PodReading("digits-a", False, created, PodFigures(mirrored=compared, rows_agreed=agreed,
                   rows_disagreed=compared - agreed, latency=Histogram(BOUNDS, (5 * compared,) * 3))),
        PodReading("digits-canary-a", True, created, PodFigures(requests=cand_requests, errors=cand_errors,
                   latency=lat)),
    ))  # fmt: skip


def test_the_pods_figures_are_judged_over_the_phase_window_kept_in_status() -> None:
    md, rev, jobs = new_revision()
    base = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving), canary=canary_obs(rev, 1, False),
                    canary_service_ip="10.96.0.9",
                    canary_endpoints=routed((rev, 1), service="digits-canary"))  # fmt: skip
    s1 = plan(md, Observed(jobs=jobs, deployment=base.deployment), CONFIG, NOW).status
    # the candidate's pods already answered 1000 requests, 100 of them 5xx, and disagreed on 500 rows (e.g. an
    # earlier rollout of the same revision): none of it is this phase's
    old = readings(1000, 600, 100, cand_errors=100)
    s2 = plan(md_with(s1), Observed(**{**base.__dict__, "readings": old}), CONFIG, NOW).status
    w = s2["rollout"]["window"]
    assert s2["rollout"]["source"] == "Pods" and w["phase"].startswith("Shadow/0/") and w["candidate"]["requests"] == 0
    assert [p["pod"] for p in w["pods"]] == ["digits-a", "digits-canary-a"]
    assert [c["verdict"] for c in s2["rollout"]["criteria"]] == ["Pending"] * 3
    t = NOW + timedelta(seconds=61)
    new = readings(1200, 800, 300, cand_errors=100)  # 200 requests, 0 errors; 200 rows all agreeing
    p3 = plan(md_with(s2), Observed(**{**base.__dict__, "readings": new}), CONFIG, t)
    r3 = p3.status["rollout"]
    assert (r3["phase"], r3["step"]) == ("Canary", 1), r3["message"]
    assert [(c["name"], c["observed"], c["requests"]) for c in r3["criteria"]] == [
        ("ErrorRate", 0.0, 200), ("LatencyRatio", 1.0, 200), ("Agreement", 1.0, 200)]  # fmt: skip
    assert r3["window"]["phase"].startswith("Canary/1/") and r3["window"]["candidate"]["requests"] == 0


def test_a_phase_without_traffic_is_inconclusive_stalled_with_an_event() -> None:
    md, rev, jobs = new_revision()
    obs = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving), canary=canary_obs(rev, 1, False),
                   canary_service_ip="10.96.0.9", readings=readings(3, 2, 2),
                   canary_endpoints=routed((rev, 1), service="digits-canary"))  # fmt: skip
    s1 = plan(md, Observed(jobs=jobs, deployment=obs.deployment), CONFIG, NOW).status
    s2 = plan(md_with(s1), obs, CONFIG, NOW).status
    s3 = plan(md_with(s2), Observed(**{**obs.__dict__, "readings": readings(10, 6, 6)}), CONFIG,
              NOW + timedelta(seconds=300)).status  # fmt: skip
    assert s3["rollout"]["phase"] == "Shadow" and cond(s3, "Verified")["reason"] == "Shadowing"
    p4 = plan(md_with(s3), Observed(**{**obs.__dict__, "readings": readings(12, 8, 8)}), CONFIG,
              NOW + timedelta(seconds=660))  # fmt: skip
    s4 = p4.status
    r = s4["rollout"]
    assert (r["phase"], r["rollbackCause"]) == ("RolledBack", "AnalysisInconclusive") and "window" not in r
    assert cond(s4, "Stalled")["status"] == "True" and cond(s4, "Stalled")["reason"] == "AnalysisInconclusive"
    assert "Agreement has 6/50 requests" in cond(s4, "Ready")["message"]
    assert s4["servingRevision"] == OLD and s4["lastFailure"]["reason"] == "AnalysisInconclusive"
    assert by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    assert any(e.reason == "VerifiedRolledBack" and e.type == "Warning" and "inconclusive" in e.message
               for e in p4.events)  # fmt: skip


def test_unreadable_prometheus_figures_are_a_readable_condition() -> None:
    md, rev, jobs = new_revision()
    down = Samples(error="Prometheus at http://prom:9090: HTTP 503: service unavailable")
    obs = Observed(jobs=jobs, deployment=deployment(OLD, CONFIG.images.serving), canary=canary_obs(rev, 1, False),
                   canary_service_ip="10.96.0.9", samples=down,
                   canary_endpoints=routed((rev, 1), service="digits-canary"))  # fmt: skip
    s1 = plan(md, Observed(jobs=jobs, deployment=obs.deployment), CONFIG, NOW).status
    s2 = plan(md_with(s1), obs, CONFIG, NOW + timedelta(seconds=5)).status
    v = cond(s2, "Verified")
    assert v["reason"] == "AnalysisUnavailable" and "HTTP 503: service unavailable" in v["message"]
    assert s2["rollout"]["phase"] == "Shadow" and s2["rollout"]["source"] == "Prometheus"
    assert cond(s2, "Stalled")["status"] == "False" and s2["servingRevision"] == OLD


def crash_looping_candidate(rev: str) -> tuple[DeploymentObservation, tuple[PodHealth, ...]]:
    """The candidate's Deployment, its one pod OOMKilled loading the model and in the kubelet's back-off."""
    dep = canary_obs(rev, 1, False)
    dep = replace(dep, available_replicas=0, ready_replicas=0,
                  progress_message='ReplicaSet "digits-canary-abc12" is progressing.')  # fmt: skip
    oom = ContainerHealth("server", waiting="CrashLoopBackOff", restarts=4,
                          terminated=("OOMKilled", 137, "std::bad_alloc"))  # fmt: skip
    return dep, (PodHealth("digits-canary-abc12-x", rev, (oom,), template_hash="abc12"),)


def crash_looping_rollout() -> tuple[Any, Observed, Plan]:
    """A new revision's rollout whose candidate crash-loops, at its first look that sees it: the ModelDeployment,
    what is observed (its stable Deployment, the candidate's and its pods) and the plan of that look."""
    md, rev, jobs = new_revision()
    stable = deployment(OLD, CONFIG.images.serving)
    p1 = plan(md, Observed(jobs=jobs, deployment=stable), CONFIG, NOW)
    dep, pods = crash_looping_candidate(rev)
    obs = Observed(jobs=jobs, deployment=stable, canary=dep, canary_service_ip="10.96.0.9", canary_pods=pods)
    # its Deployment runs the template the operator applied (the pass before, with the mirror offer)
    obs = runs_applied(obs, plan(md_with(p1.status), obs, CONFIG, NOW + timedelta(seconds=4)))
    return md, obs, plan(md_with(p1.status), obs, CONFIG, NOW + timedelta(seconds=5))


def applied_template(p: Plan) -> str:
    """The digest of the candidate's pod template the plan applies (its modelship.io/template annotation)."""
    return str(by_name(p, "Deployment", "digits-canary")["metadata"]["annotations"]["modelship.io/template"])


def runs_applied(obs: Observed, p: Plan, **kw: Any) -> Observed:
    """``obs`` with the candidate's Deployment running the pod template ``p`` applied (``kw``: more of its
    fields)."""
    assert obs.canary is not None
    return replace(obs, canary=replace(obs.canary, template=applied_template(p), **kw))


def with_generation(md: Any, generation: int) -> Any:
    return md.model_copy(update={"metadata": md.metadata.model_copy(update={"generation": generation})})


def test_a_crash_looping_candidate_is_told_while_it_waits_then_rolled_back_with_the_cause() -> None:
    md, obs, p2 = crash_looping_rollout()
    dep = obs.canary
    assert dep is not None
    r = p2.status["rollout"]
    told = ("pod digits-canary-abc12-x: container server crash-looping (CrashLoopBackOff), last terminated OOMKilled "
            "(exit code 137): std::bad_alloc")  # fmt: skip
    assert r["phase"] == "Shadow" and r["message"].startswith(f"waiting for the candidate's pods of shadow: {told}")
    assert cond(p2.status, "Stalled")["status"] == "False" and told in cond(p2.status, "Verified")["message"]
    # the pods keep crash-looping for progressDeadlineSeconds (default 600): rolled back
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    p3 = plan(md_with(p2.status), obs, CONFIG, NOW + timedelta(seconds=5 + deadline))
    s = p3.status
    assert s["rollout"]["phase"] == "RolledBack" and s["rollout"]["rollbackCause"] == "CandidateCrashLoop"
    verified = cond(s, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "CandidateCrashLoop") and told in verified["message"]
    assert verified["message"].endswith(f"revision {OLD} keeps serving all traffic")
    assert cond(s, "Stalled")["reason"] == "CandidateCrashLoop" and s["servingRevision"] == OLD
    assert s["lastFailure"]["stage"] == "Verify" and s["lastFailure"]["reason"] == "CandidateCrashLoop"
    assert by_name(p3, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    assert by_name(p3, "Deployment", "digits")["spec"]["template"]["metadata"]["labels"]["modelship.io/revision"] == OLD
    assert [e.type for e in p3.events if e.reason == "VerifiedRolledBack"] == ["Warning"]
    # its Deployment's controller gives up first: rolled back at once, named the same way
    exceeded = replace(dep, progress_deadline_exceeded=True)
    p4 = plan(md_with(p2.status), Observed(**{**obs.__dict__, "canary": exceeded}), CONFIG, NOW + timedelta(seconds=6))
    assert p4.status["rollout"]["rollbackCause"] == "CandidateCrashLoop"


def test_candidate_pods_are_read_while_it_is_short_or_was_failing() -> None:
    _, rev, _ = new_revision()
    md = md_with({"servingRevision": OLD, "rollout": {"candidate": rev, "stable": OLD, "phase": "Shadow",
                                                      "startedAt": "2026-11-28T12:00:00Z"}})  # fmt: skip
    dep, _ = crash_looping_candidate(rev)
    assert candidate_pods_wanted(md, dep)
    full = canary_obs(rev, 1, False)
    assert not candidate_pods_wanted(md, full) and not candidate_pods_wanted(md, replace(full, replicas=0))
    failing = {"servingRevision": OLD, "rollout": {"candidate": rev, "stable": OLD, "phase": "Shadow",
                                                   "startedAt": "2026-11-28T12:00:00Z",
                                                   "candidateFailingSince": "2026-11-28T12:00:00Z"}}  # fmt: skip
    assert candidate_pods_wanted(md_with(failing), full)  # a flap's ready moment keeps them read


def test_candidate_pods_are_read_only_while_the_spec_s_revision_is_analyzed() -> None:
    _, rev, _ = new_revision()
    dep, _ = crash_looping_candidate(rev)
    rollout = {"candidate": rev, "stable": OLD, "phase": "Shadow", "startedAt": "2026-11-28T12:00:00Z"}
    assert candidate_pods_wanted(md_with({"servingRevision": OLD, "rollout": rollout}), dep)
    for other in ({"phase": "RolledBack"}, {"phase": "Promoting"}, {"phase": "Promoted"}, {"candidate": "rother"},
                  {"candidate": "rother", "candidateFailingSince": "2026-11-28T12:00:00Z"}):  # fmt: skip
        assert not candidate_pods_wanted(md_with({"servingRevision": OLD, "rollout": {**rollout, **other}}), dep)


def test_one_restart_then_ready_beside_a_pod_still_starting_is_no_crash_loop() -> None:
    md, rev, _ = new_revision()
    dep = replace(canary_obs(rev, 2, False), available_replicas=1, ready_replicas=1,
                  progress_message='ReplicaSet "digits-canary-abc12" is progressing.')  # fmt: skip
    once = ContainerHealth("server", restarts=1, running_since="2026-11-28T11:59:00Z",
                           terminated=("OOMKilled", 137, ""))  # fmt: skip
    starting = ContainerHealth("server", waiting="ContainerCreating")
    pods = (PodHealth("digits-canary-abc12-a", rev, (once,), template_hash="abc12", ready=True),
            PodHealth("digits-canary-abc12-b", rev, (starting,), template_hash="abc12"))  # fmt: skip
    trouble = candidate_trouble(md, rev, dep, pods, NOW)
    assert trouble is not None and not trouble.crash_loop and trouble.recovering
    # the same container not Ready (it crashed again, or its pod is not ready yet): a crash loop
    down = (replace(pods[0], ready=False), pods[1])
    looping = candidate_trouble(md, rev, dep, down, NOW)
    assert looping is not None and looping.crash_loop and not looping.recovering


def test_a_spec_change_after_a_rollback_for_the_candidate_s_pods_starts_its_revision_anew() -> None:
    md, obs, p2 = crash_looping_rollout()
    rev, jobs, stable = revision(md.spec), obs.jobs, obs.deployment
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    p3 = plan(md_with(p2.status), obs, CONFIG, NOW + timedelta(seconds=5 + deadline))
    r = p3.status["rollout"]
    assert r["phase"] == "RolledBack" and r["rolledBackGeneration"] == md.metadata.generation
    assert r["rolledBackTemplate"] == candidate_template(md, rev, CONFIG, None, None)
    assert f"{RETRY}; revision {OLD} keeps serving all traffic" in cond(p3.status, "Verified")["message"]
    later = NOW + timedelta(seconds=10 + deadline)
    # the same spec: final
    same = plan(md_with(p3.status), obs, CONFIG, later)
    assert same.status["rollout"]["phase"] == "RolledBack" and by_name(same, "Deployment", "digits-canary")[
        "spec"]["replicas"] == 0  # fmt: skip
    # the memory limit raised, as the message told: a new generation, the same revision, a new rollout
    fixed = md_with(p3.status)
    fixed.spec.serving.resources.limits["memory"] = "4Gi"
    fixed = fixed.model_copy(update={"metadata": fixed.metadata.model_copy(update={"generation": 5})})
    assert revision(fixed.spec) == rev
    zero = replace(canary_obs(rev, 0, False), name="digits-canary")
    p4 = plan(fixed, Observed(jobs=jobs, deployment=stable, canary=zero, canary_service_ip="10.96.0.9"), CONFIG,
              later)  # fmt: skip
    r4 = p4.status["rollout"]
    assert (r4["phase"], r4["candidate"], r4.get("rolledBackTemplate")) == ("Shadow", rev, None)
    assert by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] >= 1
    assert cond(p4.status, "Stalled")["status"] == "False"
    # an analysis rollback stays final for its revision, whatever the spec
    failed = {**p3.status, "rollout": {**r, "rollbackCause": "AnalysisFailed", "rolledBackTemplate": None}}
    again = md_with(failed)
    again = again.model_copy(update={"metadata": again.metadata.model_copy(update={"generation": 5})})
    p5 = plan(again, Observed(jobs=jobs, deployment=stable, canary=zero, canary_service_ip="10.96.0.9"), CONFIG, later)
    assert p5.status["rollout"]["phase"] == "RolledBack"


def test_a_look_at_a_new_spec_never_judges_the_pods_of_the_template_before_it() -> None:
    # review18: the first pass of generation G+1 reads the candidate's pods before it applies anything; they run
    # G's template, crash-looping past the deadline: no rollback is recorded for the new template, which is tried
    md, obs, p2 = crash_looping_rollout()
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    past = NOW + timedelta(seconds=10 + deadline)
    fixed = with_generation(md_with(p2.status), 5)
    fixed.spec.serving.resources.limits["memory"] = "4Gi"
    p3 = plan(fixed, obs, CONFIG, past)
    r3 = p3.status["rollout"]
    assert r3["phase"] == "Shadow" and r3.get("candidateFailingSince") is None, r3
    assert cond(p3.status, "Stalled")["status"] == "False" and "rolledBackTemplate" not in r3
    new_template = applied_template(p3)
    assert obs.canary is not None and new_template != obs.canary.template  # this pass applies the fix
    # its Deployment has the new template, its controller not caught up yet: its pods are not judged either
    lagging = runs_applied(obs, p3, generation=3, observed_generation=2)
    p4 = plan(md_with(p3.status).model_copy(update={"metadata": fixed.metadata, "spec": fixed.spec}), lagging,
              CONFIG, past + timedelta(seconds=5))  # fmt: skip
    assert p4.status["rollout"]["phase"] == "Shadow" and p4.status["rollout"].get("candidateFailingSince") is None
    # the new template's pods crash too: their own clock starts, the rollback comes after the deadline, for them
    caught = runs_applied(obs, p3)
    fixed4 = md_with(p4.status).model_copy(update={"metadata": fixed.metadata, "spec": fixed.spec})
    p5 = plan(fixed4, caught, CONFIG, past + timedelta(seconds=10))
    r5 = p5.status["rollout"]
    assert r5["phase"] == "Shadow" and r5["candidateFailingSince"] == rfc3339(past + timedelta(seconds=10))
    fixed5 = md_with(p5.status).model_copy(update={"metadata": fixed.metadata, "spec": fixed.spec})
    p6 = plan(fixed5, caught, CONFIG, past + timedelta(seconds=10 + deadline))
    r6 = p6.status["rollout"]
    assert r6["phase"] == "RolledBack" and r6["rolledBackTemplate"] != p2.status["rollout"].get("rolledBackTemplate")


def test_the_crash_loop_clock_is_kept_while_the_candidate_s_deployment_only_scales() -> None:
    md, obs, p2 = crash_looping_rollout()
    since = p2.status["rollout"]["candidateFailingSince"]
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    # a count changed (its generation ahead of what its controller observed), the template the same: told, not
    # judged, the clock kept
    scaling = runs_applied(obs, p2, generation=3, observed_generation=2)
    p3 = plan(md_with(p2.status), scaling, CONFIG, NOW + timedelta(seconds=10 + deadline))
    r3 = p3.status["rollout"]
    assert r3["phase"] == "Shadow" and r3["candidateFailingSince"] == since and "crash-looping" in r3["message"]
    p4 = plan(md_with(p3.status), obs, CONFIG, NOW + timedelta(seconds=11 + deadline))
    assert p4.status["rollout"]["rollbackCause"] == "CandidateCrashLoop"


def rolled_back() -> tuple[Any, Observed, Plan]:
    """The crash-looping candidate rolled back past the deadline: the ModelDeployment, what is observed, the plan."""
    md, obs, p2 = crash_looping_rollout()
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    p3 = plan(md_with(p2.status), obs, CONFIG, NOW + timedelta(seconds=5 + deadline))
    assert p3.status["rollout"]["phase"] == "RolledBack"
    return md, obs, p3


def test_a_scale_or_a_re_apply_after_a_rollback_for_the_candidate_s_pods_does_not_try_it_again() -> None:
    md, obs, p3 = rolled_back()
    later = NOW + timedelta(hours=1)
    zero = replace(canary_obs(revision(md.spec), 0, False), name="digits-canary")
    quiet = Observed(jobs=obs.jobs, deployment=obs.deployment, canary=zero, canary_service_ip="10.96.0.9")
    # `kubectl scale md`, or an HPA/KEDA writing /scale: a new generation, the same pod template
    base = md_with(p3.status)
    scaled = with_generation(base.model_copy(update={"spec": base.spec.model_copy(
        update={"serving": base.spec.serving.model_copy(update={"replicas": 3})})}), 5)  # fmt: skip
    for again in (scaled, with_generation(md_with(p3.status), 6), md_with(p3.status)):
        p = plan(again, quiet, CONFIG, later)
        assert p.status["rollout"]["phase"] == "RolledBack", p.status["rollout"]
        assert by_name(p, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    # a change of the candidate's pods (an env of theirs: a pod annotation) tries it again
    annotated = with_generation(md_with(p3.status), 7)
    annotated.spec.serving.pod_annotations["team"] = "ml"
    assert plan(annotated, quiet, CONFIG, later).status["rollout"]["phase"] == "Shadow"


def test_a_rollback_whose_record_an_older_crd_prunes_says_it_is_final() -> None:
    md, obs, p2 = crash_looping_rollout()
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    older = replace(obs, pruned_status=frozenset({"status.rollout.rolledBackTemplate"}))
    p3 = plan(md_with(p2.status), older, CONFIG, NOW + timedelta(seconds=5 + deadline))
    message = cond(p3.status, "Verified")["message"]
    assert p3.status["rollout"]["phase"] == "RolledBack" and "try the revision again" not in message
    assert "status.rollout.rolledBackTemplate" in message and "final" in message
    kept = plan(md_with(p2.status), obs, CONFIG, NOW + timedelta(seconds=5 + deadline))
    assert "to try the revision again" in cond(kept.status, "Verified")["message"]


def quiet(md: Any, obs: Observed) -> Observed:
    """What is observed after the rollback: the candidate's Deployment at zero, no pods of it."""
    zero = replace(canary_obs(revision(md.spec), 0, False), name="digits-canary")
    return Observed(jobs=obs.jobs, deployment=obs.deployment, canary=zero, canary_service_ip="10.96.0.9")


def without(status: dict[str, Any], *fields: str, message: str | None = None) -> dict[str, Any]:
    """``status`` with the rollout record's ``fields`` dropped (as an older CRD prunes them), and another message."""
    rollout = {k: v for k, v in status["rollout"].items() if k not in fields}
    return {**status, "rollout": {**rollout, **({"message": message} if message is not None else {})}}


PRUNED = frozenset({"status.rollout.rolledBackTemplate", "status.rollout.rolledBackGeneration"})


def test_a_rollback_whose_own_write_was_pruned_says_at_the_next_look_that_it_is_final() -> None:
    # review20 1: the rollback's write is the first to send rolledBackTemplate; an older CRD prunes it there and the
    # operator learns so only then (and again after each restart): the message said how to retry, and no change of
    # the spec ever did
    md, obs, p3 = rolled_back()
    assert RETRY in cond(p3.status, "Verified")["message"]
    older = replace(quiet(md, obs), pruned_status=PRUNED)
    later = NOW + timedelta(hours=1)
    p4 = plan(md_with(without(p3.status, "rolledBackTemplate", "rolledBackGeneration")), older, CONFIG, later)
    r4 = p4.status["rollout"]
    assert r4["phase"] == "RolledBack" and r4.get("rolledBackTemplate") is None, r4
    assert r4["message"].endswith(f"; {FINAL}; revision {OLD} keeps serving all traffic"), r4["message"]
    assert RETRY not in r4["message"] and FINAL in cond(p4.status, "Verified")["message"]
    # told once: the next look leaves the record and the condition as they are
    p5 = plan(md_with(p4.status), older, CONFIG, later + timedelta(minutes=5))
    assert p5.status["rollout"] == r4 and cond(p5.status, "Verified") == cond(p4.status, "Verified")
    # and a change of the spec does not try it again (nothing tells which template was judged)
    fixed = with_generation(md_with(p4.status), 9)
    fixed.spec.serving.resources.limits["memory"] = "4Gi"
    assert plan(fixed, older, CONFIG, later).status["rollout"]["phase"] == "RolledBack"


def test_a_rollback_record_without_its_template_is_filled_in_once_while_the_spec_is_the_judged_one() -> None:
    # the CRD keeps rolledBackTemplate now (applied after the rollback's write was pruned): the spec is still the
    # generation the rollback judged, so this pass's render is the template its pods ran
    md, obs, p3 = rolled_back()
    judged = p3.status["rollout"]["rolledBackTemplate"]
    later = NOW + timedelta(hours=1)
    bare = without(p3.status, "rolledBackTemplate", message=p3.status["rollout"]["message"].replace(RETRY, FINAL))
    p4 = plan(md_with(bare), quiet(md, obs), CONFIG, later)
    r4 = p4.status["rollout"]
    assert (r4["phase"], r4["rolledBackTemplate"]) == ("RolledBack", judged), r4
    assert r4["message"].endswith(f"; {RETRY}; revision {OLD} keeps serving all traffic") and FINAL not in r4["message"]
    p5 = plan(md_with(p4.status), quiet(md, obs), CONFIG, later + timedelta(minutes=5))
    assert p5.status["rollout"] == r4  # one write
    fixed = with_generation(md_with(p4.status), 9)
    fixed.spec.serving.resources.limits["memory"] = "4Gi"
    assert plan(fixed, quiet(md, obs), CONFIG, later).status["rollout"]["phase"] == "Shadow"


def test_a_rollback_record_without_its_template_stays_final_when_the_judged_spec_cannot_be_told() -> None:
    md, obs, p3 = rolled_back()
    later = NOW + timedelta(hours=1)
    # the spec changed since the rollback (the fix already applied while the CRD pruned the record), or the record
    # does not say which generation was judged: this pass's render may be the fix, never recorded as the judged one
    changed = with_generation(md_with(without(p3.status, "rolledBackTemplate")), 9)
    changed.spec.serving.resources.limits["memory"] = "4Gi"
    unknown = md_with(without(p3.status, "rolledBackTemplate", "rolledBackGeneration"))
    for md4 in (changed, unknown):
        p4 = plan(md4, quiet(md, obs), CONFIG, later)
        r4 = p4.status["rollout"]
        assert r4["phase"] == "RolledBack" and r4.get("rolledBackTemplate") is None, r4
        assert r4["message"].endswith(f"; {UNTOLD}; revision {OLD} keeps serving all traffic"), r4["message"]
        again = md4.model_copy(update={"status": md_with(p4.status).status})
        p5 = plan(again, quiet(md, obs), CONFIG, later + timedelta(minutes=5))
        assert p5.status["rollout"] == r4  # one write
        other = with_generation(again, 10)
        other.spec.serving.pod_annotations["team"] = "ml"
        assert plan(other, quiet(md, obs), CONFIG, later).status["rollout"]["phase"] == "RolledBack"


def test_a_new_progress_deadline_tries_a_rollback_for_the_candidate_s_pods_again() -> None:
    # review20 2: progressDeadlineSeconds is the candidate Deployment's deadline and the crash loop's clock, not in
    # its pod template: a longer one for a slow start must try the revision again
    md, obs, p3 = rolled_back()
    later = NOW + timedelta(hours=1)
    base = md_with(p3.status)
    serving = base.spec.serving
    rollout = serving.rollout.model_copy(
        update={"progress_deadline_seconds": serving.rollout.progress_deadline_seconds + 600}
    )
    longer = with_generation(base.model_copy(update={"spec": base.spec.model_copy(update={
        "serving": serving.model_copy(update={"rollout": rollout})})}), 9)  # fmt: skip
    r = plan(longer, quiet(md, obs), CONFIG, later).status["rollout"]
    assert (r["phase"], r.get("rolledBackTemplate")) == ("Shadow", None), r


def test_each_field_the_retry_wording_names_renders_another_record_for_the_same_revision() -> None:
    # review20 3: the message named fields (env) the ModelDeployment does not have; each it names now tries the
    # revision again, and a replicas change does not
    def render(**serving: Any) -> tuple[str, str]:
        md = make_md(build=False, serving={"replicas": 2, "rollout": CANARY, **serving})
        return revision(md.spec), candidate_template(md, revision(md.spec), CONFIG, None, None)

    rev, judged = render()
    changes = {
        "resources": {"resources": {"limits": {"memory": "4Gi"}}},
        "nodeSelector": {"hardware": {"nodeSelector": {"pool": "big"}}},
        "tolerations": {"hardware": {"tolerations": [{"key": "big", "operator": "Exists"}]}},
        "runtimeClassName": {"hardware": {"runtimeClassName": "gvisor"}},
        "podAnnotations": {"podAnnotations": {"retry": "1"}},
        "shmSize": {"shmSize": "1Gi"},
        "serviceAccountName": {"serviceAccountName": "server"},
        "progressDeadlineSeconds": {"rollout": {**CANARY, "progressDeadlineSeconds": 900}},
    }
    for field, change in changes.items():
        assert field in RETRY
        changed_rev, changed = render(**change)
        assert changed_rev == rev and changed != judged, field
    assert render(replicas=5) == (rev, judged)
    # the retry after a fix outside the spec (a podAnnotations entry) rolls the stable revision's pods too (docs say)
    stable, annotated = (
        make_md(build=False, serving={"replicas": 2, "rollout": CANARY, **change})
        for change in ({}, changes["podAnnotations"])
    )
    before, after = (serving_deployment(m, rev, CONFIG, None, 2)["spec"]["template"] for m in (stable, annotated))
    assert after["metadata"]["annotations"]["retry"] == "1" and "retry" not in before["metadata"]["annotations"]


def test_an_abandoned_rollout_keeps_no_crash_loop_clock() -> None:
    md, obs, p2 = crash_looping_rollout()
    assert p2.status["rollout"]["candidateFailingSince"] is not None
    moved = md_with(p2.status)
    model = moved.spec.model.model_copy(update={"uri": "pvc://models/digits/cnn2.h5"})
    moved = moved.model_copy(update={"spec": moved.spec.model_copy(update={"model": model})})
    assert revision(moved.spec) != revision(md.spec)
    p = plan(moved, obs, CONFIG, NOW + timedelta(seconds=10))
    r = p.status["rollout"]
    assert r["rollbackCause"] == "Abandoned" and r.get("candidateFailingSince") is None, r


RESTART = "2026-11-28T13:00:00Z"
"""kubectl.kubernetes.io/restartedAt, as `kubectl rollout restart deployment/digits-canary` writes it."""


def test_the_pods_of_a_restarted_candidate_s_new_replicaset_are_judged_on_a_clock_of_their_own() -> None:
    md, obs, p2 = crash_looping_rollout()
    r2 = p2.status["rollout"]
    assert (r2["candidateFailingSince"], r2["candidateFailingTemplate"]) == (rfc3339(NOW + timedelta(seconds=5)),
                                                                             "abc12")  # fmt: skip
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    assert obs.canary is not None and obs.canary_pods is not None
    # `kubectl rollout restart` after a fix outside the spec: a new ReplicaSet (the controller names it), whose pod
    # crash-loops too (the fix did not help), beside the old one's, just before the first clock's deadline
    new_pod = replace(obs.canary_pods[0], name="digits-canary-def34-y", template_hash="def34")
    restarted = replace(obs, canary=replace(obs.canary, restarted_at=RESTART,
                                            progress_message='ReplicaSet "digits-canary-def34" is progressing.'),
                        canary_pods=(*obs.canary_pods, new_pod))  # fmt: skip
    looked = NOW + timedelta(seconds=4 + deadline)
    p3 = plan(md_with(p2.status), restarted, CONFIG, looked)
    r3 = p3.status["rollout"]
    assert r3["phase"] == "Shadow" and "digits-canary-def34-y" in r3["message"], r3
    assert (r3["candidateFailingSince"], r3["candidateFailingTemplate"]) == (rfc3339(looked), "def34")
    # past the first clock's deadline: not judged on it
    p4 = plan(md_with(p3.status), restarted, CONFIG, NOW + timedelta(seconds=10 + deadline))
    assert p4.status["rollout"]["phase"] == "Shadow"
    # its own deadline: rolled back for the new ReplicaSet's pods, the restart in the record
    p5 = plan(md_with(p4.status), restarted, CONFIG, looked + timedelta(seconds=deadline))
    r5 = p5.status["rollout"]
    assert r5["rollbackCause"] == "CandidateCrashLoop" and "digits-canary-def34-y" in r5["message"], r5
    assert r5["rolledBackTemplate"] == candidate_template(md, revision(md.spec), CONFIG, None, None)
    assert r5["rolledBackRestartedAt"] == RESTART
    assert r5.get("candidateFailingTemplate") is None


def test_a_restart_of_the_candidate_s_deployment_after_a_rollback_for_its_pods_tries_the_revision_again() -> None:
    md, obs, p3 = rolled_back()
    judged = p3.status["rollout"]["rolledBackTemplate"]
    later = NOW + timedelta(hours=1)
    still = quiet(md, obs)
    assert still.canary is not None and still.canary.restarted_at is None
    assert plan(md_with(p3.status), still, CONFIG, later).status["rollout"]["phase"] == "RolledBack"
    # `kubectl rollout restart deployment/digits-canary` (at zero replicas) after a fix outside the spec: a new
    # rollout of the same revision, the stable Deployment not rolled (unlike a podAnnotations change)
    restarted = replace(still, canary=replace(still.canary, restarted_at=RESTART))
    p4 = plan(md_with(p3.status), restarted, CONFIG, later)
    r4 = p4.status["rollout"]
    assert (r4["phase"], r4["candidate"], r4.get("rolledBackTemplate")) == ("Shadow", revision(md.spec), None), r4
    assert r4["startedAt"] == rfc3339(later) and by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] >= 1
    assert by_name(p4, "Deployment", "digits")["spec"]["template"] == by_name(p3, "Deployment", "digits")["spec"][
        "template"]  # fmt: skip
    # the restart the operator's apply kept is not set by it (another field manager's), and a rollback judged on pods
    # after that restart stands while it is the same one
    assert "restartedAt" not in json.dumps(by_name(p4, "Deployment", "digits-canary"))
    assert p3.status["rollout"]["rolledBackRestartedAt"] == ""  # judged with no restart
    rerun = {**p3.status, "rollout": {**p3.status["rollout"], "rolledBackRestartedAt": RESTART}}
    assert rerun["rollout"]["rolledBackTemplate"] == judged
    assert plan(md_with(rerun), restarted, CONFIG, later).status["rollout"]["phase"] == "RolledBack"
    again = replace(still, canary=replace(still.canary, restarted_at="2026-11-28T14:00:00Z"))
    assert plan(md_with(rerun), again, CONFIG, later).status["rollout"]["phase"] == "Shadow"
    # the candidate's Deployment deleted since (it comes back without its restart): tried again too
    assert plan(md_with(rerun), still, CONFIG, later).status["rollout"]["phase"] == "Shadow"


def test_a_rollback_recorded_before_the_restart_was_recorded_is_not_retried_by_an_earlier_restart() -> None:
    """review 123de3e minor 2: a rollback record written before rolledBackRestartedAt (its rolledBackTemplate a
    digest of the template and deadline only) while the candidate's Deployment kept the restartedAt of an earlier
    `kubectl rollout restart`: after the upgrade that same restart is no new one, the rollback stands; a restart
    made after the upgrade is not told from it either (a spec change still tries the revision again)."""
    md, obs, p3 = rolled_back()
    later = NOW + timedelta(hours=1)
    before = {**p3.status, "rollout": {k: v for k, v in p3.status["rollout"].items() if k != "rolledBackRestartedAt"}}
    still = quiet(md, obs)
    assert still.canary is not None
    earlier = replace(still, canary=replace(still.canary, restarted_at=RESTART))
    p4 = plan(md_with(before), earlier, CONFIG, later)
    r4 = p4.status["rollout"]
    assert r4["phase"] == "RolledBack", r4
    assert r4["rolledBackTemplate"] == before["rollout"]["rolledBackTemplate"], r4
    assert "rolledBackRestartedAt" not in r4 and by_name(p4, "Deployment", "digits-canary")["spec"]["replicas"] == 0
    changed = with_generation(md_with(before), 9)
    changed.spec.serving.pod_annotations["retry"] = "1"
    assert plan(changed, earlier, CONFIG, later).status["rollout"]["phase"] == "Shadow"


def test_a_rollback_whose_crd_prunes_its_restart_record_does_not_offer_a_restart() -> None:
    """review 8e44b77: a CRD that keeps rolledBackTemplate but prunes rolledBackRestartedAt: the record is not
    compared on a restart (``rearmed``), so the message offers none; said so at the rollback when the pruning is
    known, else at the next look (the message and a restart's effect agree from then on)."""
    md, obs, p2 = crash_looping_rollout()
    deadline = md.spec.serving.rollout.progress_deadline_seconds
    older = replace(obs, pruned_status=frozenset({"status.rollout.rolledBackRestartedAt"}))
    p3 = plan(md_with(p2.status), older, CONFIG, NOW + timedelta(seconds=5 + deadline))
    r3 = p3.status["rollout"]
    assert r3["phase"] == "RolledBack" and r3.get("rolledBackRestartedAt") is None and r3["rolledBackTemplate"]
    assert f"; {RETRY_BY_SPEC}; revision" in r3["message"] and "rollout restart" not in r3["message"], r3
    assert "rollout restart" not in cond(p3.status, "Verified")["message"]
    # not known at the rollback's write: it offered the restart, the CRD dropped the field, the next look retells it
    _, _, told = rolled_back()
    assert f"; {RETRY}; revision" in told.status["rollout"]["message"]
    dropped = {**told.status, "rollout": {k: v for k, v in told.status["rollout"].items()
                                          if k != "rolledBackRestartedAt"}}  # fmt: skip
    later = NOW + timedelta(hours=1)
    still = quiet(md, obs)
    assert still.canary is not None
    restarted = replace(still, canary=replace(still.canary, restarted_at=RESTART))
    r4 = plan(md_with(dropped), restarted, CONFIG, later).status["rollout"]
    assert r4["phase"] == "RolledBack" and f"; {RETRY_BY_SPEC}; revision" in r4["message"], r4  # the restart: nothing
    assert "rollout restart" not in r4["message"]


def test_a_record_filled_in_after_its_rollback_takes_only_a_restart_from_before_the_rollout_as_judged() -> None:
    """review 123de3e minor 3: the rollback's own write lost its record (a pruning CRD), a later look fills it in
    from the spec. A restart of the candidate's Deployment it sees then is recorded as judged only when it is from
    before the rollout started; one made later (perhaps after the rollback) is not taken for the judged pods'."""
    md, obs, p3 = rolled_back()
    r3 = p3.status["rollout"]
    lost = {**p3.status, "rollout": {k: v for k, v in r3.items()
                                     if k not in ("rolledBackTemplate", "rolledBackRestartedAt")}}  # fmt: skip
    later = NOW + timedelta(hours=1)
    still = quiet(md, obs)
    assert still.canary is not None
    began = parse_rfc3339(r3["startedAt"])
    assert began is not None

    def filled(restarted_at: str | None) -> dict[str, Any]:
        seen = replace(still, canary=replace(still.canary, restarted_at=restarted_at))
        r = plan(md_with(lost), seen, CONFIG, later).status["rollout"]
        assert (r["phase"], r["rolledBackTemplate"]) == ("RolledBack", r3["rolledBackTemplate"]), r
        return r

    assert filled(None)["rolledBackRestartedAt"] == ""  # none now: none judged, a later restart retries
    old_restart = rfc3339(began - timedelta(minutes=5))
    assert filled(old_restart)["rolledBackRestartedAt"] == old_restart
    assert "rolledBackRestartedAt" not in filled(rfc3339(began + timedelta(minutes=5)))
    assert "rolledBackRestartedAt" not in filled("not a time")


def test_the_restart_kubectl_writes_on_a_deployment_s_pod_template_is_read() -> None:
    def dep(annotations: dict[str, Any] | None) -> dict[str, Any]:
        meta = {"labels": {"modelship.io/revision": "r1"}, **({"annotations": annotations} if annotations else {})}
        return {"metadata": {"name": "digits-canary"}, "spec": {"template": {"metadata": meta}}}

    assert deployment_observation(dep({"kubectl.kubernetes.io/restartedAt": RESTART})).restarted_at == RESTART
    assert deployment_observation(dep({"other": "x"})).restarted_at is None
    assert deployment_observation(dep(None)).restarted_at is None
    assert deployment_observation(dep({"kubectl.kubernetes.io/restartedAt": ""})).restarted_at is None
