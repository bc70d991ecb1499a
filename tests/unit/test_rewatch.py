"""controller.rewatch: which watched kinds discovery serves but kopf does not watch, when that restarts kopf's
watches (two looks in a row, then twice as many after a restart that did not help), and the poll that asks
discovery only about the kinds kopf does not watch."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import pytest

from modelship.controller import rewatch
from modelship.controller.rewatch import Gap, Ref, ref, served_unwatched
from modelship.resources.kinds import HTTP_ROUTE, JOB, MODELDEPLOYMENT, POD, WATCHED

ROUTE: Ref = ("gateway.networking.k8s.io", "v1", "httproutes")
ALL_BUT_ROUTE = frozenset(ref(k) for k in WATCHED if k is not HTTP_ROUTE)
LIST_WATCH = frozenset({"get", "list", "watch", "create", "patch", "delete"})


def test_the_watched_kinds_are_the_handlers_kinds() -> None:
    assert MODELDEPLOYMENT in WATCHED and HTTP_ROUTE in WATCHED and JOB in WATCHED and POD in WATCHED
    assert all(k.watch is not None for k in WATCHED)
    assert ref(HTTP_ROUTE) == ROUTE


def test_a_served_kind_kopf_does_not_watch_is_the_one_to_restart_for() -> None:
    assert served_unwatched(WATCHED, ALL_BUT_ROUTE, {ROUTE}) == (HTTP_ROUTE,)


def test_an_unserved_kind_is_not() -> None:
    assert served_unwatched(WATCHED, ALL_BUT_ROUTE, set()) == ()
    assert served_unwatched(WATCHED, ALL_BUT_ROUTE, {("gateway.networking.k8s.io", "v1", "gateways")}) == ()
    assert served_unwatched(WATCHED, ALL_BUT_ROUTE, {("gateway.networking.k8s.io", "v1beta1", "httproutes")}) == ()


def test_a_kind_kopf_watches_is_not() -> None:
    everything = {ref(k) for k in WATCHED}
    assert served_unwatched(WATCHED, everything, everything) == ()


def test_several_kinds_come_out_in_the_tables_order() -> None:
    watched = ALL_BUT_ROUTE - {ref(MODELDEPLOYMENT)}
    assert served_unwatched(WATCHED, watched, {ROUTE, ref(MODELDEPLOYMENT)}) == (MODELDEPLOYMENT, HTTP_ROUTE)


def test_kopf_watches_only_what_discovery_lists_with_list_and_watch() -> None:
    answer = {"httproutes": LIST_WATCH, "gateways": {"get", "list"}, "grpcroutes": ()}
    assert rewatch.watchable(*ROUTE[:2], answer) == {ROUTE}


def test_each_group_version_is_asked_once() -> None:
    assert rewatch.group_versions([HTTP_ROUTE, POD, HTTP_ROUTE, JOB]) == (ROUTE[:2], ("", "v1"), ("batch", "v1"))


def test_names_are_kopfs() -> None:
    assert rewatch.name(ROUTE) == "httproutes.v1.gateway.networking.k8s.io"
    assert rewatch.name(ref(POD)) == "pods.v1"


def test_a_gap_restarts_after_two_looks_in_a_row() -> None:
    gap = Gap()
    assert gap.look({ROUTE}) == ()  # kopf's own CRD watch gets the first chance
    assert gap.look({ROUTE}) == (ROUTE,)


def test_a_look_without_the_gap_starts_the_count_again() -> None:
    gap = Gap()
    assert gap.look({ROUTE}) == ()
    assert gap.look(set()) == ()  # kopf resolved it itself
    assert gap.look({ROUTE}) == ()
    assert gap.look({ROUTE}) == (ROUTE,)


def test_a_restart_that_did_not_help_doubles_the_wait_up_to_the_cap() -> None:
    gap = Gap()
    waits = []
    for _ in range(8):
        looks = 1
        while not gap.look({ROUTE}):
            looks += 1
        waits.append(looks)
    assert waits == [2, 4, 8, 16, 32, rewatch.MAX_LOOKS, rewatch.MAX_LOOKS, rewatch.MAX_LOOKS]


def test_the_backoff_ends_once_the_kind_is_watched_or_gone() -> None:
    gap = Gap()
    gap.look({ROUTE})
    assert gap.look({ROUTE}) == (ROUTE,)
    assert gap.look(set()) == ()  # watched after the restart (or its CRD deleted)
    gap.look({ROUTE})
    assert gap.look({ROUTE}) == (ROUTE,)  # two looks again, not four


class _Discovery:
    def __init__(self, answers: Mapping[tuple[str, str], Mapping[str, Collection[str]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def __call__(self, group: str, version: str) -> Mapping[str, Collection[str]]:
        self.asked.append((group, version))
        answer = self.answers.get((group, version))
        if answer is None:
            raise ConnectionError("no answer")
        return answer


async def _ready() -> None:
    return None


def _poll(discover: _Discovery, watched: Collection[Ref], looks: int = 6) -> object:
    """What the poll returns, or "still looking" once it has looked ``looks`` times (counted by its reads of
    kopf's view: two a look) without returning."""
    reads = 0

    def view() -> Collection[Ref]:
        nonlocal reads
        reads += 1
        return watched

    async def bounded() -> object:
        task = asyncio.create_task(
            rewatch.poll(WATCHED, watched=view, ready=_ready, discover=discover, gap=Gap(), interval=0.001)
        )
        deadline = asyncio.get_running_loop().time() + 30
        while not task.done() and reads < 2 * looks:
            assert asyncio.get_running_loop().time() < deadline, "the poll neither returned nor looked again"
            await asyncio.sleep(0.001)
        if task.done():
            return task.result()
        task.cancel()
        return "still looking"

    return asyncio.run(bounded())


def test_the_poll_asks_discovery_about_the_unwatched_group_version_only_and_returns_the_served_kind() -> None:
    discover = _Discovery({ROUTE[:2]: {"httproutes": LIST_WATCH, "gateways": LIST_WATCH}})
    assert _poll(discover, ALL_BUT_ROUTE) == (HTTP_ROUTE,)
    assert discover.asked == [ROUTE[:2], ROUTE[:2]]


def test_the_poll_asks_nothing_while_everything_is_watched() -> None:
    discover = _Discovery({})
    assert _poll(discover, {ref(k) for k in WATCHED}) == "still looking"
    assert discover.asked == []


@pytest.mark.parametrize(
    "answers",
    [
        {},  # the API server does not answer: look again later
        {ROUTE[:2]: {}},  # the group version is not served (no CRD)
        {ROUTE[:2]: {"gateways": LIST_WATCH}},  # other CRDs of the group are
    ],
)
def test_the_poll_keeps_looking_while_the_kind_is_not_served(
    answers: Mapping[tuple[str, str], Mapping[str, Collection[str]]],
) -> None:
    discover = _Discovery(answers)
    assert _poll(discover, ALL_BUT_ROUTE) == "still looking"
    assert len(discover.asked) >= 5


def test_the_poll_reads_kopfs_view_again_after_asking() -> None:
    """kopf's CRD watch resolved the kind while discovery was asked: no restart."""
    watched = set(ALL_BUT_ROUTE)

    class Resolving(_Discovery):
        def __call__(self, group: str, version: str) -> Mapping[str, Collection[str]]:
            watched.add(ROUTE)
            return super().__call__(group, version)

    discover = Resolving({ROUTE[:2]: {"httproutes": LIST_WATCH}})
    assert _poll(discover, watched) == "still looking"
    assert discover.asked == [ROUTE[:2]]
