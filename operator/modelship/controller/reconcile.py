"""One reconcile: read the ModelDeployment and its children from the store, plan, carry the plan out."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter as Tally
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ..api.errors import describe_validation_error
from ..api.modeldeployment import ModelDeployment
from ..api.status import ModelDeploymentStatus, Phase, Reason, StageName
from ..config import OperatorConfig
from ..resources.defaults import InvalidSpec, with_operator_defaults
from ..resources.kinds import APPLIED, JOB
from ..resources.meta import MODELDEPLOYMENT_LABEL, serving_name
from ..resources.revision import revision
from . import kstatus, metrics, revcache
from .conditions import ORDER
from .kstatus import Event
from .kube import EventPoster, Kube, api_error_text
from .mergepatch import merge_patch
from .observe import Observed, deployment_observation, job_observation
from .plan import Plan, plan
from .revcache import CachedRevision
from .stages.context import Failure
from .store import Store

log = logging.getLogger("modelship.reconcile")

MD = "ModelDeployment"
CACHE_CONFIGMAP = revcache.CONFIGMAP
CACHE_LABELS = revcache.LABELS
SPEC_HASH = "modelship.io/spec-hash"
SERVING_KINDS = tuple(k.kind for k in APPLIED)  # the owned children whose existence a plan looks at


def _subset(want: Any, have: Any) -> bool:
    """Every field we want is present in what the server has, with the same value."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(_subset(a, b) for a, b in zip(want, have, strict=True))
        )
    return bool(want == have or str(want) == str(have))


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the object with a hash of itself: a change that only removes a field still changes the hash."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"]
    return {**obj, "metadata": {**meta, "annotations": {**meta.get("annotations", {}), SPEC_HASH: digest}}}


