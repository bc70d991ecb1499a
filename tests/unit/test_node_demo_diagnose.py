"""node_demo.diagnose and the waits that use it, without a node: `kubectl` is a fake answering from recorded
objects (or failing). A wait that times out or sees Stalled raises its own error again with the diagnosis after
it, chained to the original; the diagnosis itself never raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelship_dev import node_demo as demo
from tests.unit.test_dev_diagnosis import CRASHING_POD, JOB, MD, PENDING_POD, event


class Cluster:
    """kubectl against recorded objects: ``get <kind> -n <ns> -o json`` lists them; a kind in ``failing`` exits
    non-zero as kubectl does (node_demo.sh raises RuntimeError)."""

    def __init__(self, md: dict[str, Any], failing: tuple[str, ...] = ()) -> None:
        self.md = md
        self.failing = failing
        self.objects: dict[tuple[str, str], list[dict[str, Any]]] = {
            ("jobs", demo.NS): [JOB],
            ("pods", demo.NS): [PENDING_POD, CRASHING_POD],
            ("events", demo.NS): [event("FailedScheduling", "Pod", PENDING_POD["metadata"]["name"], 5)],
            ("pods", demo.OPERATOR_NAMESPACE): [],
        }
        self.calls: list[tuple[str, ...]] = []

    def kjson(self, *args: str) -> Any:
        return self.md

    def kc(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        self.calls.append(args)
        what = args[0] if args[0] == "logs" else args[1]
        if what in self.failing:
            raise RuntimeError(f"kubectl {' '.join(args)} exited 1:\nError from server (Forbidden): {what}")
        if what == "logs":
            return "".join(f"operator line {i}\n" for i in range(200))
        if "--no-headers" in args:  # watch_many's pod summary
            return ""
        if what == "modeldeployment":
            return json.dumps(self.md)
        ns = args[args.index("-n") + 1] if "-n" in args else ""
        return json.dumps({"items": self.objects.get((what, ns), [])})


class FakeOperator(demo.ChartOperator):
    """The chart's operator, its log read by kubectl (no helm: nothing is installed)."""

    def __init__(self) -> None:
        self.log = Path("/nowhere/operator-test_x.log")


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    said: list[str] = []

    def install(fake: Cluster) -> tuple[Cluster, list[str]]:
        monkeypatch.setattr(demo, "kjson", fake.kjson)
        monkeypatch.setattr(demo, "kc", fake.kc)
        monkeypatch.setattr(demo, "say", said.append)
        return fake, said

    yield install
    demo.running(None)


def stalled(md: dict[str, Any]) -> dict[str, Any]:
    conds = [*md["status"]["conditions"], {"type": "Stalled", "status": "True", "message": "claim models not found"}]
    return {**md, "status": {**md["status"], "conditions": conds}}


def test_a_timed_out_watch_explains_itself_and_chains_the_timeout(cluster: Any) -> None:
    fake, said = cluster(Cluster(MD, failing=("events",)))
    demo.running(FakeOperator())
    with pytest.raises(TimeoutError) as caught:
        demo.watch_many(0, ("linear-regression",))
    text = str(caught.value)
    first = text.splitlines()[0]
    assert first.startswith("linear-regression not all Ready after 0.") and first.endswith(
        "(last: not Ready: linear-regression)")  # fmt: skip
    assert isinstance(caught.value.__cause__, TimeoutError) and str(caught.value.__cause__) == first
    assert f"--- diagnosis: {first} ---" in text and text.endswith("--- end of diagnosis ---")
    for part in (
        "== ModelDeployment default/linear-regression",
        "generation 2, observedGeneration 1 (the operator has not observed the latest spec)",
        "Optimized=False JobRunning: optimization Job linear-regression-opt-red1a5475af running (attempt 1)",
        "== jobs in default\n   linear-regression-opt-red1a5475af uid 0c9d2f41 ",
        "PodScheduled=False Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.",
        "server: waiting CrashLoopBackOff",
        "== events in default\n   (could not read: RuntimeError: exited 1: Error from server (Forbidden): events)",
        "== pods in modelship-system\n   no pods",
        "== operator log, last 80 lines (the whole log: /nowhere/operator-test_x.log)\n"
        "   ... 120 earlier log lines not shown\n   operator line 120\n",
    ):
        assert part in text, part
    assert "   operator line 199\n== jobs in modelship-system" in text  # the log before the operator's namespace
    assert said[-1] == text[text.index("--- diagnosis"):]  # also said, as the wait goes
    assert all("--request-timeout=10s" in c for c in fake.calls if "--no-headers" not in c)


def test_a_stall_explains_itself_at_once(cluster: Any) -> None:
    cluster(Cluster(stalled(MD)))
    with pytest.raises(demo.Stalled) as caught:
        demo.watch_many(600, ("linear-regression",))
    assert str(caught.value).startswith("linear-regression stalled: claim models not found\n--- diagnosis: ")
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value.__cause__, demo.Stalled)
    assert "== operator log\n   no operator running (started by this process)" in str(caught.value)


def test_the_diagnosis_never_raises(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster(Cluster(MD, failing=("modeldeployment", "jobs", "pods", "events", "nodes", "logs")))
    demo.running(FakeOperator())
    text = demo.diagnose(("linear-regression",))
    assert text.count("(could not read: RuntimeError: exited ") == 9  # 1 + 3 per namespace x 2 + nodes + log
    cluster(Cluster({"status": "not an object"}))  # whatever the API answers, it is reported, not raised
    assert "(could not read: AttributeError:" in demo.diagnose(("x",), why="w")
    monkeypatch.setattr(demo.diagnosis, "render", lambda *a: 1 / 0)
    assert demo.diagnose(("x",)) == "--- diagnosis failed: ZeroDivisionError: division by zero ---"


def test_a_client_pod_that_never_finishes_explains_itself(cluster: Any) -> None:
    cluster(Cluster({"status": {"phase": "Pending"}}))
    with pytest.raises(TimeoutError) as caught:
        demo.pod_python("print(1)", timeout=0)
    text = str(caught.value)
    assert text.splitlines()[0].endswith("not finished after 0.0s (last: still Pending)")
    assert f"== pods in {demo.CLIENT_NS}\n   no pods" in text and "== ModelDeployment" not in text
