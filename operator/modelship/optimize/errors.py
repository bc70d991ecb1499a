"""Errors the optimizer reports to people: one readable line, no traceback."""

from __future__ import annotations

from typing import Any


class OptimizeError(Exception):
    """The optimization cannot run or cannot finish; ``str(exc)`` is the readable message.

    ``context`` carries what was known when it failed (source digest and size) for the failure summary.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.context: dict[str, Any] = {}
