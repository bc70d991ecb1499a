"""``modelship serve``: the subcommand the lead's top-level CLI registers via :func:`register`."""

from __future__ import annotations

import argparse
from typing import Any

from .config import ENV_VARS, ServeConfig, parse_bytes

_D = ServeConfig(model="")


def _env(field: str) -> str:
    return ENV_VARS[field]


def register(subparsers: Any) -> None:
    """Add the ``serve`` subparser to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a TFLite or SavedModel over TF Serving REST (v1) and the Open Inference Protocol (v2)",
        description=(
            "Serve a model over HTTP: TF Serving REST (/v1/models/NAME:predict) and the Open Inference "
            "Protocol (/v2/models/NAME/infer), health at /v2/health/{live,ready}; Prometheus metrics at "
            "/metrics and health on the metrics port. Byte limits left at 0 are sized from the container's "
            "memory limit (cgroup). Every flag can also be set with the MODELSHIP_* environment variable shown; "
            "flags win."
        ),
    )

    def add(flag: str, field: str, kind: Any, help_text: str, default: Any) -> None:
        p.add_argument(
            flag,
            dest=field,
            type=kind,
            default=None,
            help=f"{help_text} [env {_env(field)}; default {default}]",
        )

    add(
        "--model",
        "model",
        str,
        "model path: a .tflite file, a SavedModel directory, or a versioned base dir",
        "required",
    )
    add("--name", "name", str, "model name in URLs", "the file or directory name")
    add("--model-version", "model_version", str, "version reported and accepted in /versions/N", "numeric dir or 1")
    add("--host", "host", str, "listen address", _D.host)
    add("--port", "port", int, "listen port (inference)", _D.port)
    add("--metrics-port", "metrics_port", int, "port of /metrics and health (0 = any free port)", _D.metrics_port)
    add("--workers", "workers", int, "interpreter workers (0 = one per CPU of the container limit)", "0")
    add("--threads", "threads", int, "intra-op threads per worker (0 = CPUs / workers)", "0")
    add("--max-batch-size", "max_batch_size", int, "largest batch formed by dynamic batching", _D.max_batch_size)
    add(
        "--batch-timeout-us",
        "batch_timeout_us",
        int,
        "longest a request waits for others to join its batch (only while others are arriving)",
        _D.batch_timeout_us,
    )
    add(
        "--max-request-bytes",
        "max_request_bytes",
        parse_bytes,
        "larger request bodies get 413 (bytes, or 16Mi / 16M)",
        "0 = from the memory limit, at most 64Mi",
    )
    add(
        "--max-inflight-bytes",
        "max_inflight_bytes",
        parse_bytes,
        "request bytes all requests together may hold; more get 429 + Retry-After",
        "0 = from the memory limit",
    )
    add(
        "--max-decoded-bytes",
        "max_decoded_bytes",
        parse_bytes,
        "decoded tensor bytes (JSON parsing included) all requests together may hold; more get 429",
        "0 = from the memory limit",
    )
    add(
        "--memory-limit-bytes",
        "memory_limit_bytes",
        parse_bytes,
        "memory limit the budgets are sized from",
        "0 = the cgroup's (v2 memory.max, v1 memory.limit_in_bytes)",
    )
    add("--max-queue", "max_queue", int, "requests waiting per model; more get 429 at once", _D.max_queue)
    add(
        "--max-connections",
        "max_connections",
        int,
        "open connections; at the limit the longest-idle one is closed, else the new one gets 429",
        _D.max_connections,
    )
    add("--request-timeout-s", "request_timeout_s", float, "per-request deadline (504), 0 = none", _D.request_timeout_s)
    add(
        "--header-timeout-s",
        "header_timeout_s",
        float,
        "the request head must arrive, and a body must not stall, within this (408)",
        _D.header_timeout_s,
    )
    add(
        "--min-upload-rate",
        "min_upload_rate",
        parse_bytes,
        "bytes/s a large body (over 256Ki) must arrive at once the header timeout has passed (408); 0 = none",
        "64Ki",
    )
    add(
        "--keepalive-timeout-s",
        "keepalive_timeout_s",
        float,
        "idle keep-alive connections are closed after",
        _D.keepalive_timeout_s,
    )
    add(
        "--drain-seconds",
        "drain_seconds",
        float,
        "after SIGTERM, keep serving this long with readiness false",
        _D.drain_seconds,
    )
    add(
        "--shutdown-timeout-s",
        "shutdown_timeout_s",
        float,
        "then wait at most this long for in-flight requests",
        _D.shutdown_timeout_s,
    )
    add(
        "--switch-interval-us",
        "switch_interval_us",
        int,
        "longest a thread running Python keeps the GIL while another waits for it (Python's default: 5000)",
        _D.switch_interval_us,
    )
    add("--log-level", "log_level", str, "debug, info, warning or error", _D.log_level)
    add("--revision", "revision", str, "revision named in every answer's x-modelship-revision header", "none")
    add(
        "--mirror-config",
        "mirror_config",
        str,
        "where to mirror a share of requests: a JSON file {url, percent, candidate, comparison, rtol, atol} or an "
        "http:// URL serving it (a candidate's --mirror-offer); read again every second (none: no mirroring)",
        "none",
    )
    add(
        "--mirror-offer",
        "mirror_offer",
        str,
        "as a candidate revision: the mirror settings (JSON, as --mirror-config reads) offered at /mirror on the "
        "metrics port",
        "none",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM. Returns the process exit code."""
    from .config import config_from
    from .logs import setup_logging

    values = {k: getattr(args, k, None) for k in ENV_VARS}
    try:
        cfg = config_from(values)
    except ValueError as e:
        setup_logging("info")
        import logging

        from . import termination

        logging.getLogger("modelship.serve").error("invalid configuration", extra={"error": str(e)})
        termination.write(termination.cause("invalid configuration", e))
        return 2
    setup_logging(cfg.log_level)
    from .server import run as run_server

    return run_server(cfg)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m modelship.serve``) for images without the full CLI."""
    parser = argparse.ArgumentParser(prog="modelship")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
