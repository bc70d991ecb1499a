"""What the operator sees of a ModelDeployment's children, reduced to the facts planning needs. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import own_entry
from ..resources.artifact import PULL_CONTAINER
from ..resources.export_job import BUILD_POD_ANNOTATION
from ..resources.meta import (
    COMPONENT_LABEL,
    NAME_LABEL,
    RESTARTED_AT_ANNOTATION,
    REVISION_LABEL,
    SERVER_NAME,
    SERVICE_NAME_LABEL,
    TEMPLATE_ANNOTATION,
    controlled_by,
)
from ..resources.serving import template_digest
from .canary import Samples
from .failedcreate import no_pod_text, podless
from .phasewindow import Readings
from .podhealth import Cause, PodHealth, container_statuses, live, pod_health, stage_pod_cause
from .revcache import CachedRevision


class JobState(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobObservation:
    """One stage Job and what its pod said when it finished."""

    name: str
    stage: str
    """optimizer or builder (the component label)."""
    revision: str
    attempt: int
    state: JobState
    reason: str = ""
    message: str = ""
    termination_message: str | None = None
    """The container's termination message, once a pod of the Job has terminated."""
    termination_reason: str | None = None
    """Why that container terminated (Completed, Error, OOMKilled, ...)."""
    finished_at: str | None = None
    foreign_pods: tuple[str, ...] = ()
    """Pods the Job counts (a controller reference with its uid) that do not run its template: forged, never read."""
    uid: str = ""
    """The Job's uid (a build Job's is its pods' upload token)."""
    receivers: tuple[tuple[str, str], ...] = ()
    """(pod name, pod IP) of the Job's live pods whose first step waits for the artifact upload (build Jobs)."""
    build_pod: str = ""
    """The build pod an export Job uploads to (its annotation; the Job is the ModelDeployment's own)."""
    stuck: str = ""
    """While the Job runs: why its live pod does not progress (not scheduled, a container held waiting:
    ``podhealth.stage_pod_cause``), or why it has none (the Job controller could not create it:
    ``failedcreate``), bounded and on one line; "" while it starts or runs. For a Job in the platform's build
    namespace (``platform``) the reasons alone, never the scheduler's, kubelet's or admission's words."""
    platform: bool = False
    """The Job runs in the operator's build namespace, not the ModelDeployment's: what its pods and Events say
    names the platform (its taints, node pools, Secrets, quotas) and stays out of the tenant's status."""
    podless: bool = False
    """The Job runs and has no pod (``failedcreate.podless``): the stage looks again for the Job controller's
    words."""
    said: str = ""
    """For a ``platform`` Job: the words ``stuck`` leaves out (the scheduler's, kubelet's or Job controller's),
    for the operator's log only, never status."""


