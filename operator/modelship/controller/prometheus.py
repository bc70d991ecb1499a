"""Read the analysis figures of a Canary rollout from Prometheus' HTTP API (``/api/v1/query``, instant queries)
when the chart names a server (``analysis.prometheus.url``): the same ``Samples`` as ``podmetrics`` reads from the
pods, from the same metric names, so ``canary.decide`` stays one pure function fed by either source.

Over a phase's window the counters are ``increase(...[<seconds>s])``, which handles counter resets (a restarted
server) and extrapolates to the window's ends as Prometheus does; without a window the raw counters are summed
(the pods' lifetime, what ``podmetrics.read_samples`` reads). Series are selected by the namespace, ModelDeployment and
revision labels the scrape configuration gives the serving pods (``revision_label``: a labelmap of the pod labels or a
PodMonitor's podTargetLabels write modelship.io/revision as ``modelship_io_revision``).

Every query is bounded: one deadline for connect, send and read, at most ``MAX_RESPONSE_BYTES`` of answer, and the
JSON is checked field by field; any failure (refused, timeout, an error answer, garbage) is a ``PrometheusError``
whose message names the server and why, which ``read`` turns into ``Samples.error`` (a readable condition), never
an exception out of the reconciler.
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import PrometheusConfig
from .canary import EMPTY, Histogram, Samples

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_TOKEN_BYTES = 16 * 1024
MAX_SERIES = 1000
"""Series one answer may hold (a latency histogram has ~20 buckets)."""


class PrometheusError(Exception):
    """A query that did not give a usable answer."""


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    value: float


class PrometheusClient:
    """A small typed client of the Prometheus HTTP API: instant queries."""

    def __init__(self, config: PrometheusConfig) -> None:
        if not config.url:
            raise ValueError("no Prometheus URL")
        self.config = config
        parts = urllib.parse.urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{config.url!r} is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._tls = ssl.create_default_context(cafile=config.ca_file) if self._https else None

    def query(self, promql: str, at: datetime | None = None) -> list[Series]:
        """An instant query's vector (a scalar answer is one series without labels)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        body = self._get(f"{self._prefix}/api/v1/query?{urllib.parse.urlencode(params)}")
        return _vector(body)

    def _get(self, path: str) -> bytes:
        deadline = time.monotonic() + self.config.timeout_seconds
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.config.timeout_seconds, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.config.timeout_seconds)
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise PrometheusError(f"no complete answer within {self.config.timeout_seconds:g}s")
                chunk = resp.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise PrometheusError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
            if resp.status != 200:
                raise PrometheusError(f"HTTP {resp.status}: {_error_text(body)}")
            return body
        except (OSError, http.client.HTTPException) as e:
            raise PrometheusError(f"{type(e).__name__}: {e}") from e
        finally:
            conn.close()

    def _token(self) -> str | None:
        if not self.config.token_file:
            return None
        try:
            with open(self.config.token_file, "rb") as f:
                raw = f.read(MAX_TOKEN_BYTES + 1)
        except OSError as e:
            raise PrometheusError(f"bearer token file: {e}") from e
        if len(raw) > MAX_TOKEN_BYTES:
            raise PrometheusError(f"bearer token file is larger than {MAX_TOKEN_BYTES} bytes")
        token = raw.decode("utf-8", errors="replace").strip()
        if any(c in token for c in "\r\n"):
            raise PrometheusError("bearer token file holds more than one line")
        return token

    # -- the analysis' figures ---------------------------------------------------------------------------------
    def samples(
        self, where: tuple[str, str], candidate: str, stable: str, at: datetime, window_seconds: int | None
    ) -> Samples:
        """The figures podmetrics reads from the pods of ``where`` (namespace, ModelDeployment name), over the last
        ``window_seconds`` before ``at`` (None: the raw counters, i.e. the servers' lifetime). Raises
        PrometheusError."""
        c = self.config
        owner = f'{c.namespace_label}="{_quote(where[0])}",{c.name_label}="{_quote(where[1])}"'

        def sel(revision: str, extra: str = "") -> str:
            return f'{owner},{c.revision_label}="{_quote(revision)}"{extra}'

        def over(metric: str, selector: str) -> str:
            series = f"{metric}{{{selector}}}"
            return f"increase({series}[{window_seconds}s])" if window_seconds else series

        mirror = sel(stable, f',candidate="{_quote(candidate)}"')
        model = ',model!=""'
        outcomes = self._by("outcome", over("modelship_mirror_requests_total", mirror), at)
        rows = self._by("result", over("modelship_mirror_rows_total", mirror), at)
        requests = self._sum(over("modelship_request_duration_seconds_count", sel(candidate, model)), at)
        errors = self._sum(
            over("modelship_requests_total", sel(candidate, model + ',protocol=~"v1|v2",code=~"5..|429"')), at
        )
        cand_latency = self._histogram(over("modelship_request_duration_seconds_bucket", sel(candidate, model)), at)
        stable_latency = self._histogram(over("modelship_request_duration_seconds_bucket", sel(stable, model)), at)
        agreed = rows.get("agree", 0.0)
        return Samples(
            mirrored=_count(outcomes.get("compared", 0.0)),
            rows_agreed=_count(agreed),
            rows_compared=_count(agreed) + _count(sum(v for k, v in rows.items() if k != "agree")),
            mirror_failures=_count(outcomes.get("failed", 0.0)),
            candidate_requests=_count(requests),
            candidate_errors=_count(errors),
            candidate_latency=cand_latency,
            stable_latency=stable_latency,
        )

    def _by(self, label: str, expr: str, at: datetime) -> dict[str, float]:
        return {s.labels.get(label, ""): s.value for s in self.query(f"sum by ({label}) ({expr})", at)}

    def _sum(self, expr: str, at: datetime) -> float:
        return sum(s.value for s in self.query(f"sum({expr})", at))

    def _histogram(self, expr: str, at: datetime) -> Histogram:
        buckets: dict[float, float] = {}
        for s in self.query(f"sum by (le) ({expr})", at):
            try:
                buckets[float(s.labels["le"])] = s.value
            except (KeyError, ValueError):
                raise PrometheusError(f"a histogram bucket without a usable le label: {dict(s.labels)}") from None
        if not buckets:
            return EMPTY
        bounds = tuple(sorted(buckets))
        return Histogram(bounds, tuple(buckets[b] for b in bounds))


