"""Shadow traffic: a stable server mirrors a sampled share of its inference requests to a candidate revision and
compares the two answers, without ever delaying or failing its own client.

* Where to mirror comes from small JSON settings (``--mirror-config``), read again every second: a file, or in a
  cluster the URL of the candidate's own offer (``modelship serve --mirror-offer``, served at ``/mirror`` on the
  candidate's metrics port behind its Service): a candidate that starts is mirrored to within a second, one
  that goes away is not, and the stable pods are never restarted. No settings, or ``percent`` 0, is no
  mirroring.
* A request is sampled when it arrives (an exact share: every ``100/percent``-th request); its body is copied
  only then, and only up to ``MAX_MIRROR_BODY`` bytes (larger ones are counted as skipped).
* After the stable answer is handed to the transport, the request is written to the candidate, pipelined on
  one of two kept-alive HTTP/1.1 connections of the server's event loop (asyncio transports: no thread, no
  blocking call); the mirrors in flight are bounded (entries and bytes): past the bound a mirror is dropped and
  counted, never waited for. A connection whose oldest mirror waits past the timeout is closed and its mirrors
  count as failed.
* The answers are compared row by row: the largest output at the same index (Top1, classifiers) or every value
  within ``atol + rtol * |stable|`` (Tolerance, regression); Auto picks Top1 for outputs with more than one
  value per row.
* The figures are Prometheus metrics on the metrics port (``modelship_mirror_*``, labelled with the candidate
  revision), which the operator reads to judge the candidate.

This module holds the mirror itself (sampling, bounds, outcomes, reading the settings); ``mirrorconfig`` the
settings, ``mirrorwire`` a mirrored request and the connection to the candidate, ``comparison`` the comparison.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

from .comparison import compare
from .metrics import LATENCY_BUCKETS, Metrics
from .mirrorconfig import MirrorConfig, parse_config
from .mirrorwire import CandidateConnection, Shadowed

log = logging.getLogger("modelship.serve.mirror")

MAX_MIRROR_BODY = 1024 * 1024
"""Largest request body that is mirrored."""
QUEUE_ENTRIES = 256
QUEUE_BYTES = 16 * 1024 * 1024
"""Mirrors in flight at most (sent or waiting to be, not answered yet), and their bytes (request and stable
answer together): more are dropped and counted."""
CONNECTIONS = 2
"""Kept-alive connections to the candidate; mirrors are pipelined on them."""
CONNECT_TIMEOUT_SECONDS = 2.0
FETCH_TIMEOUT_SECONDS = 1.0
"""Reading the mirror settings from a candidate's metrics port."""
MAX_SETTINGS_BYTES = 64 * 1024
SWEEP_SECONDS = 0.25
RELOAD_SECONDS = 1.0


class MirrorMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.requests = Counter(
            "modelship_mirror_requests",
            "Requests sampled for mirroring to the candidate, by outcome: compared (both answered), failed (the "
            "candidate did not answer or timed out), error (it answered 5xx), rejected (it answered 4xx), "
            "dropped (the mirror queue was full), skipped (too large, or an answer that is not JSON).",
            ["candidate", "outcome"],
            registry=r,
        )
        self.rows = Counter(
            "modelship_mirror_rows",
            "Rows of mirrored requests, by whether the candidate's output agreed with this server's.",
            ["candidate", "result"],
            registry=r,
        )
        self.latency = Histogram(
            "modelship_mirror_candidate_duration_seconds",
            "Time the candidate took to answer a mirrored request, as this server's mirror client saw it.",
            ["candidate"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.percent = Gauge(
            "modelship_mirror_percent", "Share of requests mirrored to the candidate now.", ["candidate"], registry=r
        )
        self.queued = Gauge("modelship_mirror_queue_depth", "Mirrored requests waiting to be sent.", registry=r)
        self._children: dict[tuple[str, ...], Any] = {}  # label lookups cost more than the increments

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count(self, candidate: str, outcome: str) -> None:
        self._child(self.requests, candidate, outcome).inc()

    def count_rows(self, candidate: str, agreed: int, disagreed: int) -> None:
        self._child(self.rows, candidate, "agree").inc(agreed)
        if disagreed:
            self._child(self.rows, candidate, "disagree").inc(disagreed)

    def observe(self, candidate: str, seconds: float) -> None:
        self._child(self.latency, candidate).observe(seconds)


class Mirror:
    """The mirror of one server: sampling, sending and comparing on the server's event loop, after the client's
    answer is handed to the transport; the mirror file is read on a thread of its own."""

    def __init__(
        self,
        metrics: Metrics,
        path: str | None = None,
        connections: int = CONNECTIONS,
        max_entries: int = QUEUE_ENTRIES,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.metrics = MirrorMetrics(metrics)
        self.path = path
        self.config: MirrorConfig | None = None
        self.max_connections = connections
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.in_flight = 0
        self.in_flight_bytes = 0
        self._conns: list[CandidateConnection] = []
        self._credit = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self.metrics.queued.set_function(lambda: float(self.in_flight))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.path is not None:
            self.reload()
            threading.Thread(target=self._watch, name="modelship-mirror-config", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        for conn in list(self._conns):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def configure(self, config: MirrorConfig | None) -> None:
        old = self.config
        if old == config:
            return
        if old is not None:
            self.metrics.percent.labels(old.candidate).set(0)
        if config is not None:
            self.metrics.percent.labels(config.candidate).set(config.percent)
        self._credit = 0.0
        self.config = config
        log.info(
            "mirroring",
            extra={"url": config.url, "percent": config.percent, "candidate": config.candidate}
            if config
            else {"url": None},
        )

    def reload(self) -> None:
        """Read the mirror settings again: from the file when it changed (a missing file turns mirroring off), or
        from the URL (a candidate's metrics port offering them: no answer turns mirroring off)."""
        assert self.path is not None
        if self.path.startswith("http://"):
            return self._reload_url(self.path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp = None
            self.configure(None)
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_SETTINGS_BYTES)
            self.configure(parse_config(raw))
        except (OSError, ValueError) as e:
            log.warning("mirror file ignored: mirroring is off", extra={"path": self.path, "error": str(e)})
            self.configure(None)

    def _reload_url(self, url: str) -> None:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=FETCH_TIMEOUT_SECONDS)
        try:
            conn.request("GET", parts.path or "/")
            resp = conn.getresponse()
            raw = resp.read(MAX_SETTINGS_BYTES + 1)
            if resp.status != 200 or len(raw) > MAX_SETTINGS_BYTES:
                return self.configure(None)
            self.configure(parse_config(raw))
        except (OSError, http.client.HTTPException):
            self.configure(None)  # no candidate offering (none runs, or it is going away): no mirroring
        except ValueError as e:
            if self.config is not None:
                log.warning("mirror settings ignored: mirroring is off", extra={"url": url, "error": str(e)})
            self.configure(None)
        finally:
            conn.close()

    def _watch(self) -> None:
        while not self._stop.wait(RELOAD_SECONDS):
            try:
                self.reload()
            except Exception:  # the watcher must outlive any surprise
                log.exception("reading the mirror file failed")

    # ------------------------------------------------------------------ on the event loop

    def sample(self) -> MirrorConfig | None:
        """Whether this request is mirrored (an exact share of requests): its config, or None."""
        config = self.config
        if config is None:
            return None
        self._credit += config.percent / 100.0
        if self._credit < 1.0:
            return None
        self._credit -= 1.0
        return config

    def fits(self, config: MirrorConfig, size: int) -> bool:
        if size > MAX_MIRROR_BODY:
            self.metrics.count(config.candidate, "skipped")
            return False
        return True

    def offer(self, item: Shadowed) -> None:
        """Send a mirror after the stable answer is on its way; drop it (counted) when the mirror already holds
        its limit of requests or bytes in flight. Never waits."""
        size = item.size
        if self.in_flight >= self.max_entries or self.in_flight_bytes + size > self.max_bytes:
            self.metrics.count(item.config.candidate, "dropped")
            return
        try:
            conn = self._connection(item.config)
        except RuntimeError:  # no running loop: shutting down
            self.metrics.count(item.config.candidate, "dropped")
            return
        self.in_flight += 1
        self.in_flight_bytes += size
        item.sent = time.monotonic()
        item.deadline = item.sent + item.config.timeout_s
        conn.send(item)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    def _connection(self, config: MirrorConfig) -> CandidateConnection:
        target = config.host_port
        for conn in list(self._conns):
            if conn.target != target:
                conn.close()  # the candidate moved: its answers are no longer wanted
        if len(self._conns) < self.max_connections:
            loop = asyncio.get_running_loop()
            conn = CandidateConnection(self, target)
            self._conns.append(conn)
            task = loop.create_task(self._connect(loop, conn))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
            return conn
        return min(self._conns, key=lambda c: len(c.waiting))

    async def _connect(self, loop: asyncio.AbstractEventLoop, conn: CandidateConnection) -> None:
        host, port = conn.target
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError):
            conn.close()

    def _sweep(self) -> None:
        """Close connections whose oldest mirror has waited past its timeout (its mirrors count as failed)."""
        self._sweeper = None
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.waiting and conn.waiting[0].deadline < now:
                conn.close()
        if self.in_flight:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def connection_closed(self, conn: CandidateConnection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)

    def _done(self, item: Shadowed) -> None:
        self.in_flight -= 1
        self.in_flight_bytes -= item.size

    def failed(self, item: Shadowed) -> None:
        self._done(item)
        self.metrics.count(item.config.candidate, "failed")

    def answered(self, item: Shadowed, status: int, answer: bytes) -> None:
        self._done(item)
        cfg = item.config
        count = self.metrics.count
        self.metrics.observe(cfg.candidate, time.monotonic() - item.sent)
        if status >= 500:
            count(cfg.candidate, "error")
        elif status != 200:
            count(cfg.candidate, "rejected")
        elif not _is_json(item.answer_type):  # binary tensors: not compared
            count(cfg.candidate, "skipped")
        else:
            agreed, rows = compare(item.answer, answer, cfg.comparison, cfg.rtol, cfg.atol)
            count(cfg.candidate, "compared")
            self.metrics.count_rows(cfg.candidate, agreed, rows - agreed)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every mirror in flight was answered or failed (tests, benchmarks; from another thread)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.in_flight == 0:
                return True
            time.sleep(0.01)
        return False


def _is_json(ctype: str) -> bool:
    return ctype.split(";", 1)[0].strip().lower() == "application/json"
