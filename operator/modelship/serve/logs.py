"""Structured logs: one JSON object per line on stderr, with ``extra={...}`` fields merged in."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route every logger (ours, asyncio, absl) through one JSON handler at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger) -> Iterator[None]:
    """Capture what native code writes to fd 2 (LiteRT's "Created TensorFlow Lite XNNPACK delegate")
    and re-emit it as JSON log records, so stderr stays one JSON object per line.

    Only for short, single-threaded sections such as creating the first interpreter.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # pragma: no cover - no usable fd 2
        yield
        return
    try:  # an anonymous memory file: works on a read-only root filesystem
        capture = os.fdopen(os.memfd_create("modelship-stderr"), "w+b")
    except (AttributeError, OSError):
        try:
            capture = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the with-block below
        except OSError:
            os.close(saved)
            yield
            return
    with capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.strip():
                    logger.info("native: %s", line.strip(), extra={"native": True})
