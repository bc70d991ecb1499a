"""The model server application: routes for TF Serving REST (v1), the Open Inference Protocol (v2) and health
on the inference port, metrics and health on the metrics port, on top of served models with dynamic batching.
Transport-independent: the HTTP layer calls :meth:`ServingApp.handle` (inference port) or
:meth:`ServingApp.handle_admin` (metrics port) with a parsed request and a ``respond`` callback, and
:meth:`ServingApp.admit` when a request's headers arrive, before its body.

An inference request is bounded before it costs anything: refused at its headers while the model loads or its
queue is full; its decoding memory reserved before the JSON is parsed (429 when the budget is spent, 413 when
it could never fit); large JSON decoded on a decode thread, so the event loop keeps answering health checks;
queued only while the queue has room. An unexpected failure answers 500 with a request id, never the
exception's text (which goes to the log under that id).

The routes of each protocol and how answers are sent are in :mod:`.routes`, the admission checks (at the
headers, and the decoded-tensor budget) in :mod:`.admission`; :class:`ServingApp` inherits both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .admission import Admission
from .batching import Batcher, Job, Result
from .codec import (
    V1Request,
    V2Request,
    dumps,
    json_length,
    v1_decode,
    v1_encode,
    v2_decode,
    v2_encode,
)
from .config import available_cpus
from .errors import (
    NotFound,
    ServeError,
    Timeout,
    Unavailable,
)
from .jsonparse import decode_cost
from .messages import JSON, Request, Respond, Response
from .metrics import CONTENT_TYPE, Metrics
from .mirror import Mirror
from .mirrorconfig import MirrorConfig
from .mirrorwire import Shadowed, header_items
from .model import ServedModel, load_model
from .nativejson import SPLIT_BYTES, CpuPressure
from .routes import SERVER_NAME, Routes, _Entry, _error, _method

log = logging.getLogger("modelship.serve.app")


@dataclass(frozen=True)
class AppConfig:
    """Serving knobs (see ``modelship serve --help`` for the flags and environment variables)."""

    workers: int = 1
    threads: int = 1
    max_batch_size: int = 8
    batch_timeout_us: int = 500
    request_timeout_s: float = 60.0
    max_queue: int = 512
    #: JSON text at least this large is decoded on the decode thread instead of the event loop
    offload_decode_bytes: int = 64 * 1024


Decoded = V1Request | V2Request


class ServingApp(Routes, Admission):
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
        self.mirror: Mirror | None = None
        """Shadow traffic to a candidate revision (set by the server when it has mirror settings)."""
        self.mirror_offer: bytes | None = None
        """As a candidate: the mirror settings offered to the stable pods at /mirror on the metrics port."""
        self._arriving = arriving
        self._receiving: Callable[[], int] = lambda: 0
        self._in_flight = 0
        self._decoding = 0  # requests on the decode thread
        self._loop: asyncio.AbstractEventLoop | None = None
        # one thread: the JSON parsers hold the GIL, so more would not decode faster, only use more memory
        self._decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="modelship-decode")
        # a lone large JSON request (decoded inline: nothing else in flight) may parse its tensor on two threads
        # with libmsjson, when a core is free for the second; under load every core is busy with other requests
        # (or other processes) and one thread each is cheaper
        self._split = available_cpus() >= 2
        self._pressure = CpuPressure()
        self.metrics.bind_gauges(
            in_flight=lambda: float(self._in_flight),
            ready=lambda: 1.0 if self.ready else 0.0,
            connections=lambda: 0.0,
        )
        self.metrics.bind_invoke_meters(self._meters)

    # ------------------------------------------------------------------ models

    @property
    def ready(self) -> bool:
        """Every model is loaded and warm, and the server is not draining."""
        entries = list(self.models.values())  # read from the metrics thread too
        return bool(entries) and not self.draining and all(e.state == "AVAILABLE" for e in entries)

    def set_arriving(self, arriving: Callable[[], int], receiving: Callable[[], int] | None = None) -> None:
        """How many requests are partly received and about to complete (the batcher waits for them, not for
        nobody; the server counts small bodies only, so a slow large upload never delays queued requests), and
        how many bodies of any size are being received (a lone request runs on the loop thread only when none
        is)."""
        self._arriving = arriving
        if receiving is not None:
            self._receiving = receiving

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
            receiving=lambda: self._receiving(),
            max_queue=cfg.max_queue,
        )
        try:
            await batcher.start()
        except BaseException as e:
            entry.state, entry.error = "FAILED", str(e)
            raise
        warm = time.perf_counter() - t0
        entry.model, entry.batcher, entry.state = model, batcher, "AVAILABLE"
        self.metrics.load_seconds.labels(model.name).set(model.load_seconds + warm)
        self.metrics.mark_ready()
        log.info(
            "model ready",
            extra={
                "model": model.name,
                "version": model.version,
                "workers": batcher.workers,
                "threads_per_worker": batcher.threads,
                "max_batch_size": batcher.max_batch_size,
                "max_queue": batcher.max_queue,
                "batch_timeout_us": cfg.batch_timeout_us,
                "warmup_seconds": round(warm, 4),
                "load_seconds": round(model.load_seconds, 4),
                "single_row_seconds": batcher.single_row_seconds,
                "runs_on_the_loop": batcher.inline_policy,
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
        self._decoder.shutdown(wait=False, cancel_futures=True)

    def _meters(self) -> Iterable[tuple[str, float]]:
        for name, e in list(self.models.items()):  # called from the metrics thread
            if e.batcher is not None:
                yield name, sum(m.cpu_seconds for m in e.batcher.meters())

    # ------------------------------------------------------------------ dispatch

    def handle(self, req: Request, respond: Respond) -> None:
        """The inference port: v1, v2 (health included) and ``/``."""
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
            elif path == "/":
                _method(req, "GET")
                self._json(req, respond, 200, self._root(), "", protocol)
            elif path == "/metrics":
                raise NotFound("metrics are served on the metrics port (--metrics-port), not the inference port")
            else:
                raise NotFound(f"no route for {req.method} {path}")
        except ServeError as e:
            self._send(req, respond, _error(e), "", protocol, False)

    def handle_admin(self, req: Request, respond: Respond) -> None:
        """The metrics port: ``/metrics``, ``/v2/health/live``, ``/v2/health/ready``, ``/mirror`` (a candidate's
        offer to be mirrored to) and ``/``. It is not behind
        the inference Service, so probes and scrapes are not queued behind inference traffic."""
        path = req.path.rstrip("/") or "/"
        try:
            _method(req, "GET")
            if path == "/metrics":
                respond(Response(200, self.metrics.render(), CONTENT_TYPE))
            elif path == "/v2/health/live":
                respond(Response(200, dumps({"live": True})))
            elif path == "/mirror":
                if self.mirror_offer is None or self.draining:
                    raise NotFound("this server offers no mirroring")
                respond(Response(200, self.mirror_offer))
            elif path == "/v2/health/ready":
                ready = self.ready
                respond(Response(200 if ready else 503, dumps({"ready": ready})))
            elif path == "/":
                respond(Response(200, dumps(self._root())))
            else:
                raise NotFound(f"no route for {req.method} {req.path} on the metrics port")
        except ServeError as e:
            respond(_error(e))

    def _root(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "models": list(self.models)}

    # ------------------------------------------------------------------ inference: admit, decode, queue

    def _infer(self, req: Request, respond: Respond, entry: _Entry, protocol: str) -> None:
        name = entry.name
        hold = req.hold
        try:
            model, batcher = self._available(entry)
            if batcher.full:
                self.metrics.rejected("queue_full")
                raise batcher.full_error()
            shadow = self._sample(req)
            header = req.headers.get("inference-header-content-length") if protocol == "v2" else None
            json_len = json_length(req.body, header)
            large = json_len >= self.config.offload_decode_bytes
            # a large body goes to the decode thread whenever anything else is going on; a lone request is
            # decoded here (nothing waits behind it, and two thread hops are a tenth of its latency)
            offload = large and (self._in_flight > 0 or self._decoding > 0 or self._arriving() > 0)
            if hold is not None and large:
                # small decodes run on the event loop, one at a time: only their result is held (below). A lone
                # large one holds the densest-JSON bound when that fits (counting its values costs ~0.5 ms per
                # 3 MB), others what their values need
                nested = protocol == "v1"
                bound = decode_cost(req.body, json_len, nested, count=False)
                if offload or not hold.set_decoded(bound):
                    self._reserve(hold, decode_cost(req.body, json_len, nested))
        except ServeError as e:
            return self._send(req, respond, _error(e), name, protocol, True)

        # a second parse thread only for an array that can be split (PSI is not read for a small body: at a low
        # request rate that file read was a cold open/read/close on every other request, for nothing)
        threads = 2 if not offload and self._split and json_len >= SPLIT_BYTES and self._pressure.free() else 1

        def decode(charge: Callable[[int], None] | None) -> Decoded:
            t0 = time.perf_counter()
            decoded: Decoded
            if protocol == "v2":
                decoded = v2_decode(model, req.body, header, charge, threads)
            else:
                decoded = v1_decode(model, req.body, threads)
            if req.timing is not None:  # the client asked for Server-Timing
                req.timing.append(("decode", time.perf_counter() - t0))
            return decoded

        if not offload:
            charge = (lambda n: self._reserve(hold, hold.decoded_bytes + n)) if hold is not None else None
            try:
                decoded = decode(charge)
            except ServeError as e:
                return self._send(req, respond, _error(e), name, protocol, True)
            except Exception as e:
                return self._send(req, respond, self._failure(e, req, "decoding failed"), name, protocol, True)
            return self._queue(req, respond, entry, model, batcher, protocol, decoded, shadow)

        # large JSON: parsed on the decode thread; the event loop keeps serving meanwhile
        loop = self._loop or asyncio.get_running_loop()
        if hold is not None:
            hold.pin()
        self._decoding += 1

        def decoded_on_loop(fut: concurrent.futures.Future[Decoded]) -> None:
            self._decoding -= 1
            if hold is not None:
                hold.unpin()
            err = fut.exception()
            if err is None:
                return self._queue(req, respond, entry, model, batcher, protocol, fut.result(), shadow)
            if isinstance(err, ServeError):
                return self._send(req, respond, _error(err), name, protocol, True)
            self._send(req, respond, self._failure(err, req, "decoding failed"), name, protocol, True)

        try:
            future = self._decoder.submit(decode, None)
        except RuntimeError:  # the decode thread is gone: shutting down
            self._decoding -= 1
            if hold is not None:
                hold.unpin()
            return self._send(req, respond, _error(Unavailable("server is shutting down")), name, protocol, True)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(decoded_on_loop, f))

    def _sample(self, req: Request) -> tuple[MirrorConfig, bytes] | None:
        """Whether this request is mirrored to a candidate: its mirror settings and a copy of its body."""
        mirror = self.mirror
        if mirror is None:
            return None
        config = mirror.sample()
        if config is None or not mirror.fits(config, len(req.body)):
            return None
        return config, bytes(req.body)

    def _shadow(self, shadow: tuple[MirrorConfig, bytes], req: Request, resp: Response) -> None:
        assert self.mirror is not None
        config, body = shadow
        path = f"{req.path}?{req.query}" if req.query else req.path
        headers = header_items(req.headers, ("content-type", "inference-header-content-length"))
        self.mirror.offer(Shadowed(config, req.method, path, headers, body, resp.body, resp.content_type))

    def _queue(
        self,
        req: Request,
        respond: Respond,
        entry: _Entry,
        model: ServedModel,
        batcher: Batcher,
        protocol: str,
        decoded: Decoded,
        shadow: tuple[MirrorConfig, bytes] | None = None,
    ) -> None:
        """Account the decoded tensors, let go of a body nothing refers to any more, and queue the job."""
        name = entry.name
        hold = req.hold
        if hold is not None:
            try:
                self._reserve(hold, decoded.owned_bytes)
            except ServeError as e:
                return self._send(req, respond, _error(e), name, protocol, True)
            if not decoded.body_views:
                req.body = b""  # JSON: the arrays are the request's data now
                hold.drop_body()

        def done(result: Result | None, err: BaseException | None) -> None:
            if result is None:
                return self._send(req, respond, self._failure(err, req), name, protocol, True)
            if isinstance(decoded, V2Request):
                body, header_len = v2_encode(model, decoded, result)
                headers = None if header_len is None else [("inference-header-content-length", str(header_len))]
                ctype = JSON if header_len is None else "application/octet-stream"
                resp = Response(200, body, ctype, headers)
            else:
                resp = Response(200, v1_encode(model, decoded, result))
            self._send(req, respond, resp, name, protocol, True)
            if shadow is not None:  # the answer is on its way: only now is the candidate asked
                self._shadow(shadow, req, resp)

        if hold is not None:
            hold.pin()
        job = Job(decoded.inputs, decoded.rows, done, req, on_release=hold.unpin if hold is not None else None)
        self._submit(batcher, job, req, respond, name, protocol)

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
                self._send(req, respond, self._failure(e, req, "encoding the response failed"), model, protocol, True)

        def on_timeout() -> None:
            if job.done:
                return
            job.done = True  # the batcher skips it, or drops its result
            self._in_flight -= 1
            t = self.config.request_timeout_s
            self._send(req, respond, _error(Timeout(f"request timed out after {t:g}s")), model, protocol, True)

        job.callback = on_done
        try:
            batcher.submit(job)
        except ServeError as e:
            self._in_flight -= 1
            job.release()
            self.metrics.rejected("queue_full")
            return self._send(req, respond, _error(e), model, protocol, True)
        if self.config.request_timeout_s > 0 and not job.done:
            timer = loop.call_later(self.config.request_timeout_s, on_timeout)


def create_app(config: AppConfig | None = None, metrics: Metrics | None = None) -> ServingApp:
    """The application without a transport: add models with ``await app.add_model(model)`` (or ``app.load``),
    then feed it requests through :meth:`ServingApp.handle` (the HTTP server in ``server.py`` does)."""
    return ServingApp(config, metrics)
