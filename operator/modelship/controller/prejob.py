"""What the reconcile asks the API server, not the store, before it creates Jobs: whether the watch missed some of
the ModelDeployment's Jobs (right after a restart), and whether the Secrets, ConfigMaps and claims the Jobs would
mount exist."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.modeldeployment import ModelDeployment
from ..resources.kinds import BY_KIND, JOB
from ..resources.meta import MODELDEPLOYMENT_LABEL, MODELDEPLOYMENT_NAMESPACE_LABEL
from ..resources.mounted import mounted_objects
from . import metrics
from .kube import Kube, api_error_text
from .observe import Observed
from .plan import Plan
from .store import Store

log = logging.getLogger("modelship.reconcile")  # the reconcile's words: its logger, as before they moved here


class ForbiddenKinds:
    """The kinds the operator was refused get on (403) when it asked whether a mounted object exists: a Role
    without it (an older chart) refuses every reconcile the same way, so it is said once per kind and process, not
    on every reconcile. A kind asked again with success is forgotten (the Role was fixed): a later refusal is said
    again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the work queue's reconciles run in several threads
        self._kinds: set[str] = set()

    def refused(self, kind: str) -> bool:
        """Note a refusal of ``kind``: True the first time (say it), False while it is already known."""
        with self._lock:
            first = kind not in self._kinds
            self._kinds.add(kind)
            return first

    def allowed(self, kind: str) -> None:
        with self._lock:
            self._kinds.discard(kind)


FORBIDDEN = ForbiddenKinds()
"""This process's: shared by every reconcile (and every Reconciler a restart of the watches makes)."""


def store_missed_jobs(
    kube: Kube,
    store: Store,
    md: ModelDeployment,
    planned_with: Observed,
    build_namespace: str | None,
    bound: Callable[[dict[str, Any]], bool],
) -> bool:
    """Before creating a Job, ask the API server (not the store) which of this ModelDeployment's Jobs
    exist: right after a restart the watch may not have listed them yet, and a Job the plan did not see
    must never be created twice. ``bound`` says whether a listed Job is the ModelDeployment's own. The missed
    Jobs and their pods are put in the store; returns True when the plan missed some (plan again)."""
    ns, name = md.metadata.namespace or "", md.metadata.name
    selector = f"{MODELDEPLOYMENT_LABEL}={name}"
    where = {ns: selector}
    if build_namespace and build_namespace != ns:
        where[build_namespace] = f"{selector},{MODELDEPLOYMENT_NAMESPACE_LABEL}={ns}"
    live = [j for n, sel in where.items() for j in kube.list(JOB.api_version, JOB.kind, n, sel)]
    seen = {j.name for j in planned_with.jobs}  # what the plan saw, not what the store holds by now
    missed = [j for j in live if j["metadata"]["name"] not in seen and bound(j)]
    if not missed:
        return False
    for n, sel in where.items():
        for pod in kube.list("v1", "Pod", n, f"{sel},batch.kubernetes.io/job-name"):
            store.put("Pod", pod)
    for job in missed:
        store.put("Job", job)
    log.info("%s/%s: %d Job(s) not yet seen by the watch; planning again", ns, name, len(missed))
    return True


def missing_mounts(kube: Kube, md: ModelDeployment, p: Plan) -> frozenset[tuple[str, str, str]]:
    """(kind, namespace, name) of the Secrets, ConfigMaps and claims the Jobs about to be created mount in the
    ModelDeployment's namespace that do not exist there, and that the plan does not write itself (the artifact
    claim is applied before the Jobs are created): asked by existence only (metadata), never reading a Secret's
    or ConfigMap's data. A build Job in the build namespace mounts the platform's push Secret, which is not the
    tenant's to fix: not asked. An operator whose Role lacks get on a kind (an older chart) checks nothing of
    that kind, as before the checks existed, and warns of it once per kind (``FORBIDDEN``)."""
    ns = md.metadata.namespace or ""
    written = {(o["kind"], o["metadata"].get("namespace") or ns, o["metadata"]["name"]) for o in p.apply}
    wanted = {
        (kind, ns, name)
        for j in p.create
        if (j["metadata"].get("namespace") or ns) == ns
        for kind, name in mounted_objects(j)
    } - written
    missing = set()
    forbidden: set[str] = set()
    for kind, where, name in sorted(wanted):
        if kind in forbidden:
            continue
        row = BY_KIND[kind]
        try:
            found = kube.exists(row.api_version, row.kind, where, name)
        except ApiException as exc:
            if exc.status != 403:
                raise
            if FORBIDDEN.refused(kind):
                log.warning("%s/%s: cannot check %s %s (forbidden): %s; the operator's Role lacks get on %ss: no "
                            "%s is checked before a Job mounts it (said once)", ns, md.metadata.name, kind, name,
                            api_error_text(exc), kind, kind)  # fmt: skip
            else:
                log.debug("%s/%s: cannot check %s %s (forbidden)", ns, md.metadata.name, kind, name)
            forbidden.add(kind)
            continue
        FORBIDDEN.allowed(kind)
        metrics.API_READS.labels(kind).inc()
        if not found:
            missing.add((kind, where, name))
    return frozenset(missing)
