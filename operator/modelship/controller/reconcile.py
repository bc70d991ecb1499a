"""One reconcile: read the ModelDeployment and its children from the store, plan, carry the plan out."""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .. import HANDOVER_FIELD_MANAGER, KIND
from ..api.errors import describe_validation_error
from ..api.modeldeployment import ModelDeployment
from ..api.skew import UnsupportedFields
from ..api.status import Phase, Reason, StageName
from ..config import OperatorConfig
from ..resources.defaults import InvalidSpec, with_operator_defaults
from ..resources.kinds import APPLIED, HORIZONTAL_POD_AUTOSCALER, HTTP_ROUTE, JOB
from ..resources.meta import OWNER_UID_LABEL, canary_name, controlled_by, controller_uid, serving_name
from ..resources.policy import PolicyViolation, enforce_policy
from ..resources.revision import revision
from ..resources.route import gateway_routing
from . import metrics, revcache
from .applycheck import defaulted, unchanged, with_spec_hash
from .canary import ANALYZING, Samples, phase_begun
from .endpoints import PodRevisions, observe_endpoints
from .joblook import JobLook
from .kube import EventPoster, Kube, PreconditionFailed, Unreachable
from .observe import Observed, deployment_observation, last_scale_time
from .ownership import Conflict, judge, name_conflict
from .phasewindow import Readings
from .plan import Plan, plan
from .podhealth import serving_pods_health
from .podmetrics import Fetch, Makers, RefusedPods, fetch_pod, read_pods, serving_pods_selector
from .prejob import ServingMounts, missing_mounts, store_missed_jobs
from .prometheus import PrometheusClient
from .prometheus import read as read_prometheus
from .replicasets import ReplicaSetOwners
from .revcache import CachedRevision
from .revisions import RevisionCaches
from .skew import Skew
from .stages.context import Failure
from .stages.deploy import pods_wanted
from .stages.verify import candidate_pods_wanted
from .stalls import Cause, Stalls, WriteRefused, deleted_meanwhile, describe_error, refusable, refusal
from .statuswrite import StatusWriter
from .store import Store
from .terminating import TerminatingNamespaces, refused_as_terminating

log = logging.getLogger("modelship.reconcile")

MD = KIND
SERVING_KINDS = tuple(k.kind for k in APPLIED)  # the owned children whose existence a plan looks at
RETRY_AFTER_PRECONDITION_SECONDS = 0.5


