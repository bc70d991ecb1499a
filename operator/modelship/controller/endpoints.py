"""Which revision's pods a Service routes to: its EndpointSlices (from the store, fed by the watch) tied to the
revisions of the pods they list.

An endpoint names its pod (targetRef: name and uid) but carries none of its labels, and a pod's name says only its
ReplicaSet's, not its revision. So the serving pods of the ModelDeployment are read by label (one list), those one
of its Deployments made kept (labels say whose a pod claims to be, anyone in the namespace can set them: a pod
whose controller reference is not, by name and uid, one of its Deployments' ReplicaSets (``podhealth.of_deployment``,
``replicasets.ReplicaSetOwners``) is foreign, like one the label selector does not find), and each pod's revision is
kept by its uid: a later look needs the API server again only when a slice lists a pod not seen before (a new pod
of a rollout), the ModelDeployment's Deployments changed, or a pod was refused for a reason that may change (its
ReplicaSet not adopted yet, or another Deployment's: not foreign for good) ``UNSETTLED_SECONDS`` ago. What is kept is
the pods of the last list, so it never outgrows the serving pods, and the last ``FOREIGN_PODS_KEPT`` pods the
slices listed that are not the ModelDeployment's.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from ..resources.kinds import ENDPOINT_SLICE, POD
from ..resources.meta import REVISION_LABEL
from . import metrics
from .kube import Kube
from .observe import EndpointsObservation, endpoints_observation, ready_pods, service_slices
from .podhealth import of_deployment
from .podmetrics import serving_pods_selector
from .replicasets import UNSETTLED_SECONDS, ReplicaSetOwners
from .store import Store

FOREIGN_PODS_KEPT = 64
"""Pods not of the ModelDeployment that its Services' slices listed, kept per ModelDeployment across lists."""
Deployments = tuple[tuple[str, str], ...]
"""The ModelDeployment's own Deployments (each controlled by it): (name, uid)."""


class _Known(NamedTuple):
    kept_for: Deployments
    """The Deployments whose pods were kept."""
    listed: dict[str, str]
    """Pod uid -> revision label, as of the last list."""
    foreign: tuple[str, ...]
    """The uids of pods no list held, or not made by those Deployments for good, most recent last."""
    unsettled: dict[str, float]
    """The uids of listed pods refused for a reason that may change (``Vouched.unsettled``) -> when to list again."""


class PodRevisions:
    """The revision of each serving pod of a ModelDeployment, by pod uid, read from the API server on demand."""

    def __init__(self, kube: Kube, owners: ReplicaSetOwners) -> None:
        self.kube = kube
        self.owners = owners
        """Checks a listed pod's controller reference by uid (``ReplicaSetOwners.vouch``)."""
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], _Known] = {}
        """(namespace, ModelDeployment) -> what the last list said."""

    def of(
        self,
        namespace: str,
        name: str,
        uids: set[str],
        deployments: Deployments,
        listed_pods: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """uid -> revision for ``uids`` ("" for a uid no serving pod of the ModelDeployment has, or a pod none of
        ``deployments``, the (name, uid) of the ModelDeployment's own Deployments, made): from what the last list
        said, or a new list when it did not see one of them, kept the pods of other Deployments, or refused one of
        them for a reason that may change (its ReplicaSet not adopted yet, or another Deployment's) longer than
        ``UNSETTLED_SECONDS`` ago (``listed_pods``, this pass's list of the serving pods by the same selector,
        already vouched for, when there is one and it holds every pod asked about: no second list). A pod of a new
        list is vouched for here: its controller reference's uid is that of a ReplicaSet one of ``deployments``
        controls (``ReplicaSetOwners``)."""
        key = (namespace, name)
        now = self.owners.clock()
        with self._lock:
            known = self._known.get(key)
        unsettled = {uid: at for uid, at in known.unsettled.items() if now < at} if known else {}
        if (
            known is None
            or known.kept_for != deployments
            or not uids <= known.listed.keys() | {*known.foreign, *unsettled}
        ):
            listed = _revisions(listed_pods, deployments) if listed_pods is not None else None
            if listed is None or not uids <= listed.keys():
                # this pass's list was made before the slices were read (the watch keeps the store moving): a pod
                # made since, which a slice already lists, is not in it. Only a list made now may say that a pod
                # is none of ours (it is then never asked about again, unless why may change)
                pods = self.kube.list(POD.api_version, POD.kind, namespace, serving_pods_selector(name))
                metrics.API_READS.labels(POD.kind).inc()
                vouched = self.owners.vouch(pods, dict(deployments))
                listed = _revisions(vouched.pods, deployments)
                unsettled = dict.fromkeys(vouched.unsettled, now + UNSETTLED_SECONDS)
            # a uid the list does not hold is no serving pod of this ModelDeployment (a pod someone else labelled
            # so a Service selects it, or so the selector finds it too): kept as such, so it is not asked about
            # again; and so are those known before, which the other Service's slices list (a Canary looks at two
            # Services: each look would forget the other's and list again, every reconcile), the most recent
            # FOREIGN_PODS_KEPT. Not a pod refused for a reason that may change (unsettled): asked about again
            # once the ReplicaSets' answer is old (an orphaned ReplicaSet our Deployment adopts since)
            new = sorted(uids - listed.keys() - unsettled.keys())
            before = [uid for uid in known.foreign if uid not in listed and uid not in uids] if known else []
            foreign = (*before, *new)[-FOREIGN_PODS_KEPT:]  # also when one look lists more than that
            known = _Known(deployments, listed, foreign, unsettled)
            with self._lock:
                self._known[key] = known
        return {uid: known.listed.get(uid, "") for uid in uids}

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._known.pop((namespace, name), None)


def _revisions(pods: list[dict[str, Any]], deployments: Deployments) -> dict[str, str]:
    """uid -> revision label of the ``pods`` (vouched for) one of ``deployments`` made."""
    return {
        str(p["metadata"]["uid"]): str((p["metadata"].get("labels") or {}).get(REVISION_LABEL) or "")
        for p in pods
        if p.get("metadata", {}).get("uid") and any(of_deployment(p, d) for d, _uid in deployments)
    }


def observe_endpoints(
    store: Store,
    revisions: PodRevisions,
    namespace: str,
    name: str,
    service: dict[str, Any] | None,
    deployments: Deployments,
    listed_pods: list[dict[str, Any]] | None = None,
) -> EndpointsObservation | None:
    """The ready endpoints of ``service`` (the store's copy of a Service the ModelDeployment ``name`` controls; None:
    there is none yet) by revision, of the pods its Deployments ``deployments`` ((name, uid), each controlled by it)
    made (``listed_pods``: this pass's list of the serving pods, vouched for, if it made one)."""
    if service is None:
        return None
    meta = service["metadata"]
    slices = service_slices(store.owned(namespace, name, ENDPOINT_SLICE.kind), meta["name"], meta.get("uid"))
    pods = ready_pods(slices)
    uids = {uid for _pod, uid in pods if uid}
    revs = revisions.of(namespace, name, uids, deployments, listed_pods) if uids else {}
    return endpoints_observation(meta["name"], pods, revs)
