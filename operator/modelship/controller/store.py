"""An in-memory mirror of the objects the operator watches, fed by kopf's watch streams (an informer).

Reconciles read from here instead of the API server; every write's response goes back in, so the next
reconcile sees it even before the watch event arrives.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from typing import Any

from ..resources.meta import MODELDEPLOYMENT_LABEL, MODELDEPLOYMENT_NAMESPACE_LABEL

Key = tuple[str, str, str]  # (kind, namespace, name)


class Store:
    def __init__(self, build_namespace: str | None = None) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_owner: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self.build_namespace = build_namespace
        """Objects here (build Jobs and their pods) belong to the ModelDeployment their labels name in another
        namespace; tenants cannot write here, so only here is that label believed."""

    def owner(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """(namespace, name) of the ModelDeployment an object belongs to, by its labels: its own namespace, or for
        an object in the build namespace the namespace it names."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = labels.get(MODELDEPLOYMENT_LABEL)
        if not name:
            return None
        namespace = meta.get("namespace") or ""
        if self.build_namespace and namespace == self.build_namespace:
            namespace = labels.get(MODELDEPLOYMENT_NAMESPACE_LABEL) or namespace
        return namespace, name

    def owner_of(self, body: dict[str, Any]) -> str | None:
        found = self.owner(body)
        return found[1] if found else None

    def put(self, kind: str, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta["name"])
        body = copy.deepcopy(body)
        with self._lock:
            old = self._objects.get(key)
            if old is not None:
                old_rv, new_rv = old["metadata"].get("resourceVersion"), meta.get("resourceVersion")
                if old_rv and new_rv and _rv(new_rv) < _rv(old_rv):
                    return  # a stale watch event behind our own write's response
            self._objects[key] = body
            owner = self.owner(body)
            if owner:
                self._by_owner[owner].add(key)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        with self._lock:
            body = self._objects.pop(key, None)
            owner = self.owner(body) if body else None
            if owner:
                self._by_owner[owner].discard(key)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            body = self._objects.get((kind, namespace, name))
            return copy.deepcopy(body) if body is not None else None

    def owners(self, kind: str, namespace: str) -> list[tuple[str, str]]:
        """The owners of the objects of ``kind`` in ``namespace`` (the build namespace's Jobs: whose are they)."""
        with self._lock:
            return [o for o, keys in self._by_owner.items() if any(k[0] == kind and k[1] == namespace for k in keys)]

    def owned(self, namespace: str, owner: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            keys = [k for k in self._by_owner.get((namespace, owner), ()) if k[0] == kind]
            return [copy.deepcopy(self._objects[k]) for k in keys if k in self._objects]

    def any_in(self, kind: str, namespace: str) -> bool:
        """Whether any object of ``kind`` is stored in ``namespace``."""
        with self._lock:
            return any(k[0] == kind and k[1] == namespace for k in self._objects)

    def keys(self, kind: str) -> list[Key]:
        with self._lock:
            return [k for k in self._objects if k[0] == kind]


def _rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
