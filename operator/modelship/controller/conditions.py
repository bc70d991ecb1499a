"""Conditions as Kubernetes wants them: one per type, lastTransitionTime kept while the status is unchanged (and
the stamp is a time that is not ahead of now)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from ..api.status import Condition, ConditionType, Reason

ORDER: tuple[str, ...] = tuple(t.value for t in ConditionType)
"""The order conditions are listed in: the kstatus trio, then one per stage."""


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> datetime | None:
    """The time an RFC 3339 stamp (``2026-11-29T22:53:50Z``, or with an offset; fractional seconds as in a
    MicroTime) names, in UTC; None for a stamp that is missing or does not parse: not a string, not a time,
    without a zone, out of range. Stamps are read from objects anybody with the right to write a status may have
    forged; none of them may stop a reconcile. A stamp without a zone is not taken as UTC: Kubernetes always
    writes one (Z), so a zoneless stamp came from somebody else and says no time we could trust. The developer
    tools' account of a stuck wait on the real node reads kubectl's stamps with it too (one parser)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


CLOCK_SKEW_SECONDS = 60
"""How far ahead of this operator's clock a stamp may lie and still be taken as written (another writer's clock
may run a little ahead); a stamp further ahead is forged or from a broken clock, and a clock read from it would
never run."""


def parse_past(text: object, now: datetime) -> datetime | None:
    """``parse_rfc3339`` of a stamp that says when something began: None also when it lies more than
    ``CLOCK_SKEW_SECONDS`` ahead of ``now`` (a clock counted from it would stand still, or run backwards, for
    years); the reader restarts its clock at ``now`` as for a stamp that does not parse."""
    when = parse_rfc3339(text)
    return None if when is None or when > now + timedelta(seconds=CLOCK_SKEW_SECONDS) else when


def seconds_since(stamp: object, now: datetime) -> float | None:
    """Seconds from the RFC 3339 ``stamp`` to ``now`` (negative when it is ahead); None when it is missing or does
    not parse."""
    when = parse_rfc3339(stamp)
    return None if when is None else (now - when).total_seconds()


def _status(value: bool | None) -> Literal["True", "False", "Unknown"]:
    return "Unknown" if value is None else ("True" if value else "False")


class ConditionSet:
    """Builds the full conditions list of one status write from the previous list."""

    def __init__(self, previous: Iterable[Condition], generation: int | None, now: datetime) -> None:
        self._previous = {c.type: c for c in previous}
        self._current: dict[str, Condition] = {}
        self._generation = generation
        self._clock = now
        self._now = rfc3339(now)

    def set(self, type_: ConditionType, status: bool | None, reason: Reason, message: str = "") -> None:
        value = _status(status)
        old = self._previous.get(type_)
        unchanged = old is not None and old.status == value
        # a stamp that does not parse, or lies in the future, is stamped anew: every clock read from it (how long
        # a crash loop, a missing mount, a scale-up has lasted) would otherwise never run
        kept = old is not None and unchanged and parse_past(old.last_transition_time, self._clock) is not None
        self._current[type_] = Condition(
            type=type_.value,
            status=value,
            reason=reason.value,
            message=message[:32768],
            observed_generation=self._generation,
            last_transition_time=old.last_transition_time if kept and old is not None else self._now,
        )

    def keep(self, cond: Condition) -> None:
        """Carry a condition over as it is (another writer's, or one this write has nothing new to say about)."""
        self._current[cond.type] = cond

    def get(self, type_: ConditionType) -> Condition | None:
        return self._current.get(type_)

    def as_list(self) -> list[Condition]:
        known = [self._current[t] for t in ORDER if t in self._current]
        rest = [c for t, c in self._current.items() if t not in ORDER]
        return known + rest

    def changes(self) -> list[Condition]:
        """Every condition whose status or reason changed, in the order they were set."""
        out = []
        for type_, cond in self._current.items():
            old = self._previous.get(type_)
            if old is None or old.status != cond.status or old.reason != cond.reason:
                out.append(cond)
        return out


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h5m``: how long, as a person reads it."""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60}m"
