"""Errors the optimizer reports to people: one readable line, no traceback."""

from __future__ import annotations

from typing import Any


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OptimizeError(Exception):
    """The optimization cannot run or cannot finish; ``str(exc)`` is the readable message.

    ``context`` carries what was known when it failed (source digest and size) for the failure summary;
    ``temporary`` says a retry of the same input may succeed (the store or the network failed), else the input is
    at fault and the operator fails the stage at once.
    """

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.context: dict[str, Any] = {}
        self.temporary = temporary
