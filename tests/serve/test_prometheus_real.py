"""controller.prometheus against a REAL Prometheus (hack/servers/build-prometheus) scraping real model servers on
loopback (a stable one mirroring to a candidate that answers differently): the client's samples are the ones
podmetrics reads from the same servers, over the servers' lifetime (once Prometheus scraped them: within one
scrape) and over a phase's window (increase(), within its extrapolation of at most one scrape interval at each
end of the window)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from modelship.config import PrometheusConfig
from modelship.controller.canary import Samples
from modelship.controller.phasewindow import advance, samples
from modelship.controller.podmetrics import fetch_pod, read_pods, read_samples
from modelship.controller.prometheus import PrometheusClient, PrometheusError, read
from tests.serve.fakes import FakeModel, ServerThread
from tests.serve.test_mirror import OtherModel, v2
from tests.support.servers import free_port, prometheus
from tests.unit.test_podmetrics import MAKERS, pod

T = TypeVar("T")
WHERE = ("ns", "digits")
LABELS = {"namespace": "ns", "modelship_io_modeldeployment": "digits"}  # what a pod-label labelmap writes
COUNTS = ("mirrored", "rows_agreed", "rows_compared", "mirror_failures", "candidate_requests", "candidate_errors")


def counts(s: Samples) -> dict[str, Any]:
    return {
        **{k: getattr(s, k) for k in COUNTS},
        "candidate_latency": s.candidate_latency.counts,
        "stable_latency": s.stable_latency.counts,
    }


def until(what: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
            if ok(last):
                return last
        except PrometheusError as e:  # still starting (/-/ready answers 503 first)
            last = e
        time.sleep(0.2)
    raise AssertionError(f"no match within {timeout}s; last: {last}")


def load(stable: ServerThread, cand: ServerThread, n: int) -> None:
    with httpx.Client() as c:
        for _ in range(n):
            assert c.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
        for _ in range(n // 4):
            assert c.post(f"{cand.url}/v2/models/m/infer", json=v2()).status_code == 200
    assert stable.server is not None and stable.server.mirror is not None and stable.server.mirror.drain(10)


def test_prometheus_gives_the_samples_the_pods_give(tmp_path: Path) -> None:
    with ServerThread(OtherModel("m"), revision="cand") as cand:
        cfg = tmp_path / "mirror.json"
        cfg.write_text(json.dumps({"url": cand.url, "percent": 50, "candidate": "cand"}))
        with ServerThread(FakeModel("m"), revision="stable", mirror_config=str(cfg)) as stable:
            assert stable.server is not None and cand.server is not None
            pods = [pod("stable-1", "stable", stable.server.metrics_port),
                    pod("cand-1", "cand", cand.server.metrics_port)]  # fmt: skip

            def fetch(p: dict[str, Any], port: int) -> str:
                return fetch_pod(p, p["status"]["test-port"])

            targets = [
                (f"127.0.0.1:{stable.server.metrics_port}", {**LABELS, "modelship_io_revision": "stable"}),
                (f"127.0.0.1:{cand.server.metrics_port}", {**LABELS, "modelship_io_revision": "cand"}),
            ]
            with prometheus(tmp_path, targets, scrape_seconds=1.0) as prom:
                client = PrometheusClient(PrometheusConfig(url=prom.url))
                load(stable, cand, 40)
                # 1. the servers' lifetime: Prometheus' raw counters are the pods' once it scraped them
                direct = read_samples(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
                assert direct.mirrored > 0 and direct.rows_agreed == 0 and direct.candidate_requests > 10
                lifetime = until(lambda: client.samples(WHERE, "cand", "stable", datetime.now(UTC), None),
                                 lambda s: counts(s) == counts(direct))  # fmt: skip
                assert lifetime.error is None and lifetime.candidate_latency.total == direct.candidate_latency.total
                # 2. a phase's window: what the pods' window counts vs Prometheus' increase() over it
                t1 = datetime.now(UTC)
                before = read_pods(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
                window = advance(None, before, "Shadow/0/t1", t1)
                time.sleep(10 * prom.scrape_seconds)  # flat before the traffic: a sample at the window's start
                load(stable, cand, 60)
                after = read_pods(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
                exact = samples(advance(window, after, "Shadow/0/t1", datetime.now(UTC)), after)
                assert exact.mirrored > 0 and exact.candidate_requests >= 60 // 4
                now_total = read_samples(pods, 9090, "cand", "stable", fetch, makers=MAKERS)
                until(lambda: client.samples(WHERE, "cand", "stable", datetime.now(UTC), None),
                      lambda s: counts(s) == counts(now_total))  # fmt: skip
                now = datetime.now(UTC)
                seconds = int((now - t1).total_seconds()) + 1
                got = client.samples(WHERE, "cand", "stable", now, seconds)
    slack = 2 * prom.scrape_seconds * 1.1 / (seconds - prom.scrape_seconds)  # increase() extrapolation
    for name in COUNTS:
        want, have = getattr(exact, name), getattr(got, name)
        assert want <= have + 1 and have <= want * (1 + slack) + 1, (name, want, have, seconds)
    assert exact.candidate_latency.bounds == got.candidate_latency.bounds
    assert abs(got.candidate_latency.total - exact.candidate_latency.total) <= exact.candidate_latency.total * slack + 1


def test_a_prometheus_that_is_down_is_a_readable_error() -> None:
    port = free_port()  # nothing listens there
    client = PrometheusClient(PrometheusConfig(url=f"http://127.0.0.1:{port}", timeout_seconds=2))
    s = read(client, WHERE, "cand", "stable", datetime.now(UTC), 60)
    assert s.error is not None and s.error.startswith(f"Prometheus at http://127.0.0.1:{port}: ")
    assert "Connection refused" in s.error or "ConnectionRefusedError" in s.error


def test_a_real_prometheus_refusing_a_query_is_a_readable_error(tmp_path: Path) -> None:
    with prometheus(tmp_path, []) as prom:
        client = PrometheusClient(PrometheusConfig(url=prom.url, revision_label="0bad"))  # not a label name
        s = until(lambda: read(client, WHERE, "cand", "stable", datetime.now(UTC), 60),
                  lambda s: s.error is not None and "HTTP 400" in s.error)  # fmt: skip
        assert s.error is not None and "parse error" in s.error
