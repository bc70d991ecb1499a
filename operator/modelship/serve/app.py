"""The model server application: routes for TF Serving REST (v1), the Open Inference Protocol (v2),
health and metrics, on top of served models with dynamic batching. Transport-independent: the HTTP layer
calls :meth:`ServingApp.handle` with a parsed request and a ``respond`` callback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .batching import Batcher, Job, Result
from .codec import (
    dumps,
    v1_decode,
    v1_encode,
    v1_metadata,
    v1_status,
    v2_decode,
    v2_encode,
    v2_model_metadata,
)
from .errors import BadRequest, MethodNotAllowed, NotFound, ServeError, Timeout, Unavailable
from .http import JSON, Request, Respond, Response
from .metrics import CONTENT_TYPE, Metrics
from .model import ServedModel, load_model

log = logging.getLogger("modelship.serve.app")

SERVER_NAME = "modelship"


@dataclass(frozen=True)
class AppConfig:
    """Serving knobs (see ``modelship serve --help`` for the flags and environment variables)."""

    workers: int = 1
    threads: int = 1
    max_batch_size: int = 8
    batch_timeout_us: int = 500
    request_timeout_s: float = 60.0


class _Entry:
    __slots__ = ("batcher", "error", "model", "name", "state", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.state = "LOADING"  # LOADING -> AVAILABLE | FAILED; END after shutdown
        self.error = ""


class ServingApp:
    """Serves one or more models. All methods run on the event loop thread."""

    def __init__(
        self,
        config: AppConfig | None = None,
        metrics: Metrics | None = None,
        arriving: Callable[[], int] = lambda: 0,
    ) -> None:
        self.config = config or AppConfig()
        self.metrics = metrics or Metrics()
        self.models: dict[str, _Entry] = {}
        self.draining = False
        self._arriving = arriving
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.bind_gauges(
            in_flight=lambda: float(self._in_flight),
            ready=lambda: 1.0 if self.ready else 0.0,
            connections=lambda: 0.0,
        )

    # ------------------------------------------------------------------ models

    @property
    def ready(self) -> bool:
        """Every model is loaded and warm, and the server is not draining."""
        return bool(self.models) and not self.draining and all(e.state == "AVAILABLE" for e in self.models.values())

    def set_arriving(self, arriving: Callable[[], int]) -> None:
        """How many requests are partly received (the batcher waits for them, not for nobody)."""
        self._arriving = arriving

    def expect(self, name: str, version: str = "1") -> None:
        """Announce a model that is still loading (status endpoints say LOADING instead of 404)."""
        self.models.setdefault(name, _Entry(name, version))

    async def add_model(self, model: ServedModel) -> None:
        """Start the model's worker pool, warm every interpreter, then mark it AVAILABLE."""
        self._loop = asyncio.get_running_loop()
        entry = self.models.get(model.name)
        if entry is None or entry.state != "LOADING":
            entry = _Entry(model.name, model.version)
            self.models[model.name] = entry
        entry.version = model.version
        t0 = time.perf_counter()
        cfg = self.config
        batcher = Batcher(
            model,
            workers=cfg.workers,
            threads=cfg.threads,
            max_batch_size=cfg.max_batch_size,
            max_wait_s=cfg.batch_timeout_us / 1e6,
            metrics=self.metrics,
            arriving=lambda: self._arriving(),
        )
        try:
            await batcher.start()
        except BaseException as e:
            entry.state, entry.error = "FAILED", str(e)
            raise
        warm = time.perf_counter() - t0
        entry.model, entry.batcher, entry.state = model, batcher, "AVAILABLE"
        self.metrics.load_seconds.labels(model.name).set(model.load_seconds + warm)
        log.info(
            "model ready",
            extra={
                "model": model.name,
                "version": model.version,
                "workers": batcher.workers,
                "threads_per_worker": batcher.threads,
                "max_batch_size": batcher.max_batch_size,
                "batch_timeout_us": cfg.batch_timeout_us,
                "warmup_seconds": round(warm, 4),
                "load_seconds": round(model.load_seconds, 4),
            },
        )

    async def load(
        self, path: str | os.PathLike[str], name: str | None = None, version: str | None = None
    ) -> ServedModel:
        """Load (in a thread, so health endpoints keep answering) and start a model."""
        if name:
            self.expect(name, version or "1")
        try:
            model = await asyncio.to_thread(load_model, path, name, version)
        except BaseException as e:
            if name and name in self.models:
                self.models[name].state, self.models[name].error = "FAILED", str(e)
            raise
        await self.add_model(model)
        return model

    async def close(self) -> None:
        for e in self.models.values():
            if e.batcher is not None:
                await e.batcher.stop()
            if e.model is not None:
                e.model.close()
            e.state = "END"

    # ------------------------------------------------------------------ dispatch

    def handle(self, req: Request, respond: Respond) -> None:
        path = req.path
        if path.startswith("/v2"):
            protocol = "v2"
        elif path.startswith("/v1/"):
            protocol = "v1"
        else:
            protocol = "other"
        try:
            if protocol == "v2":
                self._v2(req, respond)
            elif protocol == "v1":
                self._v1(req, respond)
            elif path == "/metrics":
                _method(req, "GET")
                self._send(req, respond, Response(200, self.metrics.render(), CONTENT_TYPE), "", protocol, False)
            elif path == "/":
                _method(req, "GET")
                self._json(
                    req,
                    respond,
                    200,
                    {"name": SERVER_NAME, "version": __version__, "models": list(self.models)},
                    "",
                    protocol,
                )
            else:
                raise NotFound(f"no route for {req.method} {path}")
        except ServeError as e:
            self._json(req, respond, e.status, {"error": e.message}, "", protocol)

    def _send(self, req: Request, respond: Respond, resp: Response, model: str, protocol: str, timed: bool) -> None:
        self.metrics.observe_request(model, protocol, resp.status, time.perf_counter() - req.start if timed else None)
        if resp.status in (500, 504):
            log.warning("request failed", extra={"path": req.path, "status": resp.status, "model": model})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"method": req.method, "path": req.path, "status": resp.status})
        respond(resp)

    def _json(self, req: Request, respond: Respond, status: int, doc: Any, model: str, protocol: str) -> None:
        self._send(req, respond, Response(status, dumps(doc)), model, protocol, False)

    def _entry(self, name: str, version: str | None, protocol: str) -> _Entry:
        entry = self.models.get(name)
        if entry is None or (version is not None and version != entry.version):
            if protocol == "v1":
                what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
                raise NotFound(f"Servable not found for request: {what}")
            raise NotFound(f"model '{name}'" + (f" version '{version}'" if version else "") + " not found")
        return entry

    @staticmethod
    def _available(entry: _Entry) -> tuple[ServedModel, Batcher]:
        if entry.model is None or entry.batcher is None:
            if entry.state == "FAILED":
                raise Unavailable(f"model '{entry.name}' failed to load: {entry.error}")
            raise Unavailable(f"model '{entry.name}' is {entry.state.lower()}")
        return entry.model, entry.batcher

    # ------------------------------------------------------------------ v2 (Open Inference Protocol)

    def _v2(self, req: Request, respond: Respond) -> None:
        path = req.path.rstrip("/")
        if path == "/v2":
            _method(req, "GET")
            doc = {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}
            return self._json(req, respond, 200, doc, "", "v2")
        if path == "/v2/health/live":
            _method(req, "GET")
            return self._json(req, respond, 200, {"live": True}, "", "v2")
        if path == "/v2/health/ready":
            _method(req, "GET")
            ready = self.ready
            return self._json(req, respond, 200 if ready else 503, {"ready": ready}, "", "v2")
        if path == "/v2/models":
            _method(req, "GET")
            return self._json(req, respond, 200, {"models": list(self.models)}, "", "v2")
        parts = path.split("/")
        if len(parts) < 4 or parts[2] != "models" or not parts[3]:
            raise NotFound(f"no route for {req.method} {req.path}")
        name = parts[3]
        rest = parts[4:]
        version: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        entry = self._entry(name, version, "v2")
        if not rest:
            _method(req, "GET")
            model, _ = self._available(entry)
            return self._json(req, respond, 200, v2_model_metadata(model), name, "v2")
        if rest == ["ready"]:
            _method(req, "GET")
            ready = entry.state == "AVAILABLE" and not self.draining
            return self._json(req, respond, 200 if ready else 503, {"name": name, "ready": ready}, name, "v2")
        if rest == ["infer"]:
            _method(req, "POST")
            return self._v2_infer(req, respond, entry)
        raise NotFound(f"no route for {req.method} {req.path}")

    def _v2_infer(self, req: Request, respond: Respond, entry: _Entry) -> None:
        try:
            model, batcher = self._available(entry)
            decoded = v2_decode(model, req.body, req.headers.get("inference-header-content-length"))
        except ServeError as e:
            return self._send(req, respond, _error(e), entry.name, "v2", True)

        def done(result: Result | None, err: BaseException | None) -> None:
            if result is None:
                return self._send(req, respond, _failure(err), entry.name, "v2", True)
            body, header_len = v2_encode(model, decoded, result)
            if header_len is None:
                resp = Response(200, body)
            else:
                resp = Response(
                    200,
                    body,
                    "application/octet-stream",
                    [("inference-header-content-length", str(header_len))],
                )
            self._send(req, respond, resp, entry.name, "v2", True)

        self._submit(batcher, Job(decoded.inputs, decoded.rows, done, req), req, respond, entry.name, "v2")

    # ------------------------------------------------------------------ v1 (TF Serving REST)

    def _v1(self, req: Request, respond: Respond) -> None:
        path = req.path.rstrip("/")
        if path == "/v1/models":
            _method(req, "GET")
            return self._json(req, respond, 200, {"models": list(self.models)}, "", "v1")
        parts = path.split("/")
        if len(parts) < 4 or parts[2] != "models" or not parts[3]:
            raise NotFound(f"no route for {req.method} {req.path}")
        verb = ""
        last = parts[-1]
        if ":" in last:
            parts[-1], verb = last.rsplit(":", 1)
        name = parts[3]
        rest = parts[4:]
        version: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
            if not version.isdigit():
                raise BadRequest(f"version '{version}' is not a number")
        elif len(rest) >= 2 and rest[0] == "labels":
            raise NotFound(f"Unrecognized servable version label: {rest[1]}")
        if not name:
            raise NotFound(f"no route for {req.method} {req.path}")
        entry = self._entry(name, version, "v1")
        if verb:
            if rest:
                raise NotFound(f"no route for {req.method} {req.path}")
            if verb != "predict":
                raise NotFound(f"'{verb}' is not supported; this server implements :predict")
            _method(req, "POST")
            return self._v1_predict(req, respond, entry)
        if not rest:
            _method(req, "GET")
            ready = entry.state == "AVAILABLE" and not self.draining
            state = entry.state if entry.state != "FAILED" else "END"
            doc = v1_status(entry.model, name, entry.version, state)
            doc["ready"] = ready
            return self._json(req, respond, 200 if ready else 503, doc, name, "v1")
        if rest == ["metadata"]:
            _method(req, "GET")
            model, _ = self._available(entry)
            return self._json(req, respond, 200, v1_metadata(model), name, "v1")
        raise NotFound(f"no route for {req.method} {req.path}")

    def _v1_predict(self, req: Request, respond: Respond, entry: _Entry) -> None:
        try:
            model, batcher = self._available(entry)
            decoded = v1_decode(model, req.body)
        except ServeError as e:
            return self._send(req, respond, _error(e), entry.name, "v1", True)

        def done(result: Result | None, err: BaseException | None) -> None:
            if result is None:
                return self._send(req, respond, _failure(err), entry.name, "v1", True)
            self._send(req, respond, Response(200, v1_encode(model, decoded, result)), entry.name, "v1", True)

        self._submit(batcher, Job(decoded.inputs, decoded.rows, done, req), req, respond, entry.name, "v1")

    # ------------------------------------------------------------------ common

    def _submit(self, batcher: Batcher, job: Job, req: Request, respond: Respond, model: str, protocol: str) -> None:
        """Queue a job with a deadline; the first of (result, timeout) answers."""
        loop = self._loop or asyncio.get_running_loop()
        self._in_flight += 1
        callback = job.callback
        timer: asyncio.TimerHandle | None = None

        def on_done(result: Result | None, err: BaseException | None) -> None:
            self._in_flight -= 1
            if timer is not None:
                timer.cancel()
            try:
                callback(result, err)
            except Exception as e:
                log.exception("encoding the response failed", extra={"model": model})
                self._send(req, respond, _failure(e), model, protocol, True)

        def on_timeout() -> None:
            if job.done:
                return
            job.done = True  # the batcher skips it, or drops its result
            self._in_flight -= 1
            t = self.config.request_timeout_s
            self._send(req, respond, _error(Timeout(f"request timed out after {t:g}s")), model, protocol, True)

        job.callback = on_done
        if self.config.request_timeout_s > 0:
            timer = loop.call_later(self.config.request_timeout_s, on_timeout)
        batcher.submit(job)


def create_app(config: AppConfig | None = None, metrics: Metrics | None = None) -> ServingApp:
    """The application without a transport: add models with ``await app.add_model(model)`` (or ``app.load``),
    then feed it requests through :meth:`ServingApp.handle` (the HTTP server in ``server.py`` does)."""
    return ServingApp(config, metrics)


def _method(req: Request, allowed: str) -> None:
    if req.method != allowed and not (allowed == "GET" and req.method == "HEAD"):
        raise MethodNotAllowed(f"method {req.method} not allowed for {req.path}; use {allowed}")


def _error(e: ServeError) -> Response:
    return Response(e.status, dumps({"error": e.message}), JSON)


def _failure(err: BaseException | None) -> Response:
    if isinstance(err, ServeError):
        return _error(err)
    log.error("inference failed", exc_info=err)
    return Response(500, dumps({"error": f"inference failed: {type(err).__name__}: {err}"}), JSON)
