"""controller.prometheus' client against a loopback HTTP server answering what a broken or hostile Prometheus
could: every failure is a PrometheusError naming why (``read`` turns it into Samples.error), never a crash; the
bearer token and the queries' selectors are what the configuration says."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from modelship.config import PrometheusConfig
from modelship.controller.prometheus import MAX_RESPONSE_BYTES, PrometheusClient, PrometheusError, read
from tests.support.servers import loopback_http

AT = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
Answer = Callable[[str], tuple[int, bytes]]


def vector(*series: tuple[dict[str, str], str]) -> bytes:
    result = [{"metric": m, "value": [1764331200.0, v]} for m, v in series]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


@contextmanager
def fake(answer: Answer, seen: list[tuple[str, dict[str, str]]] | None = None) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [""])[0]
            if seen is not None:
                seen.append((query, dict(self.headers)))
            status, body = answer(query)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            with suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with loopback_http(Handler) as url:
        yield url


def figures(query: str) -> tuple[int, bytes]:
    """A Prometheus that knows the analysis' series (recorded shapes of real answers)."""
    if "modelship_mirror_requests_total" in query:
        return 200, vector(({"outcome": "compared"}, "120"), ({"outcome": "failed"}, "3"))
    if "modelship_mirror_rows_total" in query:
        return 200, vector(({"result": "agree"}, "350.0000001"), ({"result": "disagree"}, "10"))
    if "_bucket" in query:
        rev = "stable" if 'revision="stable"' in query else "cand"
        n = 1000 if rev == "stable" else 100
        return 200, vector(({"le": "0.001"}, str(n / 2)), ({"le": "0.01"}, str(n)), ({"le": "+Inf"}, str(n)))
    if "modelship_request_duration_seconds_count" in query:
        return 200, vector(({}, "100"))
    if "modelship_requests_total" in query:
        return 200, vector()  # no errors: an empty vector
    return 400, b'{"status":"error","errorType":"bad_data","error":"unexpected"}'


def test_samples_from_the_analysis_queries_with_the_configured_labels(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    seen: list[tuple[str, dict[str, str]]] = []
    with fake(figures, seen) as url:
        cfg = PrometheusConfig(url=url, token_file=str(token), revision_label="revision", namespace_label="ns",
                               name_label="md")  # fmt: skip
        s = PrometheusClient(cfg).samples(("team-a", "digits"), "cand", "stable", AT, 90)
    assert (s.mirrored, s.mirror_failures, s.rows_agreed, s.rows_compared) == (120, 3, 350, 360)
    assert (s.candidate_requests, s.candidate_errors, s.error) == (100, 0, None)
    assert s.candidate_latency.bounds == (0.001, 0.01, float("inf")) and s.candidate_latency.counts == (50, 100, 100)
    assert s.stable_latency.total == 1000
    assert all(h["Authorization"] == "Bearer s3cret" for _, h in seen) and len(seen) == 6
    queries = [q for q, _ in seen]
    assert 'sum by (outcome) (increase(modelship_mirror_requests_total{ns="team-a",md="digits",revision="stable",' \
           'candidate="cand"}[90s]))' in queries  # fmt: skip
    assert any('revision="cand",model!="",protocol=~"v1|v2",code=~"5..|429"}[90s]' in q for q in queries)
    # no window: the raw counters (the servers' lifetime)
    with fake(figures, seen := []) as url:
        PrometheusClient(PrometheusConfig(url=url)).samples(("ns", "d"), "c", "s", AT, None)
    assert not any("increase(" in q for q, _ in seen)


def slow(query: str) -> tuple[int, bytes]:
    time.sleep(3)
    return 200, vector()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda q: (200, b"<html>not prometheus</html>"), "not JSON"),
        (lambda q: (503, b"overloaded"), "HTTP 503: overloaded"),
        (lambda q: (422, b'{"status":"error","errorType":"execution","error":"query timed out"}'),
         "HTTP 422: query timed out"),
        (lambda q: (200, b'{"status":"error","errorType":"timeout","error":"too slow"}'), "timeout: too slow"),
        (lambda q: (200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}'), "expected a vector"),
        (lambda q: (200, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}'),
         "not [time, \"value\"]"),
        (lambda q: (200, vector(({}, "-5"))), "not a finite count"),
        (lambda q: (200, vector(({}, "abc"))), "not a number"),
        (lambda q: (200, b"[" + b" " * (MAX_RESPONSE_BYTES + 10) + b"]"), "larger than"),
        (slow, "timed out"),
    ],
)
def test_a_broken_or_hostile_answer_is_a_readable_error(answer: Answer, why: str) -> None:
    with fake(answer) as url:
        client = PrometheusClient(PrometheusConfig(url=url, timeout_seconds=1.0))
        with pytest.raises(PrometheusError) as e:
            client.samples(("ns", "d"), "cand", "stable", AT, 60)
        assert why in str(e.value)
        s = read(client, ("ns", "d"), "cand", "stable", AT, 60)
    assert s.error is not None and s.error.startswith(f"Prometheus at {url}: ") and why in s.error
    assert len(s.error) <= 500


