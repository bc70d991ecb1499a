"""The stage Jobs of a ModelDeployment as a reconcile observes them: from the store (the Job and its pods), plus two
things the watch does not hold.

- For a Job that runs without a pod (``failedcreate.podless``) past ``failedcreate.PODLESS_GRACE_SECONDS``: the Job
  controller's FailedCreate Events about it (selected by the Job's uid, that reason and the controller, at most once
  per ``failedcreate.LOOK_SECONDS`` per Job, also when the list fails; those older than the Job's newest pod left
  out): why it cannot create the pod.
- For a Job in the platform's build namespace, whose status message carries the reasons alone: the full words (the
  scheduler's, the kubelet's, the Job controller's) are logged, once per change, for the platform's team.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.modeldeployment import ModelDeployment
from ..resources.kinds import EVENT
from . import metrics
from .conditions import seconds_since
from .failedcreate import (
    EVENTS_BYTES,
    EVENTS_LIMIT,
    LOOK_SECONDS,
    PODLESS_GRACE_SECONDS,
    events_selector,
    failed_create,
    kept,
    newest_pod_time,
    podless,
)
from .kube import Kube, Unreachable, api_error_text
from .observe import JobObservation, job_observation, runs_template

log = logging.getLogger("modelship.joblook")

KEPT = 1024
"""At most this many Jobs' last looks (and build Jobs' last logged words) are kept; a Job deleted while it had no
pod leaves its entry until the table is full, then the table starts again."""


class JobLook:
    """Observes stage Jobs; asks the API server only about those that run without a pod."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.clock = clock
        self._lock = threading.Lock()
        self._looked: dict[str, tuple[float, datetime | None, str | None]] = {}
        """Job uid -> (when its Events were last listed or the list failed, the Job's newest pod's time then
        (``failedcreate.newest_pod_time``), what the Job controller said then)."""
        self._logged: dict[str, str] = {}
        """Build Job uid -> what its pods or Events said in full, as last logged."""
        self._unread: set[str] = set()
        """Namespaces where the last list of Events failed (logged once until a list succeeds)."""

    def observe(self, md: ModelDeployment, job: dict[str, Any], pods: list[dict[str, Any]]) -> JobObservation:
        """The Job and its pods (those that name it their controller) observed (``observe.job_observation``)."""
        meta = job.get("metadata") or {}
        platform = meta.get("namespace") != md.metadata.namespace
        # the Job controller is asked about the pods job_observation reads (those that run the Job's template):
        # both judge the Job podless alike, and a pod someone else made naming the Job moves no clock here
        mine = [p for p in pods if runs_template(p, job)]
        observed = job_observation(job, pods, platform, self.no_pod(job, mine, datetime.now(UTC)))
        self._log(md, meta, observed)
        return observed

    def no_pod(self, job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> str | None:
        """What the Job controller said about not creating the Job's pod (``failedcreate.failed_create``), when the
        Job runs without one for ``PODLESS_GRACE_SECONDS``; None otherwise, or when it said nothing. ``pods``: the
        Job's pods that run its template (``observe.runs_template``)."""
        meta = job.get("metadata") or {}
        uid, ns = str(meta.get("uid") or ""), str(meta.get("namespace") or "")
        if not uid or not ns or not podless(job, pods):
            with self._lock:
                self._looked.pop(uid, None)
            return None
        age = seconds_since(meta.get("creationTimestamp"), now)
        if age is None or age < PODLESS_GRACE_SECONDS:
            return None
        since = newest_pod_time(pods)
        with self._lock:
            last = self._looked.get(uid)
        if last is not None and last[1] != since:
            last = None  # another pod came and went: what was said is about a try before it
        if last is not None and self.clock() - last[0] < LOOK_SECONDS:
            return last[2]
        said = last[2] if last is not None else None
        try:
            events = self.kube.list_events(ns, events_selector(uid), EVENTS_LIMIT, EVENTS_BYTES)
        except (ApiException, Unreachable, ValueError) as exc:  # ValueError: too long (kube.TooLarge), not JSON
            with self._lock:
                first = ns not in self._unread
                self._unread.add(ns)
            if first:
                why = f"API error {exc.status}: {api_error_text(exc)}" if isinstance(exc, ApiException) else exc
                log.warning("%s: Events of Job %s not listed (why it has no pod is not told): %s", ns,
                            meta.get("name"), why)  # fmt: skip
        else:
            metrics.API_READS.labels(EVENT.kind).inc()
            said = failed_create([kept(e) for e in events], uid, since)
            with self._lock:
                self._unread.discard(ns)
        with self._lock:  # a failed look waits as long as one that answered: a refused list is not asked each pass
            if len(self._looked) >= KEPT:
                self._looked.clear()
            self._looked[uid] = (self.clock(), since, said)
        return said

    def _log(self, md: ModelDeployment, meta: dict[str, Any], observed: JobObservation) -> None:
        """Log a build Job's full words (``JobObservation.said``) when they change."""
        uid = str(meta.get("uid") or "")
        with self._lock:
            if not observed.said:
                self._logged.pop(uid, None)
                return
            if self._logged.get(uid) == observed.said:
                return
            if len(self._logged) >= KEPT:
                self._logged.clear()
            self._logged[uid] = observed.said
        log.warning("%s/%s: build Job %s/%s is stuck (the ModelDeployment's status says the reason only): %s",
                    md.metadata.namespace, md.metadata.name, meta.get("namespace"), meta.get("name"),
                    observed.said)  # fmt: skip
