"""A small HTTP/1.1 server on asyncio + httptools, built for graceful draining.

It does only what the model server needs, with little per-request overhead: keep-alive, pipelining (answered
in order), chunked request bodies, ``Expect: 100-continue``, and bounds on what a client can make it hold:

* a request size limit (413 as soon as the headers show it) and a budget of body bytes in flight across all
  connections (:mod:`modelship.serve.limits`; 429 with ``Retry-After`` when spent), reserved at the headers;
* an ``admit`` hook that may answer at the headers, before any body is read (503 while the model loads);
* a connection limit: at the limit, the longest-idle keep-alive connection is closed to make room, and when none
  is idle the new connection gets an immediate 429 and is closed;
* timeouts: the request head must arrive within ``header_timeout_s``, a body must not stall for longer, a
  large body (one that may not use the budget's small-request reserve) must arrive at ``min_upload_rate`` bytes
  per second or more once ``header_timeout_s`` has passed (a slow upload cannot hold its reservation for
  long), the whole request must arrive within ``read_timeout_s`` (all 408); idle keep-alive connections close
  after ``keepalive_timeout_s``.

Bodies with a Content-Length are received straight into one buffer of that size: the connection is a
``BufferedProtocol``; request heads are read into a shared scratch buffer and parsed by httptools, and once a
head is complete the socket reads the body directly into the request's buffer (one copy, from the kernel).
A drain sequence serves SIGTERM:

1. ``draining`` turns on: every response says ``Connection: close`` (the caller flips readiness first);
2. ``stop_accepting()`` accepts what is already in the listen backlog, then closes the listener;
3. ``drain()`` closes idle connections, lets in-flight requests finish, then closes the rest.

Counters ``requests`` (complete requests handed to the app) and ``responses`` (answers written) let a caller
prove that nothing accepted was dropped.

This module is the listener and the connection table (limits, timeouts, drain); :mod:`.messages` holds the
request and response types, :mod:`.reading` how a connection's bytes are read (and its lingering after an early
answer), :mod:`.connection` how requests are parsed, handed to the app and answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .connection import _Conn
from .limits import Budget
from .messages import Admit, Handler, Response, error_body
from .pauses import Pauses
from .reading import DISCARD_BYTES, SCRATCH_BYTES, Reading

log = logging.getLogger("modelship.serve.http")

#: the event loop's lag is probed this often while requests arrive: a timer due now runs this late (the loop was
#: busy, waited for the GIL, or its thread waited for a CPU). A probe period in which no request began and none is
#: being received or answered stops it until the next request: nothing waits on the loop then, and a 20 Hz timer
#: kept an idle server (and one whose client holds a keep-alive connection open between rare requests: a proxy,
#: a sidecar) at ~10 mCPU more, 2 ms per request at 5 requests a second (bench/lowrate.py).
LAG_PROBE_S = 0.05


def thread_schedstat(tid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of one thread of this process, from the
    scheduler's statistics (None where /proc has no schedstat)."""
    try:
        run_ns, wait_ns, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


