"""A small HTTP/1.1 server on asyncio + httptools, built for graceful draining.

It does only what the model server needs, with little per-request overhead: keep-alive, pipelining (answered
in order), chunked request bodies, ``Expect: 100-continue``, a request size limit (413 as soon as the
headers show it), read and keep-alive timeouts, and a drain sequence for SIGTERM:

1. ``draining`` turns on: every response says ``Connection: close`` (the caller flips readiness first);
2. ``stop_accepting()`` accepts what is already in the listen backlog, then closes the listener;
3. ``drain()`` closes idle connections, lets in-flight requests finish, then closes the rest.

Counters ``requests`` (complete requests handed to the app) and ``responses`` (answers written) let a caller
prove that nothing accepted was dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger("modelship.serve.http")

JSON = "application/json"
MAX_HEAD_BYTES = 64 * 1024


class Request:
    __slots__ = ("body", "closed", "headers", "keep_alive", "method", "path", "query", "start")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # lower-case names
        self.body = body
        self.keep_alive = keep_alive
        self.start = time.perf_counter()
        self.closed = False  # the client went away; work for this request can be skipped


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


Respond = Callable[[Response], None]
Handler = Callable[[Request, Respond], None]


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}


def _error_body(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})


class _Conn(asyncio.Protocol):
    """One client connection. Requests are handled one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.lingering = False
        self.last_active = self.created = time.monotonic()
        self.seen_request = False  # anything parsed yet on this connection
        self.message_started: float | None = None  # a request is being received since
        self.receiving = False  # headers done, body not yet
        self.queue: deque[Request] = deque()
        self.current: Request | None = None
        self.paused = False
        self.write_paused = False
        self._head_bytes = 0
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._reject: tuple[int, str] | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.lingering or self.closed:
            return  # discarding what the client still sends after an early error response
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError:
            if self._reject is not None:
                self._fail(*self._reject)
            else:  # pragma: no cover - our callbacks only raise after setting _reject
                log.exception("HTTP parser callback failed")
                self._fail(500, "internal error")
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed HTTP request: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.receiving:
            self.receiving = False
            self.server.receiving -= 1
        for queued in self.queue:
            queued.closed = True
        if self.current is not None:
            # the app will still answer; that answer is dropped
            self.current.closed = True
            self.server.dropped += 1
            self.server.in_flight -= 1
            self.current = None
        self.queue.clear()
        self.server._conn_closed()

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
        self._head_bytes = 0
        self._url = []
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._count_head(len(url))

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._reject = (431, f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        prev = self._headers.get(key)
        self._headers[key] = val if prev is None else f"{prev}, {val}"

    def on_headers_complete(self) -> None:
        limit = self.server.max_request_bytes
        cl = self._headers.get("content-length")
        if cl is not None:
            try:
                length = int(cl)
            except ValueError:
                length = -1
            if length > limit:
                self._reject = (413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
                raise _Stop
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.receiving = True
        self.server.receiving += 1

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_request_bytes:
            self._reject = (
                413,
                f"request body exceeds the limit of {self.server.max_request_bytes} bytes",
            )
            raise _Stop
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.receiving:
            self.receiving = False
            self.server.receiving -= 1
        self.message_started = None
        url = b"".join(self._url)
        try:
            parsed = httptools.parse_url(url)
            path = unquote(parsed.path.decode("latin-1")) if parsed.path else "/"
            query = parsed.query.decode("latin-1") if parsed.query else ""
        except httptools.HttpParserInvalidURLError:
            self._reject = (400, "invalid request target")
            raise _Stop from None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self.parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body,
            bool(self.parser.should_keep_alive()),
        )
        self._body = []
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
            log.exception("request handler failed", extra={"path": req.path})
            respond(Response(500, _error_body("internal server error")))

    def _respond(self, req: Request, resp: Response) -> None:
        if self.current is not req:
            return  # connection went away; already counted as dropped
        srv = self.server
        self.current = None
        srv.in_flight -= 1
        srv.responses += 1
        keep_alive = req.keep_alive and not srv.draining and not self.closed and not self.lingering
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

    def _close_after_write(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.close()  # flushes buffered data first

    def _fail(self, status: int, message: str) -> None:
        """Answer a request the parser rejected, then close without resetting the client.

        The client may still be sending its body; closing a socket with unread data makes the kernel send
        RST, which can destroy the error response before the client reads it. So: answer, half-close, keep
        reading and discarding until the client closes or the linger time runs out.
        """
        self.server.rejected += 1
        if self.current is not None:
            # a pipelined request is still being answered: answer it, then close
            self.queue.clear()
            self.lingering = True
            return
        if self.receiving:
            self.receiving = False
            self.server.receiving -= 1
        self.message_started = None
        self.lingering = True
        t = self.transport
        if t is None or t.is_closing():
            return
        self._write(Response(status, _error_body(message)), keep_alive=False)
        try:
            if t.can_write_eof():
                t.write_eof()
        except OSError:
            pass
        loop = asyncio.get_running_loop()
        loop.call_later(self.server.linger_s, self._close_after_write)

    def close_if_idle(self, fresh_grace_s: float = 0.0) -> bool:
        """Close now if no request is in progress (used by drain and the keep-alive timeout).

        A connection that has not sent anything yet is spared for ``fresh_grace_s``: it was just accepted
        (perhaps from the backlog while closing) and its request is most likely already on the way.
        """
        if self.current is None and not self.queue and not self.receiving and self.message_started is None:
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


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the reason is in ``_Conn._reject``)."""


class HttpServer:
    """Serves ``handler`` on one listening socket. Everything runs on the event loop thread."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_request_bytes: int = 64 << 20,
        keepalive_timeout_s: float = 75.0,
        read_timeout_s: float = 60.0,
        linger_s: float = 2.0,
    ) -> None:
        self.handler = handler
        self.max_request_bytes = max_request_bytes
        self.keepalive_timeout_s = keepalive_timeout_s
        self.read_timeout_s = read_timeout_s
        self.linger_s = linger_s
        self.connections: set[_Conn] = set()
        self.draining = False
        self.receiving = 0  # requests whose headers arrived but whose body has not completed
        self.in_flight = 0  # complete requests not yet answered
        self.requests = 0  # complete requests handed to the handler
        self.responses = 0  # answers written
        self.dropped = 0  # requests whose connection closed before the answer
        self.rejected = 0  # requests refused by the HTTP layer (malformed, too large, timed out)
        self.date_header = b""
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._update_date()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    async def start(self, host: str, port: int, sock: socket.socket | None = None, backlog: int = 1024) -> int:
        loop = asyncio.get_running_loop()
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        self._sock = sock
        self._server = await loop.create_server(lambda: _Conn(self), sock=sock, backlog=backlog)
        self._sweeper = loop.call_later(1.0, self._sweep)
        return self.port

    def _update_date(self) -> None:
        self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode("ascii") + b"\r\n"

    def _sweep(self) -> None:
        """Once a second: refresh the Date header, enforce read and keep-alive timeouts."""
        self._update_date()
        now = time.monotonic()
        for c in list(self.connections):
            if c.message_started is not None and now - c.message_started > self.read_timeout_s:
                c._fail(408, f"request not received within {self.read_timeout_s:g}s")
            elif (
                c.current is None
                and not c.queue
                and c.message_started is None
                and now - c.last_active > self.keepalive_timeout_s
            ):
                c.close_if_idle()
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def stop_accepting(self) -> None:
        """Accept whatever the kernel already queued, then close the listener (new connects are refused)."""
        sock = self._sock
        loop = asyncio.get_running_loop()
        backlog: list[socket.socket] = []
        if sock is not None:
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        break
                    raise
                conn.setblocking(False)
                backlog.append(conn)
        if self._server is not None:
            self._server.close()
        if sock is not None:
            sock.close()
        for conn in backlog:
            task = loop.create_task(loop.connect_accepted_socket(lambda: _Conn(self), conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if backlog:
            log.info("accepted connections from the backlog while closing", extra={"count": len(backlog)})

    async def drain(self, timeout_s: float) -> bool:
        """Close idle connections and wait for in-flight requests to be answered. True if all finished."""
        self.draining = True
        await asyncio.sleep(0)  # let backlog connections register
        deadline = time.monotonic() + timeout_s
        while True:
            for c in list(self.connections):
                c.close_if_idle(fresh_grace_s=1.0)
            if not self.connections:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout=min(remaining, 0.05))

    def _conn_closed(self) -> None:
        for f in self._idle_waiters:
            if not f.done():
                f.set_result(None)
        self._idle_waiters.clear()

    def close(self) -> None:
        """Close everything now (after drain, or on a forced shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort() if c.current is not None else c.transport.close()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "responses": self.responses,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "open_connections": len(self.connections),
        }
