"""The operator's reader of the serving pods' figures (controller.podmetrics) against real model servers: a
stable one mirroring to a candidate that answers differently, both on loopback, read as pods would be."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelship.api.rollout_status import Criterion, Verdict
from modelship.api.serving import Analysis
from modelship.controller.canary import judge
from modelship.controller.podmetrics import NOBODY, Makers, RefusedPods, fetch_pod, parse, read_pods, read_samples
from tests.serve.fakes import FakeModel, ServerThread
from tests.serve.test_mirror import OtherModel, v2

MAKERS = Makers(candidate="digits-canary", stable="digits")
"""The Deployments running the candidate ("cand") and the stable revision in these tests."""


def pod(name: str, revision: str, port: int, ready: bool = True, owner: str | None = "") -> dict[str, Any]:
    """A serving pod of ``revision`` made by the Deployment ``owner``'s ReplicaSet ("": the Deployment that runs the
    revision, ``MAKERS``; None: by nothing, as a pod someone created and labelled)."""
    if owner == "":
        owner = MAKERS.candidate if revision == "cand" else MAKERS.stable
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-5f7", "uid": f"rs-{owner}",
             "controller": True}] if owner else []  # fmt: skip
    return {
        "metadata": {"name": name, "labels": {"modelship.io/revision": revision, "pod-template-hash": "5f7"},
                     "ownerReferences": refs},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "test-port": port,
        },
    }


def test_figures_of_a_stable_and_a_disagreeing_candidate(tmp_path: Path) -> None:
    with ServerThread(OtherModel("m"), revision="cand") as cand:
        cfg = tmp_path / "mirror.json"
        cfg.write_text(json.dumps({"url": cand.url, "percent": 50, "candidate": "cand"}))
        with ServerThread(FakeModel("m"), revision="stable", mirror_config=str(cfg)) as stable:
            with httpx.Client() as c:
                for _ in range(20):
                    assert c.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
                c.post(f"{cand.url}/v2/models/m/infer", json={"inputs": []})  # a 4xx: answered, not an error
            assert stable.server is not None and stable.server.mirror is not None
            assert stable.server.mirror.drain(10)
            assert cand.server is not None and stable.server is not None
            pods = [
                pod("stable-1", "stable", stable.server.metrics_port),
                pod("cand-1", "cand", cand.server.metrics_port),
                pod("cand-2", "cand", 1, ready=False),  # not ready: not read
                pod("other", "older", 1),  # another revision: not read
            ]

            def fetch(p: dict[str, Any], port: int) -> str:
                assert port == 9090  # the spec's metrics port is what the reader is given
                return fetch_pod(p, p["status"]["test-port"])

            s = read_samples(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
    assert s.pods == 2 and s.unreadable == ()
    assert s.mirrored == 10 and s.rows_compared == 30 and s.rows_agreed == 0 and s.mirror_failures == 0
    assert s.candidate_requests == 11 and s.candidate_errors == 0
    assert s.stable_latency.total == 20 and s.candidate_latency.total == 11
    verdicts = {c.name: c for c in judge(Analysis(min_requests=10), s)}
    assert verdicts[Criterion.AGREEMENT].verdict == Verdict.FAILED and verdicts[Criterion.AGREEMENT].observed == 0.0
    assert verdicts[Criterion.ERROR_RATE].verdict == Verdict.PASSED


def test_an_unreachable_pod_is_named_not_an_error() -> None:
    p = pod("gone", "cand", 1)
    s = read_samples([p], 1, "cand", "stable", makers=MAKERS)  # nothing listens on port 1
    assert s.pods == 0 and len(s.unreadable) == 1 and s.unreadable[0].startswith("gone: ")


def test_parse_counts_5xx_and_429_as_errors_and_sums_buckets() -> None:
    text = "\n".join(
        [
            '# TYPE modelship_requests_total counter',
            'modelship_requests_total{model="m",protocol="v2",code="200"} 90',
            'modelship_requests_total{model="m",protocol="v2",code="500"} 3',
            'modelship_requests_total{model="m",protocol="v1",code="429"} 2',
            'modelship_requests_total{model="",protocol="other",code="503"} 7',
            '# TYPE modelship_request_duration_seconds histogram',
            *(
                f'modelship_request_duration_seconds_bucket{{model="m",protocol="{p}",le="{le}"}} {n}'
                for p, pairs in (("v1", (("0.001", 1), ("+Inf", 2))), ("v2", (("0.001", 90), ("+Inf", 93))))
                for le, n in pairs
            ),
            'modelship_request_duration_seconds_count{model="m",protocol="v1"} 2',
            'modelship_request_duration_seconds_count{model="m",protocol="v2"} 93',
            'modelship_request_duration_seconds_sum{model="m",protocol="v2"} 0.05',
        ]
    )
    f = parse(text + "\n", "cand")
    assert (f.requests, f.errors) == (95, 5)
    assert f.latency.bounds == (0.001, float("inf")) and f.latency.counts == (91, 95)
    assert np.isclose(f.latency.quantile(0.5) or 0, 0.001 * 47.5 / 91)


def _figures_text(requests: int, errors: int) -> str:
    return "\n".join([
        "# TYPE modelship_request_duration_seconds histogram",
        f'modelship_request_duration_seconds_bucket{{model="m",protocol="v2",le="+Inf"}} {requests}',
        f'modelship_request_duration_seconds_count{{model="m",protocol="v2"}} {requests}',
        "# TYPE modelship_requests_total counter",
        f'modelship_requests_total{{model="m",protocol="v2",code="200"}} {requests - errors}',
        f'modelship_requests_total{{model="m",protocol="v2",code="500"}} {errors}',
    ]) + "\n"  # fmt: skip


class Lines(logging.Handler):
    """The log lines of one logger (its own handler: a test that configured logging before may have stopped its
    propagation or raised its level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_labelled_pod_not_made_by_the_deployment_running_its_revision_is_not_read() -> None:
    """Labels say whose a pod claims to be, anyone in the namespace can set them: a pod labelled as the candidate
    (answering /metrics with figures that would decide the rollout) is read only when the candidate's Deployment's
    ReplicaSet made it, one of the stable revision only when the serving Deployment's did."""
    not_controller = pod("not-controller", "cand", 1)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    other_hash = pod("other-hash", "cand", 1)
    other_hash["metadata"]["labels"]["pod-template-hash"] = "666"  # its ReplicaSet is not digits-canary-666
    forged = [
        pod("bare", "cand", 1, owner=None),  # no controller reference at all
        pod("other-deployment", "cand", 1, owner="someone-else"),  # another Deployment's ReplicaSet
        pod("stable-made-cand", "cand", 1, owner=MAKERS.stable),  # ours, but not the one running the candidate
        pod("cand-made-stable", "stable", 1, owner=MAKERS.candidate),
        not_controller,
        other_hash,
    ]
    good = [pod("digits-canary-1", "cand", 1), pod("digits-1", "stable", 1)]
    fetched: list[str] = []

    def fetch(p: dict[str, Any], port: int) -> str:
        name = p["metadata"]["name"]
        fetched.append(name)
        return _figures_text(10, 0) if name in ("digits-canary-1", "digits-1") else _figures_text(1000, 1000)

    readings = read_pods([*good, *forged], 9090, "cand", "stable", fetch, makers=MAKERS)
    assert sorted(fetched) == ["digits-1", "digits-canary-1"]  # the forged pods' /metrics are never asked
    assert sorted(r.pod for r in readings.pods) == ["digits-1", "digits-canary-1"]
    assert readings.refused == tuple(sorted(p["metadata"]["name"] for p in forged))
    s = read_samples([*good, *forged], 9090, "cand", "stable", fetch, makers=MAKERS)
    assert (s.pods, s.candidate_requests, s.candidate_errors, s.unreadable) == (2, 10, 0, ())


def _info_lines(looks: list[tuple[str, ...]]) -> list[str]:
    """The info lines RefusedPods says over ``looks`` (each the refused pods of one look at ns/digits)."""
    logger, seen = logging.getLogger("modelship.podmetrics"), Lines()
    level = logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)  # said at info level (whatever an earlier test set); debug lines not kept
    try:
        said = RefusedPods()
        for refused in looks:
            said.tell(("ns", "digits"), refused, "cand", "stable")
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    return seen.lines