def read(client: PrometheusClient, where: tuple[str, str], candidate: str, stable: str, at: datetime,
         window_seconds: int | None) -> Samples:  # fmt: skip
    """``client.samples``, a failure turned into ``Samples.error`` naming the server."""
    try:
        return client.samples(where, candidate, stable, at, window_seconds)
    except PrometheusError as e:
        return Samples(error=f"Prometheus at {client.config.url}: {e}"[:500])


def _vector(body: bytes) -> list[Series]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PrometheusError(f"not JSON: {body[:80]!r}") from None
    if not isinstance(doc, dict):
        raise PrometheusError("not a Prometheus API answer")
    if doc.get("status") != "success":
        raise PrometheusError(f"{doc.get('errorType', 'error')}: {str(doc.get('error', doc.get('status')))[:200]}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("answer without data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [Series({}, _value(result))]
    if kind != "vector" or not isinstance(result, list):
        raise PrometheusError(f"expected a vector, got {str(kind)[:40]}")
    if len(result) > MAX_SERIES:
        raise PrometheusError(f"{len(result)} series (at most {MAX_SERIES})")
    out: list[Series] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
            raise PrometheusError("a series without labels")
        labels = item["metric"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise PrometheusError("a series whose labels are not strings")
        out.append(Series(labels, _value(item.get("value"))))
    return out


def _value(pair: Any) -> float:
    """[<unix time>, "<value>"] -> the value (NaN, e.g. an increase over no sample, is 0)."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise PrometheusError(f'a sample that is not [time, "value"]: {str(pair)[:80]}')
    try:
        value = float(pair[1])
    except ValueError:
        raise PrometheusError(f"a sample value that is not a number: {pair[1][:40]!r}") from None
    if math.isnan(value):
        return 0.0
    if math.isinf(value) or value < 0:
        raise PrometheusError(f"a counter value that is not a finite count: {pair[1][:40]}")
    return value


def _count(value: float) -> int:
    return round(value)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])[:200]
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:200].decode("utf-8", errors="replace")
