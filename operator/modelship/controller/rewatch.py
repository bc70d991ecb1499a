"""Watch a kind as soon as discovery serves it: the restart of kopf's watches that kopf does not make itself.

kopf resolves the resources its handlers name when it starts and, watching the whole cluster, again on each event
of a CRD; watching namespaces (the chart's default) it does not watch CRDs at all. A CRD's last event
(Established) can reach kopf before the API server's discovery serves the new resource: kopf's look then finds
nothing, no later CRD event comes, and the kind stays unwatched (a change to an HTTPRoute would not wake its
ModelDeployment) until something else touches a CRD or the operator restarts.

So while a kind of the kinds table's watched rows (``resources.kinds.WATCHED``; in practice the optional
HTTPRoute) is not among the resources kopf watches, the supervisor (``controller.cli``) asks discovery for its
group version every ``POLL_SECONDS`` (one GET per group version; none while everything is watched). Once the kind
is served (with list and watch, as kopf requires) and still not watched on two looks in a row (kopf's own CRD
watch gets the first chance), the watches start again, the way they do when a watched resource goes away. Should
a restart not get the kind watched (kopf looked at a discovery lagging behind, say, another API server behind a
load balancer), the next restart for it waits twice as many looks, up to ``MAX_LOOKS``.

Deciding is pure (``served_unwatched``, ``Gap``); the asking is ``poll``, with discovery and kopf's view passed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ..resources.kinds import Kind

log = logging.getLogger("modelship.operator")

Ref = tuple[str, str, str]
"""A resource as kopf names it: (group, version, plural); "" is the core group."""

POLL_SECONDS = 5.0
"""Between two looks at discovery while a watched kind is not watched."""
FIRST_LOOKS = 2
"""Looks in a row a kind must be served and unwatched before the first restart for it."""
MAX_LOOKS = 60
"""The most looks in a row a restart for one kind waits (5 min at POLL_SECONDS)."""
WATCHABLE = frozenset({"list", "watch"})
"""Verbs discovery must list for kopf to watch a resource."""

Discover = Callable[[str, str], Mapping[str, Collection[str]]]
"""One discovery GET: (group, version) -> plural -> verbs; empty when the group version is not served."""


def ref(kind: Kind) -> Ref:
    return (kind.group, kind.version, kind.plural)


def name(r: Ref) -> str:
    """How kopf logs a resource: ``httproutes.v1.gateway.networking.k8s.io``, ``pods.v1``."""
    return ".".join(part for part in (r[2], r[1], r[0]) if part)


def unwatched(wanted: Iterable[Kind], watched: Collection[Ref]) -> tuple[Kind, ...]:
    """The wanted kinds kopf does not watch: the ones to ask discovery about."""
    return tuple(k for k in wanted if ref(k) not in watched)


def group_versions(kinds: Iterable[Kind]) -> tuple[tuple[str, str], ...]:
    """The group versions to ask discovery about, each once, in the kinds' order."""
    return tuple(dict.fromkeys((k.group, k.version) for k in kinds))


def served_unwatched(wanted: Iterable[Kind], watched: Collection[Ref], served: Collection[Ref]) -> tuple[Kind, ...]:
    """The wanted kinds discovery serves (listable and watchable) but kopf does not watch: the watches must start
    again for kopf to resolve them."""
    return tuple(k for k in unwatched(wanted, watched) if ref(k) in served)


def watchable(group: str, version: str, resources: Mapping[str, Collection[str]]) -> frozenset[Ref]:
    """The resources of one discovery answer that kopf can watch."""
    return frozenset((group, version, plural) for plural, verbs in resources.items() if set(verbs) >= WATCHABLE)


def looks_needed(restarts: int) -> int:
    """Looks in a row before a restart for a kind that ``restarts`` restarts already failed to get watched."""
    return min(FIRST_LOOKS << min(restarts, 16), MAX_LOOKS)


@dataclass
class Gap:
    """The served-but-unwatched kinds seen look after look, kept across restarts of the watches (the supervisor
    holds it): how many looks in a row each has been so, and how many restarts were made for it since it last was
    not (watched, or not served)."""

    streak: dict[Ref, int] = field(default_factory=dict)
    restarts: dict[Ref, int] = field(default_factory=dict)

    def look(self, gap: Collection[Ref]) -> tuple[Ref, ...]:
        """Record one look (the refs served but unwatched now); return those due for a restart of the watches."""
        for r in set(self.streak) | set(self.restarts):
            if r not in gap:
                self.streak.pop(r, None)
                self.restarts.pop(r, None)
        due: list[Ref] = []
        for r in sorted(gap):
            self.streak[r] = self.streak.get(r, 0) + 1
            if self.streak[r] >= looks_needed(self.restarts.get(r, 0)):
                due.append(r)
        for r in due:
            self.streak[r] = 0
            self.restarts[r] = self.restarts.get(r, 0) + 1
        return tuple(due)


async def poll(
    wanted: Collection[Kind],
    *,
    watched: Callable[[], Collection[Ref]],
    ready: Callable[[], Awaitable[object]],
    discover: Discover,
    gap: Gap,
    interval: float | None = None,
) -> tuple[Kind, ...]:
    """Look until some wanted kinds are due for a restart of the watches, and return them (runs until cancelled
    otherwise). ``ready`` waits for kopf's first resolving of the resources; ``watched`` is kopf's view of what it
    watches, read fresh at each look; ``discover`` is the blocking discovery GET (run in a thread)."""
    await ready()
    while True:
        served: set[Ref] = set()
        for group, version in group_versions(unwatched(wanted, watched())):
            try:
                served |= watchable(group, version, await asyncio.to_thread(discover, group, version))
            except Exception as exc:  # the API server unreachable or refusing: look again next time
                log.debug("discovery of %s/%s failed: %s", group, version, exc)
        due = set(gap.look({ref(k) for k in served_unwatched(wanted, watched(), served)}))
        if due:
            return tuple(k for k in wanted if ref(k) in due)
        await asyncio.sleep(POLL_SECONDS if interval is None else interval)
