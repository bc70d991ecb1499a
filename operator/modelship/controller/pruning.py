"""An operator newer than its CRD: status fields the API server prunes from this operator's writes.

The installed CRD is older than the models this operator was built with (its image rolled before the CRD was
applied): the API server drops, without an error, every status field the CRD does not declare. A field this
operator computes at every reconcile (``updatedReplicas`` from the Deployment) is then missing from every status it
reads back, so each reconcile would send the same merge patch again: no change on the server (the resourceVersion
stays, so no watch event and no loop), but one useless write per reconcile and per object, forever.

The paths are found by comparing what a status write sent with what the API server answered (pure functions here),
remembered (``PrunedStatus``), and left out of the following writes. Paths name object fields; ``[]`` stands for
"every item" of a list (``conditions[].severity``)."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Path = tuple[str, ...]
ITEMS = "[]"
"""The path step of a list's items."""
RETRY_SECONDS = 600.0
"""How long a pruned path is left out of status writes before it is tried again (the CRD may have been upgraded
since: the next write that sends it finds out, or else a dry-run probe: ``PrunedStatus.probe``)."""
PROBE_MAX_BYTES = 64 * 1024
"""The largest value (as JSON) remembered per pruned path to probe it with; a larger one is not remembered, and its
path is found kept only by a write that sends it."""
PROBE_MAX_VALUES = 256
"""The most values remembered to probe with, over all objects and paths (each object's own, ``PrunedStatus``); past
it, or past ``PROBE_MAX_TOTAL_BYTES``, the one stored longest ago is forgotten (that object then goes unprobed
until a write of its own finds the path pruned again)."""
PROBE_MAX_TOTAL_BYTES = 1024 * 1024
"""The most bytes (as JSON) of values remembered to probe with, over all objects and paths."""


def pruned_paths(sent: Mapping[str, Any], served: Mapping[str, Any] | None) -> set[Path]:
    """The fields of the merge patch ``sent`` (``null`` values delete and are skipped) that the object ``served``
    after the write does not have: the API server pruned them (its schema does not declare them). A value that
    differs but is there (normalised by the server, or written by someone else meanwhile) is not pruning."""
    out: set[Path] = set()
    _pruned(sent, served or {}, (), out)
    return out


def _pruned(sent: Any, served: Any, at: Path, out: set[Path]) -> None:
    if isinstance(sent, Mapping):
        if not isinstance(served, Mapping):
            return
        for key, value in sent.items():
            if value is None:
                continue
            if key not in served:
                out.add((*at, key))
            else:
                _pruned(value, served[key], (*at, key), out)
    elif isinstance(sent, list) and isinstance(served, list) and len(sent) == len(served):
        for a, b in zip(sent, served, strict=True):
            _pruned(a, b, (*at, ITEMS), out)


def sent_paths(sent: Mapping[str, Any], paths: Iterable[Path]) -> set[Path]:
    """Those of ``paths`` the merge patch ``sent`` sets (a value other than ``null`` at the path; in some item, for
    a list's ``[]``): only a write that sent a field says whether the served CRD keeps it."""
    return {path for path in paths if _sets(sent, path)}


def _sets(value: Any, path: Path) -> bool:
    if not path:
        return value is not None
    step, rest = path[0], path[1:]
    if step == ITEMS:
        return isinstance(value, list) and any(_sets(item, rest) for item in value)
    return isinstance(value, Mapping) and _sets(value.get(step), rest)


