"""Where a reconcile ends without carrying a plan out: the Stalled status it writes instead (a spec the operator
cannot use, fields it does not know, an excluded namespace, a policy violation, a name clash, reconciles that kept
failing, a child's write the API server refused for its content), the one-line words for the error that ended
it, the Events a reconcile posts (counted as stage transitions), and a status write that found its
ModelDeployment deleted meanwhile (nothing to retry)."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .. import GROUP, KIND, PLURAL
from ..api.redact import redact
from ..api.skew import UnsupportedFields
from ..api.status import ModelDeploymentStatus, Reason, StageName
from ..config import OperatorConfig
from ..resources.defaults import InvalidSpec, with_operator_defaults
from ..resources.revision import revision
from . import kstatus, metrics
from .apistatus import status_body
from .conditions import ORDER
from .kstatus import Event
from .kube import EventPoster, Kube, api_error_text
from .podhealth import one_line
from .skew import Skew
from .stages.context import Failure
from .stages.jobs import PLATFORM_WORDS
from .statuswrite import StatusWriter
from .store import Store

log = logging.getLogger("modelship.reconcile")

REFUSAL_LIMIT = 600
"""Characters of the API server's words kept in a refusal's message (a policy's message is the tenant's to write:
any length, any characters)."""
_ADMISSION_DENIALS = (
    re.compile(r"ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request"),
    re.compile(r'admission webhook "[^"]*" denied the request'),
)


class Cause(StrEnum):
    """Why the API server refused a write for the object's content."""

    ADMISSION = "admission"
    """An admission plugin denied it: a ValidatingAdmissionPolicy or a validating webhook."""
    INVALID = "invalid"
    """The object is invalid (422 Invalid): its schema or a field's rules."""


@dataclass(frozen=True)
class Refusal:
    """The API server's refusal of a write for the object's content: why, and its words (one line, bounded,
    redacted)."""

    cause: Cause
    words: str


class WriteRefused(Exception):
    """The API server refused a write of this object for its content (``refusal``)."""

    def __init__(self, kind: str, namespace: str | None, name: str, refused: Refusal) -> None:
        super().__init__(f"{kind} {name} refused by the API server: {refused.words}")
        self.kind = kind
        self.namespace = namespace
        """The object's namespace (None: the ModelDeployment's)."""
        self.name = name
        self.cause = refused.cause
        self.words = refused.words


def refusal(exc: ApiException) -> Refusal | None:
    """The API server's refusal when it refused a write for the object's content: an admission plugin denied it
    (a ValidatingAdmissionPolicy, whose ``reason`` makes it a 401, 403, 413 or, by default, 422; a validating
    webhook, with any code it chose), whatever the code, or the object is invalid (422 Invalid). None for any other
    error, among them a 403 of RBAC (the operator's own Role lacks a verb: a misinstall, an error as any other) or
    of a namespace being terminated: told apart by the Status body, not by the code. A 409 never gets here from a
    write: ``Kube.apply`` and ``Kube.create`` turn it into ``PreconditionFailed`` (judged again) first, denial
    words or not. The words are redacted (a webhook's message may echo the object, its environment or a Secret's
    data) and kept to one line of at most ``REFUSAL_LIMIT`` characters."""
    if exc.status is None or exc.status < 400:
        return None
    status = status_body(exc)
    if status is None or status.get("kind") != "Status":
        return None
    message = status.get("message")
    if not isinstance(message, str):
        return None
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    said = [message, *(c.get("message") for c in causes or [] if isinstance(c, dict))]
    if any(isinstance(m, str) and p.search(m) for m in said for p in _ADMISSION_DENIALS):
        cause = Cause.ADMISSION
    elif exc.status == 422 and status.get("reason") == "Invalid":
        cause = Cause.INVALID
    else:
        return None
    return Refusal(cause, redact(one_line(message), limit=REFUSAL_LIMIT))


@contextmanager
def refusable(obj: dict[str, Any]) -> Iterator[None]:
    """A write of ``obj``: an API error that refuses it for its content is raised as ``WriteRefused``."""
    try:
        yield
    except ApiException as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        meta = obj["metadata"]
        raise WriteRefused(obj["kind"], meta.get("namespace"), meta["name"], refused) from exc


def deleted_meanwhile(exc: ApiException, name: str) -> bool:
    """Whether the API server answered 404 about the ModelDeployment ``name`` itself (its status write), not about
    a child: it was deleted after this reconcile read it."""
    if exc.status != 404:
        return False
    details = (status_body(exc) or {}).get("details") or {}
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
        self._refused: dict[tuple[str, str], str] = {}
        """The refusal each ModelDeployment's last pass met (logged once until it changes or goes)."""

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
        # no try count in status: it would rewrite the same failure at every resync (the log and
        # modelship_reconcile_give_ups_total count them)
        log.warning("%s/%s: gave up after %d failed reconciles in a row: %s", namespace, name, tries,
                    describe_error(error))  # fmt: skip
        message = f"reconcile keeps failing, the last time with {describe_error(error)}"
        self.stall(body, Failure(StageName.RECONCILE, Reason.RECONCILE_ERROR, message), rev)

    def refused(
        self, body: dict[str, Any], refused: WriteRefused, planned: dict[str, Any], creating: Collection[str]
    ) -> None:
        """A pass whose write of a child the API server refused for its content: Stalled (ApplyRefused, the object
        and the API server's words) over what status held, with the results of the Jobs that ran that the pass
        found (``planned``, the status it decided; ``creating``, the names of the Jobs it was to create:
        ``kstatus.job_results``), and the Events of those conditions' changes; logged once per change of the
        refusal. Not the rest of the status the pass decided: it would tell of writes that did not happen (a
        Deployed message, a served revision, a Canary phase or step started at this moment, whose analysis window
        would then count time its pods never ran), and its Events of changes that were not made.

        A refused object in the platform's build namespace (a build Job) is told by its kind, name and cause
        alone: the words of that namespace's admission name the platform (its policies, registries, quotas); they
        go to the operator's log, as ``joblook`` does for a stuck build Job."""
        meta = body["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        elsewhere = refused.namespace not in (None, "", key[0])
        where = f"{refused.namespace}/{refused.name}" if elsewhere else refused.name
        logged = f"{refused.kind} {where} refused by the API server: {refused.words}"
        told = f"{refused.kind} {refused.name} refused by the API server ({refused.cause}); {PLATFORM_WORDS}"
        message = told if elsewhere else logged
        if self._refused.get(key) != logged:
            log.warning("%s/%s: %s (retried at the next change or resync)", *key, logged)
            self._refused[key] = logged
        prev = self.skew.status(body)
        failure = Failure(StageName.RECONCILE, Reason.APPLY_REFUSED, message)
        ran = kstatus.job_results(ModelDeploymentStatus.model_validate(planned), creating)
        status, news = kstatus.stalled(prev, meta.get("generation"), failure, prev.revision, datetime.now(UTC), ran=ran)
        self.status_writer.write(body, status.wire())
        self.post(body, news)

    def accepted(self, namespace: str, name: str) -> None:
        """A pass whose writes the API server took: a refusal the last one met is gone (said once)."""
        if self._refused.pop((namespace, name), None) is not None:
            log.info("%s/%s: the API server takes its writes again", namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self._refused.pop((namespace, name), None)

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
