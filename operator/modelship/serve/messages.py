"""What the HTTP layer and the application exchange: a parsed :class:`Request`, the :class:`Response` to write,
the hooks' types, and the small answers every layer builds (errors, overload, internal errors with a request id).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .errors import RETRY_AFTER_S
from .limits import Hold

JSON = "application/json"

Body = bytes | bytearray | memoryview


class Request:
    __slots__ = (
        "body", "closed", "headers", "hold", "keep_alive", "method", "path", "query", "received", "start", "timing",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: Body,
        keep_alive: bool,
        hold: Hold | None = None,
        received: float | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # lower-case names
        self.body = body
        self.keep_alive = keep_alive
        self.hold = hold  # what this request holds in the memory budgets (None: nothing)
        self.start = time.perf_counter()  # the request is complete (its body received)
        #: when the server read the request's first byte (``perf_counter``; default: complete now)
        self.received = self.start if received is None else received
        #: the client asked for a Server-Timing answer (``x-modelship-timing`` request header): the steps the app
        #: timed, (name, seconds), e.g. the wait for a worker; the HTTP layer adds receiving and the total
        self.timing: list[tuple[str, float]] | None = None
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
#: (method, path, lower-case headers, declared body length or None when chunked) -> an early answer or None
Admit = Callable[[str, str, dict[str, str], int | None], Response | None]


def error_body(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})


_REQUEST_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id(headers: dict[str, str] | None = None) -> str:
    """The client's ``X-Request-Id`` when it is a plain token (at most 128 characters), else a new random id."""
    given = headers.get("x-request-id") if headers else None
    if given and len(given) <= 128 and set(given) <= _REQUEST_ID:
        return given
    return os.urandom(8).hex()


def internal_error(rid: str) -> Response:
    """A 500 that tells the client nothing but the request id to quote (the cause is logged under it)."""
    import orjson

    body = orjson.dumps({"error": f"internal error (request id {rid})", "request_id": rid})
    return Response(500, body, headers=[("x-request-id", rid)])


def busy(message: str, status: int = 429) -> Response:
    """An overload answer: the client should retry after ``RETRY_AFTER_S``."""
    return Response(status, error_body(message), headers=[("retry-after", str(RETRY_AFTER_S))])