class HttpServer:
    """Serves ``handler`` on one listening socket. Everything runs on the event loop thread."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_request_bytes: int = 64 << 20,
        keepalive_timeout_s: float = 75.0,
        read_timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        min_upload_rate: int = 64 * 1024,
        linger_s: float = 2.0,
        max_connections: int = 1024,
        budget: Budget | None = None,
        decoded_budget: Budget | None = None,
        admit: Admit | None = None,
        probe_lag: bool = True,
    ) -> None:
        self.handler = handler
        self.probe_lag = probe_lag  # probe the loop's lag (``lag``) while requests arrive
        self.max_request_bytes = max_request_bytes
        self.keepalive_timeout_s = keepalive_timeout_s
        self.read_timeout_s = read_timeout_s
        self.header_timeout_s = header_timeout_s
        self.min_upload_rate = min_upload_rate
        self.linger_s = linger_s
        self.max_connections = max_connections
        self.budget = budget  # request bytes in flight (None: unbounded)
        self.decoded_budget = decoded_budget  # handed to each request's Hold for the app to use
        self.admit = admit
        self.connections: set[_Conn] = set()
        #: connections with no request in progress, the longest idle first (an insertion-ordered dict)
        self.idle: dict[Reading, None] = {}
        #: connections lingering after an early answer, the oldest first: closed early to make room
        self.closing_soon: dict[Reading, None] = {}
        self.closing = 0  # connections closed to make room, not yet gone
        self.draining = False
        self.receiving = 0  # requests whose headers arrived but whose body has not completed
        self.receiving_small = 0  # ... of them, those with a small Content-Length (about to complete)
        self.in_flight = 0  # complete requests not yet answered
        self.requests = 0  # complete requests handed to the handler
        self.responses = 0  # answers written
        self.dropped = 0  # requests whose connection closed before the answer
        self.rejected = 0  # requests refused by the HTTP layer (malformed, too large, over budget, timed out)
        self.refused = 0  # connections refused over the connection limit
        self.evicted = 0  # idle connections closed to make room for new ones
        self.date_header = b""
        self.extra_headers = b""
        """Raw header lines (``name: value\r\n``) every response carries."""
        self.scratch = bytearray(SCRATCH_BYTES)
        self.scratch_view = memoryview(self.scratch)
        self.discard_view = memoryview(bytearray(DISCARD_BYTES))
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._lag_probe: asyncio.TimerHandle | None = None
        self._probed_at = 0  # ``begun`` at the last probe
        self.begun = 0  # requests whose head began to arrive
        self.lag = Pauses()  # the event loop's lag
        self.loop_thread = 0  # native id of the event loop's thread (once started)
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
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((host, port))
            except BaseException:
                sock.close()  # not left open until the collector finds it
                raise
        sock.listen(backlog)
        sock.setblocking(False)
        self._sock = sock
        self._server = await loop.create_server(lambda: _Conn(self), sock=sock, backlog=backlog)
        self._sweeper = loop.call_later(1.0, self._sweep)
        self.loop_thread = threading.get_native_id()
        return self.port

    def arm_lag_probe(self) -> None:
        """Start probing the loop's lag (a request began), unless it runs already or is off."""
        if self.probe_lag and self._lag_probe is None:
            self._probed_at = self.begun
            self._lag_probe = asyncio.get_running_loop().call_later(
                LAG_PROBE_S, self._probe_lag, time.monotonic() + LAG_PROBE_S
            )

    def _probe_lag(self, due: float) -> None:
        now = time.monotonic()
        self.lag.observe(now - due)
        if self.begun == self._probed_at and not self.in_flight and not self.receiving:
            self._lag_probe = None  # quiet for a whole period: stop until the next request (``arm_lag_probe``)
            return
        self._probed_at = self.begun
        self._lag_probe = asyncio.get_running_loop().call_later(LAG_PROBE_S, self._probe_lag, now + LAG_PROBE_S)

    def _update_date(self) -> None:
        self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode("ascii") + b"\r\n"

    def _sweep(self) -> None:
        """Once a second: refresh the Date header, enforce the head, body, read and keep-alive timeouts."""
        self._update_date()
        now = time.monotonic()
        for c in list(self.connections):
            started = c.message_started
            if started is not None and not c.lingering:
                if not c.receiving and now - started > self.header_timeout_s:
                    c._fail(Response(408, error_body(f"request head not received within {self.header_timeout_s:g}s")))
                elif c.receiving and now - c.last_active > self.header_timeout_s:
                    c._fail(Response(408, error_body(f"request body stalled for {self.header_timeout_s:g}s")))
                elif c.receiving and c.too_slow(now):
                    rate = self.min_upload_rate
                    c._fail(Response(408, error_body(f"request body arriving at less than {rate} bytes/s")))
                elif now - started > self.read_timeout_s:
                    c._fail(Response(408, error_body(f"request not received within {self.read_timeout_s:g}s")))
            elif c.idle() and now - c.last_active > self.keepalive_timeout_s:
                c.close_if_idle()
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def evict_idle(self) -> bool:
        """Close a connection to make room for a new one: one lingering after an early answer, else the
        longest-idle one. False when there is neither."""
        for pool in (self.closing_soon, self.idle):
            while pool:
                oldest = next(iter(pool))
                del pool[oldest]
                if oldest.evicted or oldest.transport is None or oldest.closed:
                    continue  # stale entry
                if pool is self.idle and not oldest.idle():
                    continue
                oldest.evicted = True
                self.closing += 1
                self.evicted += 1
                oldest.transport.close()
                return True
        return False

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
        if self._lag_probe is not None:
            self._lag_probe.cancel()
            self._lag_probe = None
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
            "refused_connections": self.refused,
            "evicted_connections": self.evicted,
            "open_connections": len(self.connections),
        }