@dataclass(frozen=True)
class DeploymentObservation:
    name: str
    revision: str | None
    """Revision label of the pod template."""
    image: str | None
    generation: int
    observed_generation: int
    replicas: int
    """Desired replicas (spec)."""
    status_replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool
    progress_message: str = ""
    progress_reason: str = ""
    """Reason of its Progressing condition: ``NewReplicaSetAvailable`` once the controller finished rolling out the
    newest template, kept while it only scales (the controller's own "complete", sticky across scale events)."""
    progress_updated: str | None = None
    """lastUpdateTime of its Progressing condition: when its controller last saw the rollout move (a new
    ReplicaSet, a pod of it available)."""
    live: bool = True
    """Its pods carry the labels the Service selects (a shadow candidate's do not)."""
    stock_runtime: bool = False
    """The server container is told which model file to serve (``--model``): the stock runtime serving an artifact,
    not a built image (which carries its model)."""
    artifact: str | None = None
    """The OCI artifact its pods' init container pulls (build-less serving from a registry)."""
    artifact_digest: str | None = None
    """The content digest that pull checks."""
    template: str | None = None
    """The digest of the pod template the operator last applied (TEMPLATE_ANNOTATION; None on a Deployment an
    older operator applied)."""
    unavailable_since: str | None = None
    """lastTransitionTime of its Available condition while that is False (fewer pods available than spec.replicas
    less maxUnavailable): when the shortfall began, as the Deployment controller saw it."""
    replicas_applied: bool = False
    """The operator's own server-side apply owns spec.replicas (managedFields): an apply that leaves the field out
    would reset it to the default of 1."""
    pod_template: str | None = None
    """The digest of the pod template it runs, as read (spec.template, defaults and edits of others included: a
    ``kubectl rollout restart`` changes it, a scale does not). Unlike ``template``, which only this operator's
    apply moves."""
    restarted_at: str | None = None
    """Its pod template's kubectl.kubernetes.io/restartedAt annotation (``kubectl rollout restart``): kept by the
    operator's applies, which never set it. A Canary candidate's one enters its rollback record: a restart after a
    fix outside the spec tries the revision again (status.rollout.rolledBackRestartedAt,
    ``canary_trouble.rearmed``)."""

    def short_of(self, want: int) -> bool:
        """Fewer pods available than ``want``, or fewer ready or of its newest template than it asks for, or pods
        of an older template still beside them (a rollout's surge): its pods are worth reading for why."""
        return (
            self.available_replicas < want
            or self.ready_replicas < self.replicas
            or self.updated_replicas < self.replicas
            or self.updated_replicas < self.status_replicas
        )


@dataclass(frozen=True)
class EndpointsObservation:
    """What a Service's EndpointSlices list: its ready endpoints, counted once per pod, by the revision of the pod
    (the pods' revision label; "" for a pod the operator could not find among the ModelDeployment's pods)."""

    service: str
    ready: tuple[tuple[str, int], ...] = ()
    """(revision, ready endpoints), by revision."""

    def ready_of(self, revision: str) -> int:
        """Ready endpoints whose pods are of ``revision``."""
        return sum(n for rev, n in self.ready if rev == revision)

    @property
    def total_ready(self) -> int:
        return sum(n for _rev, n in self.ready)


PodRef = tuple[str, str]
"""(name, uid) of a pod an endpoint points to (its targetRef)."""


def service_slices(slices: list[dict[str, Any]], service: str, service_uid: str | None) -> list[dict[str, Any]]:
    """The EndpointSlices of the Service ``service`` (by its uid): labelled with its name and controlled by it (the
    EndpointSlice controller's owner reference), not being deleted."""
    return [
        s
        for s in slices
        if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == service
        and controlled_by(s, service_uid)
        and not (s.get("metadata") or {}).get("deletionTimestamp")
    ]


def ready_pods(slices: list[dict[str, Any]]) -> frozenset[PodRef]:
    """The pods the slices list as ready endpoints (conditions.ready true, or unset: the API reads nil as true):
    each pod once, whatever the number of its addresses, address families or slices."""
    out: set[PodRef] = set()
    for s in slices:
        for ep in s.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            if ref.get("kind") != "Pod" or not ref.get("name"):
                continue
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            out.add((str(ref["name"]), str(ref.get("uid") or "")))
    return frozenset(out)


def endpoints_observation(service: str, pods: frozenset[PodRef], revisions: dict[str, str]) -> EndpointsObservation:
    """Count the ready ``pods`` of a Service by their revision; ``revisions`` maps a pod's uid to its revision
    label (a pod it does not hold counts under "")."""
    tally: dict[str, int] = {}
    for _name, uid in pods:
        rev = revisions.get(uid, "")
        tally[rev] = tally.get(rev, 0) + 1
    return EndpointsObservation(service, tuple(sorted(tally.items())))


