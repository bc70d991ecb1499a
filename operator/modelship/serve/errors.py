"""Request errors: each carries the HTTP status the client gets, with a message naming the problem."""

from __future__ import annotations


class ServeError(Exception):
    """An error answered with ``status`` and ``{"error": message}``; the server keeps serving."""

    status: int = 500

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


class Unavailable(ServeError):
    status = 503


class Timeout(ServeError):
    status = 504


class ClientClosed(ServeError):
    """The client closed its connection before the answer (nginx's 499); the answer is never sent."""

    status = 499
