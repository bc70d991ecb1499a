"""Why a wait on the real node did not end: a bounded, readable account of what the cluster holds, for the error a
timed-out or stalled wait raises (node_demo.diagnose gathers it with kubectl; this module only formats).

CI shows nothing of the node but the pytest output, so the account says what a person would look at first: each
ModelDeployment's conditions and whether the operator saw its last generation, the namespace's Jobs (did the Job
controller make pods? suspended? which uid?), their pods (scheduled? refused? waiting or terminated, and why),
the Warning events and the Jobs' events, the nodes, and the tail of the operator's log. Every part is bounded in
lines and characters (a module-scoped fixture's error is printed once per test of the module), and what was cut
is said. Pure functions of the recorded objects (kubectl's JSON) and ``now``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelship.controller.conditions import parse_rfc3339

LINE_CHARS = 300
"""No line longer (messages, log lines): the rest is cut and marked."""
TOTAL_CHARS = 20000
"""The whole account at most this long (each section has its own, smaller bound; this one is a last guard)."""


@dataclass(frozen=True)
class Section:
    """One part of the account: a title and its lines, or why they could not be read."""

    title: str
    lines: Sequence[str]


def clip(text: object, limit: int = LINE_CHARS) -> str:
    """``text`` on one line (its indentation kept), at most ``limit`` characters (a cut is marked with its size)."""
    raw = str(text)
    one = " " * (len(raw) - len(raw.lstrip(" "))) + " ".join(raw.split())
    return one if len(one) <= limit else f"{one[: limit - 20]}... (+{len(one) - limit + 20} chars)"


def bounded(lines: Sequence[str], max_lines: int, what: str, newest_last: bool = True,
            max_chars: int = 3000) -> list[str]:  # fmt: skip
    """At most ``max_lines`` of ``lines`` and ``max_chars`` characters (each line clipped), keeping the newest
    (the last if ``newest_last``, else the first), with a line saying how many ``what`` were left out."""
    kept = [clip(ln) for ln in lines]
    kept = kept[-max_lines:] if newest_last else kept[:max_lines]
    while len(kept) > 1 and sum(len(ln) + 1 for ln in kept) > max_chars:
        kept = kept[1:] if newest_last else kept[:-1]
    if len(kept) == len(lines):
        return kept
    note = f"... {len(lines) - len(kept)} {'earlier' if newest_last else 'more'} {what} not shown"
    return [note, *kept] if newest_last else [*kept, note]


def age(ts: object, now: datetime) -> str:
    """How long ago ``ts`` was, as kubectl says it (42s, 7m10s, 3h5m), or "?" (missing, not RFC 3339, or without
    a zone: read as the operator reads stamps, controller.conditions.parse_rfc3339)."""
    t = parse_rfc3339(ts)
    if t is None:
        return "?"
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _owner(obj: Mapping[str, Any]) -> str:
    refs = _meta(obj).get("ownerReferences") or []
    return ",".join(f"{r.get('kind')}/{r.get('name')}({str(r.get('uid', ''))[:8]})" for r in refs) or "-"


def _condition(c: Mapping[str, Any]) -> str:
    words = [f"{c.get('type')}={c.get('status')}"]
    if c.get("reason"):
        words.append(str(c["reason"]))
    text = " ".join(words)
    return f"{text}: {c['message']}" if c.get("message") else text


def deployment_lines(name: str, md: Mapping[str, Any] | None) -> list[str]:
    """A ModelDeployment's generation against what the operator observed, its stage and revision, each
    condition (type=status reason: message) and its last failure."""
    if not md:
        return [f"{name}: not found"]
    meta, st = _meta(md), md.get("status") or {}
    gen, seen = meta.get("generation"), st.get("observedGeneration")
    behind = "" if gen == seen else " (the operator has not observed the latest spec)"
    head = f"generation {gen}, observedGeneration {seen}{behind}; revision {st.get('revision', '-')}"
    if meta.get("deletionTimestamp"):
        head += f"; being deleted (finalizers {meta.get('finalizers')})"
    lines = [head]
    lines += [f"  {_condition(c)}" for c in st.get("conditions") or []] or ["  no conditions"]
    if st.get("lastFailure"):
        lines.append(f"  lastFailure: {st['lastFailure']}")
    return bounded(lines, 16, "lines", newest_last=False, max_chars=2500)


def _newest(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Oldest first, by creation time (unknown times first)."""
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(items, key=lambda o: parse_rfc3339(_meta(o).get("creationTimestamp")) or epoch)


