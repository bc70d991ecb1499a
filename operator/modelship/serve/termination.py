"""The one line the server leaves for Kubernetes when it exits on a fatal startup error.

The kubelet copies the file at the container's ``terminationMessagePath`` (``/dev/termination-log`` unless the pod
says otherwise) into the container's last termination (``lastState.terminated.message``), where ``kubectl describe
pod`` and the operator's crash-loop message read it; without it a crash says only its reason and exit code. The
line names the cause (``model failed to load: ValueError: The model is not a valid Flatbuffer buffer``).

Part of it is the model's to influence (an exception's text quotes the file), so it is bounded here, where it is
written, as well as where it is read: one line, control, format (bidi) and separator characters made spaces, at most
``LIMIT`` characters. Writing it never fails the exit: a missing or read-only file is skipped, and so is a FIFO
no one reads (it would block the exit)."""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Mapping

ENV = "MODELSHIP_TERMINATION_LOG"
"""Where to write the line instead of the kubelet's default path (a pod with another terminationMessagePath)."""
DEFAULT_PATH = "/dev/termination-log"
LIMIT = 240
"""Characters at most: what the operator copies of a termination message into status, so nothing is cut there."""
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})

log = logging.getLogger("modelship.serve")


def one_line(text: str, limit: int = LIMIT) -> str:
    """``text`` made one bounded line: hidden and separator characters become spaces, runs of spaces one, cut to
    ``limit`` characters with an ellipsis."""
    kept = (" " if unicodedata.category(ch) in _HIDDEN else ch for ch in text[: limit * 4])
    line = " ".join("".join(kept).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def cause(what: str, error: BaseException) -> str:
    """``<what>: <exception class>: <the first line of its text>``, one bounded line."""
    first = next((ln for ln in str(error).splitlines() if ln.strip()), "")
    detail = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return one_line(f"{what}: {detail}")


def write(line: str, env: Mapping[str, str] | None = None) -> bool:
    """Write ``line`` (bounded again: ``one_line``) to the termination log: the path in ``$MODELSHIP_TERMINATION_LOG``
    (created if need be), else ``/dev/termination-log`` only when it exists (the kubelet mounts it; outside a pod
    nothing is created under /dev). False, logged at debug, when it cannot be written; never raises."""
    env = os.environ if env is None else env
    given = env.get(ENV, "")
    path = given or DEFAULT_PATH
    # O_NONBLOCK: a FIFO with no reader fails the open (ENXIO) instead of holding the exit for ever
    flags = os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if given else 0)
    try:
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, one_line(line).encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception as e:  # the exit code and the logs must not depend on this file
        log.debug("termination message not written", extra={"path": path, "error": f"{type(e).__name__}: {e}"})
        return False
    return True
