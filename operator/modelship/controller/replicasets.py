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
check after refuses it, as a pod someone labelled like ours. Not every refusal is final: a ReplicaSet with no
controller (orphaned, not adopted yet) or another Deployment's may be adopted by ours a moment later (``kubectl delete
deployment --cascade=orphan``, the Deployment made again), so such an answer is kept ``UNSETTLED_SECONDS`` only, and
its pods are told apart (``Vouched.unsettled``) for what remembers refused pods to ask about them again.

Not closed by this: a pod whose reference gives the live ReplicaSet's own uid (readable by whoever can read
ReplicaSets). The ReplicaSet controller takes such a pod, whose labels match its selector, for one of its own (it
counts it, and deletes a pod of its own or this one when there are more than its replicas), and so does this
check: docs/security.md.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, NamedTuple

from ..resources.kinds import REPLICA_SET
from ..resources.meta import controller_uid
from . import metrics
from .kube import Kube
from .podhealth import of_deployment

KEPT = 1024
"""ReplicaSets (by namespace, name and uid) whose controller is remembered, across ModelDeployments."""
FORGED = "-"
"""Remembered for a uid that is not the uid of the ReplicaSet its reference names (forged, or of one deleted)."""
UNSETTLED_SECONDS = 30.0
"""How long an answer that may change (no controller: not adopted yet; another Deployment's uid) is kept before the
API server is asked again: an adoption is seen this late at most, and a ReplicaSet never adopted (an editor's, whose
pods claim it by its real uid) costs one GET per this long, not one per pod per pass."""
NEVER = float("inf")


class Claim(Enum):
    """What a pod's claim to be of a Deployment comes to."""

    OURS = "ours"
    """Its reference's uid is the named ReplicaSet's, controlled by the Deployment."""
    REFUSED = "refused"
    """Final: no claim by name, no uid, or a uid that is not the named ReplicaSet's (``FORGED``)."""
    UNSETTLED = "unsettled"
    """The ReplicaSet is the one named, but has no controller or another Deployment's: that may change."""


class Vouched(NamedTuple):
    pods: list[dict[str, Any]]
    """The pods, each whose claim does not hold replaced by a copy without owner references."""
    unsettled: frozenset[str]
    """The uids of the pods refused for a reason that may change (``Claim.UNSETTLED``): to ask about again."""


class ReplicaSetOwners:
    """The controller (a Deployment's uid) of each ReplicaSet a serving pod names, asked of the API server once (an
    answer that may change: again after ``UNSETTLED_SECONDS``)."""

    def __init__(self, kube: Kube, kept: int = KEPT, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.kept = kept
        self.clock = clock
        self._lock = threading.Lock()
        self._controllers: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        """(namespace, ReplicaSet name, uid) -> (its controller's uid ("" none; ``FORGED``: the ReplicaSet of that
        name has another uid, or there is none), when to ask again unless a caller expects another controller
        (``NEVER``: final, or the controller its caller expected)). Keyed by the name too: a uid forged for one name
        (the real uid of another ReplicaSet) says nothing of that other one's pods."""

    def controller(self, namespace: str, name: str, uid: str, expected: str = "") -> str:
        """The uid of the controller of the ReplicaSet ``namespace/name`` whose uid is ``uid``; ``FORGED`` when the
        ReplicaSet of that name has another uid or there is none (final: a uid never comes back), "" when it has no
        controller. ``expected``: the controller the caller hopes for (its Deployment's uid). A kept answer is
        given without asking when it is final, the one expected, or asked less than ``UNSETTLED_SECONDS`` ago; one
        kept as another caller's expected controller (settled for that one: ours orphaned it since, and a new
        Deployment of the name may adopt it) is asked again at once. Raises what the GET raises (an API error, the
        API server unreachable): the caller's pass fails, nothing is concluded."""
        key = (namespace, name, uid)
        now = self.clock()
        with self._lock:
            known = self._controllers.get(key)
            if known is not None:
                self._controllers.move_to_end(key)
        if known is not None:
            found, ask_again = known
            if found in (FORGED, expected) or (ask_again != NEVER and now < ask_again):
                return found
        rs = self.kube.get(REPLICA_SET.api_version, REPLICA_SET.kind, namespace, name)
        metrics.API_READS.labels(REPLICA_SET.kind).inc()
        live = rs is not None and (rs.get("metadata") or {}).get("uid") == uid
        found = (controller_uid(rs) or "") if live and rs is not None else FORGED
        ask_again = NEVER if found in (FORGED, expected) else now + UNSETTLED_SECONDS
        with self._lock:
            self._controllers[key] = (found, ask_again)
            self._controllers.move_to_end(key)
            while len(self._controllers) > self.kept:
                self._controllers.popitem(last=False)
        return found

    def claim(self, pod: dict[str, Any], deployment: str, deployment_uid: str) -> Claim:
        """Whether the pod is one a ReplicaSet of the Deployment ``deployment`` (uid ``deployment_uid``) made: the
        name check (``of_deployment``), then its controller reference's uid is that ReplicaSet's, controlled by that
        uid."""
        if not deployment_uid or not of_deployment(pod, deployment):
            return Claim.REFUSED
        meta = pod.get("metadata") or {}
        ref = next(r for r in meta.get("ownerReferences") or [] if r.get("controller") is True)
        ref_uid = str(ref.get("uid") or "")
        if not ref_uid:
            return Claim.REFUSED
        found = self.controller(str(meta.get("namespace") or ""), str(ref.get("name")), ref_uid, deployment_uid)
        if found == deployment_uid:
            return Claim.OURS
        return Claim.REFUSED if found == FORGED else Claim.UNSETTLED

    def made_by(self, pod: dict[str, Any], deployment: str, deployment_uid: str) -> bool:
        """The pod is one a ReplicaSet of the Deployment ``deployment`` (uid ``deployment_uid``) made (``claim``)."""
        return self.claim(pod, deployment, deployment_uid) is Claim.OURS

    def vouch(self, pods: Iterable[dict[str, Any]], deployments: Mapping[str, str]) -> Vouched:
        """``pods``, each that claims a ReplicaSet of one of ``deployments`` (name -> uid, the ModelDeployment's
        own) by name but not by uid replaced by a copy without owner references: what reads it after (by name,
        ``of_deployment``) refuses it, as a pod someone labelled like ours. Pods of no claim are kept as they are.
        Beside them, the uids of those refused for a reason that may change (``Claim.UNSETTLED``)."""
        out = []
        unsettled = set()
        for pod in pods:
            claims = [self.claim(pod, d, deployments[d]) for d in deployments if of_deployment(pod, d)]
            if claims and Claim.OURS not in claims:
                if Claim.UNSETTLED in claims and (uid := (pod.get("metadata") or {}).get("uid")):
                    unsettled.add(str(uid))
                pod = {**pod, "metadata": {**(pod.get("metadata") or {}), "ownerReferences": []}}
            out.append(pod)
        return Vouched(out, frozenset(unsettled))

    def vouched(self, pods: Iterable[dict[str, Any]], deployments: Mapping[str, str]) -> list[dict[str, Any]]:
        """``vouch``'s pods."""
        return self.vouch(pods, deployments).pods
