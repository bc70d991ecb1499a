"""docs/conditions.md lists every condition type and every reason the operator writes."""

from __future__ import annotations

from pathlib import Path

from modelship.api.status import ConditionType, Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "conditions.md"


def test_every_condition_and_reason_is_in_the_conditions_table() -> None:
    text = DOC.read_text()
    rows = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    missing = [f"{t.value}" for t in ConditionType if f"`{t.value}`" not in rows]
    missing += [f"{r.value}" for r in Reason if f"`{r.value}`" not in rows and r != Reason.PENDING]
    assert "`Pending`" in text  # said once, above the stages' table
    assert not missing, f"not in {DOC.name}: {missing}"
