"""Every object in a namespace, before and after an attack: what changed, and whether only the attacked
ModelDeployment's own children did.

``snapshot`` lists every namespaced kind the API server serves (discovery, not a fixed list: a kind added by a
CRD or a new Kubernetes version is covered too) in one namespace, as the admin, and keeps each object's uid,
resourceVersion and controller owner. ``Changes`` compares two snapshots; ``assert_only_children_changed``
fails unless every object that is new, gone or modified is the attacked ModelDeployment itself (its status),
an Event, or an object that ModelDeployment controls (owner reference with its uid and ``controller: true``).
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
    )


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
        wanted = set(self.keys() if keys is None else keys)
        lines = [f"+ {k}" for k in sorted(self.added) if k in wanted]
        lines += [f"- {k}" for k in sorted(self.removed) if k in wanted]
        lines += [f"~ {k}" for k in sorted(self.modified) if k in wanted]
        return "\n".join(lines) or "(nothing)"


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
    (transitively), both before (a child deleted or modified) and after (a child created or modified)."""
    owners = descendants((before, after), owner_uids)
    changes = Changes.between(before, after)
    bad: set[Key] = set()
    for key in changes.keys():  # noqa: SIM118 (Changes is not a dict)
        states = [s for s in (before.get(key), after.get(key)) if s is not None]
        if all(s.uid in owners for s in states):
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
