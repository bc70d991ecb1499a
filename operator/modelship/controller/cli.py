"""`modelship operator`: run the kopf operator with Modelship's settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rest is imported when the operator runs: `modelship --help` and the serving image lack kopf
    from ..resources.kinds import Kind
    from .rewatch import Discover, Gap

log = logging.getLogger("modelship.operator")

RESTART_PAUSE_SECONDS = 1.0
"""Pause before the watches start again after a watched resource went away (a CRD deleted under its watch)."""
DISCOVERY_TIMEOUT = (5.0, 10.0)
"""(connect, read) seconds of the poll's discovery GET."""


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

    from . import handlers, metrics, rewatch

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
    gap = rewatch.Gap()  # kept across restarts: a restart that did not get a kind watched waits longer for the next
    discover = _discovery()
    while True:
        try:
            restart_for = asyncio.run(_operate(
                gap, discover,
                standalone=True,
                clusterwide=not args.namespace,
                namespaces=namespaces,
                liveness_endpoint=args.liveness or None,
            ))  # fmt: skip
        except gone_errors() as exc:
            # A CRD deleted under a running watch (the Gateway API HTTPRoute CRD, say): kopf's watch-stream of it
            # reconnects into a 404 and kopf's orchestrator re-raises it, ending the whole operator: always when
            # namespaced (scanning off: no CRD watch), cluster-wide whenever the reconnect beats kopf's own CRD
            # watch. Start again instead: the new start resolves the resources served now (the ModelDeployments
            # and the rest keep being reconciled) and, cluster-wide, watches CRDs to pick the gone one up when it
            # comes back; `startup` builds the store and the work queue afresh.
            log.warning("a watch-stream ended: restarting the watches (%s)", exc)
            metrics.WATCH_RESTARTS.labels("gone").inc()
            time.sleep(RESTART_PAUSE_SECONDS)
            continue
        except asyncio.CancelledError:
            return 0  # as kopf.run: a cancelled operator ends quietly
        if not restart_for:
            return 0  # kopf stopped on a signal
        # Watched kinds discovery serves and kopf does not watch (controller.rewatch): kopf stopped through its
        # stop flag (cleanup ran); the new start resolves them.
        log.warning(
            "served by the API server but not watched: restarting the watches (%s)",
            ", ".join(rewatch.name(rewatch.ref(k)) for k in restart_for),
        )
        metrics.WATCH_RESTARTS.labels("served").inc()


async def _operate(gap: Gap, discover: Discover, **kopf_args: Any) -> tuple[Kind, ...]:
    """One run of kopf's watches, next to the poll of discovery for the watched kinds kopf does not watch; the
    kinds it found served (the watches stopped for them), or () when kopf stopped for its own reasons."""
    import kopf
    from kopf._cogs.structs.references import Insights  # kopf.operator takes it; kopf exports no name for it

    from ..resources.kinds import WATCHED
    from . import handlers, rewatch

    insights = Insights()  # what kopf resolved and watches, read by the poll
    stop = asyncio.Event()
    handlers._State.stop = stop  # set by the cleanup handler too, when kopf stops on a signal
    found: tuple[Kind, ...] = ()

    async def look() -> None:
        nonlocal found
        try:
            found = await rewatch.poll(
                WATCHED,
                watched=lambda: {(r.group, r.version, r.plural) for r in insights.watched_resources},
                ready=insights.ready_resources.wait,
                discover=discover,
                gap=gap,
            )
        except Exception:  # a bug of the poll must not end the watches: they run on without it
            log.exception("the discovery poll ended")
            return
        stop.set()

    poll = asyncio.create_task(look(), name="modelship discovery poll")
    try:
        await kopf.operator(insights=insights, stop_flag=stop, **kopf_args)
    finally:
        poll.cancel()
    return found


def _discovery() -> Discover:
    """The discovery GET of the poll (short timeouts: it runs in a thread the loop waits for when it ends)."""
    from .kube import Kube, api_client

    return Kube(api_client(1), timeout=DISCOVERY_TIMEOUT).discover


def gone_errors() -> tuple[type[Exception], ...]:
    """What kopf raises when a watched resource is not served any more (kopf exports no name for it)."""
    from kopf._cogs.clients.errors import APINotFoundError

    return (APINotFoundError,)
