"""Request errors: each carries the HTTP status the client gets, with a message naming the problem."""

from __future__ import annotations

#: Retry-After (seconds) sent with answers that say "busy, come back"
RETRY_AFTER_S = 1


class ServeError(Exception):
    """An error answered with ``status`` and ``{"error": message}``; the server keeps serving."""

    status: int = 500
    #: extra response headers (Retry-After on overload answers)
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ServeError):
    status = 400


class NotFound(ServeError):
    status = 404


class MethodNotAllowed(ServeError):
    status = 405


class PayloadTooLarge(ServeError):
    status = 413


class TooManyRequests(ServeError):
    """The server is at a bound (queue, memory budget): retry after ``Retry-After`` seconds."""

    status = 429
    headers = (("retry-after", str(RETRY_AFTER_S)),)


class Unavailable(ServeError):
    status = 503
    headers = (("retry-after", str(RETRY_AFTER_S)),)


class Timeout(ServeError):
    status = 504


class ClientClosed(ServeError):
    """The client closed its connection before the answer (nginx's 499); the answer is never sent."""

    status = 499
