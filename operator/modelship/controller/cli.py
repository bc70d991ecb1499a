"""`modelship operator`: run the kopf operator with Modelship's settings."""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

log = logging.getLogger("modelship.operator")

RESTART_PAUSE_SECONDS = 1.0
"""Pause before the watches start again after a watched resource went away (a CRD deleted under its watch)."""


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
    from ..config import OperatorConfig

    handlers._State.workers = max(1, args.workers)
    handlers._State.namespaced = bool(args.namespace)
    namespaces = list(dict.fromkeys(args.namespace))
    build_namespace = OperatorConfig.from_env().build_namespace
    if namespaces and build_namespace and build_namespace not in namespaces:
        namespaces.append(build_namespace)  # the build Jobs and their pods are watched there
    if args.metrics_port:
        start_http_server(args.metrics_port)
    while True:
        try:
            kopf.run(
                standalone=True,
                clusterwide=not args.namespace,
                namespaces=namespaces,
                liveness_endpoint=args.liveness or None,
            )
            return 0
        except gone_errors() as exc:
            # A CRD deleted under a running watch (the Gateway API HTTPRoute CRD, say): kopf's watch-stream of it
            # reconnects into a 404 and kopf's orchestrator re-raises it, ending the whole operator: always when
            # namespaced (scanning off: no CRD watch), cluster-wide whenever the reconnect beats kopf's own CRD
            # watch. Start again instead: the new start resolves the resources served now (the ModelDeployments
            # and the rest keep being reconciled) and, cluster-wide, watches CRDs to pick the gone one up when it
            # comes back; `startup` builds the store and the work queue afresh.
            log.warning("a watch-stream ended: restarting the watches (%s)", exc)
            time.sleep(RESTART_PAUSE_SECONDS)


def gone_errors() -> tuple[type[Exception], ...]:
    """What kopf raises when a watched resource is not served any more (kopf exports no name for it)."""
    from kopf._cogs.clients.errors import APINotFoundError

    return (APINotFoundError,)
