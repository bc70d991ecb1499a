"""Every object in a namespace, before and after an attack: what changed, and whether only the attacked
ModelDeployment's own children did.

``snapshot`` lists every namespaced kind the API server serves (discovery, not a fixed list: a kind added by a
CRD or a new Kubernetes version is covered too) in one namespace, as the admin, and keeps each object's uid,
resourceVersion, controller owner, deletion mark and writers (its managedFields entries). ``Changes`` compares
two snapshots; ``assert_only_children_changed`` fails unless every object that is new, gone or modified is the
attacked ModelDeployment itself (its status), an Event, an object that ModelDeployment controls (owner reference
with its uid and ``controller: true``), or a write of the control plane's own controllers.

The last: the control plane keeps writing objects after they are made, so "nothing but the children has a new
resourceVersion" fails on a slow machine for writes that are nobody's attack: the volume binder binds a claim to a
volume pre-bound to its name at its next resync (up to 15 s later), the HPA controller writes an HPA's status at
its next sync, the deployment, replicaset, endpointslice and disruption controllers, the scheduler and kwok write
a Deployment's ReplicaSet and pods, a Service's EndpointSlices, a PodDisruptionBudget's status. Who wrote is in the
object's managedFields: a write adds its writer's entry (manager, operation, subresource) or renews its time
(whole seconds). A change outside the children passes only when its writers (``suspects``: the entries new or
renewed; for a write in the same second as the last one, which leaves no new trace, the last writers before it)
are all control-plane managers (``CONTROL_PLANE_MANAGERS``), managedFields were not stripped, and it deletes
nothing (no deletion mark, no removal, no new uid): a write under the operator's field managers, or any other
name, fails, and the failure names who wrote.
Shared by every attack file (items 1-4, 9 and 5-7 of issue 14).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

IGNORED_KINDS = frozenset({("v1", "Event"), ("events.k8s.io/v1", "Event")})
"""Written by everyone (the operator's Events are how it tells the attacker no): never part of the verdict."""

CONTROL_PLANE_MANAGERS = frozenset({"kube-controller-manager", "kube-scheduler", "kwok-controller"})
"""The field managers of the test control plane's own controllers (a client's user agent up to its first "/"):
kube-controller-manager (volume binder, deployment, replicaset, endpoints, endpointslice, disruption, HPA ...),
kube-scheduler, kwok-controller (the fake nodes' pod status). Anything else is not: the operator's own
(``modelship.FIELD_MANAGER``, ``HANDOVER_FIELD_MANAGER``), kopf's, a test's (modelship-tests, tenant)."""

FOR_SOMEONE_ELSE = frozenset({"scale"})
"""Subresources a control-plane controller writes on behalf of another object's maker, never its own write: the
HPA controller's ``/scale`` of its target."""


@dataclass(frozen=True, order=True)
class Writer:
    """One managedFields entry: who wrote (manager, operation, subresource) and when it last changed the object
    (RFC 3339, whole seconds). A write adds its writer's entry or renews its time."""

    manager: str
    operation: str
    subresource: str
    time: str

    @property
    def who(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def __str__(self) -> str:
        sub = f" /{self.subresource}" if self.subresource else ""
        return f"{self.manager} ({self.operation}{sub})"


@dataclass(frozen=True, order=True)
class Key:
    api_version: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.api_version})"


@dataclass(frozen=True)
class State:
    uid: str
    resource_version: str
    controller_uid: str | None
    """uid of the controller owner reference (ownerReferences[controller=true]), if any."""
    owner_uids: frozenset[str] = frozenset()
    """uids of every owner reference."""
    writers: frozenset[Writer] = frozenset()
    """Its managedFields entries."""
    deleting: bool = False
    """metadata.deletionTimestamp is set (deleted, held by a finalizer)."""


Snapshot = dict[Key, State]


def _get(api: client.ApiClient, path: str) -> dict[str, Any]:
    params = api.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*params, _request_timeout=(10, 30))
    response.read()  # type: ignore[no-untyped-call]
    data = response.data or b""
    if response.status != 200:
        raise AssertionError(f"GET {path}: HTTP {response.status}: {data[:300]!r}")
    result: dict[str, Any] = json.loads(data)
    return result