def probe_patch(sent: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """A merge patch setting only what ``sent`` set at ``path`` (the whole list, for a path through a list's items:
    a merge patch replaces lists): sent again, the answer says whether the served CRD keeps ``path``. None when
    ``sent`` sets nothing there."""
    steps = path[: path.index(ITEMS)] if ITEMS in path else path
    if not steps or not sent_paths(sent, [path]):
        return None
    value: Any = sent
    for step in steps:
        value = value[step]
    out: dict[str, Any] = {steps[-1]: value}
    for step in reversed(steps[:-1]):
        out = {step: out}
    return out


def without_paths(value: Any, paths: Iterable[Path]) -> Any:
    """``value`` without the fields at ``paths`` (a copy only where something is left out)."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for step in path[:-1]:
            node = node.setdefault(step, {})
            if node is None:
                break
        else:
            node[path[-1]] = None  # a leaf: drop the field here
    return _without(value, tree) if tree else value


def _without(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list) and ITEMS in tree and isinstance(tree[ITEMS], dict):
        return [_without(item, tree[ITEMS]) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] | None = None
    for key, sub in tree.items():
        if key not in value:
            continue
        new = None if sub is None else _without(value[key], sub)
        if sub is not None and new is value[key]:
            continue
        if out is None:
            out = dict(value)
        if sub is None:
            del out[key]
        else:
            out[key] = new
    return value if out is None else out


def missing_fields(declared: Mapping[str, Any], served: Mapping[str, Any]) -> list[Path]:
    """The fields the structural schema ``declared`` has and ``served`` lacks (the outermost one: nothing below it
    is listed), in schema order; nothing below a free-form node (``x-kubernetes-preserve-unknown-fields``) of
    ``served``. With this operator's own schema as ``declared`` and the served CRD's as ``served``: what an older
    CRD prunes; the other way round: what a newer CRD adds."""
    out: list[Path] = []
    _missing(declared, served, (), out)
    return out


def _missing(declared: Any, served: Any, at: Path, out: list[Path]) -> None:
    if not isinstance(declared, Mapping) or not isinstance(served, Mapping):
        return
    if served.get("x-kubernetes-preserve-unknown-fields"):
        return
    theirs = served.get("properties") or {}
    for key, sub in (declared.get("properties") or {}).items():
        if key not in theirs:
            out.append((*at, key))
        else:
            _missing(sub, theirs[key], (*at, key), out)
    _missing(declared.get("items"), served.get("items"), (*at, ITEMS), out)
    extra = declared.get("additionalProperties")
    _missing(extra, served.get("additionalProperties"), (*at, "*"), out)


def describe(path: Path, root: str = "status") -> str:
    """``status.conditions[].severity`` for ``("conditions", "[]", "severity")``."""
    text = root
    for step in path:
        text += step if step == ITEMS else f".{step}"
    return text


class PrunedStatus:
    """The status paths the served CRD prunes, as this process found them; each is left out of status writes for
    ``retry`` seconds after it was last found, then tried again once.

    The values to probe a path with are kept per object (``owner``: its uid) and path: a probe of one object sends
    only that object's own last pruned value, never another tenant's (which would reach admission webhooks and the
    audit log as this object's). The retry timer stays one per path (one probe per retry, not one per object)."""

    def __init__(self, retry: float = RETRY_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry = retry
        self.clock = clock
        self._found: dict[Path, float] = {}
        self._probes: OrderedDict[tuple[str, Path], tuple[dict[str, Any], int]] = OrderedDict()
        """Per (object, path), the last merge patch found pruned that set it (``probe_patch``) and its size as JSON:
        what a probe of that object sends again. Bounded (``PROBE_MAX_VALUES``, ``PROBE_MAX_TOTAL_BYTES``)."""
        self._probe_bytes = 0
        self._lock = threading.Lock()

    def current(self) -> frozenset[Path]:
        """The paths to leave out of the next status write."""
        now = self.clock()
        with self._lock:
            return frozenset(p for p, at in self._found.items() if now - at < self.retry)

    def found(self, paths: Iterable[Path], sent: Mapping[str, Any] | None = None, owner: str = "") -> set[Path]:
        """Remember ``paths`` as pruned now (with what the merge patch ``sent`` to the object ``owner`` set there,
        to probe that object with); returns those that were not known (first found, or found again after a retry)
        so the caller says so once."""
        now = self.clock()
        fresh: set[Path] = set()
        paths = list(paths)
        probes: dict[Path, tuple[dict[str, Any], int]] = {}
        for path in paths if sent is not None else ():
            patch = probe_patch(sent or {}, path)
            size = len(json.dumps(patch)) if patch is not None else 0
            if patch is not None and size <= PROBE_MAX_BYTES:
                probes[path] = (patch, size)
        with self._lock:
            for path in paths:
                at = self._found.get(path)
                if at is None:
                    fresh.add(path)
                self._found[path] = now
                if path in probes:
                    self._forget((owner, path))
                    self._probes[(owner, path)] = probes[path]
                    self._probe_bytes += probes[path][1]
            while self._probes and (len(self._probes) > PROBE_MAX_VALUES or self._probe_bytes > PROBE_MAX_TOTAL_BYTES):
                self._forget(next(iter(self._probes)))
        return fresh

    def _forget(self, key: tuple[str, Path]) -> None:
        """Drop one stored probe value (the lock held)."""
        stored = self._probes.pop(key, None)
        if stored is not None:
            self._probe_bytes -= stored[1]

    def clear(self, paths: Iterable[Path]) -> None:
        """``paths`` were written and kept: the CRD declares them (upgraded)."""
        with self._lock:
            gone = set(paths)
            for path in gone:
                self._found.pop(path, None)
            for key in [k for k in self._probes if k[1] in gone]:
                self._forget(key)

    def take_due(self, among: Iterable[Path], owner: str = "") -> dict[Path, dict[str, Any]]:
        """Those of ``among`` due for a retry (found pruned ``retry`` seconds ago or more) with the merge patch to
        probe the object ``owner`` with: its own last value found pruned there (``probe_patch``; a path with none
        for this object is not listed, and stays due for an object that has one), each taken as found now: another
        writer does not probe it too, and it stays known pruned unless the probe's answer keeps it (``clear``)."""
        now = self.clock()
        with self._lock:
            due = {
                p: self._probes[(owner, p)][0]
                for p in among
                if (owner, p) in self._probes and now - self._found[p] >= self.retry
            }
            self._found.update(dict.fromkeys(due, now))
            return due

    def all(self) -> frozenset[Path]:
        """Every path found pruned (also those due for a retry)."""
        with self._lock:
            return frozenset(self._found)
