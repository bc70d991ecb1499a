"""Reading one connection's bytes (:class:`Reading`, the base of the HTTP connection protocol).

Request heads are read into a scratch buffer shared by all connections and fed to httptools; once a head with a
Content-Length is complete, the socket reads the body straight into the request's buffer (one copy, from the
kernel). After an early answer (413, 429, 408...) the connection lingers: it half-closes, reads and drops what
the client still sends (up to a point), then closes, so the kernel does not reset the answer away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from .limits import SMALL_REQUEST_BYTES, Hold
from .messages import Request, Response, error_body

if TYPE_CHECKING:
    from .http import HttpServer

log = logging.getLogger("modelship.serve.http")

#: request heads (and chunked bodies) are read into a scratch buffer of this size, shared by all connections;
#: small, so that little of a large body arrives there (and is copied) with its head
SCRATCH_BYTES = 16 * 1024
#: after an early answer (413, 429...) what the client still sends is read into this buffer and dropped, at most
#: LINGER_MAX_BYTES of it (Go's net/http drops 256 KiB too: a client that writes a larger body before reading
#: should send Expect: 100-continue, which gets the answer before any body); then reading pauses (the client's
#: sends stall, a client that reads as it sends sees the answer) until the linger time ends and the connection
#: closes. bench/abuse.py: 64 MiB senders looping on their 413s made the server drop 660 MB/s at 2 MiB each. Each
#: read while lingering asks for no more than what is left of LINGER_MAX_BYTES (one read of a full buffer used to
#: take up to DISCARD_BYTES: 1 MiB copied per refused connection instead of 256 KiB)
LINGER_MAX_BYTES = 256 * 1024
DISCARD_BYTES = LINGER_MAX_BYTES
_HEAD_END = b"\r\n\r\n"
#: what a closed connection holds instead of its parser (which refers back to the connection): never fed
CLOSED_PARSER = httptools.HttpRequestParser(object())


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the reason is in ``Reading._reject``)."""


