"""Run the model server: listen, load and warm the model, serve, and shut down gracefully.

Lifecycle of ``modelship serve``:

* listen at once: ``/v2/health/live`` answers 200 while the model loads, readiness says 503;
* load the model in a thread, start one worker per CPU and warm every interpreter, then readiness turns 200;
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
import time
from typing import Any

from .app import AppConfig, ServingApp
from .config import ServeConfig
from .http import HttpServer
from .model import ServedModel

log = logging.getLogger("modelship.serve")


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
            )
        )
        self.http = HttpServer(
            self.app.handle,
            max_request_bytes=cfg.max_request_bytes,
            keepalive_timeout_s=cfg.keepalive_timeout_s,
            read_timeout_s=cfg.request_timeout_s if cfg.request_timeout_s > 0 else 3600.0,
        )
        self.app.set_arriving(lambda: self.http.receiving)
        self.app.metrics.connections.set_function(lambda: float(len(self.http.connections)))
        self.port = 0
        self._stop = asyncio.Event()
        self._drain_seconds = cfg.drain_seconds
        self._skip_delay = asyncio.Event()
        self._hurry = asyncio.Event()
        self._signals = 0
        self._phase = "running"
        self._result: bool | None = None

    async def start(self, sock: socket.socket | None = None) -> int:
        """Listen (the model is not loaded yet). Returns the bound port."""
        self.port = await self.http.start(self.cfg.host, self.cfg.port, sock=sock)
        log.info("listening", extra={"host": self.cfg.host, "port": self.port})
        return self.port

    async def load(self) -> None:
        """Load and warm the model; readiness turns true when this returns."""
        t0 = time.perf_counter()
        await self.app.load(self.cfg.model, self.cfg.name, self.cfg.model_version)
        log.info(
            "ready",
            extra={"models": list(self.app.models), "seconds": round(time.perf_counter() - t0, 3), "port": self.port},
        )

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
        self.http.close()
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
    else:
        await server.load()
    return server


async def serve(cfg: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT. Exit code 0 after a clean drain, 1 on load failure or cut requests."""
    server = Server(cfg)
    server.install_signal_handlers()
    await server.start()
    loader = asyncio.ensure_future(server.load())
    stopper = asyncio.ensure_future(server.wait_stopped())
    await asyncio.wait([loader, stopper], return_when=asyncio.FIRST_COMPLETED)
    if loader.done() and loader.exception() is not None:
        err = loader.exception()
        log.error("model failed to load", extra={"model": cfg.model, "error": f"{type(err).__name__}: {err}"})
        stopper.cancel()
        server.http.close()
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
