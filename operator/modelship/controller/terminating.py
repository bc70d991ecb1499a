"""Namespaces the API server said are being deleted: their ModelDeployments get no new children.

When a namespace is deleted, its namespace controller deletes the serving Deployments, Services and Jobs in no set
order with the ModelDeployments: a ModelDeployment that outlives its Deployment by a moment sees it go and would
create it again, which the API server refuses (403 Forbidden, cause ``NamespaceTerminating``: "unable to create new
content in namespace ... because it is being terminated"). Each refused reconcile costs a GET and a POST; at 500
ModelDeployments a teardown set off more than a thousand of them.

The refusal itself is the signal: it is the API server's own word that the namespace is terminating, it costs no
extra request, and it needs no right to read Namespaces (which a namespaced install, with Roles only, does not
have). Once one is seen, the namespace is held: its ModelDeployments are not reconciled (nothing is created,
applied, written to status or posted as an Event), not retried, and the hold is logged once at INFO.

A hold ends (``release_if_empty``, on each ModelDeployment's deletion) when the namespace has no ModelDeployment
left in the operator's store: a namespace is not finalized while it still holds one, and one of the same name created
later starts empty, so a ModelDeployment seen after that is a new namespace's. For the same reason a refusal that
comes when none is left (an Event queued before the last one went) holds nothing: the check and the hold are made
under one lock, so a hold never outlives the last deletion. A hold also lapses after ``HOLD_SECONDS`` (a watch that
missed a deletion must not keep a namespace held forever; a namespace still terminating then costs one more refusal)
and at most ``MAX_HELD`` namespaces are held (the oldest forgotten): memory stays bounded while namespaces come and go.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from .apistatus import status_body

log = logging.getLogger("modelship.reconcile")

CAUSE = "NamespaceTerminating"
"""The cause type the API server's NamespaceLifecycle admission puts in its refusal (k8s.io/api core/v1)."""
HOLD_SECONDS = 300.0
"""How long a hold lasts without another refusal."""
MAX_HELD = 1024
"""The most namespaces held at once (the oldest hold is forgotten first)."""


def refused_as_terminating(exc: ApiException) -> bool:
    """Whether the API server refused a write because the namespace is being terminated: 403 with the
    ``NamespaceTerminating`` cause (or, from a server that gives no causes, its message)."""
    if exc.status != 403:
        return False
    body = exc.body or ""
    status = status_body(exc)
    if status is not None:
        causes = (status.get("details") or {}).get("causes") or []
        if any(isinstance(c, dict) and c.get("reason") == CAUSE for c in causes):
            return True
    return "because it is being terminated" in body


class TerminatingNamespaces:
    """The namespaces held as terminating, each with the monotonic time its hold ends. Thread-safe."""

    def __init__(
        self,
        occupied: Callable[[str], bool] = lambda _: True,
        hold_seconds: float = HOLD_SECONDS,
        max_held: int = MAX_HELD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._occupied = occupied
        """Whether the operator's store still has a ModelDeployment in a namespace."""
        self._hold = hold_seconds
        self._max = max_held
        self._clock = clock
        self._lock = threading.Lock()
        self._until: OrderedDict[str, float] = OrderedDict()
        self._logged: OrderedDict[str, None] = OrderedDict()
        """Namespaces whose hold was logged at INFO (a hold that lapsed and came back is logged at DEBUG)."""

    def hold(self, namespace: str) -> bool:
        """Hold ``namespace`` (a refusal was seen) while it has a ModelDeployment; True when it was not held
        already."""
        with self._lock:
            if not self._occupied(namespace):
                return False
            new = self._live(namespace) is None
            self._until.pop(namespace, None)
            self._until[namespace] = self._clock() + self._hold
            while len(self._until) > self._max:
                self._until.popitem(last=False)
            first = namespace not in self._logged
            self._logged[namespace] = None
            self._logged.move_to_end(namespace)
            while len(self._logged) > self._max:
                self._logged.popitem(last=False)
        if new:
            log.log(
                logging.INFO if first else logging.DEBUG,
                "namespace %s is being terminated (the API server refused a create there): its ModelDeployments "
                "get no new children and are not retried while it goes",
                namespace,
            )
        return new

    def held(self, namespace: str) -> bool:
        with self._lock:
            return self._live(namespace) is not None

    def release_if_empty(self, namespace: str) -> bool:
        """End the hold of ``namespace`` once it has no ModelDeployment left; True when one ended."""
        with self._lock:
            if self._live(namespace) is None or self._occupied(namespace):
                return False
            self._until.pop(namespace, None)
            self._logged.pop(namespace, None)
        log.debug("namespace %s: no ModelDeployment left, hold released", namespace)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def _live(self, namespace: str) -> float | None:
        """The end of the hold of ``namespace`` if it has not lapsed (a lapsed one is dropped); lock held."""
        until = self._until.get(namespace)
        if until is not None and until <= self._clock():
            del self._until[namespace]
            return None
        return until
