"""Prometheus metrics of the model server (one registry per app, served at ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
        self.queue_depth = Gauge("modelship_queue_depth", "Requests waiting for a worker.", ["model"], registry=r)
        self.load_seconds = Gauge(
            "modelship_model_load_seconds", "Seconds spent loading and warming the model.", ["model"], registry=r
        )
        self.in_flight = Gauge("modelship_in_flight_requests", "Requests being handled.", registry=r)
        self.ready = Gauge("modelship_ready", "1 while the server reports ready.", registry=r)
        self.connections = Gauge("modelship_open_connections", "Open HTTP connections.", registry=r)
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._lat_children: dict[tuple[str, str], Histogram] = {}

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
