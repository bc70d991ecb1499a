"""What the reconcile asks the API server, not the store, before it creates Jobs or applies the serving
Deployment: whether the watch missed some of the ModelDeployment's Jobs (right after a restart), and whether the
Secrets, ConfigMaps and claims their pods would mount exist (and the ConfigMap keys they mount as files)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.modeldeployment import ModelDeployment
from ..resources.kinds import BY_KIND, CONFIG_MAP, DEPLOYMENT, JOB, PERSISTENT_VOLUME_CLAIM
from ..resources.meta import MODELDEPLOYMENT_LABEL, MODELDEPLOYMENT_NAMESPACE_LABEL, controlled_by, serving_name
from ..resources.mounted import mounted_keys, mounted_objects
from ..resources.serving import template_digest as pod_template_digest
from . import metrics
from .kube import Kube, api_error_text
from .observe import Observed
from .once import Once
from .plan import Plan
from .store import Store

log = logging.getLogger("modelship.reconcile")  # the reconcile's words: its logger, as before they moved here


FORBIDDEN = Once()
"""The kinds the operator was refused get on (403) when it asked whether a mounted object exists: a Role without
it (an older chart) refuses every reconcile the same way, so it is said once per kind and process, not on every
reconcile. A kind asked again with success is forgotten (the Role was fixed): a later refusal is said again. This
process's: shared by every reconcile (and every Reconciler a restart of the watches makes)."""


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


@dataclass(frozen=True)
class Missing:
    """What the pods the plan would start mount that is not there (``Observed.missing_mounts`` / ``missing_keys``)."""

    objects: frozenset[tuple[str, str, str]] = frozenset()
    """(kind, namespace, name) of the Secrets, ConfigMaps and claims that do not exist."""
    keys: frozenset[tuple[str, str, str]] = frozenset()
    """(namespace, ConfigMap, key) of the keys mounted as files that their (existing) ConfigMap lacks."""

    def __bool__(self) -> bool:
        return bool(self.objects or self.keys)


def pod_templates(md: ModelDeployment, p: Plan) -> list[tuple[dict[str, Any], bool]]:
    """The manifests with a pod template the plan writes in the ModelDeployment's namespace, each with whether the
    objects the plan applies itself count as there: the Jobs it would create (the artifact claim is applied
    before them, and a Job writes to it) and the serving Deployment it would apply (they do not: a claim made
    afresh would not hold the artifact the pods serve, so the plan does not make one for them)."""
    ns = md.metadata.namespace or ""
    jobs = [(j, True) for j in p.create if (j["metadata"].get("namespace") or ns) == ns]
    serving = serving_name(md)
    deployments = [(o, False) for o in p.apply if o["kind"] == DEPLOYMENT.kind and o["metadata"]["name"] == serving]
    return [*jobs, *deployments]


def _ask(kube: Kube, kind: str, where: str, name: str, keys: bool) -> dict[str, Any] | None:
    """The object as far as the check needs it, None when a pod cannot mount it; raises ApiException(403) when the
    Role lacks get on the kind. A Secret or ConfigMap is asked by existence (metadata only), unless ``keys``: a
    ConfigMap whose keys are mounted as files, read whole. A claim's metadata is read: one being
    deleted (held by its protection finalizer while the pods that mount it run) counts as missing, since the
    scheduler places no new pod that mounts it."""
    row = BY_KIND[kind]
    if keys:
        return kube.get(row.api_version, row.kind, where, name)
    if kind == PERSISTENT_VOLUME_CLAIM.kind:
        claim = kube.metadata(row.api_version, row.kind, where, name)
        return None if claim is None or (claim.get("metadata") or {}).get("deletionTimestamp") else claim
    return {} if kube.exists(row.api_version, row.kind, where, name) else None


Ref = tuple[str, str, str]
"""(kind, namespace, name) of an object a pod mounts."""

SERVING_MOUNTS_RECHECK_SECONDS = 60.0
"""How long the tenant's objects the serving Deployment mounts (a pull Secret, an envFrom Secret or ConfigMap) are
taken as there after a look found them all, while its pod template stays the same: one deleted under a running
Deployment is noticed at the first reconcile at least this long after that look, i.e. within this plus one resync
period (2 minutes at the defaults; a reconcile that an event brings may notice it earlier)."""
SERVING_MOUNTS_CAPACITY = 10_000
"""ModelDeployments whose last look is kept (the one looked at longest ago is forgotten first: it is asked again)."""


def template_digest(manifest: dict[str, Any]) -> str:
    """A digest of the pod template of ``manifest``: the same for the same pods."""
    return pod_template_digest((manifest.get("spec") or {}).get("template") or {})


