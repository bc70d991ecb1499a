"""Cross-field rules, stated once and enforced twice.

Each rule carries a CEL expression (emitted into the CRD as ``x-kubernetes-validations``, so the API server
rejects the object) and the same check in Python (so ``modelship render`` and the CLI reject it without a
cluster). Keeping both in one place is what stops them from drifting apart; a test runs every invalid example
through both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Rule:
    """One cross-field rule of an API object."""

    cel: str
    """CEL expression over ``self`` (the object as it appears on the wire)."""
    message: str
    """What the API server and the CLI say when the rule fails."""
    check: Callable[[Any], bool]
    """The same rule over the pydantic object."""
    field_path: str | None = None
    """JSONPath of the field to blame, relative to the object (e.g. ``.maxReplicas``)."""

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def rules_schema(rules: tuple[Rule, ...]) -> dict[str, Any]:
    """``json_schema_extra`` value that puts the rules into the generated CRD."""
    return {"x-kubernetes-validations": [r.schema() for r in rules]} if rules else {}


def enforce(obj: BaseModel, rules: tuple[Rule, ...]) -> None:
    """Raise ValueError naming the field for the first rule ``obj`` breaks (used in model validators)."""
    for rule in rules:
        if not rule.check(obj):
            where = rule.field_path.lstrip(".") if rule.field_path else ""
            raise ValueError(f"{where}: {rule.message}" if where else rule.message)
