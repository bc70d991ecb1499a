"""Prometheus metrics of the model server (one registry per app, served at ``/metrics`` on the metrics port).

Besides requests, latency and batching: where the CPU goes (``modelship_invoke_cpu_seconds_total``, the CPU time
the workers spent inside the interpreter's ``invoke()``, against ``modelship_process_cpu_seconds_total``; their
ratio since the server became ready is ``modelship_invoke_cpu_ratio``), the memory budgets and what they hold, and
requests refused by the server's bounds (``modelship_rejected_requests_total{reason}``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """All server metrics. Label children are cached so the hot path does no label lookups."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelship_requests",
            "HTTP requests answered, by model, protocol (v1, v2, other) and status code.",
            ["model", "protocol", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "modelship_request_duration_seconds",
            "Time from a complete request to its response, for inference requests.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelship_batch_size",
            "Rows per model invocation after dynamic batching.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "modelship_batch_requests",
            "Requests coalesced into one model invocation.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "modelship_inference_duration_seconds",
            "Time a worker spends on one batch (quantize, invoke, dequantize).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "modelship_queue_wait_seconds",
            "Time an inference request waited in its model's queue, from decoded to taken into a batch for a worker.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("modelship_queue_depth", "Requests waiting for a worker.", ["model"], registry=r)
        self.load_seconds = Gauge(
            "modelship_model_load_seconds", "Seconds spent loading and warming the model.", ["model"], registry=r
        )
        self.in_flight = Gauge("modelship_in_flight_requests", "Requests being handled.", registry=r)
        self.ready = Gauge("modelship_ready", "1 while the server reports ready.", registry=r)
        self.connections = Gauge("modelship_open_connections", "Open HTTP connections.", registry=r)
        self.rejections = Counter(
            "modelship_rejected_requests",
            "Requests refused by the server's bounds, by reason (queue_full, decode_budget, too_large_to_decode, "
            "not_ready; the HTTP layer's own refusals are modelship_http_*).",
            ["reason"],
            registry=r,
        )
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._lat_children: dict[tuple[str, str], Histogram] = {}
        self._rej_children: dict[str, Counter] = {}
        self._meters: Callable[[], Iterable[tuple[str, float]]] = lambda: ()
        self._ready_at: tuple[float, float] | None = None  # (process CPU, invoke CPU) when the server became ready
        r.register(_Collect(self._cpu))

    def rejected(self, reason: str) -> None:
        child = self._rej_children.get(reason)
        if child is None:
            child = self._rej_children[reason] = self.rejections.labels(reason)
        child.inc()

    def bind_invoke_meters(self, meters: Callable[[], Iterable[tuple[str, float]]]) -> None:
        """``meters()`` -> (model, CPU seconds inside invoke() so far) for each model."""
        self._meters = meters

    def mark_ready(self) -> None:
        """Start of the window of ``modelship_invoke_cpu_ratio`` (loading and warming up are not serving)."""
        self._ready_at = (time.process_time(), sum(v for _, v in self._meters()))

    def cpu(self) -> tuple[float, float, float | None]:
        """(process CPU seconds, invoke CPU seconds, invoke share of the process CPU since ready)."""
        process = time.process_time()
        invoke = sum(v for _, v in self._meters())
        ratio = None
        if self._ready_at is not None and process > self._ready_at[0]:
            ratio = (invoke - self._ready_at[1]) / (process - self._ready_at[0])
        return process, invoke, ratio

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Metrics computed at scrape time (the HTTP layer's counters, the memory budgets)."""
        self.registry.register(_Collect(collect))

    def _cpu(self) -> Iterator[Metric]:
        process, _, ratio = self.cpu()
        per_model = CounterMetricFamily(
            "modelship_invoke_cpu_seconds",
            "CPU seconds the workers spent inside the interpreter's invoke() (thread CPU time; an interpreter "
            "running several threads counts wall time x threads).",
            labels=["model"],
        )
        for name, seconds in self._meters():
            per_model.add_metric([name], seconds)
        yield per_model
        yield CounterMetricFamily(
            "modelship_process_cpu_seconds", "CPU seconds of the whole server process (user + system).", value=process
        )
        if ratio is not None:
            yield GaugeMetricFamily(
                "modelship_invoke_cpu_ratio",
                "Share of the server's CPU time spent inside invoke() since it became ready (1.0: all of it).",
                value=ratio,
            )

    def observe_request(self, model: str, protocol: str, code: int, seconds: float | None) -> None:
        key = (model, protocol, code)
        child = self._req_children.get(key)
        if child is None:
            child = self.requests.labels(model, protocol, str(code))
            self._req_children[key] = child
        child.inc()
        if seconds is not None:
            lkey = (model, protocol)
            hist = self._lat_children.get(lkey)
            if hist is None:
                hist = self.latency.labels(model, protocol)
                self._lat_children[lkey] = hist
            hist.observe(seconds)

    def bind_gauges(
        self, in_flight: Callable[[], float], ready: Callable[[], float], connections: Callable[[], float]
    ) -> None:
        self.in_flight.set_function(in_flight)
        self.ready.set_function(ready)
        self.connections.set_function(connections)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collect(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()