def test_refused_pods_are_logged_once_until_they_change() -> None:
    """A forged pod that stands is named once, not at every look (every 5 s): again only when the set changes,
    and after a look that refused none."""
    six = tuple(f"forged-{i}" for i in range(6))
    lines = _info_lines([six, six, tuple(reversed(six)), six[:2], six[:2], (), (), six[:2]])
    assert len(lines) == 3, lines  # six; the two left; the two again after a look with none
    assert lines[0].startswith("ns/digits: 6 pod(s) labelled as revision cand or stable not read")
    assert "forged-0" in lines[0] and "forged-5" not in lines[0] and lines[0].endswith(", ...")  # five named
    assert lines[1].startswith("ns/digits: 2 pod(s)") and lines[1] == lines[2]


def test_a_look_refusing_pods_says_them_at_debug_level_only() -> None:
    """read_pods itself says its refused pods at debug level: the info line is RefusedPods' (once)."""
    logger, seen = logging.getLogger("modelship.podmetrics"), Lines()
    level = logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    try:
        readings = read_pods([pod("bare", "cand", 1, owner=None)], 9090, "cand", "stable", makers=MAKERS)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert readings.refused == ("bare",) and [line for line in seen.lines if "not read" in line] == []


def test_without_a_deployment_of_ours_running_a_revision_none_of_its_pods_is_read() -> None:
    """The candidate's Deployment not (or no longer) ours: the analysis reads no candidate pod, as with none."""
    fetched: list[str] = []

    def fetch(p: dict[str, Any], port: int) -> str:
        fetched.append(p["metadata"]["name"])
        return _figures_text(10, 0)

    pods = [pod("digits-canary-1", "cand", 1), pod("digits-1", "stable", 1)]
    s = read_samples(pods, 9090, "cand", "stable", fetch, makers=Makers(candidate=None, stable="digits"))
    assert fetched == ["digits-1"] and s.pods == 1 and s.candidate_requests == 0
    assert read_pods(pods, 9090, "cand", "stable", fetch, makers=NOBODY).pods == ()