@dataclass(frozen=True)
class Observed:
    """Everything observed for one ModelDeployment."""

    jobs: list[JobObservation] = field(default_factory=list)
    deployment: DeploymentObservation | None = None
    existing: frozenset[tuple[str, str]] = frozenset()
    """(kind, name) of every owned serving object that exists (Service, HPA, PDB, NetworkPolicy, claim)."""
    cached: CachedRevision | None = None
    """What the namespace's revision cache holds for the revision the spec asks for."""
    canary: DeploymentObservation | None = None
    """The candidate's Deployment (Canary strategy)."""
    canary_service_ip: str | None = None
    """Cluster IP of the candidate's Service: where the stable pods mirror to."""
    endpoints: EndpointsObservation | None = None
    """The ready endpoints the Service's EndpointSlices list (None: no Service of ours yet)."""
    canary_endpoints: EndpointsObservation | None = None
    """The same for the candidate's Service (Canary strategy)."""
    samples: Samples | None = None
    """Prometheus' figures about the candidate under analysis over the current phase (read only while one is,
    when the operator is configured with a Prometheus server)."""
    readings: Readings | None = None
    """The serving pods' own figures (read only while a candidate is under analysis, without Prometheus)."""
    route_api: bool = False
    """The cluster serves the HTTPRoute API (asked only when the spec wants an HTTPRoute)."""
    missing_mounts: frozenset[tuple[str, str, str]] = frozenset()
    """(kind, namespace, name) of the Secrets, ConfigMaps and claims a Job the plan would create, or the serving
    Deployment it would apply, mounts that do not exist (asked by existence: ``controller.prejob``)."""
    missing_keys: frozenset[tuple[str, str, str]] = frozenset()
    """(namespace, ConfigMap, key) of the keys those pods mount as files (a CA bundle's) that their existing
    ConfigMap lacks (``controller.prejob``)."""
    serving_pods: tuple[PodHealth, ...] | None = None
    """The serving Deployment's own pods, reduced (``controller.podhealth``): read by label only while its revision
    is short of replicas (``stages.deploy.pods_wanted``), to name why; None when not read."""
    canary_pods: tuple[PodHealth, ...] | None = None
    """The Canary candidate Deployment's own pods, reduced: read only while it is short of replicas or its pods
    said why they do not serve at the last look (``stages.phase_pods.candidate_pods_wanted``); None when not read."""
    last_scaled: str | None = None
    """status.lastScaleTime of the ModelDeployment's HPA (``last_scale_time``): when the HPA controller last changed
    the serving Deployment's count, a change its Progressing condition does not record."""
    pruned_status: frozenset[str] = frozenset()
    """Status fields the served CRD is known to prune (one older than this operator), e.g.
    ``status.servingArtifact``: what this operator remembers there is gone (``controller.stages.memory``)."""

    def jobs_for(self, stage: str, revision: str) -> list[JobObservation]:
        return sorted((j for j in self.jobs if j.stage == stage and j.revision == revision), key=lambda j: j.attempt)


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _run(container: dict[str, Any]) -> tuple[Any, ...]:
    return (container.get("image"), container.get("command"), container.get("args"))


def runs_template(pod: dict[str, Any], job: dict[str, Any]) -> bool:
    """The pod is the Job's (its controller reference carries the Job's uid) and runs what the operator put in
    the Job's template: every template container, by name, with the same image, command and args (containers
    injected by admission, e.g. a mesh sidecar, may be added; none of the stage's may differ). A pod the tenant
    made, or one whose controller reference the tenant forged, runs something else and is never read."""
    if not controlled_by(pod, (job.get("metadata") or {}).get("uid")):
        return False
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    pod_spec = pod.get("spec") or {}
    for field_name in ("containers", "initContainers"):
        have = {c.get("name"): _run(c) for c in pod_spec.get(field_name) or []}
        for want in template.get(field_name) or []:
            if have.get(want.get("name")) != _run(want):
                return False
    return True