def test_nan_from_an_empty_window_is_zero_and_a_bad_token_file_is_an_error(tmp_path: Path) -> None:
    with fake(lambda q: (200, vector(({"le": "+Inf"}, "NaN")) if "_bucket" in q else vector())) as url:
        s = PrometheusClient(PrometheusConfig(url=url)).samples(("ns", "d"), "c", "s", AT, 5)
        assert s.candidate_latency.total == 0 and s.candidate_latency.quantile(0.99) is None
        missing = PrometheusClient(PrometheusConfig(url=url, token_file=str(tmp_path / "absent")))
        assert "bearer token file" in (read(missing, ("ns", "d"), "c", "s", AT, 5).error or "")


def test_the_reconciler_asks_prometheus_over_the_phase_window_when_configured() -> None:
    """With analysis.prometheus.url the operator reads no pod: it queries the phase's window (from
    status.rollout.phaseStartedAt) for this ModelDeployment's namespace, name and revisions."""
    from datetime import timedelta

    from modelship.api.rollout_status import RolloutPhase, RolloutStatus
    from modelship.config import OperatorConfig
    from modelship.controller.podmetrics import NOBODY
    from modelship.controller.reconcile import Reconciler
    from modelship.controller.store import Store
    from modelship.resources.revision import revision
    from tests.unit.test_plan import make_md

    class NoKube:
        def list(self, *args: Any) -> list[Any]:
            raise AssertionError("the pods are not read when Prometheus is configured")

    md = make_md(build=False, serving={"rollout": {"strategy": "Canary"}})
    rev = revision(md.spec)
    started = datetime.now(UTC) - timedelta(seconds=95)
    rollout = RolloutStatus(candidate=rev, stable="rold", phase=RolloutPhase.SHADOW,
                            started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            phase_started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
    md = md.model_copy(update={"status": md.status.model_copy(update={"rollout": rollout})})
    seen: list[tuple[str, dict[str, str]]] = []
    with fake(figures, seen) as url:
        r = Reconciler(NoKube(), Store(), OperatorConfig(prometheus=PrometheusConfig(url=url)))  # type: ignore[arg-type]
        samples, readings = r._figures(md, makers=NOBODY)  # Prometheus reads no pod
    assert readings is None and samples is not None and samples.error is None and samples.candidate_requests == 100
    window = next(q for q, _ in seen if "modelship_mirror_requests_total" in q)
    assert f'namespace="{md.metadata.namespace}",modelship_io_modeldeployment="{md.metadata.name}"' in window
    assert f'modelship_io_revision="rold",candidate="{rev}"' in window
    seconds = int(window.rsplit("[", 1)[1].split("s]")[0])
    assert 94 <= seconds <= 100
    # before the phase's clock starts: nothing is asked
    waiting = md.model_copy(update={"status": md.status.model_copy(update={
        "rollout": rollout.model_copy(update={"phase_started_at": None})})})  # fmt: skip
    seen.clear()
    with fake(figures, seen) as url:
        r = Reconciler(NoKube(), Store(), OperatorConfig(prometheus=PrometheusConfig(url=url)))  # type: ignore[arg-type]
        assert r._figures(waiting, makers=NOBODY) == (None, None) and seen == []
