"""Why a running stage Job has no pod: the Job controller could not create it (a ResourceQuota exceeded, Pod
Security admission or a LimitRange forbidding it). It says so only in a ``FailedCreate`` Warning Event on the Job
(the Job's status and conditions say nothing), and Events are not watched: they are listed, by the Job's uid and
that reason, only for a Job that runs without a pod past ``PODLESS_GRACE_SECONDS``, at most once per
``LOOK_SECONDS`` (``controller.joblook``). Pure.

Anyone who may create Events in the namespace (a tenant, in theirs) can write one about the Job: only those the Job
controller reports (source and reportingComponent ``job-controller``, about the Job's uid) are read, their message
bounded and on one line (``podhealth.printable``); the stage redacts what looks like a credential. A forged one
can only put words in the tenant's own status, which the tenant can already write."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from .conditions import parse_rfc3339
from .podhealth import live, printable

JOB_CONTROLLER = "job-controller"
"""The component the Job controller reports its Events as (source.component and reportingComponent)."""
FAILED_CREATE = "FailedCreate"
PODLESS_GRACE_SECONDS = 5.0
"""A Job this young has no pod yet as a rule (the Job controller creates it within a second or two): not asked."""
LOOK_SECONDS = 10.0
"""Events are asked again at most this often per Job while it has no pod (the stage looks again every
``REQUEUE_SECONDS``: nothing else wakes it, an Event is no watched change)."""
REQUEUE_SECONDS = 15.0
EVENTS_LIMIT = 20
"""At most this many Events are read per look (the Job controller folds repeats of one message into one Event)."""

_ERROR_CREATING = re.compile(r"^(\(combined from similar events\):\s*)?Error creating:\s*")
"""The Job controller's prefix (and the event recorder's, once it folds more than ten similar Events into one)."""
_POD_NAME = re.compile(r'\bpods "[^"]*"')
"""The pod the controller tried to create, named in an admission error (``pods "x-abc12" is forbidden``): its
generated name changes at each try, so it is not said (status would be rewritten at each retry)."""


def podless(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """The Job runs (no Complete or Failed condition True, not suspended) and has no pod: none active in its status
    and none of its pods in ``pods`` (those that run its template) live (``podhealth.live``)."""
    status = job.get("status") or {}
    if (job.get("spec") or {}).get("suspend") or status.get("active"):
        return False
    for c in status.get("conditions") or []:
        if c.get("type") in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet") and c.get("status") == "True":
            return False
    return not any(live(p) for p in pods)


def _by_job_controller(event: dict[str, Any], job_uid: str) -> bool:
    involved = event.get("involvedObject") or {}
    source = (event.get("source") or {}).get("component")
    reporter = event.get("reportingComponent")
    return (
        bool(job_uid)
        and involved.get("uid") == job_uid
        and involved.get("kind") == "Job"
        and event.get("reason") == FAILED_CREATE
        and event.get("type") == "Warning"
        and JOB_CONTROLLER in (source, reporter)
        and all(who in (None, "", JOB_CONTROLLER) for who in (source, reporter))
    )


def _when(event: dict[str, Any]) -> datetime:
    series = event.get("series") or {}
    for stamp in (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
                  (event.get("metadata") or {}).get("creationTimestamp")):  # fmt: skip
        when = parse_rfc3339(stamp) if isinstance(stamp, str) else None
        if when is not None:
            return when
    return datetime.min.replace(tzinfo=UTC)


def failed_create(events: list[dict[str, Any]], job_uid: str) -> str | None:
    """What the Job controller's latest FailedCreate Event about the Job ``job_uid`` says (without its "Error
    creating:" and the generated pod name: ``pods "x-abc12" is forbidden`` reads ``the pod is forbidden``), bounded
    and on one line; None when it reported none."""
    trusted = [e for e in events if isinstance(e, dict) and _by_job_controller(e, job_uid)]
    if not trusted:
        return None
    newest = max(trusted, key=_when)
    message = _POD_NAME.sub("the pod", _ERROR_CREATING.sub("", str(newest.get("message") or "")))
    return printable(message or "the pod was not created")


def no_pod_text(said: str, platform: bool) -> str:
    """The words a stage's message carries for a Job whose pod the Job controller could not create: the reason and
    what the controller said (``said``), or the reason alone for a Job in the platform's build namespace (its
    quotas and admission name the platform's namespace)."""
    if platform:
        return f"no pod created ({FAILED_CREATE})"
    return f"no pod created ({FAILED_CREATE}): {said}"


def events_selector(job_uid: str) -> str:
    return f"involvedObject.uid={job_uid},reason={FAILED_CREATE}"
