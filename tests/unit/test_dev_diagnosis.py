"""modelship_dev.diagnosis: the account a timed-out wait on the real node gives (what CI shows of the node), from
recorded kubectl JSON: every part says what a person would look for, and nothing grows without bound."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelship_dev import diagnosis as d

NOW = datetime(2026, 11, 30, 3, 0, 0, tzinfo=UTC)


def ts(seconds_ago: int) -> str:
    return datetime.fromtimestamp(NOW.timestamp() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MD: dict[str, Any] = {
    "metadata": {"name": "linear-regression", "generation": 2},
    "status": {
        "observedGeneration": 1, "revision": "red1a5475af",
        "conditions": [
            {"type": "Resolved", "status": "True", "reason": "Resolved", "message": "source digest sha256:ab"},
            {"type": "Optimized", "status": "False", "reason": "JobRunning",
             "message": "optimization Job linear-regression-opt-red1a5475af running (attempt 1)"},
            {"type": "Ready", "status": "False", "reason": "Optimizing"},
        ],
    },
}  # fmt: skip

def meta(name: str, ago: int, owner: str, uid: str = "") -> dict[str, Any]:
    """Metadata made ``ago`` seconds before NOW, owned by ``owner`` (Kind/name/uid)."""
    kind, owner_name, owner_uid = owner.split("/")
    ref = {"kind": kind, "name": owner_name, "uid": owner_uid}
    return {"name": name, "uid": uid, "creationTimestamp": ts(ago), "ownerReferences": [ref]}


JOB: dict[str, Any] = {
    "metadata": meta("linear-regression-opt-red1a5475af", 600, "ModelDeployment/linear-regression/77aa11bb-cc",
                     uid="0c9d2f41-aaaa-bbbb"),
    "spec": {"suspend": False},
    "status": {"active": 0, "ready": 0},
}  # fmt: skip

PENDING_POD: dict[str, Any] = {
    "metadata": meta("linear-regression-opt-red1a5475af-x7k2p", 595, "Job/linear-regression-opt-red1a5475af/0c9d2f41"),
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient cpu."}],
    },
}  # fmt: skip

CRASHING_POD: dict[str, Any] = {
    "metadata": meta("linear-regression-7f9c-abcde", 90, "ReplicaSet/linear-regression-7f9c/1"),
    "status": {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "initContainerStatuses": [{"name": "fetch", "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                                   "restartCount": 0}],
        "containerStatuses": [{"name": "server", "restartCount": 4,
                               "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                               "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
    },
}  # fmt: skip


def event(reason: str, kind: str, name: str, ago: int, type_: str = "Warning", count: int = 1) -> dict[str, Any]:
    return {"type": type_, "reason": reason, "message": f"{reason} of {name}", "count": count,
            "involvedObject": {"kind": kind, "name": name}, "lastTimestamp": ts(ago)}  # fmt: skip


def test_a_deployment_says_its_conditions_and_that_the_operator_is_behind_the_spec() -> None:
    lines = d.deployment_lines("linear-regression", MD)
    assert lines[0] == ("generation 2, observedGeneration 1 (the operator has not observed the latest spec); "
                        "revision red1a5475af")  # fmt: skip
    assert lines[2] == ("  Optimized=False JobRunning: optimization Job linear-regression-opt-red1a5475af running "
                        "(attempt 1)")  # fmt: skip
    assert lines[3] == "  Ready=False Optimizing"
    caught_up = {**MD, "metadata": {"generation": 1}}
    assert "not observed" not in d.deployment_lines("x", caught_up)[0]
    assert d.deployment_lines("gone", None) == ["gone: not found"]
    assert d.deployment_lines("new", {"metadata": {"generation": 1}})[1:] == ["  no conditions"]


def test_a_job_without_pods_shows_its_counts_owner_uid_age_and_suspension() -> None:
    (line,) = d.job_lines([JOB], NOW)
    assert line == ("linear-regression-opt-red1a5475af uid 0c9d2f41 owner ModelDeployment/linear-regression(77aa11bb) "
                    "age 10m0s active=0 ready=0 succeeded=0 failed=0: no conditions")  # fmt: skip
    done = {**JOB, "spec": {"suspend": True},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    assert d.job_lines([done], NOW)[0].endswith("succeeded=1 failed=0 SUSPENDED: Complete=True")
    assert d.job_lines([], NOW) == ["no Jobs"]


def test_pods_say_why_they_do_not_run() -> None:
    pending, crashing = d.pod_lines([CRASHING_POD, PENDING_POD], NOW)  # oldest first
    assert pending == ("linear-regression-opt-red1a5475af-x7k2p Pending owner Job/linear-regression-opt-red1a5475af"
                       "(0c9d2f41) age 9m55s PodScheduled=False Unschedulable: 0/1 nodes are available: "
                       "1 Insufficient cpu.")  # fmt: skip
    assert crashing.endswith("Running owner ReplicaSet/linear-regression-7f9c(1) age 90s "
                             "[fetch: terminated Completed exit 0, restarts 0] "
                             "[server: waiting CrashLoopBackOff (back-off 1m20s), restarts 4, last OOMKilled exit 137]")
    unscheduled = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    assert d.pod_lines([unscheduled], NOW) == ["p Pending owner - age ? PodScheduled: none yet"]
    assert d.pod_lines([], NOW) == ["no pods"]


def test_events_keep_the_last_warnings_and_what_the_job_controller_did() -> None:
    events = [event(f"W{i}", "Pod", f"p{i}", 100 - i) for i in range(25)]
    events += [event("SuccessfulCreate", "Job", "j", 30, type_="Normal"),
               event("Scheduled", "Pod", "p", 20, type_="Normal"),  # neither a Warning nor a Job's: left out
               event("FailedCreate", "Job", "j", 10, count=3)]  # fmt: skip
    lines = d.event_lines(events, NOW)
    assert lines[0] == "... 6 earlier Warning events not shown"
    assert lines[1] == "94s ago Warning W6 Pod/p6: W6 of p6"
    assert lines[20] == "10s ago Warning FailedCreate Job/j x3: FailedCreate of j"
    assert lines[21:] == ["30s ago Normal SuccessfulCreate Job/j: SuccessfulCreate of j"]
    assert d.event_lines([], NOW) == ["no Warning events", "no other Job events"]


def test_nodes_say_ready_pressure_taints_and_cordon() -> None:
    node = {"metadata": {"name": "modelship-node-0"}, "spec": {"unschedulable": True,
            "taints": [{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "2", "memory": "8Gi"},
                       "conditions": [{"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure"},
                                      {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}  # fmt: skip
    assert d.node_lines([node]) == [
        "modelship-node-0 Ready=True KubeletReady; DiskPressure=True KubeletHasDiskPressure; cordoned; "
        "taints node.kubernetes.io/disk-pressure:NoSchedule; allocatable cpu 2 memory 8Gi"
    ]


def test_every_part_is_bounded_in_lines_and_characters() -> None:
    log = "\n".join(f"line {i} " + "x" * 1000 for i in range(500))
    lines = d.log_lines(log)
    assert lines[-1].startswith("line 499 ") and len(lines[-1]) <= d.LINE_CHARS and "(+" in lines[-1]
    assert lines[0].startswith("... ") and "earlier log lines not shown" in lines[0]
    assert sum(len(ln) for ln in lines) <= 6000 + 100
    assert d.log_lines("a\nb\nc", limit=2) == ["... 1 earlier log lines not shown", "b", "c"]
    assert d.log_lines("") == ["(empty log)"]
    probe = '[t] aiohttp.access [INFO ] 10.0.0.1 [t] "GET /healthz HTTP/1.1" 200 179 "-" "kube-probe/1.34"'
    scrape = '[t] aiohttp.access [INFO ] 10.0.0.1 [t] "GET /metrics HTTP/1.1" 200 9 "-" "Prometheus"'
    assert d.log_lines(f"a\n{probe}\nb\n{scrape}\n{probe}", limit=1) == [
        "... 1 earlier log lines not shown", "b", "(3 access lines of /healthz and /metrics left out)"
    ]
    assert d.log_lines(probe) == ["(1 access lines of /healthz and /metrics left out)"]
    many = [{**JOB, "metadata": {**JOB["metadata"], "name": f"j{i}", "creationTimestamp": ts(1000 - i)}}
            for i in range(30)]  # fmt: skip
    jobs = d.job_lines(many, NOW)
    assert jobs[0] == "... 18 earlier Jobs not shown" and jobs[-1].startswith("j29 ") and len(jobs) == 13
    assert d.clip("a\n  b") == "a b" and d.clip("  a  b") == "  a b"


def test_render_titles_each_section_and_cuts_past_the_total() -> None:
    text = d.render("x not Ready after 600s", [d.Section("jobs in default", ["no Jobs"]),
                                                d.Section("nodes", ["(could not read: RuntimeError: refused)"])])
    assert text.splitlines() == [
        "--- diagnosis: x not Ready after 600s ---",
        "== jobs in default", "   no Jobs",
        "== nodes", "   (could not read: RuntimeError: refused)",
        "--- end of diagnosis ---",
    ]  # fmt: skip
    big = d.render("h", [d.Section(f"s{i}", ["y" * 250] * 10) for i in range(20)], total=5000)
    assert len(big) <= 5000 and big.endswith("more chars of the diagnosis cut\n--- end of diagnosis ---")


def test_times_kubernetes_writes_are_read() -> None:
    assert d.age("2026-11-30T02:59:18Z", NOW) == "42s"
    assert d.age("2026-11-30T02:59:18.123456+00:00", NOW) == "41s"
    assert d.age("2026-11-29T23:55:00Z", NOW) == "3h5m"
    assert d.age(None, NOW) == d.age("garbage", NOW) == "?"
    assert d.age("2026-11-30T02:59:18", NOW) == "?"  # no zone: not taken as UTC (as the operator reads it)
