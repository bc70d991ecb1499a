"""`modelship operator`: run the kopf operator with Modelship's settings."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("operator", help="run the Kubernetes operator (kopf)")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: the whole cluster")  # fmt: skip
    p.add_argument("--liveness", default=os.environ.get("MODELSHIP_LIVENESS", "http://0.0.0.0:8080/healthz"),
                   help="liveness endpoint URL (kopf probe)")  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("MODELSHIP_METRICS_PORT", "8081")),
                   help="port of the Prometheus /metrics endpoint (0: off)")  # fmt: skip
    p.add_argument("--workers", type=int, default=int(os.environ.get("MODELSHIP_WORKERS", "4")),
                   help="reconcile worker threads")  # fmt: skip
    p.add_argument("--log-format", choices=["json", "plain"], default=os.environ.get("MODELSHIP_LOG_FORMAT", "json"))
    p.add_argument("--log-level", default=os.environ.get("MODELSHIP_LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from . import handlers

    kopf.configure(
        verbose=args.log_level.upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=False,
    )
    logging.getLogger().setLevel(args.log_level.upper())
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per watch event
    handlers._State.workers = max(1, args.workers)
    handlers._State.namespaced = bool(args.namespace)
    if args.metrics_port:
        start_http_server(args.metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=list(args.namespace),
        liveness_endpoint=args.liveness or None,
    )
    return 0