def job_lines(jobs: Iterable[Mapping[str, Any]], now: datetime, limit: int = 12) -> list[str]:
    """One line per Job (newest kept): its uid, owner, age, counts, whether suspended, its conditions."""
    lines = []
    for j in _newest(jobs):
        meta, st, spec = _meta(j), j.get("status") or {}, j.get("spec") or {}
        counts = " ".join(f"{k}={st.get(k, 0)}" for k in ("active", "ready", "succeeded", "failed"))
        extra = " SUSPENDED" if spec.get("suspend") else ""
        if meta.get("deletionTimestamp"):
            extra += " being-deleted"
        conds = "; ".join(_condition(c) for c in st.get("conditions") or []) or "no conditions"
        lines.append(f"{meta.get('name')} uid {str(meta.get('uid', ''))[:8]} owner {_owner(j)} "
                     f"age {age(meta.get('creationTimestamp'), now)} {counts}{extra}: {conds}")  # fmt: skip
    return bounded(lines, limit, "Jobs") or ["no Jobs"]


def _container(cs: Mapping[str, Any]) -> str:
    state = cs.get("state") or {}
    if "waiting" in state:
        w = state["waiting"] or {}
        now = f"waiting {w.get('reason', '')}" + (f" ({w['message']})" if w.get("message") else "")
    elif "terminated" in state:
        t = state["terminated"] or {}
        now = f"terminated {t.get('reason', '')} exit {t.get('exitCode')}"
        if t.get("message"):
            now += f" ({t['message']})"
    elif "running" in state:
        now = "running" + ("" if cs.get("ready", True) else " not-ready")
    else:
        now = "no state"
    last = (cs.get("lastState") or {}).get("terminated")
    before = f", last {last.get('reason')} exit {last.get('exitCode')}" if last else ""
    return f"{cs.get('name')}: {now}, restarts {cs.get('restartCount', 0)}{before}"


