"""An in-memory mirror of the objects the operator watches, fed by kopf's watch streams (an informer).

Reconciles read from here instead of the API server; every write's response goes back in, so the next
reconcile sees it even before the watch event arrives.
"""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from typing import Any

from ..resources.meta import MODELDEPLOYMENT_LABEL

Key = tuple[str, str, str]  # (kind, namespace, name)


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_owner: dict[tuple[str, str], set[Key]] = defaultdict(set)

    @staticmethod
    def owner_of(body: dict[str, Any]) -> str | None:
        return ((body.get("metadata") or {}).get("labels") or {}).get(MODELDEPLOYMENT_LABEL)

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
            owner = self.owner_of(body)
            if owner:
                self._by_owner[(key[1], owner)].add(key)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        with self._lock:
            body = self._objects.pop(key, None)
            owner = self.owner_of(body) if body else None
            if owner:
                self._by_owner[(namespace, owner)].discard(key)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            body = self._objects.get((kind, namespace, name))
            return copy.deepcopy(body) if body is not None else None

    def owned(self, namespace: str, owner: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            keys = [k for k in self._by_owner.get((namespace, owner), ()) if k[0] == kind]
            return [copy.deepcopy(self._objects[k]) for k in keys if k in self._objects]

    def keys(self, kind: str) -> list[Key]:
        with self._lock:
            return [k for k in self._objects if k[0] == kind]


def _rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
