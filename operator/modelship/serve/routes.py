"""The inference port's routes, per protocol: the URL grammar of TF Serving REST (v1) and of the Open Inference
Protocol (v2), the status and metadata answers, and how every answer is sent (with its metrics and log line).
:class:`Routes` is the base of :class:`modelship.serve.app.ServingApp`, which holds the models and runs
inference (``_infer``) for the ``:predict`` and ``/infer`` routes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import __version__
from .batching import Batcher
from .codec import dumps, v1_metadata, v1_status, v2_model_metadata
from .errors import BadRequest, MethodNotAllowed, NotFound, ServeError, Unavailable
from .messages import JSON, Request, Respond, Response, internal_error, request_id
from .metrics import Metrics
from .model import ServedModel

log = logging.getLogger("modelship.serve.app")

SERVER_NAME = "modelship"


class _Entry:
    __slots__ = ("batcher", "error", "model", "name", "state", "version")

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.state = "LOADING"  # LOADING -> AVAILABLE | FAILED; END after shutdown
        self.error = ""


class Routes:
    """Routing and answering for :class:`modelship.serve.app.ServingApp`. All methods run on the event loop
    thread."""

    models: dict[str, _Entry]
    draining: bool
    metrics: Metrics

    if TYPE_CHECKING:  # provided by ServingApp

        @property
        def ready(self) -> bool: ...

        def _infer(self, req: Request, respond: Respond, entry: _Entry, protocol: str) -> None: ...

    # ------------------------------------------------------------------ answers

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

    def _failure(self, err: BaseException | None, req: Request, what: str = "inference failed") -> Response:
        """A ServeError's own answer; anything else is logged under a request id and answered with only that id."""
        if isinstance(err, ServeError):
            return _error(err)
        rid = request_id(req.headers)
        log.error(what, exc_info=err, extra={"request_id": rid, "path": req.path})
        return internal_error(rid)

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
        self._infer(req, respond, entry, "v2")

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
        self._infer(req, respond, entry, "v1")


def _method(req: Request, allowed: str) -> None:
    if req.method != allowed and not (allowed == "GET" and req.method == "HEAD"):
        raise MethodNotAllowed(f"method {req.method} not allowed for {req.path}; use {allowed}")


def _error(e: ServeError) -> Response:
    return Response(e.status, dumps({"error": e.message}), JSON, list(e.headers) or None)
