"""The operator's side of version skew (the policy is ``api.skew``): the served CRD's spec schema, read only when
a spec has fields this operator does not know, and one log line per left-out field path.

The cluster-wide chart grants list and watch on CustomResourceDefinitions (kopf's scanning), so that operator can
read the served CRD and tolerate a field a newer CRD only defaults; the namespaced chart grants nothing on them (a
403, remembered like an answer): every unknown spec field stalls there.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from .. import GROUP, PLURAL, VERSION, __version__
from ..api.crd import crd
from ..api.modeldeployment import ModelDeployment
from ..api.skew import (
    Schema,
    keep_unknown,
    known_status_schema,
    read_served,
    read_status,
    served_spec_schema,
)
from ..api.status import ModelDeploymentStatus
from .kube import Kube
from .once import Once
from .pruning import describe, missing_fields

log = logging.getLogger("modelship.skew")

CRD_NAME = f"{PLURAL}.{GROUP}"
SERVED_SCHEMA_TTL_SECONDS = 60.0
"""How long a read of the served CRD is used: a CRD upgrade is seen within this time (no watch of CRDs here)."""


class Notes:
    """Log a message at INFO the first time its key comes up in this process, at DEBUG after that."""

    def __init__(self) -> None:
        self._once = Once()

    def note(self, key: str, message: str, *args: Any) -> None:
        log.log(logging.INFO if self._once.first(key) else logging.DEBUG, message, *args)


class ServedSchema:
    """The spec schema of the ModelDeployment CRD the API server serves (None when this operator may not read
    it, or the CRD does not serve this operator's version), read at most once per ``ttl`` seconds.

    Reconciles run in several threads and none queues behind the network: one of them reads (single flight), the
    others meanwhile get the last value read; only before the first value is there do they wait, for that one read
    (not one each). A read that fails (an error other than 403) raises in its own caller and leaves the next caller
    to read again."""

    def __init__(self, kube: Kube, notes: Notes, ttl: float = SERVED_SCHEMA_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.kube = kube
        self.notes = notes
        self.ttl = ttl
        self.clock = clock
        self._cond = threading.Condition()
        self._read_at: float | None = None
        self._schema: Schema | None = None
        self._reading = False
        """A read is in flight (its caller does not hold the lock meanwhile)."""

    def __call__(self) -> Schema | None:
        with self._cond:
            while True:
                now = self.clock()
                if self._read_at is not None and (self._reading or now - self._read_at < self.ttl):
                    return self._schema  # fresh, or being read again: the last value, without waiting
                if not self._reading:
                    self._reading = True  # this caller reads
                    break
                self._cond.wait()  # no value yet: wait for the read in flight
        try:
            schema = self._read()
        except BaseException:
            with self._cond:
                self._reading = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._schema, self._read_at, self._reading = schema, now, False
            self._cond.notify_all()
        return schema

    def _read(self) -> Schema | None:
        try:
            crd = self.kube.custom_resource_definition(CRD_NAME)
        except ApiException as exc:
            if exc.status != 403:
                raise
            self.notes.note(
                "crd-forbidden",
                "cannot read CustomResourceDefinition %s (forbidden: a namespaced install): a spec field this "
                "operator does not know stalls its ModelDeployment even when a newer CRD only defaults it",
                CRD_NAME,
            )
            return None
        return served_spec_schema(crd, VERSION) if crd is not None else None


class Skew:
    """Reads ModelDeployments as the API server serves them, whatever CRD it serves (``api.skew.read_served``)."""

    def __init__(self, kube: Kube) -> None:
        self.notes = Notes()
        self.served = ServedSchema(kube, self.notes)

    def read(self, body: Mapping[str, Any]) -> ModelDeployment:
        """The ModelDeployment of ``body``; raises ``api.skew.UnsupportedFields`` or ``ValidationError``."""
        reading = read_served(body, self.served)
        where = _where(body)
        for field in reading.tolerated:
            self.notes.note(
                f"tolerated {field.path}",
                "%s: %s is not known to this operator (modelship %s) and holds the installed CRD's default: a newer "
                "CRD defaults it, the spec does not ask for anything; left out",
                where, field.describe(), __version__,
            )  # fmt: skip
        self._note_ignored(where, reading.ignored)
        return reading.md

    def status(self, body: Mapping[str, Any]) -> ModelDeploymentStatus:
        """The status of ``body`` as far as this operator can read it (never raises)."""
        status, ignored, _ = read_status(body.get("status"))
        self._note_ignored(_where(body), ignored)
        return status

    def _note_ignored(self, where: str, ignored: tuple[str, ...]) -> None:
        for path in ignored:
            self.notes.note(
                f"ignored {_no_indexes(path)}",
                "%s: %s is not known to this operator (modelship %s): a newer operator wrote it; ignored, and kept "
                "as it is when this operator writes status",
                where, path, __version__,
            )  # fmt: skip


class ServedCrd:
    """This operator's schema against the served CRD's, both ways: the fields the CRD lacks (an older CRD: the API
    server drops them) and the fields it adds (a newer CRD). Read once at startup and at every resync (one list of
    one CRD); a namespaced operator may not read CRDs (403, remembered): it finds an older CRD from the status
    fields the API server drops from its writes (``pruning.PrunedStatus``) alone."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.forbidden = False
        self.older: tuple[str, ...] = ()
        """The fields this operator's models declare that the served CRD lacks."""
        self.newer: tuple[str, ...] = ()
        """The fields the served CRD declares that this operator's models lack."""

    def check(self) -> bool:
        """Read the served CRD and compare; False when it could not be read (forbidden, or not there)."""
        if self.forbidden:
            return False
        try:
            crd = self.kube.custom_resource_definition(CRD_NAME)
        except ApiException as exc:
            if exc.status != 403:
                raise
            self.forbidden = True
            log.info("cannot read CustomResourceDefinition %s (a namespaced install): an older CRD is found from "
                     "the status fields the API server drops from this operator's writes", CRD_NAME)  # fmt: skip
            return False
        served = served_root_schema(crd, VERSION) if crd is not None else None
        if served is None:
            return False
        own = own_root_schema()
        older = tuple(describe(p[1:], str(p[0])) for p in missing_fields(own, served))
        newer = tuple(describe(p[1:], str(p[0])) for p in missing_fields(served, own))
        if older and older != self.older:
            log.warning(
                "the installed ModelDeployment CRD is older than this operator (modelship %s): it lacks %s. The "
                "API server drops these fields: from this operator's status writes, and from a tenant's spec "
                "without an error unless the client asks for strict field validation (kubectl does). Apply this "
                "release's CRD (kubectl apply --server-side -f crds/)",
                __version__, ", ".join(older),
            )  # fmt: skip
        if newer and newer != self.newer:
            log.warning(
                "the installed ModelDeployment CRD is newer than this operator (modelship %s): it adds %s. Status "
                "fields a newer operator writes are kept; a spec that sets one of these fields is Stalled "
                "(UnsupportedFields). Upgrade the operator",
                __version__, ", ".join(newer),
            )  # fmt: skip
        if not older and not newer and (self.older or self.newer):
            log.info("the installed ModelDeployment CRD now matches this operator (modelship %s)", __version__)
        self.older, self.newer = older, newer
        return True


@functools.cache
def own_root_schema() -> Schema:
    """The openAPIV3Schema of the CRD this operator's models generate."""
    root: Schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def served_root_schema(crd_body: Mapping[str, Any], version: str) -> Schema | None:
    """The openAPIV3Schema of ``version`` in a CustomResourceDefinition as the API server returns it."""
    for v in (crd_body.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            root = (v.get("schema") or {}).get("openAPIV3Schema")
            return root if isinstance(root, Mapping) else None
    return None


def keep_unknown_status(current: Mapping[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The status to write: ``desired`` plus every field of ``current`` this operator does not know (a newer
    operator's), and every top-level field it knows but cannot read (``read_status``: a newer operator's value,
    left out of what this operator read, so never in ``desired`` unless it sets the field anew) that ``desired``
    does not set, so that the merge patch leaves them alone instead of sending null."""
    out = keep_unknown(known_status_schema(), current, desired)
    assert isinstance(out, dict)
    for key in read_status(current).unreadable:
        if desired.get(key) is None and key in current:
            out[key] = current[key]
    return out


def _where(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _no_indexes(path: str) -> str:
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
            out.append("[]")
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)
