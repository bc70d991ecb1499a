"""How a ModelDeployment's status is written: a merge patch of what changed, fields this operator does not know
kept as they are, fields the served CRD prunes (one older than this operator) left out and reported, and the CRD
skew gauge kept."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from .. import KIND, __version__
from . import metrics
from .kube import EventPoster, Kube, Unreachable
from .mergepatch import merge_patch
from .once import Once
from .pruning import Path, PrunedStatus, describe, pruned_paths, sent_paths, without_paths
from .skew import ServedCrd, keep_unknown_status
from .stages.memory import read_back
from .store import Store

log = logging.getLogger("modelship.reconcile")  # the reconcile's words: its logger, as before they moved here

CRD_OLDER_REASON = "CRDOlderThanOperator"
TOLD_MAX = 40_000
"""(ModelDeployment, field) pairs remembered as told (the one told longest ago forgotten first): some 10,000 objects
at a few pruned fields each."""


class StatusWriter:
    """Writes ModelDeployment status for the Reconciler, and remembers what the served CRD drops."""

    def __init__(self, kube: Kube, store: Store, events: EventPoster | None = None) -> None:
        self.kube = kube
        self.store = store
        self.events = events
        self.pruned = PrunedStatus()
        """Status fields the served CRD drops (one older than this operator): left out of status writes."""
        self.served_crd = ServedCrd(kube)
        """The served CRD's fields against this operator's, when it may read the CRD."""
        self._told = Once(TOLD_MAX)
        """(ModelDeployment uid, field) of the pruned fields a Warning Event on it has named (each object is told
        of the fields its own status goes without, whichever object's write found them first)."""
        self._probe_refused = Once()
        """The pruned paths whose dry-run probe the API server refused (a WARNING once per path and process)."""

    def write(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        current = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
        # every key to drop, at every depth, as null: a merge patch of {"optimization": {...}} would otherwise
        # keep the previous revision's decision and artifact beside the new revision's Job; but never a field
        # this operator does not know (a newer operator's, under a newer CRD): those are kept as they are, and
        # so is a top-level field it knows but cannot read (a newer operator's value), unless this status sets it
        status = keep_unknown_status(current, status)
        retried = self.pruned.all() - (left_out := self.pruned.current())
        self._probe(body, retried - sent_paths(status, retried))
        # and never a field the served CRD prunes (an older CRD): the patch would be sent again at every reconcile
        patch = merge_patch(current, without_paths(status, left_out))
        omitted = sent_paths(status, left_out)  # what this object's status goes without: it is told once too
        if not patch:
            log.debug(
                "status unchanged (rv %s, phase %s)", body["metadata"].get("resourceVersion"), status.get("phase")
            )
            self._tell(body, omitted)
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
        if isinstance(result.get("status"), dict):  # an answer without status says nothing about pruning
            omitted |= self._note_pruned(body, patch, result["status"], retried)
        self._tell(body, omitted)
        log.debug(
            "status written: rv %s phase %s",
            result.get("metadata", {}).get("resourceVersion"),
            (result.get("status") or {}).get("phase"),
        )
        if result:
            self.store.put(KIND, result)

    def known_pruned(self) -> frozenset[str]:
        """The status fields (``status.servingArtifact``) the served CRD is known to prune: found so by a write of
        this process (also those due for a retry), or missing from the served CRD (cluster-wide operators)."""
        found = {describe(p) for p in self.pruned.all()}
        return frozenset(found | {f for f in self.served_crd.older if f.startswith("status.")})

    def check_served_crd(self) -> None:
        """Compare the served CRD with this operator's models (cluster-wide operators; at startup and resync)."""
        if self.served_crd.check():  # fields the served CRD now declares are written again at once
            self.pruned.clear(p for p in self.pruned.all() if describe(p) not in self.served_crd.older)
        self._set_skew_gauge()

    def _set_skew_gauge(self) -> None:
        older = set(self.served_crd.older) | {describe(p) for p in self.pruned.all()}
        metrics.CRD_SKEW.labels("older").set(len(older))
        metrics.CRD_SKEW.labels("newer").set(len(self.served_crd.newer))

    def _note_pruned(
        self, body: dict[str, Any], sent: dict[str, Any], served: dict[str, Any], retried: frozenset[Path]
    ) -> set[Path]:
        """Status fields the API server dropped from the write ``sent``: the installed CRD is older than this
        operator. Remembered (left out of the next writes) and logged once each per process; returned, so that the
        object whose write found them is told. A retried path is forgotten (the CRD keeps it) only if this write
        sent it and it was kept: one this write did not send (a field set only now and then) stays known, and is
        not reported again when next pruned."""
        pruned = pruned_paths(sent, served)
        self.pruned.clear(sent_paths(sent, retried) - pruned)
        fresh = self.pruned.found(pruned, sent, _owner(body))
        self._set_skew_gauge()
        if fresh:
            log.warning("%s/%s: %s", body["metadata"].get("namespace"), body["metadata"].get("name"),
                        self._message(fresh))  # fmt: skip
        return pruned

    def _probe(self, body: dict[str, Any], unsent: frozenset[Path]) -> None:
        """Probe the pruned paths due for a retry that this write does not send (a held Canary sends no
        ``rollout``: without this, nothing would ever find that the CRD now keeps it, a namespaced operator being
        unable to read the CRD): a dry-run status PATCH of this object carrying the value last found pruned there.
        Kept in the answer: the CRD declares the path, it is forgotten (a hold for it lifts at the next reconcile);
        pruned, or no clear answer: it stays known pruned until its next retry (``take_due`` took it as found now)."""
        probes = self.pruned.take_due(unsent, _owner(body))
        meta = body["metadata"]
        for path, patch in sorted(probes.items()):
            try:
                result = self.kube.patch_status(meta["namespace"], meta["name"], patch, dry_run=True)
            except ApiException as exc:  # refused: tried again at the next retry; said once per path
                if self._probe_refused.first(path):
                    log.warning(
                        "%s: the API server refused the dry-run status write that probes whether the CRD keeps it "
                        "again (HTTP %s %s); an admission webhook whose sideEffects is Unknown or Some fails every "
                        "dry-run request: until it is NoneOnDryRun or None, or a status write sends the field, it "
                        "stays left out and what is held for it stays held",
                        describe(path), exc.status, exc.reason,
                    )  # fmt: skip
                log.debug("dry-run probe of %s: %s", describe(path), exc)
                result = {}
            except Unreachable as exc:  # no answer: tried again at the next retry
                log.debug("dry-run probe of %s: %s", describe(path), exc)
                result = {}
            metrics.API_WRITES.labels("dry-run patch", "ModelDeployment/status").inc()  # stores nothing
            served = result.get("status")
            if isinstance(served, dict) and path not in pruned_paths(patch, served):
                log.info("%s is kept by the served CRD again (a dry-run status write): written again", describe(path))
                self.pruned.clear([path])
        if probes:
            self._set_skew_gauge()

    def _tell(self, body: dict[str, Any], omitted: set[Path]) -> None:
        """A Warning Event on this ModelDeployment naming the pruned fields its status goes without that it has not
        been told of yet: every tenant whose status lacks a field learns why, once, not only the first object whose
        write found it."""
        if not omitted:
            return
        key = _owner(body)
        new = {path for path in sorted(omitted) if self._told.first((key, path))}
        if not new:
            return
        message = self._message(new)
        if self.events is not None:  # not a stage transition: not through the Reconciler's _post
            self.events.post(body, "Warning", CRD_OLDER_REASON, message)
        else:
            self.kube.event(body, "Warning", CRD_OLDER_REASON, message)

    @staticmethod
    def _message(paths: set[Path]) -> str:
        fields = ", ".join(sorted(describe(p) for p in paths))
        message = (
            f"the installed ModelDeployment CRD is older than this operator (modelship {__version__}): the API "
            f"server drops {fields} from its status writes. Apply this release's CRD (kubectl apply --server-side "
            "-f crds/); until then status goes without these fields"
        )
        memory = sorted(describe(p) for p in paths if read_back(describe(p)))
        if memory:
            message += (
                f". This operator reads {', '.join(memory)} back to know what serves (and where a Canary stands): "
                "it recovers what serves from the serving Deployment and the revision's optimization Job, and "
                "holds a change it cannot (Stalled, reason CRDOlderThanOperator); a Canary rollout is held"
            )
        return message


def _owner(body: dict[str, Any]) -> str:
    """The key of this ModelDeployment in per-object memories: its uid (a namespace/name without one)."""
    meta = body["metadata"]
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