@dataclass(frozen=True)
class _Resource:
    group_version: str
    kind: str
    plural: str

    def path(self, namespace: str) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{base}/namespaces/{namespace}/{self.plural}"


def namespaced_resources(api: client.ApiClient) -> list[_Resource]:
    """Every namespaced, listable resource in its preferred version (subresources left out)."""
    versions = ["v1"] + [g["preferredVersion"]["groupVersion"] for g in _get(api, "/apis").get("groups", [])]
    out: list[_Resource] = []
    for gv in versions:
        listing = _get(api, "/api/v1" if gv == "v1" else f"/apis/{gv}")
        for r in listing.get("resources", []):
            if "/" in r["name"] or not r.get("namespaced") or "list" not in r.get("verbs", []):
                continue
            if (gv, r["kind"]) in IGNORED_KINDS:
                continue
            out.append(_Resource(gv, r["kind"], r["name"]))
    return out


def _state(meta: dict[str, Any]) -> State:
    refs = meta.get("ownerReferences") or []
    controller = next((r["uid"] for r in refs if r.get("controller")), None)
    return State(
        uid=meta["uid"],
        resource_version=meta["resourceVersion"],
        controller_uid=controller,
        owner_uids=frozenset(r["uid"] for r in refs),
        writers=frozenset(
            Writer(
                manager=e.get("manager", ""),
                operation=e.get("operation", ""),
                subresource=e.get("subresource", ""),
                time=e.get("time", ""),
            )
            for e in meta.get("managedFields") or []
        ),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def writers_of(old: State | None, new: State) -> frozenset[Writer]:
    """Who wrote between ``old`` and ``new`` (None: created), as managedFields tell: the entries of a writer new to
    the object or with a new time. An entry that only lost fields to another writer keeps its time: no write of its
    own. A writer's write in the same second as its last one leaves no new trace (``suspects``)."""
    times = {w.who: w.time for w in (old.writers if old is not None else ())}
    return frozenset(w for w in new.writers if times.get(w.who) != w.time)


def last_writers(state: State) -> frozenset[Writer]:
    """The entries with the latest time: the only writers whose next write can leave no new trace (in that same
    second; every entry's time is at most the snapshot's)."""
    latest = max((w.time for w in state.writers), default=None)
    return frozenset(w for w in state.writers if w.time == latest)


def suspects(old: State | None, new: State) -> frozenset[Writer]:
    """Who may have made the change: whoever the entries say wrote, else (a write that left no new trace) the last
    writers before it."""
    seen = writers_of(old, new)
    return seen if seen or old is None else last_writers(old)


def stripped(old: State | None, new: State) -> bool:
    """managedFields emptied (a write with ``managedFields: [{}]`` leaves none, not even its own)."""
    return old is not None and bool(old.writers) and not new.writers


def by_control_plane(old: State | None, new: State | None) -> bool:
    """The change from ``old`` to ``new`` (None: not there) is the control plane's own: the object is the same one
    (not removed, not deleted and made again), not marked for deletion, its managedFields not stripped, and every
    suspect (``suspects``; at least one) is a control-plane manager."""
    if new is None or new.deleting or (old is not None and (old.uid != new.uid or old.deleting)):
        return False
    who = suspects(old, new)
    return bool(who) and not stripped(old, new) and all(_control_planes_own(w) for w in who)


def _control_planes_own(writer: Writer) -> bool:
    """A control-plane manager's write, and not one it makes for someone else: the HPA controller writes a scale
    target's ``/scale`` for whoever made the HPA (an operator's HPA aimed at a user's Deployment would scale it)."""
    return writer.manager in CONTROL_PLANE_MANAGERS and writer.subresource not in FOR_SOMEONE_ELSE


def snapshot(api: client.ApiClient, namespace: str) -> Snapshot:
    """Every object of every namespaced kind in ``namespace`` (``api`` must be allowed to list them all)."""
    snap: Snapshot = {}
    for res in namespaced_resources(api):
        for item in _get(api, res.path(namespace)).get("items", []):
            meta = item["metadata"]
            snap[Key(res.group_version, res.kind, meta["name"])] = _state(meta)
    return snap


@dataclass
class Changes:
    added: dict[Key, State] = field(default_factory=dict)
    removed: dict[Key, State] = field(default_factory=dict)
    modified: dict[Key, tuple[State, State]] = field(default_factory=dict)
    """Same name, and a new resourceVersion or a new uid (deleted and created again)."""

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> Changes:
        out = cls()
        for key, state in after.items():
            old = before.get(key)
            if old is None:
                out.added[key] = state
            elif (old.uid, old.resource_version) != (state.uid, state.resource_version):
                out.modified[key] = (old, state)
        for key, state in before.items():
            if key not in after:
                out.removed[key] = state
        return out

    def keys(self) -> set[Key]:
        return set(self.added) | set(self.removed) | set(self.modified)

    def describe(self, keys: Iterable[Key] | None = None) -> str:
        """One line a change: + added, - removed, ~ modified, with who wrote it (the entries it added or renewed)
        and a deletion mark or a new uid."""
        wanted = set(self.keys() if keys is None else keys)
        lines = [f"+ {k}{_by(None, s)}" for k, s in sorted(self.added.items()) if k in wanted]
        lines += [f"- {k}" for k in sorted(self.removed) if k in wanted]
        lines += [f"~ {k}{_by(*states)}" for k, states in sorted(self.modified.items()) if k in wanted]
        return "\n".join(lines) or "(nothing)"


def _by(old: State | None, new: State) -> str:
    seen, who = writers_of(old, new), sorted(suspects(old, new))
    if seen:
        notes = [f"by {', '.join(map(str, who))}"]
    elif who:
        notes = [f"no new managedFields entry (a write in the second of the last one, by {', '.join(map(str, who))})"]
    else:
        notes = ["no writer recorded"]
    if old is not None and old.uid != new.uid:
        notes.append("deleted and made again (new uid)")
    if new.deleting:
        notes.append("marked for deletion")
    if stripped(old, new):
        notes.append("managedFields stripped")
    return ": " + "; ".join(notes)


def descendants(snaps: Iterable[Snapshot], owner_uids: Iterable[str]) -> set[str]:
    """The owners' uids and those of everything they control, transitively (a Job's pods are the
    ModelDeployment's too), over one or more snapshots."""
    controller = {s.uid: s.controller_uid for snap in snaps for s in snap.values()}
    found = set(owner_uids)
    grew = True
    while grew:
        new = {uid for uid, ctl in controller.items() if ctl in found and uid not in found}
        found |= new
        grew = bool(new)
    return found


def children_only(before: Snapshot, after: Snapshot, owner_uids: Iterable[str]) -> set[Key]:
    """The changed keys that are NOT allowed: anything but the owners themselves and what they control
    (transitively), both before (a child deleted or modified) and after (a child created or modified), and the
    control plane's own writes (``by_control_plane``)."""
    owners = descendants((before, after), owner_uids)
    changes = Changes.between(before, after)
    bad: set[Key] = set()
    for key in changes.keys():  # noqa: SIM118 (Changes is not a dict)
        old, new = before.get(key), after.get(key)
        if all(s.uid in owners for s in (old, new) if s is not None) or by_control_plane(old, new):
            continue
        bad.add(key)
    return bad


def assert_only_children_changed(before: Snapshot, after: Snapshot, *owner_uids: str) -> Changes:
    """Fail unless every change between the snapshots is one of the owners (the attacked ModelDeployment:
    status writes) or an object it controls. Returns the changes for further checks."""
    changes = Changes.between(before, after)
    bad = children_only(before, after, owner_uids)
    assert not bad, f"objects outside the ModelDeployment's own children changed:\n{changes.describe(bad)}"
    return changes


def controlled_by(snap: Snapshot, owner_uid: str) -> set[Key]:
    """The objects in ``snap`` that ``owner_uid`` controls, transitively."""
    owned = descendants((snap,), [owner_uid]) - {owner_uid}
    return {k for k, s in snap.items() if s.uid in owned}
