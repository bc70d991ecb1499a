"""`modelship operator` starts kopf's watches again when kopf ends on a resource that went away (a CRD deleted
under its watch-stream: a 404), and ends on anything else (tests/integration/test_crd_removal.py runs it for real)."""

from __future__ import annotations

import argparse
from typing import Any

import kopf
import pytest
from kopf._cogs.clients.errors import APINotFoundError

from modelship.controller import cli


def _args() -> argparse.Namespace:
    return argparse.Namespace(namespace=[], liveness="", metrics_port=0, workers=1, log_format="plain",
                              log_level="INFO")  # fmt: skip


def _runs(monkeypatch: pytest.MonkeyPatch, outcomes: list[Exception | None]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> None:
        calls.append(kwargs)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(kopf, "run", run)
    monkeypatch.setattr(cli, "RESTART_PAUSE_SECONDS", 0.0)
    return calls


def test_a_watched_resource_gone_starts_the_watches_again(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = APINotFoundError("httproutes not found", status=404, headers={})
    calls = _runs(monkeypatch, [gone, gone, None])
    assert cli.run(_args()) == 0
    assert len(calls) == 3
    assert all(c["clusterwide"] for c in calls)


def test_any_other_failure_ends_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _runs(monkeypatch, [RuntimeError("boom"), None])
    with pytest.raises(RuntimeError, match="boom"):
        cli.run(_args())
    assert len(calls) == 1


def test_the_error_kopf_raises_is_the_one_caught() -> None:
    # kopf exports no name for it: this fails loudly if an upgrade moves or renames it
    assert cli.gone_errors() == (APINotFoundError,)
    assert issubclass(APINotFoundError, Exception)
