"""Whose ReplicaSet made a serving pod, by uid: a pod's controller reference names a ReplicaSet and gives its uid,
and both are the pod creator's to write. Anyone who can create a pod in the namespace can name our Deployment's
ReplicaSet (``<deployment>-<pod-template-hash>``) with any uid; the garbage collector deletes such a pod (its
owner's uid does not exist), but only once it gets to it (tens of milliseconds on an idle control plane; never
while kube-controller-manager is down or behind). Until then the name check (``podhealth.of_deployment``) would take
it for ours: it feeds the Canary analysis, counts as a revision's endpoint, explains a revision's health.

So a claim is checked against the API server: the reference's uid must be the uid of the ReplicaSet of that name,
and that ReplicaSet's controller must be our Deployment (its uid). What a ReplicaSet's uid is controlled by is kept
(``KEPT`` ReplicaSets, least recently used out), so a pass asks the API server (one GET of the ReplicaSet by name)
only for a (ReplicaSet name, uid) it has not seen: a rollout's new one, or a forged uid (remembered as none of ours:
a uid never comes back). A pod whose claim does not hold is read as a pod without a controller (``vouched``): every name
check after refuses it, as a pod someone labelled like ours.

Not closed by this: a pod whose reference gives the live ReplicaSet's own uid (readable by whoever can read
ReplicaSets). The ReplicaSet controller takes such a pod, whose labels match its selector, for one of its own (it
counts it, and deletes a pod of its own or this one when there are more than its replicas), and so does this
check: docs/security.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from ..resources.kinds import REPLICA_SET
from ..resources.meta import controller_uid
from . import metrics
from .kube import Kube
from .podhealth import of_deployment

KEPT = 1024
"""ReplicaSets (by namespace, name and uid) whose controller is remembered, across ModelDeployments."""
FORGED = "-"
"""Remembered for a uid that is not the uid of the ReplicaSet its reference names (forged, or of one deleted)."""


class ReplicaSetOwners:
    """The controller (a Deployment's uid) of each ReplicaSet a serving pod names, asked of the API server once."""

    def __init__(self, kube: Kube, kept: int = KEPT) -> None:
        self.kube = kube
        self.kept = kept
        self._lock = threading.Lock()
        self._controllers: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        """(namespace, ReplicaSet name, uid) -> its controller's uid ("" none; ``FORGED``: the ReplicaSet of that
        name has another uid, or there is none). Keyed by the name too: a uid forged for one name (the real uid of
        another ReplicaSet) says nothing of that other one's pods."""

    def controller(self, namespace: str, name: str, uid: str, stale: str | None = None) -> str:
        """The uid of the controller of the ReplicaSet ``namespace/name`` whose uid is ``uid``; ``FORGED`` when the
        ReplicaSet of that name has another uid or there is none, "" when it has no controller (asked again each
        time: a Deployment may adopt it). What is kept is answered without asking, but ``stale`` (a controller
        kept that the caller doubts: a ReplicaSet orphaned and adopted since). Raises what the GET raises (an API
        error, the API server unreachable): the caller's pass fails, nothing is concluded."""
        key = (namespace, name, uid)
        with self._lock:
            known = self._controllers.get(key)
            if known is not None:
                self._controllers.move_to_end(key)
        if known and known != stale:  # a controller, or FORGED (final: a uid never comes back)
            return known
        rs = self.kube.get(REPLICA_SET.api_version, REPLICA_SET.kind, namespace, name)
        metrics.API_READS.labels(REPLICA_SET.kind).inc()
        live = rs is not None and (rs.get("metadata") or {}).get("uid") == uid
        found = (controller_uid(rs) or "") if live and rs is not None else FORGED
        with self._lock:
            self._controllers[key] = found
            self._controllers.move_to_end(key)
            while len(self._controllers) > self.kept:
                self._controllers.popitem(last=False)
        return found

    def made_by(self, pod: dict[str, Any], deployment: str, deployment_uid: str) -> bool:
        """The pod is one a ReplicaSet of the Deployment ``deployment`` (uid ``deployment_uid``) made: the name check
        (``of_deployment``), then its controller reference's uid is that ReplicaSet's, controlled by that uid."""
        if not deployment_uid or not of_deployment(pod, deployment):
            return False
        meta = pod.get("metadata") or {}
        ref = next(r for r in meta.get("ownerReferences") or [] if r.get("controller") is True)
        ref_uid = str(ref.get("uid") or "")
        if not ref_uid:
            return False
        where = (str(meta.get("namespace") or ""), str(ref.get("name")), ref_uid)
        found = self.controller(*where)
        if found not in ("", FORGED, deployment_uid):  # kept as another's: adopted by ours since? asked once more
            found = self.controller(*where, stale=found)
        return found == deployment_uid

    def vouched(self, pods: Iterable[dict[str, Any]], deployments: Mapping[str, str]) -> list[dict[str, Any]]:
        """``pods``, each that claims a ReplicaSet of one of ``deployments`` (name -> uid, the ModelDeployment's
        own) by name but not by uid replaced by a copy without owner references: what reads it after (by name,
        ``of_deployment``) refuses it, as a pod someone labelled like ours. Pods of no claim are kept as they are."""
        out = []
        for pod in pods:
            claimed = [d for d in deployments if of_deployment(pod, d)]
            if claimed and not any(self.made_by(pod, d, deployments[d]) for d in claimed):
                pod = {**pod, "metadata": {**(pod.get("metadata") or {}), "ownerReferences": []}}
            out.append(pod)
        return out
