"""Observed EndpointSlices for the pure decisions' tests: a Service routing to ready pods of given revisions."""

from __future__ import annotations

from modelship.controller.observe import EndpointsObservation


def routed(*ready: tuple[str, int], service: str = "digits") -> EndpointsObservation:
    """The Service ``service`` lists ``n`` ready endpoints of each ``(revision, n)``."""
    return EndpointsObservation(service, tuple(sorted(ready)))