def stage_containers(job: dict[str, Any]) -> frozenset[str]:
    """Names of the containers (and init containers: the build's steps) the operator put in the Job's template:
    only their termination messages count."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return frozenset(str(c.get("name")) for f in ("initContainers", "containers") for c in template.get(f) or [])


def job_observation(
    job: dict[str, Any], pods: list[dict[str, Any]], platform: bool = False, no_pod: str | None = None
) -> JobObservation:
    """Reduce a Job and the pods that run its template (``runs_template``) to a JobObservation; ``platform``: the
    Job runs in the build namespace; ``no_pod``: what the Job controller said about not creating its pod
    (``failedcreate.failed_create``), when it was asked."""
    uid = (job.get("metadata") or {}).get("uid")
    foreign = tuple(p["metadata"]["name"] for p in pods if controlled_by(p, uid) and not runs_template(p, job))
    pods = [p for p in pods if runs_template(p, job)]
    containers = stage_containers(job)
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete and complete.get("status") == "True":
        state, reason, message = JobState.SUCCEEDED, "Completed", ""
        finished = status.get("completionTime") or complete.get("lastTransitionTime")
    elif failed and failed.get("status") == "True":
        state, reason, message = JobState.FAILED, failed.get("reason") or "Failed", failed.get("message") or ""
        finished = failed.get("lastTransitionTime")
    else:
        state, reason, message, finished = JobState.ACTIVE, "", "", None
    return JobObservation(
        name=meta["name"],
        stage=labels.get(COMPONENT_LABEL, ""),
        revision=labels.get(REVISION_LABEL, ""),
        attempt=int((meta.get("annotations") or {}).get("modelship.io/attempt", "1")),
        state=state,
        reason=reason,
        message=message,
        termination_message=termination_message(pods, want_success=state == JobState.SUCCEEDED, containers=containers),
        termination_reason=termination_reason(pods, containers),
        finished_at=finished,
        foreign_pods=foreign,
        uid=meta.get("uid") or "",
        receivers=receivers(pods) if state == JobState.ACTIVE else (),
        build_pod=(meta.get("annotations") or {}).get(BUILD_POD_ANNOTATION, ""),
        platform=platform,
        **(_trouble(job, pods, platform, no_pod) if state == JobState.ACTIVE else {}),
    )


def _trouble(job: dict[str, Any], pods: list[dict[str, Any]], platform: bool, no_pod: str | None) -> dict[str, Any]:
    """The ``stuck``, ``podless`` and ``said`` fields of a running Job's observation."""
    found = pod_trouble(pods)
    if found is None and no_pod is not None:
        full, brief = no_pod_text(no_pod, False), no_pod_text(no_pod, True)
    elif found is not None:
        full, brief = found.describe(), found.reason_only()
    else:
        full = brief = ""
    return {
        "stuck": brief if platform else full,
        "podless": podless(job, pods),
        "said": full if platform else "",
    }


def pod_trouble(pods: list[dict[str, Any]]) -> Cause | None:
    """Why the live ones of a running Job's pods (``podhealth.live``) do not progress; None if they do."""
    return stage_pod_cause(tuple(pod_health(p) for p in sorted(pods, key=_pod_name) if live(p)))


def _pod_name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


RECEIVE_STEP = "receive"
"""The first init container of a build pod: it waits for the artifact upload (resources/build_job.py)."""


