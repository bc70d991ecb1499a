"""``python -m tests.integration.canary_operator operator ...``: the real operator, reading the serving pods'
metrics from a loopback endpoint the test runs instead of the pods' IPs (kwok's pods are not processes).
``MODELSHIP_TEST_POD_METRICS=http://127.0.0.1:PORT``: a pod of revision R named P is read at ``/R/P``; the
reader's parsing, phase windows and bounds are the real ones."""

from __future__ import annotations

import os
from typing import Any

from modelship.cli import main
from modelship.controller import podmetrics, reconcile
from modelship.controller.phasewindow import Readings
from modelship.controller.podmetrics import Makers

BASE = os.environ.get("MODELSHIP_TEST_POD_METRICS", "")
_read = podmetrics.read_pods


def loopback(pod: dict[str, Any], port: int) -> str:
    meta = pod["metadata"]
    rev = meta["labels"]["modelship.io/revision"]
    host, _, lport = BASE.removeprefix("http://").partition(":")
    fake = {"metadata": meta, "status": {"podIP": host}}
    return _fetch_path(fake, int(lport), f"/{rev}/{meta['name']}")


def _fetch_path(pod: dict[str, Any], port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}{path}", timeout=2) as r:
        return str(r.read(podmetrics.MAX_METRICS_BYTES).decode())


def read_pods(pods: Any, port: int, candidate: str, stable: str, fetch: Any = None, *, makers: Makers) -> Readings:
    return _read(pods, port, candidate, stable, loopback, makers=makers)  # the operator's choice of pods, unchanged


if __name__ == "__main__":
    reconcile.read_pods = read_pods  # type: ignore[assignment]
    raise SystemExit(main())
