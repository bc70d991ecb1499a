"""RFC 7386 JSON merge patches computed from what an object holds and what it should hold.

A merge patch merges nested objects key by key, so writing ``{"optimization": {...new...}}`` over a status whose
``optimization`` has more keys keeps the old ones. The patch must name every key to drop, at every depth, as
``null``; lists are replaced whole."""

from __future__ import annotations

from typing import Any


def merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns ``current`` into ``desired`` (empty when they are equal).

    ``desired`` must hold no ``None`` values: in a merge patch ``null`` means "delete"."""
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, want in desired.items():
        have = current.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = merge_patch(have, want)
            if sub:
                patch[key] = sub
        elif key not in current or have != want:
            patch[key] = want
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2, the reference algorithm (what the API server does with the patch)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


__all__ = ["apply_merge_patch", "merge_patch"]
