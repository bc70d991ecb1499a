"""`modelship operator` starts kopf's watches again when kopf ends on a resource that went away (a CRD deleted
under its watch-stream: a 404) and when a watched kind kopf does not watch becomes served (controller.rewatch),
and ends on anything else (tests/integration/test_crd_removal.py runs both for real)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

import kopf
import pytest
from kopf._cogs.clients.errors import APINotFoundError
from kopf._cogs.structs.references import Insights, Resource
from prometheus_client import REGISTRY

from modelship.controller import cli, rewatch
from modelship.resources.kinds import HTTP_ROUTE, WATCHED

Run = Callable[[dict[str, Any]], Any]
"""One fake run of kopf.operator, given its arguments; an exception is raised, anything else ends the run."""
LIST_WATCH = frozenset({"list", "watch"})


def _args() -> argparse.Namespace:
    return argparse.Namespace(namespace=[], liveness="", metrics_port=0, workers=1, log_format="plain",
                              log_level="INFO")  # fmt: skip


def _runs(
    monkeypatch: pytest.MonkeyPatch,
    outcomes: list[Exception | Run | None],
    served: Mapping[tuple[str, str], Mapping[str, Collection[str]]] | None = None,
) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    async def operator(**kwargs: Any) -> None:
        calls.append(kwargs)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is not None:
            await outcome(kwargs)

    def discover(group: str, version: str) -> Mapping[str, Collection[str]]:
        return (served or {}).get((group, version), {})

    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr(cli, "RESTART_PAUSE_SECONDS", 0.0)
    monkeypatch.setattr(cli, "_discovery", lambda: discover)
    monkeypatch.setattr(rewatch, "POLL_SECONDS", 0.001)
    return calls


def _kopf_resolved(insights: Insights, *, but: Collection[object] = ()) -> None:
    """kopf's first resolving of the resources: every watched kind of the table except ``but``."""
    insights.watched_resources.update(
        Resource(k.group, k.version, k.plural) for k in WATCHED if k not in but
    )  # fmt: skip
    insights.ready_resources.set()


async def _until_stopped(kwargs: dict[str, Any], but: Collection[object]) -> None:
    _kopf_resolved(kwargs["insights"], but=but)
    await asyncio.wait_for(kwargs["stop_flag"].wait(), timeout=30)


async def _looks_then_ends(kwargs: dict[str, Any], but: Collection[object] = ()) -> None:
    """Runs while the poll looks a while, then ends as on a signal; fails if the watches were stopped meanwhile."""
    _kopf_resolved(kwargs["insights"], but=but)
    await asyncio.sleep(0.2)
    assert not kwargs["stop_flag"].is_set()


def _restarts(reason: str) -> float:
    return REGISTRY.get_sample_value("modelship_watch_restarts_total", {"reason": reason}) or 0.0


def test_a_watched_resource_gone_starts_the_watches_again(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = APINotFoundError("httproutes not found", status=404, headers={})
    before = _restarts("gone")
    calls = _runs(monkeypatch, [gone, gone, None])
    assert cli.run(_args()) == 0
    assert len(calls) == 3
    assert all(c["clusterwide"] for c in calls)
    assert _restarts("gone") == before + 2


def test_a_watched_kind_served_but_not_watched_starts_the_watches_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf resolved everything but HTTPRoute (its CRD came after kopf's look) and discovery serves it now: the
    poll stops kopf through its stop flag and the watches start again; the new run watches it, nothing more."""
    before = _restarts("served")
    route = {(HTTP_ROUTE.group, HTTP_ROUTE.version): {HTTP_ROUTE.plural: LIST_WATCH}}
    calls = _runs(
        monkeypatch, [lambda kw: _until_stopped(kw, but=(HTTP_ROUTE,)), _looks_then_ends], served=route
    )  # fmt: skip
    assert cli.run(_args()) == 0
    assert len(calls) == 2
    assert _restarts("served") == before + 1
    assert calls[0]["insights"] is not calls[1]["insights"]  # each run resolves afresh


def test_a_watched_kind_not_served_restarts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster without the Gateway API CRDs: the poll keeps looking, kopf keeps running."""
    calls = _runs(monkeypatch, [lambda kw: _looks_then_ends(kw, but=(HTTP_ROUTE,))])
    assert cli.run(_args()) == 0
    assert len(calls) == 1


def test_a_failing_poll_leaves_the_watches_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: Any, **__: Any) -> tuple[object, ...]:
        raise RuntimeError("poll bug")

    calls = _runs(monkeypatch, [_looks_then_ends])
    monkeypatch.setattr(rewatch, "poll", broken)
    assert cli.run(_args()) == 0
    assert len(calls) == 1
    assert "the discovery poll ended" in caplog.text


def test_any_other_failure_ends_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _runs(monkeypatch, [RuntimeError("boom"), None])
    with pytest.raises(RuntimeError, match="boom"):
        cli.run(_args())
    assert len(calls) == 1


def test_the_error_kopf_raises_is_the_one_caught() -> None:
    # kopf exports no name for it: this fails loudly if an upgrade moves or renames it
    assert cli.gone_errors() == (APINotFoundError,)
    assert issubclass(APINotFoundError, Exception)


def test_kopf_still_takes_what_the_supervisor_passes() -> None:
    """The supervisor reads kopf's Insights (not exported by kopf) and stops kopf through its stop flag: this fails
    loudly if an upgrade changes either."""
    params = inspect.signature(kopf.operator).parameters
    assert {"insights", "stop_flag", "standalone", "clusterwide", "namespaces", "liveness_endpoint"} <= set(params)
    insights = Insights()
    assert isinstance(insights.watched_resources, set)
    assert isinstance(insights.ready_resources, asyncio.Event)
    assert {"group", "version", "plural"} <= set(inspect.signature(Resource).parameters)


def test_a_signal_leaves_no_task_waiting_on_the_stop_flag_and_restarts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf waits on the stop flag in a task of its own and, stopped by a signal, leaves that task pending: it then
    waits 5 s for it as a hung task before the process exits. The cleanup handler (kopf runs it before that wait)
    sets the flag, so the task ends; the run still ends as on a signal, not as a restart of the watches."""
    from kopf._cogs.aiokits import aioadapters

    from modelship.controller import handlers

    monkeypatch.setattr(handlers._State, "queue", None)
    monkeypatch.setattr(handlers._State, "resync_task", None)
    waiters: list[asyncio.Task[Any]] = []

    async def signalled(kwargs: dict[str, Any]) -> None:
        _kopf_resolved(kwargs["insights"])
        waiter = asyncio.create_task(aioadapters.wait_flag(kwargs["stop_flag"]), name="stop-flag waiter")  # as kopf
        waiters.append(waiter)
        await asyncio.sleep(0.05)
        assert not waiter.done()  # nothing stops the watches before the signal
        await handlers.cleanup()  # SIGTERM: kopf's root tasks end, then its cleanup activity runs
        await asyncio.sleep(0)
        assert waiter.done()

    calls = _runs(monkeypatch, [signalled])
    before = _restarts("served")
    assert cli.run(_args()) == 0
    assert len(calls) == 1 and len(waiters) == 1
    assert _restarts("served") == before
