"""One HTTP/1.1 client connection: accepting it (or refusing it over the connection limit), parsing requests with
httptools' callbacks, handing them to the application one at a time, in order, and writing the answers. How its
bytes are read, and how it lingers after an early answer, is :class:`modelship.serve.reading.Reading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote

import httptools
import numpy as np

from .errors import RETRY_AFTER_S
from .limits import SMALL_REQUEST_BYTES, Budget, Hold
from .messages import Body, Request, Response, busy, error_body, internal_error, request_id
from .reading import CLOSED_PARSER, Reading, _Stop

log = logging.getLogger("modelship.serve.http")

MAX_HEAD_BYTES = 64 * 1024
#: a chunked body (no Content-Length) reserves budget in steps of this many bytes
CHUNKED_STEP = 256 * 1024


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}

_REFUSED = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: %d\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


#: a request carrying this header gets a ``Server-Timing`` answer header (see :func:`server_timing`)
TIMING_HEADER = "x-modelship-timing"


def server_timing(req: Request) -> str:
    """Where a request's time went inside the server, as a ``Server-Timing`` header value (milliseconds):
    ``recv`` from its first byte read to its last, the app's own steps (``decode``: the body to input arrays, on the
    event loop or the decode thread; ``queue``: waiting for a worker; ``run``:
    from a worker taking it to the answer back on the event loop), ``total`` from the first byte read to the
    answer being written. What a client sees beyond ``total`` was spent outside the server process: in the kernel,
    the network, or waiting for a CPU before the server could read the request. ``read`` (its ``desc``) is the wall
    clock time (Unix seconds) of the first byte read: a client on the same host splits that outside time into
    before the server read the request and after it wrote the answer."""
    now = time.perf_counter()
    parts = [f"recv;dur={(req.start - req.received) * 1e3:.3f}"]
    parts += [f"{name};dur={seconds * 1e3:.3f}" for name, seconds in req.timing or ()]
    parts.append(f"total;dur={(now - req.received) * 1e3:.3f}")
    parts.append(f"read;desc={time.time() - (now - req.received):.6f}")
    return ", ".join(parts)


class _Conn(Reading):
    """One client connection. Requests are handled one at a time, in order."""

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        srv = self.server
        if len(srv.connections) - srv.closing >= srv.max_connections and not srv.evict_idle():
            self._refuse()
            return
        srv.connections.add(self)
        srv.idle[self] = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _refuse(self) -> None:
        """Over the connection limit with nothing idle to close: answer 429 at once, then close."""
        self.server.refused += 1
        self.lingering = True
        t = self.transport
        assert t is not None
        body = error_body(f"too many connections (limit {self.server.max_connections}); retry")
        t.write(_REFUSED % (RETRY_AFTER_S, len(body), body))
        with contextlib.suppress(OSError, RuntimeError):
            if t.can_write_eof():
                t.write_eof()
        asyncio.get_running_loop().call_later(min(0.5, self.server.linger_s), self._close_after_write)

    def connection_lost(self, exc: Exception | None) -> None:
        srv = self.server
        if self.closed:
            return
        self.closed = True
        srv.idle.pop(self, None)
        srv.closing_soon.pop(self, None)
        if self in srv.connections:
            srv.connections.discard(self)
            if self.evicted:
                srv.closing -= 1
        self._stop_receiving()
        self._drop_partial()
        for queued in self.queue:
            queued.closed = True
            if queued.hold is not None:
                queued.hold.close()
        if self.current is not None:
            # the app will still answer; that answer is dropped (its hold is released then)
            self.current.closed = True
            srv.dropped += 1
            srv.in_flight -= 1
            self.current = None
        self.queue.clear()
        # Break the reference cycles (the parser holds this connection's bound callbacks; this connection and its
        # transport refer to each other), so a closed connection is freed at once by reference counting. Left to
        # the cyclic garbage collector, a flood of short connections piled up in its oldest generation and every
        # full collection walked them all with the whole server stopped (bench/abuse.py: 139 ms each).
        self.parser = CLOSED_PARSER
        self.transport = None
        srv._conn_closed()

    def pause_writing(self) -> None:  # pragma: no cover - only with very slow readers
        """The client does not read its responses: stop reading its requests until it catches up."""
        self.write_paused = True
        if self.transport is not None and not self.paused:
            self.transport.pause_reading()

    def resume_writing(self) -> None:  # pragma: no cover
        self.write_paused = False
        if self.transport is not None and not self.paused and not self.closed:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.seen_request = True
        self.message_started = time.monotonic()
        self._received = time.perf_counter()
        srv = self.server
        srv.idle.pop(self, None)
        srv.begun += 1
        srv.arm_lag_probe()
        self._head_bytes = 0
        self._url = []
        self._headers = {}
        self._body = []
        self._buf = None
        self._body_size = 0
        self._hold = None

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._count_head(len(url))

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._reject = Response(431, error_body(f"request line and headers exceed {MAX_HEAD_BYTES} bytes"))
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        prev = self._headers.get(key)
        self._headers[key] = val if prev is None else f"{prev}, {val}"

    def on_headers_complete(self) -> None:
        srv = self.server
        limit = srv.max_request_bytes
        cl = self._headers.get("content-length")
        length: int | None = None
        if cl is not None:
            try:
                length = int(cl)
            except ValueError:
                length = -1  # httptools rejects it next
            if length > limit:
                self._reject = Response(
                    413, error_body(f"request body of {length} bytes exceeds the limit of {limit} bytes")
                )
                raise _Stop
        chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        has_body = chunked or (length is not None and length > 0)
        if has_body and srv.admit is not None:
            url = b"".join(self._url)
            early = srv.admit(
                self.parser.get_method().decode("latin-1"),
                url.split(b"?", 1)[0].decode("latin-1"),
                self._headers,
                None if chunked else length,
            )
            if early is not None:
                self._reject = early
                raise _Stop
        if has_body and srv.budget is not None:
            self._hold = Hold(srv.budget, srv.decoded_budget or Budget("decoded", 0))
            want = min(CHUNKED_STEP, limit) if chunked or length is None else length
            if not self._hold.take_body(want):
                self._reject = self._over_budget(want)
                raise _Stop
        if length is not None and length > 0 and not chunked:
            # not zeroed (bytearray would be): every byte is written by the socket before the request is complete
            self._buf = np.empty(length, dtype=np.uint8).data
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._method = self.parser.get_method()
        self._keep_alive = bool(self.parser.should_keep_alive())
        self._in_head = False
        self.body_started = time.monotonic()
        self.receiving = True
        srv.receiving += 1
        # a small body with a Content-Length is about to complete: the batcher may wait for it; a large or
        # chunked one (a slow upload, say) is not counted as arriving, so it never delays the requests queued now
        self.small_body = not chunked and length is not None and length <= SMALL_REQUEST_BYTES
        srv.receiving_small += self.small_body

    def _over_budget(self, n: int) -> Response:
        budget = self.server.budget
        assert budget is not None
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        if not budget.fits_ever(n):
            return Response(
                413, error_body(f"request body of {n} bytes exceeds what the server can hold ({budget.limit} bytes)")
            )
        return busy(f"server busy: {budget.used} bytes of request bodies in flight (limit {budget.limit}); retry")

    def on_body(self, body: bytes) -> None:
        start = self._body_size
        self._body_size += len(body)
        srv = self.server
        if self._body_size > srv.max_request_bytes:
            self._reject = Response(413, error_body(f"request body exceeds the limit of {srv.max_request_bytes} bytes"))
            raise _Stop
        if self._buf is not None:
            self._buf[start : self._body_size] = body
            return
        hold = self._hold
        if hold is not None and self._body_size > hold.body:
            step = max(CHUNKED_STEP, self._body_size - hold.body)
            if not hold.take_body(step):
                self._reject = self._over_budget(hold.body + step)
                raise _Stop
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._stop_receiving()
        self.message_started = None
        self._in_head = True
        url = b"".join(self._url)
        try:
            parsed = httptools.parse_url(url)
            raw_path = parsed.path.decode("latin-1") if parsed.path else "/"
            path = unquote(raw_path) if "%" in raw_path else raw_path
            query = parsed.query.decode("latin-1") if parsed.query else ""
        except httptools.HttpParserInvalidURLError:
            self._reject = Response(400, error_body("invalid request target"))
            raise _Stop from None
        body: Body
        if self._buf is not None:
            body = self._buf
        elif len(self._body) == 1:
            body = self._body[0]
        else:
            body = b"".join(self._body)
        hold = self._hold
        if hold is not None and hold.body > len(body):  # a chunked body's last step was rounded up
            hold.inflight.give(hold.body - len(body))
            hold.body = len(body)
        headers = self._headers
        method = self._method.decode("latin-1")
        req = Request(method, path, query, headers, body, self._keep_alive, hold, self._received)
        if TIMING_HEADER in headers:
            req.timing = []
        self._body = []
        self._buf = None
        self._hold = None
        self.queue.append(req)
        if len(self.queue) > 16 and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        if self.current is None:
            self._next()

    # ------------------------------------------------------------------ request/response

    def _next(self) -> None:
        if not self.queue or self.closed:
            return
        req = self.queue.popleft()
        self.current = req
        srv = self.server
        srv.requests += 1
        srv.in_flight += 1
        answered = False

        def respond(resp: Response) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            self._respond(req, resp)

        try:
            srv.handler(req, respond)
        except Exception:
            rid = request_id(req.headers)
            log.exception("request handler failed", extra={"path": req.path, "request_id": rid})
            respond(internal_error(rid))

    def _respond(self, req: Request, resp: Response) -> None:
        if req.hold is not None:
            req.hold.close()
        if self.current is not req:
            return  # connection went away; already counted as dropped
        srv = self.server
        self.current = None
        srv.in_flight -= 1
        srv.responses += 1
        keep_alive = req.keep_alive and not srv.draining and not self.closed and not self.lingering
        if req.timing is not None:
            timed = [*(resp.headers or ()), ("server-timing", server_timing(req))]
            resp = Response(resp.status, resp.body, resp.content_type, timed)
        self._write(resp, keep_alive, head_only=req.method == "HEAD")
        if not keep_alive:
            self._close_after_write()
            return
        if self.paused and len(self.queue) <= 4 and self.transport is not None:
            self.paused = False
            if not self.write_paused:
                self.transport.resume_reading()
        if self.queue:
            self._next()
        elif self.idle():
            srv.idle[self] = None  # at the end: the most recently idle

    def _write(self, resp: Response, keep_alive: bool, head_only: bool = False) -> None:
        t = self.transport
        if t is None or self.closed or t.is_closing():
            return
        body = resp.body
        head = [
            _STATUS_LINES.get(resp.status) or _status_line(resp.status),
            b"content-type: ",
            resp.content_type.encode("latin-1"),
            b"\r\ncontent-length: ",
            str(len(body)).encode("ascii"),
            b"\r\n",
            self.server.date_header,
            self.server.extra_headers,
        ]
        if not keep_alive:
            head.append(b"connection: close\r\n")
        if resp.headers:
            for k, v in resp.headers:
                head.append(f"{k}: {v}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        if head_only:
            t.write(b"".join(head))
        elif len(body) <= 65536:
            head.append(body)
            t.write(b"".join(head))
        else:
            t.write(b"".join(head))
            t.write(body)

    def close_if_idle(self, fresh_grace_s: float = 0.0) -> bool:
        """Close now if no request is in progress (used by drain and the keep-alive timeout).

        A connection that has not sent anything yet is spared for ``fresh_grace_s``: it was just accepted
        (perhaps from the backlog while closing) and its request is most likely already on the way.
        """
        if self.idle():
            if not self.seen_request and time.monotonic() - self.created < fresh_grace_s:
                return False
            if fresh_grace_s and self._input_pending():
                return False  # a request is in the kernel buffer: read and answer it first
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            return True
        return False

    def _input_pending(self) -> bool:
        """Bytes from the client wait in the kernel buffer (peeked on a dup of the socket)."""
        t = self.transport
        sock = t.get_extra_info("socket") if t is not None else None
        if sock is None:
            return False
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as s:
                return bool(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # BlockingIOError: nothing pending; others: treat as closed
            return False