def reclaimable(desired: dict[str, Any], exc: ApiException) -> bool:
    """An apply of our Service refused as invalid (422 Invalid, not an admission denial): what another field manager
    put in it can be replaced by ours (``Reconciler._reclaim``). Other kinds are not: a Deployment's pod template set
    whole would drop what others keep in it by right (the restartedAt of ``kubectl rollout restart``)."""
    refused = refusal(exc)
    return desired["kind"] == "Service" and refused is not None and refused.cause == Cause.INVALID


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        store: Store,
        config: OperatorConfig,
        events: EventPoster | None = None,
        fetch_metrics: Fetch = fetch_pod,
    ) -> None:
        self.kube = kube
        self.store = store
        self.config = config
        self.events = events
        self.caches = RevisionCaches(kube, config)
        self.skew = Skew(kube)
        """Reads ModelDeployments whatever CRD the API server serves (fields this operator does not know)."""
        self.status_writer = StatusWriter(kube, store, events)
        """Writes status: unknown fields kept, fields the served CRD prunes left out and reported."""
        self.stalls = Stalls(kube, store, config, self.skew, self.status_writer, events)
        """Writes Stalled when a reconcile cannot go on; posts a reconcile's Events."""
        self.replicasets = ReplicaSetOwners(kube)
        """The controller of each ReplicaSet a serving pod names, by uid: a pod's claim to be ours is checked."""
        self.pod_revisions = PodRevisions(kube, self.replicasets)
        """The revision of each serving pod an EndpointSlice lists (Ready waits for the Service to route to them)."""
        self._pods_unread: set[tuple[str, str]] = set()
        """ModelDeployments whose serving pods the last list could not read (logged once)."""
        self.refused_pods = RefusedPods()
        """The serving pods a look refused (not made by our Deployments), logged once until they change."""
        self.serving_mounts = ServingMounts(store)
        """What the mount check knows of the serving Deployment's mounts between reconciles (asked less often)."""
        self.fetch_metrics = fetch_metrics
        """How a serving pod's /metrics is read (Canary analysis)."""
        self.prometheus = PrometheusClient(config.prometheus) if config.prometheus.url else None
        """Where the Canary analysis reads its figures instead, when the chart names a Prometheus server."""
        self.terminating = TerminatingNamespaces(lambda ns: store.any_in(MD, ns))
        """Namespaces the API server refused a create in as being terminated: nothing is reconciled there."""
        self.job_look = JobLook(kube)
        """The stage Jobs observed, with the Job controller's words about a pod it cannot create."""
        if events is not None and events.terminating is None:
            events.terminating = self.terminating  # a refused Event holds the namespace too; held ones get none

    # -- observe --------------------------------------------------------------------------------
    def _bound(self, md: ModelDeployment, obj: dict[str, Any]) -> bool:
        """The ModelDeployment's own Job: in its namespace, one it controls (owner reference with its uid); in the
        build namespace (where no owner reference can point back, and tenants cannot write), one labelled with its
        uid (one of an earlier ModelDeployment of the same name is not)."""
        meta = obj.get("metadata") or {}
        if meta.get("namespace") == md.metadata.namespace:
            return controlled_by(obj, md.metadata.uid)
        if not self.config.build_namespace or meta.get("namespace") != self.config.build_namespace:
            return False
        return bool(md.metadata.uid) and (meta.get("labels") or {}).get(OWNER_UID_LABEL) == md.metadata.uid

    def observe(self, md: ModelDeployment) -> Observed:
        """What this ModelDeployment controls (owner reference with its uid): labels say whose an object claims
        to be, anyone in the namespace can set them; only the controller reference is the operator's word."""
        ns, name, uid = md.metadata.namespace or "", md.metadata.name, md.metadata.uid
        jobs = [j for j in self.store.owned(ns, name, "Job") if self._bound(md, j)]
        job_uids = {j["metadata"].get("uid") for j in jobs}
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.owned(ns, name, "Pod"):
            job_uid = controller_uid(pod)  # the Job controller's reference: a pod is read for the Job it belongs to
            if job_uid in job_uids:
                pods_by_job.setdefault(job_uid or "", []).append(pod)
        observed_jobs = [self.job_look.observe(md, j, pods_by_job.get(j["metadata"].get("uid") or "", []))
                         for j in jobs]  # fmt: skip
        dep = self.store.get("Deployment", ns, serving_name(md))
        if dep is not None and not controlled_by(dep, uid):
            dep = None  # not ours
        existing = frozenset(
            (k, o["metadata"]["name"]) for k in SERVING_KINDS for o in self.store.owned(ns, name, k)
            if controlled_by(o, uid)
        )  # fmt: skip
        canary = self._controlled("Deployment", ns, canary_name(md), uid)
        canary_svc = self._controlled("Service", ns, canary_name(md), uid)
        svc = self._controlled("Service", ns, serving_name(md), uid)
        ip = ((canary_svc or {}).get("spec") or {}).get("clusterIP")
        observed_dep = deployment_observation(dep) if dep else None
        observed_canary = deployment_observation(canary) if canary else None
        wanted = observed_dep is not None and pods_wanted(md, observed_dep)
        candidate = observed_canary is not None and candidate_pods_wanted(md, observed_canary)
        listed = self._serving_pods(md, wanted or candidate)  # the Services' endpoints take their revisions from it
        # a serving pod is read as one of ours only when one of our Deployments made it (not for its labels)
        makers = Makers(candidate=canary_name(md) if canary else None, stable=serving_name(md) if dep else None)
        ours = tuple((d["metadata"]["name"], d["metadata"]["uid"]) for d in (canary, dep) if d is not None)
        samples, readings = self._figures(md, listed, makers=makers)  # the pods' readings: one list a pass
        rollout = md.status.rollout
        self.refused_pods.tell((ns, name), readings.refused if readings and rollout else (),
                               rollout.candidate if rollout else "", rollout.stable if rollout else "")  # fmt: skip
        return Observed(
            jobs=observed_jobs,
            deployment=observed_dep,
            existing=existing,
            cached=self._cached(md),
            canary=observed_canary,
            canary_service_ip=ip if ip and ip != "None" else None,
            endpoints=observe_endpoints(self.store, self.pod_revisions, ns, name, svc, ours, listed),
            canary_endpoints=observe_endpoints(self.store, self.pod_revisions, ns, name, canary_svc, ours, listed),
            samples=samples,
            readings=readings,
            route_api=gateway_routing(md) is not None and self.kube.serves(HTTP_ROUTE),
            last_scaled=last_scale_time(self._controlled(HORIZONTAL_POD_AUTOSCALER.kind, ns, serving_name(md), uid)),
            pruned_status=self.status_writer.known_pruned(),
            serving_pods=serving_pods_health(listed, dep["metadata"]["name"])
            if listed is not None and dep and wanted
            else None,
            canary_pods=serving_pods_health(listed, canary["metadata"]["name"])
            if listed is not None and canary and candidate
            else None,
        )

    def _serving_pods(self, md: ModelDeployment, wanted: bool) -> list[dict[str, Any]] | None:
        """The serving pods, listed by label (no watch holds them) only while the serving revision, or a Canary
        candidate, is short of replicas (``wanted``): what they say names why (a crash loop, an image not pulled,
        no node). The list only explains: one
        that fails (a timeout, a Role without list on pods) is logged (once, until a list succeeds again) and the
        pass goes on without it (None), as without a reason to read them."""
        if not wanted:
            return None
        ns, name = md.metadata.namespace or "", md.metadata.name
        try:
            pods = self._list_serving_pods(md)
        except (ApiException, Unreachable) as exc:
            if (ns, name) not in self._pods_unread:
                self._pods_unread.add((ns, name))
                log.warning("%s/%s: serving pods not listed (why they do not serve is not told): %s", ns, name,
                            describe_error(exc))  # fmt: skip
            return None
        self._pods_unread.discard((ns, name))
        return pods

    def _list_serving_pods(self, md: ModelDeployment) -> list[dict[str, Any]]:
        """The serving pods by label, each that claims to be of one of the ModelDeployment's Deployments checked by
        uid (``ReplicaSetOwners.vouched``: a claim that does not hold is dropped, the pod read as nobody's)."""
        ns, uid = md.metadata.namespace or "", md.metadata.uid
        pods = self.kube.list("v1", "Pod", ns, serving_pods_selector(md.metadata.name))
        metrics.API_READS.labels("Pod").inc()
        ours = (self._controlled("Deployment", ns, d, uid) for d in (serving_name(md), canary_name(md)))
        return self.replicasets.vouched(pods, {d["metadata"]["name"]: d["metadata"]["uid"] for d in ours if d})

    def _controlled(self, kind: str, ns: str, name: str, uid: str | None) -> dict[str, Any] | None:
        obj = self.store.get(kind, ns, name)
        return obj if obj is not None and controlled_by(obj, uid) else None  # another's is not read

    def _figures(
        self, md: ModelDeployment, listed: list[dict[str, Any]] | None = None, *, makers: Makers
    ) -> tuple[Samples | None, Readings | None]:
        """The analysis figures while a candidate of the spec's revision is under analysis: Prometheus' over the
        current phase (when the chart names a server), else the serving pods' own readings (from ``listed``, the
        serving pods this pass already listed; listed here when it did not, a failed list failing the pass), of
        the pods ``makers`` made: the candidate's Deployment's of the candidate, the serving one's of the stable
        (required: a caller that named none would read no pod, and the rollout would wait for figures forever)."""
        rollout = md.status.rollout
        if rollout is None or rollout.phase not in ANALYZING or rollout.candidate != revision(md.spec):
            return None, None
        ns = md.metadata.namespace or ""
        if self.prometheus is not None:
            now = datetime.now(UTC)
            begun = phase_begun(rollout, now)
            if begun is None:
                return None, None  # the phase's clock has not started (or its stamp is forged): nothing to judge
            window = max(1, int((now - begun).total_seconds()))
            where = (ns, md.metadata.name)
            return read_prometheus(self.prometheus, where, rollout.candidate, rollout.stable, now, window), None
        pods = listed if listed is not None else self._list_serving_pods(md)
        readings = read_pods(pods, md.spec.serving.metrics_port, rollout.candidate, rollout.stable,
                             self.fetch_metrics, makers=makers)  # fmt: skip
        return None, readings

    def _cached(self, md: ModelDeployment) -> CachedRevision | None:
        ns = md.metadata.namespace or ""
        raw = self.caches.get(ns, revision(md.spec))
        if not raw:
            return None
        try:
            return revcache.parse(raw, md.spec.model.uri)
        except ValueError as exc:
            log.warning("%s/%s: ignoring unreadable revision cache entry in %s: %s", ns, md.metadata.name,
                        revcache.configmap_name(ns), str(exc).splitlines()[0])  # fmt: skip
            return None

    # -- act ------------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one ModelDeployment; returns seconds until it wants another look (or None)."""
        started = time.monotonic()
        body = self.store.get(MD, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.pod_revisions.forget(namespace, name)
            self.refused_pods.forget(namespace, name)
            self.serving_mounts.forget(namespace, name)
            self.stalls.forget(namespace, name)
            # gone: owner references take the children in its namespace with it; its build Jobs (in the build
            # namespace, where no owner reference can point back) are the operator's to delete
            self.collect_builds(namespace, name, None)
            self.terminating.release_if_empty(namespace)
            return None
        if self.terminating.held(namespace):
            # the namespace is going away with everything in it: nothing to create, restore or report there
            metrics.RECONCILES.labels("namespace-terminating-held").inc()
            return None
        if self.config.excluded(namespace):
            self.stalls.excluded(body, namespace)
            metrics.RECONCILES.labels("namespace-excluded").inc()
            return None
        self.collect_builds(namespace, name, body["metadata"].get("uid"))
        try:
            md = self.skew.read(body)
            enforce_policy(md, self.config)
            md = with_operator_defaults(md, self.config)
        except UnsupportedFields as exc:
            self.stalls.unsupported(body, exc)
            metrics.RECONCILES.labels("unsupported-fields").inc()
            return None
        except PolicyViolation as exc:
            self.stalls.stall(body, Failure(StageName.RESOLVE, Reason.POLICY_VIOLATION, str(exc)), rev=None)
            metrics.RECONCILES.labels("policy-violation").inc()
            return None
        except (ValidationError, InvalidSpec) as exc:
            self.stalls.invalid(body, describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc))
            metrics.RECONCILES.labels("invalid").inc()
            return None
        try:
            observed = self.observe(md)
            log.debug("%s/%s observed deployment %s", namespace, name, observed.deployment)
            p = plan(md, observed, self.config, datetime.now(UTC))
            if p.create and store_missed_jobs(self.kube, self.store, md, observed, self.config.build_namespace,
                                              lambda job: self._bound(md, job)):  # fmt: skip
                observed = self.observe(md)
                p = plan(md, observed, self.config, datetime.now(UTC))
            if missing := missing_mounts(self.kube, md, p, self.serving_mounts):
                observed = replace(observed, missing_mounts=missing.objects, missing_keys=missing.keys)
                p = plan(md, observed, self.config, datetime.now(UTC))
            live, conflicts = self._judge(md, p)
            if conflicts:
                self.stalls.stall(body, name_conflict(conflicts), p.status.get("revision"))
                metrics.RECONCILES.labels("name-conflict").inc()
                return None
            if not self._execute(md, body, p, live):
                metrics.RECONCILES.labels("apply-refused").inc()
                return None  # tried again at the next change or resync: a policy does not go away in seconds
        except PreconditionFailed as exc:
            # an object changed between the read and the write: nothing was written; judge it again shortly
            log.info("%s/%s: %s; reconciling again", namespace, name, exc)
            metrics.RECONCILES.labels("precondition-failed").inc()
            return RETRY_AFTER_PRECONDITION_SECONDS
        except ApiException as exc:
            if refused_as_terminating(exc):
                metrics.RECONCILES.labels("namespace-terminating").inc()
                self.terminating.hold(namespace)  # the other ModelDeployments there are not even tried
                return None  # the namespace is going away with everything in it: nothing to restore
            if deleted_meanwhile(exc, name):
                # its status write found it gone (deleted since it was read): its children go with it (owner
                # references), and the watch's deletion makes the next reconcile forget it; nothing to retry
                log.info("%s/%s was deleted while it was reconciled", namespace, name)
                metrics.RECONCILES.labels("gone").inc()
                return None
            raise  # the work queue logs, counts and retries it (and stalls the resource after its tries)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels("ok").inc()
        if p.requeue_after is not None:
            return p.requeue_after
        return None

    def collect_builds(self, namespace: str, name: str, live_uid: str | None) -> int:
        """Delete the build-namespace Jobs (and, by propagation, their pods) of the ModelDeployment ``namespace/name``
        that do not carry ``live_uid``: it is gone, or they belong to an earlier one of the same name."""
        build_ns = self.config.build_namespace
        if not build_ns or build_ns == namespace:
            return 0
        deleted = 0
        for job in self.store.owned(namespace, name, "Job"):
            meta = job["metadata"]
            if meta.get("namespace") != build_ns or meta.get("deletionTimestamp"):
                continue
            if live_uid and (meta.get("labels") or {}).get(OWNER_UID_LABEL) == live_uid:
                continue
            try:
                self.kube.delete(JOB.api_version, JOB.kind, build_ns, meta["name"], meta["uid"])
            except PreconditionFailed:
                continue  # another Job took the name since the watch saw this one: not this one to delete
            self.store.remove(JOB.kind, build_ns, meta["name"])
            metrics.API_WRITES.labels("delete", JOB.kind).inc()
            log.info("%s/%s: deleted build Job %s/%s (its ModelDeployment is gone)", namespace, name, build_ns,
                     meta["name"])  # fmt: skip
            deleted += 1
        return deleted

    def orphaned_builds(self) -> list[tuple[str, str]]:
        """ModelDeployments (namespace, name) that have build Jobs in the build namespace but are not in the store
        (deleted while the operator was not watching): a reconcile of each collects them."""
        build_ns = self.config.build_namespace
        if not build_ns:
            return []
        return [o for o in self.store.owners(JOB.kind, build_ns) if o[0] != build_ns and
                self.store.get(MD, *o) is None]  # fmt: skip

    def _judge(
        self, md: ModelDeployment, p: Plan
    ) -> tuple[dict[tuple[str, str], dict[str, Any] | None], list[Conflict]]:
        """Who controls each object the plan writes: the store's copy when this ModelDeployment controls it,
        else a fresh read (the store mirrors only labelled objects). Returns the live objects by (kind, name)
        and the conflicts (objects it does not control)."""
        ns, uid = md.metadata.namespace or "", md.metadata.uid
        live: dict[tuple[str, str], dict[str, Any] | None] = {}
        conflicts: list[Conflict] = []
        for obj in [*p.apply, *p.create]:
            key = (obj["kind"], obj["metadata"]["name"])
            obj_ns = obj["metadata"].get("namespace") or ns
            if obj_ns != ns:  # a build Job in the build namespace: watched there, and bound by its uid label
                current = self.store.get(key[0], obj_ns, key[1])  # a Job the watch missed is a 409 at create
                live[key] = current
                foreign = judge(obj, current, uid) if current is not None and not self._bound(md, current) else None
                conflicts += [foreign] if foreign is not None else []
                continue
            current = self.store.get(key[0], ns, key[1])
            if current is None or not controlled_by(current, uid):
                current = self.kube.get(obj["apiVersion"], obj["kind"], ns, key[1])
                metrics.API_READS.labels(obj["kind"]).inc()
            live[key] = current
            conflict = judge(obj, current, uid)
            if conflict is not None:
                conflicts.append(conflict)
        return live, conflicts

    def _execute(
        self, md: ModelDeployment, body: dict[str, Any], p: Plan, live: dict[tuple[str, str], dict[str, Any] | None]
    ) -> bool:
        """Carry the plan out and write its status; False when the API server refused a write for the object's
        content (an admission policy or webhook, an invalid object): the pass stops at that object and writes
        Stalled over the status held, with the results of the Jobs that ran (``Stalls.refused``), and the revision
        cache entry of an image (or artifact) a finished Job made: without both, the next pass would run that Job
        again once it is gone. It stops rather than going on with the rest: the plan's writes
        are in order (a handover before the apply that drops the field, a Secret, ConfigMap or Service before the
        Deployment that mounts or is reached through it, a Job before the status that records it), and its
        pruning assumes every write before it took (deleting the objects a refused one replaces would take down
        what serves)."""
        ns = md.metadata.namespace or ""
        try:
            self._write(md, p, live)
        except WriteRefused as refused:
            if p.cache_put is not None:  # the image (or artifact) a Job made exists, whatever was refused after it
                self.caches.put(ns, *p.cache_put)
            self.stalls.refused(body, refused, p.status, {o["metadata"]["name"] for o in p.create})
            return False
        self.stalls.accepted(ns, md.metadata.name)
        for api_version, kind, name in p.delete:
            current = self.store.get(kind, ns, name)
            if current is None or not controlled_by(current, md.metadata.uid):
                continue  # only what this ModelDeployment controls is pruned
            self.kube.delete(api_version, kind, ns, name, current["metadata"]["uid"])
            self.store.remove(kind, ns, name)
            metrics.API_WRITES.labels("delete", kind).inc()
        if p.cache_put is not None:
            self.caches.put(ns, *p.cache_put)
        self.status_writer.write(body, p.status)
        self.stalls.post(body, p.events)
        return True

    def _write(self, md: ModelDeployment, p: Plan, live: dict[tuple[str, str], dict[str, Any] | None]) -> None:
        """The plan's handovers, applies and creates, in order; a write refused for its content raises
        ``WriteRefused``."""
        ns = md.metadata.namespace or ""
        handed: dict[tuple[str, str], dict[str, Any]] = {}
        for obj in p.handover:  # before the apply that stops setting the field; never skipped (same value: owned)
            key = (obj["kind"], obj["metadata"]["name"])
            current = live.get(key)
            if current is not None:
                # at the version the count was read from: a count the HPA wrote since is a 409 (judged again), not
                # overwritten with the older one
                version = {"resourceVersion": current["metadata"]["resourceVersion"]}
                guarded = {**obj, "metadata": {**obj["metadata"], **version}}
                with refusable(obj):
                    handed[key] = self.kube.apply(guarded, current["metadata"]["uid"], HANDOVER_FIELD_MANAGER)
                self.store.put(obj["kind"], handed[key])
                metrics.API_WRITES.labels("apply", obj["kind"]).inc()
                log.info("%s/%s: handed %s %s's replica count over (%s)", ns, md.metadata.name, obj["kind"],
                         obj["metadata"]["name"], HANDOVER_FIELD_MANAGER)  # fmt: skip
        for obj in p.apply:
            desired = with_spec_hash(obj)
            key = (obj["kind"], obj["metadata"]["name"])
            current = handed.get(key, live[key])
            # an object handed over in this pass is applied even when nothing else changed: only that apply takes
            # the field out of the operator's entry (both managers own the same value until then)
            if key not in handed and current is not None and unchanged(desired, current):
                continue
            with refusable(obj):
                written = self._write_owned(desired, current)
            self.store.put(obj["kind"], written)
        for obj in p.create:
            with refusable(obj):
                created = self.kube.create(obj)
            metrics.API_WRITES.labels("create", obj["kind"]).inc()
            if created is None:  # a 409 is not "created": someone made it since the read; judge it again
                raise PreconditionFailed(f"{obj['kind']} {obj['metadata']['name']} appeared before it was created")
            self.store.put(obj["kind"], created)
            log.info("%s/%s: created %s %s", ns, md.metadata.name, obj["kind"], obj["metadata"]["name"])

    def _write_owned(self, desired: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        """Create the object (none had its name when judged) or apply it over the one judged ours."""
        kind = desired["kind"]
        if current is None:
            created = self.kube.create(desired)
            metrics.API_WRITES.labels("create", kind).inc()
            if created is None:  # someone made an object of that name since the read: not ours for that
                raise PreconditionFailed(f"{kind} {desired['metadata']['name']} appeared before it was created")
            metrics.API_WRITES.labels("patch", kind).inc()
            return self.kube.own_fields(created, defaulted(desired))
        if self.kube.own_fields(current, defaulted(desired)) is not current:  # created by POST before (an earlier pass)
            metrics.API_WRITES.labels("patch", kind).inc()
        try:
            applied = self.kube.apply(desired, current["metadata"]["uid"])
        except ApiException as exc:
            if not reclaimable(desired, exc):
                raise
            applied = self._reclaim(desired, current, exc)
        metrics.API_WRITES.labels("apply", kind).inc()
        return applied

    def _reclaim(self, desired: dict[str, Any], current: dict[str, Any], refused: ApiException) -> dict[str, Any]:
        """A Service of ours whose apply the API server finds invalid because of what another field manager put in
        it (``kubectl patch`` of its ports: server-side apply keeps the other manager's port beside ours, two named
        http). The fields our spec sets are set as rendered (``Kube.set_spec``: lists replaced whole, the cluster IP
        kept), then it is applied again. The spec cannot be set: the apply's refusal is raised; the apply after it
        refused: that refusal is raised."""
        meta = current["metadata"]
        try:
            self.kube.set_spec(current, desired["spec"])
        except ApiException as exc:
            log.debug("%s: setting %s %s's spec failed too (%s): its apply's refusal stands", meta.get("namespace"),
                      desired["kind"], meta["name"], describe_error(exc))  # fmt: skip
            raise refused from None
        metrics.API_WRITES.labels("patch", desired["kind"]).inc()
        applied = self.kube.apply(desired, meta["uid"])
        log.warning("%s: %s %s was edited into one the operator's apply makes invalid; its spec is the operator's "
                    "again", meta.get("namespace"), desired["kind"], meta["name"])  # fmt: skip
        return applied

    def give_up(self, namespace: str, name: str, error: BaseException, tries: int) -> None:
        """The work queue's last word on an object whose reconciles kept failing (``Stalls.give_up``)."""
        self.stalls.give_up(namespace, name, error, tries)

    def phase_counts(self) -> Tally[str]:
        tally: Tally[str] = Tally()
        for _kind, ns, name in self.store.keys(MD):
            body = self.store.get(MD, ns, name) or {}
            tally[(body.get("status") or {}).get("phase") or Phase.PENDING.value] += 1
        return tally
