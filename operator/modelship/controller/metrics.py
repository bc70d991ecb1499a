"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("modelship_reconciles_total", "Reconciles by outcome", ["result"])
RECONCILE_ERRORS = Counter("modelship_reconcile_errors_total", "Reconciles that raised, by exception type", ["error"])
RECONCILE_GIVE_UPS = Counter(
    "modelship_reconcile_give_ups_total", "Objects marked Stalled after their reconciles kept failing"
)
RECONCILE_SECONDS = Histogram(
    "modelship_reconcile_duration_seconds",
    "Time of one reconcile (observe, plan, apply, status)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_READS = Counter(
    "modelship_api_reads_total", "Fresh reads before a write (objects the store does not hold as ours)", ["kind"]
)
API_WRITES = Counter("modelship_api_writes_total", "Writes to the API server", ["verb", "kind"])
STAGE_SECONDS = Histogram(
    "modelship_stage_duration_seconds",
    "Duration of stage Jobs from creation to completion",
    ["stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
STAGE_TRANSITIONS = Counter("modelship_stage_transitions_total", "Stage condition changes", ["condition", "reason"])
EVENTS_DROPPED = Counter(
    "modelship_events_dropped_total",
    "Events the operator did not post (Events are best effort; status is the record), by reason: "
    "namespace-terminating (its namespace is being deleted), queue-full (the poster's queue was full), "
    "api-error (the API server refused it), unreachable (no answer from the API server), error (anything else)",
    ["reason"],
)
QUEUE_DEPTH = Gauge("modelship_workqueue_depth", "Keys waiting for a reconcile")
PHASES = Gauge("modelship_modeldeployments", "ModelDeployments by phase", ["phase"])
API_SECONDS = Histogram(
    "modelship_api_request_duration_seconds",
    "Latency of the operator's own API requests",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WATCH_RESTARTS = Counter(
    "modelship_watch_restarts_total",
    "Restarts of kopf's watches, by reason: gone (a watched resource went away under its watch-stream) or served "
    "(a watched kind became served after kopf had found it missing)",
    ["reason"],
)
CRD_SKEW = Gauge(
    "modelship_crd_skew",
    "Evidence that the installed ModelDeployment CRD and this operator differ, by direction: older (the CRD is older "
    "than the operator) counts the status fields the API server drops from the operator's writes",
    ["direction"],
)