def receivers(pods: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(name, IP) of the pods that have an address and whose receive step has not finished yet."""
    out = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        inits = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        if meta.get("deletionTimestamp") or status.get("phase") not in ("Pending", "Running") or not inits:
            continue
        if inits[0] != RECEIVE_STEP or not status.get("podIP"):
            continue
        done = any(
            c.get("name") == RECEIVE_STEP and (c.get("state") or {}).get("terminated")
            for c in status.get("initContainerStatuses") or []
        )
        if not done:
            out.append((str(meta.get("name")), str(status["podIP"])))
    return tuple(sorted(out))


def termination_message(
    pods: list[dict[str, Any]], want_success: bool, containers: frozenset[str] | None = None
) -> str | None:
    """The termination message of the newest terminated pod (a succeeded one when the Job succeeded), from the
    stage's own ``containers`` (all when None); "" when it terminated without one; None while no such pod has
    been seen."""
    best: tuple[str, str] | None = None
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if want_success and phase != "Succeeded":
            continue
        for cs in container_statuses(pod, containers):  # a failed init step (the build's receive) is a last word
            term = (cs.get("state") or {}).get("terminated")
            if not term:
                continue
            stamp = term.get("finishedAt") or ""
            msg = term.get("message") or ""  # the API omits an empty message
            if best is None or stamp >= best[0]:
                best = (stamp, msg)
    return best[1] if best else None


def termination_reason(pods: list[dict[str, Any]], containers: frozenset[str] | None = None) -> str | None:
    """The reason of the newest terminated container (OOMKilled, Error, DeadlineExceeded, ...)."""
    best: tuple[str, str] | None = None
    for pod in pods:
        for cs in container_statuses(pod, containers):
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("reason") and (best is None or (term.get("finishedAt") or "") >= best[0]):
                best = (term.get("finishedAt") or "", term["reason"])
    return best[1] if best else None


def last_scale_time(hpa: dict[str, Any] | None) -> str | None:
    """When the HPA controller last rescaled its target: the HPA's status.lastScaleTime, which only that controller
    writes (through the status subresource, which the namespace's edit and admin roles do not grant; a forged one
    would only move when the operator looks at the pods again). None without an HPA or before its first scale."""
    stamp = ((hpa or {}).get("status") or {}).get("lastScaleTime")
    return stamp if isinstance(stamp, str) and stamp else None


def deployment_observation(dep: dict[str, Any]) -> DeploymentObservation:
    meta = dep["metadata"]
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    template = spec.get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    progressing = _condition(dep, "Progressing")
    available = _condition(dep, "Available") or {}
    pull = _pull(template)
    return DeploymentObservation(
        name=meta["name"],
        revision=((template.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL),
        image=containers[0].get("image"),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas", 1)),
        status_replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        progress_deadline_exceeded=bool(progressing and progressing.get("reason") == "ProgressDeadlineExceeded"),
        progress_message=(progressing or {}).get("message") or "",
        progress_reason=(progressing or {}).get("reason") or "",
        progress_updated=(progressing or {}).get("lastUpdateTime") or None,
        live=((template.get("metadata") or {}).get("labels") or {}).get(NAME_LABEL) == SERVER_NAME,
        stock_runtime="--model" in (containers[0].get("args") or []),
        artifact=pull[0] if pull else None,
        artifact_digest=pull[1] if pull else None,
        template=(meta.get("annotations") or {}).get(TEMPLATE_ANNOTATION),
        unavailable_since=available.get("lastTransitionTime") if available.get("status") == "False" else None,
        replicas_applied=applies_replicas(meta),
        pod_template=template_digest(template) if template else None,
        restarted_at=_restarted_at(template),
    )


def _restarted_at(template: dict[str, Any]) -> str | None:
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT_ANNOTATION)
    return value if isinstance(value, str) and value else None


def applies_replicas(meta: dict[str, Any]) -> bool:
    """The operator's Apply entry of managedFields owns spec.replicas."""
    return any(
        own_entry(e, "Apply") and "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {})
        for e in meta.get("managedFields") or []
    )


def _pull(template: dict[str, Any]) -> tuple[str, str | None] | None:
    """(reference, digest) the pod template's artifact-pull init container pulls (``pull REF ... --digest D``)."""
    for init in (template.get("spec") or {}).get("initContainers") or []:
        args = [str(a) for a in init.get("args") or []]
        if init.get("name") == PULL_CONTAINER and len(args) >= 2 and args[0] == "pull":
            digest = args[args.index("--digest") + 1] if "--digest" in args[:-1] else None
            return args[1], digest
    return None
