"""A mirrored request (what the client sent, what the stable revision answered) and the kept-alive HTTP/1.1
connection that pipelines mirrored requests to the candidate on the server's event loop."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools

from .mirrorconfig import MirrorConfig

if TYPE_CHECKING:
    from .mirror import Mirror


@dataclass
class Shadowed:
    """One mirrored request: what the client sent and what the stable revision answered."""

    config: MirrorConfig
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    answer: bytes
    answer_type: str
    sent: float = 0.0
    deadline: float = 0.0
    """When the candidate's answer is given up on (monotonic clock)."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.answer)

    def wire(self) -> bytes:
        """The request as HTTP/1.1 bytes."""
        heads = self.config.heads
        key = (self.method, self.path, self.headers)
        head = heads.get(key)
        if head is None:
            host, port = self.config.host_port
            lines = [f"{self.method} {self.path} HTTP/1.1\r\nhost: {host}:{port}\r\nx-modelship-mirror: 1\r\n"]
            lines += [f"{k}: {v}\r\n" for k, v in self.headers]
            head = ("".join(lines) + "content-length: ").encode("latin-1")
            if len(heads) < 64:
                heads[key] = head
        return b"".join((head, str(len(self.body)).encode(), b"\r\n\r\n", self.body))


class CandidateConnection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection to the candidate; mirrored requests are pipelined on it and answered
    in order."""

    def __init__(self, mirror: Mirror, target: tuple[str, int]) -> None:
        self.mirror = mirror
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[Shadowed] = deque()
        """Written (or to be written once connected), not yet answered, oldest first."""
        self.unsent: list[bytes] = []
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._flush: asyncio.Handle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        if self.unsent:
            self.transport.write(b"".join(self.unsent))
            self.unsent.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.waiting:
            return self.close()
        item = self.waiting.popleft()
        self.mirror.answered(item, self.parser.get_status_code(), b"".join(self._body))

    # ours
    def send(self, item: Shadowed) -> None:
        """Queue a mirror; the ones queued in one turn of the event loop go out in one write."""
        self.waiting.append(item)
        self.unsent.append(item.wire())
        if self.transport is not None and self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush = None
        if self.transport is not None and self.unsent and not self.closed:
            self.transport.write(b"".join(self.unsent))
            self.unsent.clear()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._flush is not None:
            self._flush.cancel()
        if self.transport is not None:
            self.transport.abort()
        waiting, self.waiting = self.waiting, deque()
        for item in waiting:
            self.mirror.failed(item)
        self.mirror.connection_closed(self)


def header_items(headers: dict[str, str], names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """The request headers a mirrored request carries (content type, binary header length)."""
    return tuple((n, headers[n]) for n in names if n in headers)