class Reading(asyncio.BufferedProtocol):
    """The state of one client connection and how its bytes are read; parsing and answering are in
    :class:`modelship.serve.connection._Conn`."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._in_head = True  # between requests or inside a request head
        self._tail = b""  # the last bytes of head data seen (a head's end may straddle two reads)
        self._direct = False  # the socket reads the body straight into self._buf
        self._method = b"GET"
        self._keep_alive = True
        self.closed = False
        self.lingering = False
        self.discarded = 0  # bytes dropped while lingering
        self.evicted = False
        self.last_active = self.created = time.monotonic()
        self.seen_request = False  # anything parsed yet on this connection
        self.message_started: float | None = None  # a request is being received since
        self._received = 0.0  # its first byte was read (perf_counter)
        self.receiving = False  # headers done, body not yet
        self.small_body = False  # ... and that body is small (counted in the server's receiving_small)
        self.body_started = 0.0  # when the head of the request being received was complete
        self.queue: deque[Request] = deque()
        self.current: Request | None = None
        self.paused = False
        self.write_paused = False
        self._head_bytes = 0
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []  # chunked bodies
        self._buf: memoryview | None = None  # bodies with a Content-Length
        self._body_size = 0
        self._hold: Hold | None = None
        self._reject: Response | None = None

    if TYPE_CHECKING:  # provided by the connection (modelship.serve.connection)

        def on_message_complete(self) -> None: ...

        def _write(self, resp: Response, keep_alive: bool, head_only: bool = False) -> None: ...

    # ------------------------------------------------------------------ reading

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._direct and self._buf is not None:
            return self._buf[self._body_size :]
        if self.lingering:
            return self.server.discard_view[: max(1, LINGER_MAX_BYTES - self.discarded)]
        return self.server.scratch_view

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = time.monotonic()
        if self.lingering or self.closed:
            # discarding what the client still sends after an early error response, up to a point
            self.discarded += nbytes
            t = self.transport
            if self.discarded >= LINGER_MAX_BYTES and t is not None and not self.paused:
                self.paused = True
                t.pause_reading()  # what the client sends from now on waits in its own socket
            return
        if self._direct:
            self._body_size += nbytes
            if self._buf is not None and self._body_size >= len(self._buf):
                self._finish_body()
            return
        self._receive(0, nbytes)

    def _receive(self, start: int, end: int) -> None:
        """Handle scratch[start:end]: feed request heads to the parser; once a head with a Content-Length is
        complete, copy what already arrived of its body and read the rest straight into the body's buffer."""
        buf = self.server.scratch
        view = self.server.scratch_view
        while start < end and not (self.lingering or self.closed):
            if not self._in_head:
                self._feed(view[start:end])  # a chunked body, or pipelined requests behind one
                return
            stop = self._head_end(buf, start, end)
            if stop < 0:
                self._feed(view[start:end])
                return
            self._feed(view[start:stop])
            start = stop
            if self._in_head or self.lingering or self.closed:
                continue  # blank lines before a request, or the head was refused
            if self._buf is None:
                self._feed(view[start:end])  # no body, or a chunked one: the parser takes it from here
                return
            take = min(end - start, len(self._buf) - self._body_size)
            self._buf[self._body_size : self._body_size + take] = view[start : start + take]
            self._body_size += take
            start += take
            if self._body_size >= len(self._buf):
                self._finish_body()
            else:
                self._direct = True

    def _head_end(self, buf: bytearray, start: int, end: int) -> int:
        """Index just past the end of the head (CRLF CRLF) in buf[start:end], or -1 (and remember the tail)."""
        tail = self._tail
        if tail:
            probe = tail + bytes(buf[start : min(end, start + 3)])
            i = probe.find(_HEAD_END)
            if i >= 0:
                self._tail = b""
                return start + i + 4 - len(tail)
        i = buf.find(_HEAD_END, start, end)
        if i >= 0:
            self._tail = b""
            return i + 4
        self._tail = (tail + bytes(buf[max(start, end - 3) : end]))[-3:]
        return -1

    def _feed(self, data: memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Response(400, error_body("protocol upgrades are not supported")))
        except httptools.HttpParserCallbackError:
            if self._reject is not None:
                self._fail(self._reject)
            else:  # pragma: no cover - our callbacks only raise after setting _reject
                log.exception("HTTP parser callback failed")
                self._fail(Response(500, error_body("internal error")))
        except httptools.HttpParserError as e:
            self._fail(Response(400, error_body(f"malformed HTTP request: {e}")))

    def _finish_body(self) -> None:
        """The body arrived outside the parser: complete the request ourselves, with a fresh parser for the
        next one (the old one still waits for the body it never saw)."""
        self._direct = False
        self.parser = httptools.HttpRequestParser(self)
        try:
            self.on_message_complete()
        except _Stop:
            if self._reject is not None:
                self._fail(self._reject)

    def _drop_partial(self) -> None:
        """Forget a request being received (its bytes return to the budget)."""
        self._direct = False
        self._buf = None
        self._body = []
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def _close_after_write(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.close()  # flushes buffered data first

    def _fail(self, resp: Response) -> None:
        """Answer a request the parser rejected, then close without resetting the client.

        The client may still be sending its body; closing a socket with unread data makes the kernel send
        RST, which can destroy the error response before the client reads it. So: answer, half-close, keep
        reading and discarding until the client closes or the linger time runs out.
        """
        self.server.rejected += 1
        self.server.idle.pop(self, None)
        self._drop_partial()
        if self.current is not None:
            # a pipelined request is still being answered: answer it, then close
            for queued in self.queue:
                if queued.hold is not None:
                    queued.hold.close()
            self.queue.clear()
            self.lingering = True
            return
        self._stop_receiving()
        self.message_started = None
        self.lingering = True
        self.server.closing_soon[self] = None
        t = self.transport
        if t is None or t.is_closing():
            return
        self._write(resp, keep_alive=False)
        try:
            if t.can_write_eof():
                t.write_eof()
        except OSError:
            pass
        loop = asyncio.get_running_loop()
        loop.call_later(self.server.linger_s, self._close_after_write)

    def _stop_receiving(self) -> None:
        if self.receiving:
            self.receiving = False
            self.server.receiving -= 1
            if self.small_body:
                self.server.receiving_small -= 1

    def too_slow(self, now: float) -> bool:
        """A large body arriving below the minimum rate, once the head timeout has passed since its head."""
        hold = self._hold
        large = hold.body > SMALL_REQUEST_BYTES if hold is not None else len(self._buf or b"") > SMALL_REQUEST_BYTES
        elapsed = now - self.body_started
        rate = self.server.min_upload_rate
        return large and rate > 0 and elapsed > self.server.header_timeout_s and self._body_size < rate * elapsed

    def idle(self) -> bool:
        """No request in progress on this connection (between keep-alive requests, or none sent yet)."""
        return (
            self.current is None
            and not self.queue
            and not self.receiving
            and self.message_started is None
            and not self.lingering
        )
