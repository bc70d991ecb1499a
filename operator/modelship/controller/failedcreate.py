"""Why a running stage Job has no pod: the Job controller could not create it (a ResourceQuota exceeded, Pod
Security admission or a LimitRange forbidding it). It says so only in a ``FailedCreate`` Warning Event on the Job
(the Job's status and conditions say nothing), and Events are not watched: they are listed, by the Job's uid and
that reason, only for a Job that runs without a pod past ``PODLESS_GRACE_SECONDS``, at most once per
``LOOK_SECONDS`` (``controller.joblook``). Pure.

The API server selects them (``events_selector``: the Job's uid, the reason, the source ``job-controller``, Warning),
so the list is small whatever else the namespace holds. Anyone who may create Events in the namespace (a tenant, in
theirs) can write one about the Job, naming ``job-controller`` as its source too: the selection removes noise, it
protects nothing. What is read is bounded (``EVENTS_BYTES`` per list, ``MESSAGE_CHARS`` per message, then
``podhealth.printable``) and the stage redacts what looks like a credential: a forged Event can only put bounded
words in the tenant's own status, which the tenant can already write (its pods' termination messages)."""

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
"""At most this many Events are asked per look (the Job controller folds repeats of one message into one Event)."""
EVENTS_BYTES = 256 * 1024
"""At most this many bytes of the Events list are read (one Event of the Job controller is about 1.5 KiB): a
larger answer is a failed look, not parsed."""
MESSAGE_CHARS = 2048
"""At most this many characters of an Event's message are kept once the list is read (``kept``)."""

_ERROR_CREATING = re.compile(r"^(\(combined from similar events\):\s*)?Error creating:\s*")
"""The Job controller's prefix (and the event recorder's, once it folds more than ten similar Events into one)."""
_POD_NAME = re.compile(r'\bpods "[^"]*"')
"""The pod the controller tried to create, named in an admission error (``pods "x-abc12" is forbidden``): its
generated name changes at each try, so it is not said (status would be rewritten at each retry)."""
_QUOTA_USED = re.compile(r",\s*used: [^\s,]+(?:,[^\s,]+)*")
"""What a ResourceQuota says is used (``exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3``, lists
comma-joined without spaces): it changes as other pods come and go, so it is not said."""


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


_NEVER = datetime.min.replace(tzinfo=UTC)


def newest_pod_time(pods: list[dict[str, Any]]) -> datetime | None:
    """When the newest of the Job's pods was created or its last container ended (``creationTimestamp``, each
    container's ``finishedAt``); None without any. An Event older than that is about a try before that pod: the Job
    controller waiting to replace a failed pod has no new FailedCreate to say."""
    stamps: list[datetime] = []
    for pod in pods:
        stamps.append(parse_rfc3339((pod.get("metadata") or {}).get("creationTimestamp")) or _NEVER)
        status = pod.get("status") or {}
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            for state in ((c or {}).get("state"), (c or {}).get("lastState")):
                finished = ((state or {}).get("terminated") or {}).get("finishedAt")
                stamps.append(parse_rfc3339(finished) or _NEVER)
    return max(stamps) if stamps and max(stamps) > _NEVER else None


def kept(event: dict[str, Any]) -> dict[str, Any]:
    """What ``failed_create`` reads of an Event, its message cut at ``MESSAGE_CHARS``: the rest is not kept."""
    involved = event.get("involvedObject") or {}
    return {
        "metadata": {"creationTimestamp": (event.get("metadata") or {}).get("creationTimestamp")},
        "involvedObject": {"kind": involved.get("kind"), "uid": involved.get("uid")},
        "source": {"component": (event.get("source") or {}).get("component")},
        "series": {"lastObservedTime": (event.get("series") or {}).get("lastObservedTime")},
        "message": str(event.get("message") or "")[:MESSAGE_CHARS],
        **{f: event.get(f) for f in ("reason", "type", "reportingComponent", "lastTimestamp", "eventTime")},
    }


def _when(event: dict[str, Any]) -> datetime:
    series = event.get("series") or {}
    for stamp in (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
                  (event.get("metadata") or {}).get("creationTimestamp")):  # fmt: skip
        when = parse_rfc3339(stamp) if isinstance(stamp, str) else None
        if when is not None:
            return when
    return _NEVER


def failed_create(events: list[dict[str, Any]], job_uid: str, since: datetime | None = None) -> str | None:
    """What the Job controller's latest FailedCreate Event about the Job ``job_uid`` says (without its "Error
    creating:", the generated pod name: ``pods "x-abc12" is forbidden`` reads ``the pod is forbidden``, and a
    quota's ``used:``), bounded and on one line; None when it reported none, or none at ``since`` (the Job's newest
    pod: ``newest_pod_time``) or later: Events live an hour, an older one is about another cause."""
    trusted = [e for e in events if isinstance(e, dict) and _by_job_controller(e, job_uid)]
    if since is not None:
        trusted = [e for e in trusted if _when(e) >= since]
    if not trusted:
        return None
    newest = max(trusted, key=_when)
    message = _POD_NAME.sub("the pod", _ERROR_CREATING.sub("", str(newest.get("message") or "")))
    return printable(_QUOTA_USED.sub("", message) or "the pod was not created")


def no_pod_text(said: str, platform: bool) -> str:
    """The words a stage's message carries for a Job whose pod the Job controller could not create: the reason and
    what the controller said (``said``), or the reason alone for a Job in the platform's build namespace (its
    quotas and admission name the platform's namespace)."""
    if platform:
        return f"no pod created ({FAILED_CREATE})"
    return f"no pod created ({FAILED_CREATE}): {said}"


def events_selector(job_uid: str) -> str:
    """The field selector of the Job controller's FailedCreate Events about the Job ``job_uid`` (fields core v1
    Events select on; ``source`` matches ``source.component``, or ``reportingComponent`` when that is empty)."""
    return f"involvedObject.uid={job_uid},reason={FAILED_CREATE},source={JOB_CONTROLLER},type=Warning"
