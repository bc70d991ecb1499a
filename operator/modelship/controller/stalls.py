"""Where a reconcile ends without carrying a plan out: the Stalled status it writes instead (a spec the operator
cannot use, fields it does not know, an excluded namespace, a policy violation, a name clash, reconciles that kept
failing), the one-line words for the error that ended it, the Events a reconcile posts (counted as stage
transitions), and a status write that found its ModelDeployment deleted meanwhile (nothing to retry)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .. import GROUP, KIND, PLURAL
from ..api.skew import UnsupportedFields
from ..api.status import Reason, StageName
from ..config import OperatorConfig
from ..resources.defaults import InvalidSpec, with_operator_defaults
from ..resources.revision import revision
from . import kstatus, metrics
from .conditions import ORDER
from .kstatus import Event
from .kube import EventPoster, Kube, api_error_text
from .skew import Skew
from .stages.context import Failure
from .statuswrite import StatusWriter
from .store import Store


def deleted_meanwhile(exc: ApiException, name: str) -> bool:
    """Whether the API server answered 404 about the ModelDeployment ``name`` itself (its status write), not about
    a child: it was deleted after this reconcile read it."""
    if exc.status != 404:
        return False
    try:
        details = (json.loads(exc.body or "") or {}).get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return (
        isinstance(details, dict)
        and details.get("group") == GROUP
        and details.get("kind") == PLURAL
        and details.get("name") == name
    )


class Stalls:
    """Writes a ModelDeployment's Stalled status (with its Events) when a reconcile cannot go on, and posts a
    reconcile's Events."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        config: OperatorConfig,
        skew: Skew,
        status_writer: StatusWriter,
        events: EventPoster | None,
    ) -> None:
        self.kube = kube
        self.store = store
        self.config = config
        self.skew = skew
        self.status_writer = status_writer
        self.events = events

    def post(self, body: dict[str, Any], events: list[Event]) -> None:
        for ev in events:
            if self.events is not None:
                self.events.post(body, ev.type, ev.reason, ev.message)
            else:
                self.kube.event(body, ev.type, ev.reason, ev.message)
            metrics.STAGE_TRANSITIONS.labels(*_split_reason(ev.reason)).inc()

    def invalid(self, body: dict[str, Any], message: str) -> None:
        """A spec the CRD admitted but the operator cannot use (stricter Python rules, or this operator's
        configuration): Stalled, nothing else touched (no Event either: status says it, for every resync)."""
        self.stall(body, Failure(StageName.RESOLVE, Reason.INVALID_SPEC, message), rev=None, post_events=False)

    def unsupported(self, body: dict[str, Any], exc: UnsupportedFields) -> None:
        """A spec with fields this operator does not know (a newer CRD is installed): Stalled naming every field
        and this operator's version, a Warning Event; nothing else is touched (what serves keeps serving)."""
        serving = self.skew.status(body).serving_revision
        self.stall(body, Failure(StageName.RESOLVE, Reason.UNSUPPORTED_FIELDS, exc.message(serving)), rev=None)

    def excluded(self, body: dict[str, Any], namespace: str) -> None:
        """A namespace the platform excludes (operator.excludeNamespaces, the operator's own): Stalled, nothing
        created, an Event once."""
        message = (
            f"namespace {namespace} is excluded by the platform (operator.excludeNamespaces, or the operator's own "
            "namespace): the operator creates nothing here; apply the ModelDeployment in a tenant namespace"
        )
        self.stall(body, Failure(StageName.RESOLVE, Reason.NAMESPACE_EXCLUDED, message), rev=None)

    def give_up(self, namespace: str, name: str, error: BaseException, tries: int) -> None:
        """The work queue's last word on an object whose reconciles kept failing: Stalled, with the error as
        reason and message in status and an Event, until a change or a resync tries again."""
        body = self.store.get(KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            rev: str | None = revision(with_operator_defaults(self.skew.read(body), self.config).spec)
        except (ValidationError, InvalidSpec, UnsupportedFields, ApiException):  # the served CRD unreadable
            rev = None
        message = f"reconcile failed {tries} times in a row, the last with {describe_error(error)}"
        self.stall(body, Failure(StageName.RECONCILE, Reason.RECONCILE_ERROR, message), rev)

    def stall(self, body: dict[str, Any], failure: Failure, rev: str | None, post_events: bool = True) -> None:
        prev = self.skew.status(body)  # what this operator can read of it: never an empty one for a newer field
        generation = body["metadata"].get("generation")
        status, events = kstatus.stalled(prev, generation, failure, rev, datetime.now(UTC))
        self.status_writer.write(body, status.wire())
        if post_events:
            self.post(body, events)


def describe_error(error: BaseException) -> str:
    """An exception in one line for status and Events: its type and message (the API's own words for an
    API error)."""
    if isinstance(error, ApiException):
        return f"API error {error.status}: {api_error_text(error)}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _split_reason(reason: str) -> tuple[str, str]:
    for cond in ORDER:
        if reason.startswith(cond):
            return cond, reason[len(cond) :]
    return "", reason