class ServingMounts:
    """What the mount check knows of the serving Deployment's mounts between reconciles, so that a reconcile (one per
    resync, and one per event of the Deployment, its pods' EndpointSlices...) does not ask the API server each time:

    - a claim the ModelDeployment controls (the artifact claim: the operator's, mirrored in the store by the watch)
      is read from the store: there, it is there; being deleted (deletionTimestamp), it is missing. Not in the store
      (gone, a claim someone restored without the operator's labels, another's claim of that name), it is asked;
    - the tenant's objects (a pull Secret, what envFrom names) are asked when the pod template to apply is not the
      one the last look found them all for, or ``recheck`` seconds after that look; a look that finds one missing
      is not kept (asked again at the stall's next look).
    """

    def __init__(
        self,
        store: Store,
        recheck: float = SERVING_MOUNTS_RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = SERVING_MOUNTS_CAPACITY,
    ) -> None:
        self.store = store
        self.recheck = recheck
        self.clock = clock
        self.capacity = capacity
        self._lock = threading.Lock()  # the work queue's reconciles run in several threads
        self._found: OrderedDict[tuple[str, str], tuple[str | None, str, float]] = OrderedDict()
        """(namespace, ModelDeployment) -> (its uid, the pod template's digest, when) of the last look that found
        every tenant object the template mounts."""

    def claim(self, md: ModelDeployment, ref: Ref) -> bool | None:
        """Whether the store answers for the claim ``ref``: True it is there, False it is being deleted, None: it
        does not (ask the API server)."""
        kind, where, name = ref
        if kind != PERSISTENT_VOLUME_CLAIM.kind:
            return None
        obj = self.store.get(kind, where, name)
        if obj is None or not controlled_by(obj, md.metadata.uid):
            return None
        return not obj["metadata"].get("deletionTimestamp")

    def trusted(self, md: ModelDeployment, digest: str) -> bool:
        """Whether the last look found every tenant object of this pod template, less than ``recheck`` ago."""
        with self._lock:
            last = self._found.get((md.metadata.namespace or "", md.metadata.name))
        return last is not None and last[:2] == (md.metadata.uid, digest) and self.clock() - last[2] < self.recheck

    def found_all(self, md: ModelDeployment, digest: str) -> None:
        key = (md.metadata.namespace or "", md.metadata.name)
        with self._lock:
            self._found.pop(key, None)
            self._found[key] = (md.metadata.uid, digest, self.clock())
            while len(self._found) > self.capacity:
                self._found.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._found.pop((namespace, name), None)


def missing_mounts(kube: Kube, md: ModelDeployment, p: Plan, serving: ServingMounts | None = None) -> Missing:
    """The Secrets, ConfigMaps and claims the pods the plan would start (``pod_templates``) mount in the
    ModelDeployment's namespace that do not exist there, and the ConfigMap keys they mount as files that the
    ConfigMap lacks. Asked by existence only (metadata), never reading a Secret's data; a ConfigMap is read whole
    only when a pod mounts some of its keys as files (a CA bundle: public data), to see its keys. A build Job in
    the build namespace mounts the platform's push Secret, which is not the tenant's to fix: not asked. The
    serving Deployment's mounts are asked as ``serving`` says (its claim from the store, the tenant's objects when
    the pod template changes or once a minute); without it, on every reconcile that applies it: one GET each. An
    operator whose Role lacks get on a kind (an older chart) checks nothing of that kind, as before the checks
    existed, and warns of it once per kind (``FORBIDDEN``)."""
    ns = md.metadata.namespace or ""
    written = {(o["kind"], o["metadata"].get("namespace") or ns, o["metadata"]["name"]) for o in p.apply}
    wanted: set[Ref] = set()
    wanted_keys: dict[str, set[str]] = {}
    missing: set[Ref] = set()
    looked: tuple[set[Ref], str] | None = None
    """The serving Deployment's tenant objects asked now, and its template's digest."""
    for manifest, trust_written in pod_templates(md, p):
        refs = {(kind, ns, name) for kind, name in mounted_objects(manifest)}
        if trust_written:
            refs -= written
        elif serving is not None:  # the serving Deployment
            in_store = {ref: there for ref in refs if (there := serving.claim(md, ref)) is not None}
            missing |= {ref for ref, there in in_store.items() if not there}
            refs -= in_store.keys()
            digest = template_digest(manifest)
            refs = set() if serving.trusted(md, digest) else refs
            looked = (refs, digest) if refs else None
        wanted |= refs
        for cm, key in mounted_keys(manifest):
            wanted_keys.setdefault(cm, set()).add(key)
    missing_keys: set[tuple[str, str, str]] = set()
    forbidden: set[str] = set()
    for kind, where, name in sorted(wanted):
        if kind in forbidden:
            continue
        keys = wanted_keys.get(name, set()) if kind == CONFIG_MAP.kind else set()
        try:
            found = _ask(kube, kind, where, name, bool(keys))
        except ApiException as exc:
            if exc.status != 403:
                raise
            if FORBIDDEN.first(kind):
                log.warning("%s/%s: cannot check %s %s (forbidden): %s; the operator's Role lacks get on %ss: no "
                            "%s is checked before a pod mounts it (said once)", ns, md.metadata.name, kind, name,
                            api_error_text(exc), kind, kind)  # fmt: skip
            else:
                log.debug("%s/%s: cannot check %s %s (forbidden)", ns, md.metadata.name, kind, name)
            forbidden.add(kind)
            continue
        FORBIDDEN.forget(kind)
        metrics.API_READS.labels(kind).inc()
        if found is None:
            missing.add((kind, where, name))
            continue
        present = {*(found.get("data") or {}), *(found.get("binaryData") or {})}
        missing_keys |= {(where, name, key) for key in keys - present}
    if serving is not None and looked is not None:
        lacking = missing | {(CONFIG_MAP.kind, where, name) for where, name, _ in missing_keys}
        if not looked[0] & lacking:
            serving.found_all(md, looked[1])
    return Missing(frozenset(missing), frozenset(missing_keys))
