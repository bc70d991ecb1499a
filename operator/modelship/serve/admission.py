"""Admission: what an inference request must get past before it costs anything.

At its headers, before its body is read (:meth:`Admission.admit`): refused while its model loads (503) or while
its queue is full (429), both with Retry-After. Before its JSON is decoded (:meth:`Admission._reserve`): the
memory of its decoded tensors is reserved in the decoded-tensor budget (429 when the budget is spent, 413 when
it could never fit). Both are part of :class:`modelship.serve.app.ServingApp`.
"""

from __future__ import annotations

from .errors import PayloadTooLarge, TooManyRequests
from .limits import Hold
from .messages import Response, busy
from .metrics import Metrics
from .routes import _Entry


class Admission:
    """The admission checks of :class:`modelship.serve.app.ServingApp` (run on the event loop thread)."""

    models: dict[str, _Entry]
    metrics: Metrics

    def admit(self, method: str, path: str, headers: dict[str, str], length: int | None) -> Response | None:
        """At a request's headers, before its body is read: refuse inference for a model that cannot take it now
        (loading: 503; queue full: 429, both with Retry-After). Everything else is decided after the body."""
        if method != "POST":
            return None
        for e in self.models.values():
            if e.batcher is None or e.batcher.full:
                break
        else:
            return None  # every model loaded, no queue full: nothing to refuse at the headers
        name = _inference_model(path)
        entry = self.models.get(name) if name else None
        if entry is None:
            return None
        if entry.batcher is None:
            self.metrics.rejected("not_ready")
            return busy(f"model '{entry.name}' is {entry.state.lower()}", 503)
        if entry.batcher.full:
            self.metrics.rejected("queue_full")
            return busy(entry.batcher.full_error().message)
        return None

    def _reserve(self, hold: Hold, decoded_bytes: int) -> None:
        """Hold ``decoded_bytes`` of the decoded-tensor budget for this request, or raise 429 / 413."""
        if hold.set_decoded(decoded_bytes):
            return
        budget = hold.decoded
        if not budget.fits_ever(decoded_bytes):
            self.metrics.rejected("too_large_to_decode")
            raise PayloadTooLarge(
                f"decoding this request takes about {decoded_bytes} bytes, more than the server can hold "
                f"({budget.limit} bytes of decoded tensors); send binary tensors or a smaller batch"
            )
        self.metrics.rejected("decode_budget")
        raise TooManyRequests(f"server busy: {budget.used} bytes of decoded tensors held (limit {budget.limit}); retry")


def _inference_model(path: str) -> str | None:
    """The model an inference path addresses (``/v2/models/M[/versions/V]/infer``,
    ``/v1/models/M[/versions/V]:predict``), else None."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return path[len("/v2/models/") :].split("/", 1)[0] or None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return path[len("/v1/models/") : -len(":predict")].split("/", 1)[0] or None
    return None
