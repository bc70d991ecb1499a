"""The operator's reader of the serving pods' figures (controller.podmetrics) against real model servers: a
stable one mirroring to a candidate that answers differently, both on loopback, read as pods would be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelship.api.rollout_status import Criterion, Verdict
from modelship.api.serving import Analysis
from modelship.controller.canary import judge
from modelship.controller.podmetrics import fetch_pod, parse, read_samples
from tests.serve.fakes import FakeModel, ServerThread
from tests.serve.test_mirror import OtherModel, v2


def pod(name: str, revision: str, port: int, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"modelship.io/revision": revision}},
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

            s = read_samples(pods, 9090, "cand", "stable", fetch)
    assert s.pods == 2 and s.unreadable == ()
    assert s.mirrored == 10 and s.rows_compared == 30 and s.rows_agreed == 0 and s.mirror_failures == 0
    assert s.candidate_requests == 11 and s.candidate_errors == 0
    assert s.stable_latency.total == 20 and s.candidate_latency.total == 11
    verdicts = {c.name: c for c in judge(Analysis(min_requests=10), s)}
    assert verdicts[Criterion.AGREEMENT].verdict == Verdict.FAILED and verdicts[Criterion.AGREEMENT].observed == 0.0
    assert verdicts[Criterion.ERROR_RATE].verdict == Verdict.PASSED


def test_an_unreachable_pod_is_named_not_an_error() -> None:
    p = pod("gone", "cand", 1)
    s = read_samples([p], 1, "cand", "stable")  # nothing listens on port 1
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