def pod_lines(pods: Iterable[Mapping[str, Any]], now: datetime, limit: int = 20) -> list[str]:
    """One line per pod (newest kept): phase, owner, age, the PodScheduled condition when not True, each init and
    app container's state (waiting/terminated with the reason) and restarts."""
    lines = []
    for p in _newest(pods):
        meta, st = _meta(p), p.get("status") or {}
        when = age(meta.get("creationTimestamp"), now)
        words = [f"{meta.get('name')} {st.get('phase', '?')} owner {_owner(p)} age {when}"]
        if meta.get("deletionTimestamp"):
            words.append("being-deleted")
        if st.get("reason") or st.get("message"):
            words.append(f"{st.get('reason', '')} {st.get('message', '')}".strip())
        sched = next((c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if sched is None:
            words.append("PodScheduled: none yet")
        elif sched.get("status") != "True":
            words.append(_condition(sched))
        statuses = [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]
        words += [f"[{_container(cs)}]" for cs in statuses]
        lines.append(" ".join(words))
    return bounded(lines, limit, "pods") or ["no pods"]


def _event_time(e: Mapping[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        t = parse_rfc3339(e.get(key))
        if t is not None:
            return t
    series = e.get("series") or {}
    return parse_rfc3339(series.get("lastObservedTime")) or parse_rfc3339(_meta(e).get("creationTimestamp"))


def _event(e: Mapping[str, Any], now: datetime) -> str:
    obj = e.get("involvedObject") or e.get("regarding") or {}
    count = e.get("count") or (e.get("series") or {}).get("count") or 1
    times = f" x{count}" if count > 1 else ""
    when = _event_time(e)
    ago = age(when.isoformat(), now) if when else "?"
    what = f"{e.get('type')} {e.get('reason')} {obj.get('kind')}/{obj.get('name')}{times}"
    return f"{ago} ago {what}: {e.get('message', '')}"


def event_lines(events: Iterable[Mapping[str, Any]], now: datetime, warnings: int = 20, jobs: int = 12) -> list[str]:
    """The last ``warnings`` Warning events, then the last ``jobs`` other events about Jobs (SuccessfulCreate,
    Completed: what the Job controller did), oldest first."""
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(events, key=lambda e: _event_time(e) or epoch)
    warn = [_event(e, now) for e in ordered if e.get("type") == "Warning"]
    about_jobs = [_event(e, now) for e in ordered
                  if e.get("type") != "Warning" and (e.get("involvedObject") or {}).get("kind") == "Job"]  # fmt: skip
    lines = bounded(warn, warnings, "Warning events") or ["no Warning events"]
    return lines + (bounded(about_jobs, jobs, "Job events") or ["no other Job events"])


def node_lines(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each node's Ready condition, pressure conditions that are True, taints and cordon."""
    lines = []
    for n in nodes:
        st, spec = n.get("status") or {}, n.get("spec") or {}
        conds = st.get("conditions") or []
        ready = next((c for c in conds if c.get("type") == "Ready"), None)
        words = [f"{_meta(n).get('name')} {_condition(ready) if ready else 'Ready=?'}"]
        words += [_condition(c) for c in conds if c.get("type") != "Ready" and c.get("status") == "True"]
        if spec.get("unschedulable"):
            words.append("cordoned")
        taints = [f"{t.get('key')}:{t.get('effect')}" for t in spec.get("taints") or []]
        if taints:
            words.append(f"taints {','.join(taints)}")
        alloc = st.get("allocatable") or {}
        words.append(f"allocatable cpu {alloc.get('cpu')} memory {alloc.get('memory')}")
        lines.append("; ".join(words))
    return bounded(lines, 5, "nodes") or ["no nodes"]


PROBE_LINE = re.compile(r'aiohttp\.access .*"GET /(healthz|metrics)[ ?]')
"""An access-log line of a probe or a scrape of the operator (one every few seconds: they would fill the tail)."""


def log_lines(text: str, limit: int = 80, max_chars: int = 6000) -> list[str]:
    """The last ``limit`` lines of a log but its probes' and scrapes' access lines (their count said), at most
    ``max_chars`` of them."""
    lines = text.splitlines()
    kept = [ln for ln in lines if not PROBE_LINE.search(ln)]
    out = bounded(kept, limit, "log lines", max_chars=max_chars)
    if len(kept) < len(lines):
        out.append(f"({len(lines) - len(kept)} access lines of /healthz and /metrics left out)")
    return out or ["(empty log)"]


def render(headline: str, sections: Sequence[Section], total: int = TOTAL_CHARS) -> str:
    """The account: a headline, then each section's title and indented lines; past ``total`` characters the rest
    is cut (and said)."""
    out = [f"--- diagnosis: {headline} ---"]
    for s in sections:
        out.append(f"== {s.title}")
        out += [f"   {ln}" for ln in s.lines]
    out.append("--- end of diagnosis ---")
    text = "\n".join(out)
    if len(text) <= total:
        return text
    cut = text[: total - 80].rsplit("\n", 1)[0]
    return f"{cut}\n   ... {len(text) - len(cut)} more chars of the diagnosis cut\n--- end of diagnosis ---"


def now_utc() -> datetime:
    return datetime.now(UTC)