class Reconciler:
    def __init__(self, kube: Kube, store: Store, config: OperatorConfig, events: EventPoster | None = None) -> None:
        self.kube = kube
        self.store = store
        self.config = config
        self.events = events

    # -- observe --------------------------------------------------------------------------------
    def observe(self, md: ModelDeployment) -> Observed:
        ns, name = md.metadata.namespace or "", md.metadata.name
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.owned(ns, name, "Pod"):
            job = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") or (
                pod["metadata"].get("labels") or {}
            ).get("job-name")
            if job:
                pods_by_job.setdefault(job, []).append(pod)
        jobs = [
            job_observation(j, pods_by_job.get(j["metadata"]["name"], [])) for j in self.store.owned(ns, name, "Job")
        ]
        dep = self.store.get("Deployment", ns, serving_name(md))
        if dep is not None and (dep["metadata"].get("labels") or {}).get(MODELDEPLOYMENT_LABEL) != name:
            dep = None  # not ours
        existing = frozenset((k, o["metadata"]["name"]) for k in SERVING_KINDS for o in self.store.owned(ns, name, k))
        return Observed(
            jobs=jobs,
            deployment=deployment_observation(dep) if dep else None,
            existing=existing,
            cached=self._cached(md),
        )

    def _cached(self, md: ModelDeployment) -> CachedRevision | None:
        ns = md.metadata.namespace or ""
        cache = self.store.get("ConfigMap", ns, CACHE_CONFIGMAP)
        raw = (cache.get("data") or {}).get(revision(md.spec)) if cache is not None else None
        if not raw:
            return None
        try:
            return revcache.parse(raw, md.spec.model.uri)
        except ValueError as exc:
            log.warning("%s/%s: ignoring unreadable revision cache entry in %s: %s", ns, md.metadata.name,
                        CACHE_CONFIGMAP, str(exc).splitlines()[0])  # fmt: skip
            return None

    # -- act ------------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one ModelDeployment; returns seconds until it wants another look (or None)."""
        started = time.monotonic()
        body = self.store.get(MD, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone: owner references take the children with it
        try:
            md = with_operator_defaults(ModelDeployment.from_body(body), self.config)
        except (ValidationError, InvalidSpec) as exc:
            self._invalid(body, describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc))
            metrics.RECONCILES.labels("invalid").inc()
            return None
        try:
            observed = self.observe(md)
            log.debug("%s/%s observed deployment %s", namespace, name, observed.deployment)
            p = plan(md, observed, self.config, datetime.now(UTC))
            if p.create and self._store_missed_jobs(md, observed):
                p = plan(md, self.observe(md), self.config, datetime.now(UTC))
            self._execute(md, body, p)
        except ApiException as exc:
            if exc.status == 403 and "being terminated" in (exc.body or ""):
                metrics.RECONCILES.labels("namespace-terminating").inc()
                return None  # the namespace is going away with everything in it: nothing to restore
            raise  # the work queue logs, counts and retries it (and stalls the resource after its tries)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels("ok").inc()
        if p.requeue_after is not None:
            return p.requeue_after
        return None

    def _store_missed_jobs(self, md: ModelDeployment, planned_with: Observed) -> bool:
        """Before creating a Job, ask the API server (not the store) which of this ModelDeployment's Jobs
        exist: right after a restart the watch may not have listed them yet, and a Job the plan did not see
        must never be created twice. Returns True when the plan missed some (plan again)."""
        ns, name = md.metadata.namespace or "", md.metadata.name
        selector = f"{MODELDEPLOYMENT_LABEL}={name}"
        live = self.kube.list(JOB.api_version, JOB.kind, ns, selector)
        seen = {j.name for j in planned_with.jobs}  # what the plan saw, not what the store holds by now
        missed = [j for j in live if j["metadata"]["name"] not in seen]
        if not missed:
            return False
        for pod in self.kube.list("v1", "Pod", ns, f"{selector},batch.kubernetes.io/job-name"):
            self.store.put("Pod", pod)
        for job in missed:
            self.store.put("Job", job)
        log.info("%s/%s: %d Job(s) not yet seen by the watch; planning again", ns, name, len(missed))
        return True

    def _execute(self, md: ModelDeployment, body: dict[str, Any], p: Plan) -> None:
        ns = md.metadata.namespace or ""
        for obj in p.apply:
            desired = with_spec_hash(obj)
            current = self.store.get(obj["kind"], ns, obj["metadata"]["name"])
            if current is not None and _subset(desired["metadata"].get("annotations", {}),
                                               current["metadata"].get("annotations") or {}) and _subset(
                {k: v for k, v in desired.items() if k not in ("metadata", "status")},
                {k: v for k, v in current.items() if k not in ("metadata", "status")},
            ):  # fmt: skip
                continue
            applied = self.kube.apply(desired)
            metrics.API_WRITES.labels("apply", obj["kind"]).inc()
            if applied:
                self.store.put(obj["kind"], applied)
        for obj in p.create:
            created = self.kube.create(obj)
            metrics.API_WRITES.labels("create", obj["kind"]).inc()
            if created:
                self.store.put(obj["kind"], created)
                log.info("%s/%s: created %s %s", ns, md.metadata.name, obj["kind"], obj["metadata"]["name"])
        for api_version, kind, name in p.delete:
            self.kube.delete(api_version, kind, ns, name)
            self.store.remove(kind, ns, name)
            metrics.API_WRITES.labels("delete", kind).inc()
        if p.cache_put is not None:
            rev, entry = p.cache_put
            cm = self.kube.merge_configmap(ns, CACHE_CONFIGMAP, CACHE_LABELS, {rev: entry})
            if cm:
                self.store.put("ConfigMap", cm)
        self._write_status(body, p.status)
        self._post(body, p.events)

    def _post(self, body: dict[str, Any], events: list[Event]) -> None:
        for ev in events:
            if self.events is not None:
                self.events.post(body, ev.type, ev.reason, ev.message)
            else:
                self.kube.event(body, ev.type, ev.reason, ev.message)
            metrics.STAGE_TRANSITIONS.labels(*_split_reason(ev.reason)).inc()

    def _write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        current = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
        # every key to drop, at every depth, as null: a merge patch of {"optimization": {...}} would otherwise
        # keep the previous revision's decision and artifact beside the new revision's Job
        patch = merge_patch(current, status)
        if not patch:
            log.debug(
                "status unchanged (rv %s, phase %s)", body["metadata"].get("resourceVersion"), status.get("phase")
            )
            return
        log.debug(
            "status write (rv %s): phase %s -> %s",
            body["metadata"].get("resourceVersion"),
            current.get("phase"),
            status.get("phase"),
        )
        meta = body["metadata"]
        result = self.kube.patch_status(meta["namespace"], meta["name"], patch)
        metrics.API_WRITES.labels("patch", "ModelDeployment/status").inc()
        log.debug(
            "status written: rv %s phase %s",
            result.get("metadata", {}).get("resourceVersion"),
            (result.get("status") or {}).get("phase"),
        )
        if result:
            self.store.put(MD, result)

    def _invalid(self, body: dict[str, Any], message: str) -> None:
        """A spec the CRD admitted but the operator cannot use (stricter Python rules, or this operator's
        configuration): Stalled, nothing else touched (no Event either: status says it, for every resync)."""
        self._stall(body, Failure(StageName.RESOLVE, Reason.INVALID_SPEC, message), rev=None, post_events=False)

    def give_up(self, namespace: str, name: str, error: BaseException, tries: int) -> None:
        """The work queue's last word on an object whose reconciles kept failing: Stalled, with the error as
        reason and message in status and an Event, until a change or a resync tries again."""
        body = self.store.get(MD, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            rev: str | None = revision(with_operator_defaults(ModelDeployment.from_body(body), self.config).spec)
        except (ValidationError, InvalidSpec):
            rev = None
        message = f"reconcile failed {tries} times in a row, the last with {describe_error(error)}"
        self._stall(body, Failure(StageName.RECONCILE, Reason.RECONCILE_ERROR, message), rev)

    def _stall(self, body: dict[str, Any], failure: Failure, rev: str | None, post_events: bool = True) -> None:
        try:
            prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
        except ValidationError:
            prev = ModelDeploymentStatus()
        generation = body["metadata"].get("generation")
        status, events = kstatus.stalled(prev, generation, failure, rev, datetime.now(UTC))
        self._write_status(body, status.wire())
        if post_events:
            self._post(body, events)

    def phase_counts(self) -> Tally[str]:
        tally: Tally[str] = Tally()
        for _kind, ns, name in self.store.keys(MD):
            body = self.store.get(MD, ns, name) or {}
            tally[(body.get("status") or {}).get("phase") or Phase.PENDING.value] += 1
        return tally


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
