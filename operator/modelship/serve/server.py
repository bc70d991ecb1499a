"""Run the model server: listen, load and warm the model, serve, and shut down gracefully.

Lifecycle of ``modelship serve``:

* listen at once on the inference port and the metrics port (``/metrics`` and health; the probes' port):
  ``/v2/health/live`` answers 200 while the model loads, readiness says 503;
* load the model in a thread, start one worker per CPU and warm every interpreter, size the memory budgets from
  the container's memory limit and what the warm server already uses, then readiness turns 200;
* on SIGTERM: readiness turns 503 and responses say ``Connection: close``; keep serving for
  ``drain_seconds`` (while Kubernetes removes the Pod from its endpoints); stop accepting; let in-flight
  requests finish (at most ``shutdown_timeout_s``); exit 0. SIGINT skips the drain delay; a second signal
  stops waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import jsonparse, termination
from .app import AppConfig, ServingApp
from .config import ServeConfig, memory_limit
from .http import HttpServer, thread_schedstat
from .limits import Budget, MemoryPlan, plan_memory, resident_bytes
from .mirror import Mirror
from .mirrorconfig import parse_config
from .model import ServedModel
from .pauses import GcPauses, freeze_heap, switch_interval

#: the metrics port serves a few small GETs: few connections, tiny requests
ADMIN_MAX_CONNECTIONS = 64
ADMIN_MAX_REQUEST_BYTES = 64 * 1024

log = logging.getLogger("modelship.serve")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the [serve] extra
        return asyncio.new_event_loop()


class ListenError(OSError):
    """A port the server could not listen on (taken by another process, an address not this host's): which one
    (``what``: inference or metrics), at ``address`` (host:port), and the error of the bind or listen."""

    def __init__(self, what: str, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.what, self.error = what, error
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def __str__(self) -> str:
        return f"{self.what} port {self.address}: {self.error}"


class AdminThread:
    """The metrics port on a thread and event loop of its own: probes and scrapes are answered while the
    inference loop is saturated (a flood of connections, a long decode): they wait at most for the GIL, never in
    the inference loop's queue."""

    def __init__(self, http: HttpServer) -> None:
        self.http = http
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        started = threading.Event()
        failed: list[BaseException] = []

        def main() -> None:
            loop = self._loop = _new_loop()
            asyncio.set_event_loop(loop)
            try:
                self.port = loop.run_until_complete(self.http.start(host, port, sock=sock))
            except BaseException as e:
                failed.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                self.http.close()
                loop.run_until_complete(asyncio.sleep(0))
                loop.close()

        self._thread = threading.Thread(target=main, name="modelship-metrics", daemon=True)
        self._thread.start()
        started.wait(60)
        if failed:
            raise failed[0]
        return self.port

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
            thread.join(30)


class Server:
    """A ServingApp behind an HttpServer. Usable in-process (tests, smoke checks) or via :func:`run`."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.app = ServingApp(
            AppConfig(
                workers=cfg.resolved_workers(),
                threads=cfg.resolved_threads(),
                max_batch_size=cfg.max_batch_size,
                batch_timeout_us=cfg.batch_timeout_us,
                request_timeout_s=cfg.request_timeout_s,
                max_queue=cfg.max_queue,
            )
        )
        self.inflight = Budget("inflight", 0)
        self.decoded = Budget("decoded", 0)
        self.plan = self._size_budgets()  # provisional: resized once the model is loaded and warm
        self.http = HttpServer(
            self.app.handle,
            max_request_bytes=self.plan.max_request,
            keepalive_timeout_s=cfg.keepalive_timeout_s,
            read_timeout_s=cfg.request_timeout_s if cfg.request_timeout_s > 0 else 3600.0,
            header_timeout_s=cfg.header_timeout_s,
            min_upload_rate=cfg.min_upload_rate,
            max_connections=cfg.max_connections,
            budget=self.inflight,
            decoded_budget=self.decoded,
            admit=self.app.admit,
        )
        self.admin = AdminThread(
            HttpServer(
                self.app.handle_admin,
                max_request_bytes=ADMIN_MAX_REQUEST_BYTES,
                keepalive_timeout_s=cfg.keepalive_timeout_s,
                read_timeout_s=cfg.header_timeout_s,
                header_timeout_s=cfg.header_timeout_s,
                max_connections=ADMIN_MAX_CONNECTIONS,
                probe_lag=False,  # only the inference loop's lag is exported
            )
        )
        if cfg.revision:
            self.http.extra_headers = f"x-modelship-revision: {cfg.revision}\r\n".encode("ascii")
        self.mirror = Mirror(self.app.metrics, cfg.mirror_config) if cfg.mirror_config else None
        self.app.mirror = self.mirror
        if cfg.mirror_offer:
            parse_config(cfg.mirror_offer.encode())  # refused at start, with the reason, when it does not parse
            self.app.mirror_offer = cfg.mirror_offer.encode()
        self.app.set_arriving(lambda: self.http.receiving_small, lambda: self.http.receiving)
        self.app.metrics.connections.set_function(lambda: float(len(self.http.connections)))
        self.gc = GcPauses()
        self.app.metrics.add_collector(self._collect)
        self.port = 0
        self.metrics_port = 0
        self._stop = asyncio.Event()
        self._drain_seconds = cfg.drain_seconds
        self._skip_delay = asyncio.Event()
        self._hurry = asyncio.Event()
        self._signals = 0
        self._phase = "running"
        self._result: bool | None = None

    def _size_budgets(self) -> MemoryPlan:
        """Size the budgets from the memory limit and the resident size now (explicit settings win)."""
        cfg = self.cfg
        limit = cfg.memory_limit_bytes or memory_limit()
        source = "configured" if cfg.memory_limit_bytes else "cgroup" if limit else "none"
        plan = plan_memory(
            limit=limit,
            source=source,
            baseline=resident_bytes(),
            max_request=cfg.max_request_bytes,
            inflight=cfg.max_inflight_bytes,
            decoded=cfg.max_decoded_bytes,
        )
        self.inflight.resize(plan.inflight)
        self.decoded.resize(plan.decoded)
        if hasattr(self, "http"):
            self.http.max_request_bytes = plan.max_request
        self.plan = plan
        return plan

    def _collect(self) -> list[Metric]:
        out: list[Metric] = []
        for metric, help_text, attr in (
            ("modelship_http_rejected_requests", "Requests refused by the HTTP layer (malformed, too large, "
             "over the in-flight budget, timed out).", "rejected"),
            ("modelship_http_refused_connections", "Connections refused at the connection limit (429).", "refused"),
            ("modelship_http_evicted_connections", "Idle connections closed to make room for new ones.", "evicted"),
        ):  # fmt: skip
            out.append(CounterMetricFamily(metric, help_text, value=getattr(self.http, attr)))
        limit = GaugeMetricFamily("modelship_budget_limit_bytes", "Size of each memory budget.", labels=["budget"])
        used = GaugeMetricFamily("modelship_budget_used_bytes", "Bytes held in each memory budget.", labels=["budget"])
        peak = GaugeMetricFamily("modelship_budget_peak_bytes", "Most bytes held in each budget.", labels=["budget"])
        for b in (self.inflight, self.decoded):
            limit.add_metric([b.name], b.limit)
            used.add_metric([b.name], b.used)
            peak.add_metric([b.name], b.peak)
        out += [limit, used, peak]
        out.append(GaugeMetricFamily("modelship_max_request_bytes", "Largest request body accepted.",
                                     value=self.http.max_request_bytes))  # fmt: skip
        if self.plan.limit is not None:
            out.append(GaugeMetricFamily("modelship_memory_limit_bytes", "Memory limit the budgets are sized from.",
                                         value=self.plan.limit))  # fmt: skip
        out.append(GaugeMetricFamily("modelship_resident_memory_bytes", "Resident set size of the server.",
                                     value=resident_bytes()))  # fmt: skip
        return [*out, *self._loop_metrics(), self.gc.metric()]

    def _loop_metrics(self) -> list[Metric]:
        """How late the inference event loop runs (a timer probe), and how much of its thread's time went waiting
        for a CPU (another process, or the server's own threads, had it) against running."""
        lag = self.http.lag
        out: list[Metric] = [HistogramMetricFamily(
            "modelship_event_loop_lag_seconds", "How late a timer on the inference event loop runs (probed every "
            "50 ms while requests arrive): the loop was busy, waited for the GIL, or its thread waited for a "
            "CPU.",
            buckets=lag.cumulative(), sum_value=lag.total,
        )]  # fmt: skip
        stat = thread_schedstat(self.http.loop_thread) if self.http.loop_thread else None
        if stat is not None:
            out.append(CounterMetricFamily("modelship_event_loop_cpu_seconds", "CPU seconds the inference event "
                                           "loop's thread ran (the scheduler's count).", value=stat[0]))  # fmt: skip
            out.append(CounterMetricFamily(
                "modelship_event_loop_cpu_wait_seconds", "Seconds the inference event loop's thread was ready to "
                "run but waited for a CPU (CPU starvation by other processes or the server's own threads).",
                value=stat[1],
            ))  # fmt: skip
        return out

    async def start(self, sock: socket.socket | None = None, metrics_sock: socket.socket | None = None) -> int:
        """Listen on both ports (the model is not loaded yet). Returns the inference port. A port that cannot be
        listened on raises ``ListenError``, which names it."""
        try:
            self.port = await self.http.start(self.cfg.host, self.cfg.port, sock=sock)
        except OSError as e:
            raise ListenError("inference", self.cfg.host, self.cfg.port, e) from e
        self.gc.install()
        try:
            self.metrics_port = self.admin.start(self.cfg.host, self.cfg.metrics_port, sock=metrics_sock)
        except OSError as e:
            raise ListenError("metrics", self.cfg.host, self.cfg.metrics_port, e) from e
        if self.mirror is not None:
            self.mirror.start()
        log.info("listening", extra={"host": self.cfg.host, "port": self.port, "metrics_port": self.metrics_port})
        log.info("large JSON requests", extra={"json_path": jsonparse.describe()})
        return self.port

    async def load(self, freeze: bool = False) -> None:
        """Load and warm the model; readiness turns true when this returns. ``freeze``: then keep the heap as it
        is out of later garbage collections (:meth:`freeze`; the server process does, embedders decide)."""
        t0 = time.perf_counter()
        await self.app.load(self.cfg.model, self.cfg.name, self.cfg.model_version)
        self.resize_budgets()
        if freeze:
            self.freeze()
        log.info(
            "ready",
            extra={"models": list(self.app.models), "seconds": round(time.perf_counter() - t0, 3), "port": self.port},
        )

    def freeze(self) -> None:
        """The model is loaded and warm: keep what exists now out of every later garbage collection's walk (a
        full collection under a flood of connections otherwise stops the server for as long as walking the
        whole heap takes)."""
        frozen = freeze_heap()
        log.info("heap frozen for the garbage collector", extra={"objects": frozen})

    def resize_budgets(self) -> MemoryPlan:
        """Size the budgets again now that the models are loaded and warm (their memory is the baseline)."""
        plan = self._size_budgets()
        log.info(
            "memory budgets",
            extra={
                "memory_limit": plan.limit,
                "source": plan.source,
                "resident": plan.baseline,
                "inflight_budget": plan.inflight,
                "decoded_budget": plan.decoded,
                "max_request_bytes": plan.max_request,
                "max_queue": self.cfg.max_queue,
                "max_connections": self.cfg.max_connections,
            },
        )
        if plan.requested_max_request:
            log.warning(
                "the request size limit is larger than the memory limit allows for request bodies: lowered",
                extra={"requested": plan.requested_max_request, "max_request_bytes": plan.max_request},
            )
        if plan.limit is not None and plan.baseline + plan.inflight + plan.decoded > plan.limit:
            log.warning(
                "the memory limit leaves little room beyond the loaded model: budgets are at their minimum",
                extra={"memory_limit": plan.limit, "resident": plan.baseline},
            )
        return plan

    def request_stop(self, drain_seconds: float | None = None) -> None:
        """Begin a graceful shutdown. Called again: ends the drain delay early; again after that: stops
        waiting for in-flight requests."""
        self._signals += 1
        if self._signals > 1:
            if self._phase == "delay" or not self._skip_delay.is_set():
                self._skip_delay.set()
            else:
                self._hurry.set()
            return
        if drain_seconds is not None:
            self._drain_seconds = drain_seconds
        self.app.draining = True  # readiness false first
        self.http.draining = True  # keep-alive clients are told to reconnect elsewhere
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            log.info("signal received", extra={"signal": sig.name, "in_flight": self.http.in_flight})
            self.request_stop(0.0 if sig == signal.SIGINT else None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> bool:
        """Drain and stop. True when every accepted request was answered. Idempotent."""
        if self._result is not None:
            return self._result
        self.app.draining = True
        self.http.draining = True
        self._phase = "delay"
        if self._drain_seconds > 0 and not self._skip_delay.is_set():
            log.info("draining: readiness is false, still serving", extra={"seconds": self._drain_seconds})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._skip_delay.wait(), timeout=self._drain_seconds)
        self._phase = "finishing"
        self._skip_delay.set()
        self.http.stop_accepting()
        waiter = asyncio.ensure_future(self.http.drain(self.cfg.shutdown_timeout_s))
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait([waiter, hurry], return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        clean = waiter.done() and waiter.result()
        if not waiter.done():
            waiter.cancel()
        await self.app.close()
        if self.mirror is not None:
            self.mirror.close()
        self.http.close()
        self.admin.stop()
        self.gc.uninstall()
        for _ in range(3):  # let aborted connections report connection_lost
            await asyncio.sleep(0)
        stats = self.http.stats()
        self._result = bool(clean) and stats["dropped"] == 0 and stats["requests"] == stats["responses"]
        log.info("stopped", extra={"clean": self._result, **stats})
        return self._result


async def start_server(cfg: ServeConfig, *models: ServedModel, sock: socket.socket | None = None) -> Server:
    """Listen on ``cfg.host:cfg.port`` (0 = a free port, see ``server.port``) and serve ``models``, or load
    ``cfg.model`` when none are given. Returns once ready. Stop with ``server.request_stop()`` and
    ``await server.shutdown()``. For embedding and smoke tests; ``modelship serve`` uses :func:`run`."""
    server = Server(cfg)
    await server.start(sock)
    if models:
        for m in models:
            await server.app.add_model(m)
        server.resize_budgets()
    else:
        await server.load()
    return server


async def serve(cfg: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT. Exit code 0 after a clean drain, 1 on load failure or cut requests. The GIL's
    switch interval is ``cfg.switch_interval_us`` meanwhile."""
    with switch_interval(cfg.switch_interval_us / 1e6) as previous:
        log.info("GIL switch interval", extra={"microseconds": cfg.switch_interval_us, "was": round(previous * 1e6)})
        return await _serve(cfg)


async def _serve(cfg: ServeConfig) -> int:
    server = Server(cfg)
    server.install_signal_handlers()
    try:
        await server.start()
    except OSError as e:  # a port taken or an address not this host's (ListenError), or another start-up step
        if isinstance(e, ListenError):
            why = f"{type(e.error).__name__}: {e.error}"
            log.error("could not listen", extra={"listener": e.what, "address": e.address, "error": why})
            termination.write(termination.cause(f"could not listen on {e.address} ({e.what})", e.error))
        else:  # the mirror's configuration unreadable, say
            log.error("could not start", extra={"error": f"{type(e).__name__}: {e}"})
            termination.write(termination.cause("could not start", e))
        server.http.close()
        server.admin.stop()
        await server.app.close()
        return 1
    loader = asyncio.ensure_future(server.load(freeze=True))
    stopper = asyncio.ensure_future(server.wait_stopped())
    await asyncio.wait([loader, stopper], return_when=asyncio.FIRST_COMPLETED)
    if loader.done() and loader.exception() is not None:
        err = loader.exception()
        log.error("model failed to load", extra={"model": cfg.model, "error": f"{type(err).__name__}: {err}"})
        if err is not None:
            termination.write(termination.cause("model failed to load", err))
        stopper.cancel()
        server.http.close()
        server.admin.stop()
        await server.app.close()
        return 1
    if not loader.done():
        loader.cancel()  # stopped while loading (the load thread finishes in the background)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await loader
    await stopper
    ok = await server.shutdown()
    return 0 if ok else 1


def run(cfg: ServeConfig) -> int:
    """Blocking entry point (uses uvloop when installed)."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the [serve] extra
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(cfg))
