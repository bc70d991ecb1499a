"""Conditions as Kubernetes wants them: one per type, lastTransitionTime kept while the status is unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConditionSet:
    """Builds the full conditions list of one status write from the previous list."""

    def __init__(self, previous: list[dict[str, Any]], generation: int | None, now: datetime) -> None:
        self._previous = {c["type"]: c for c in previous}
        self._current: dict[str, dict[str, Any]] = {}
        self._generation = generation
        self._now = rfc3339(now)

    def set(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        value = "Unknown" if status is None else ("True" if status else "False")
        old = self._previous.get(type_)
        changed = old is None or old.get("status") != value
        cond: dict[str, Any] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": self._now if changed or old is None else old["lastTransitionTime"],
        }
        if self._generation is not None:
            cond["observedGeneration"] = self._generation
        self._current[type_] = cond

    def get(self, type_: str) -> dict[str, Any] | None:
        return self._current.get(type_)

    def as_list(self, order: list[str]) -> list[dict[str, Any]]:
        known = [self._current[t] for t in order if t in self._current]
        rest = [c for t, c in self._current.items() if t not in order]
        return known + rest

    def changes(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(new, old) for every condition whose status or reason changed."""
        out = []
        for type_, cond in self._current.items():
            old = self._previous.get(type_)
            if old is None or old.get("status") != cond["status"] or old.get("reason") != cond["reason"]:
                out.append((cond, old))
        return out
