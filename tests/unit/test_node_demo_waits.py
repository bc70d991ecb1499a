"""The demo's waits on the real node that go through modelship_dev.poll.until, without a node: `kubectl` is a fake
that answers from a script of states (node_demo.kc / kjson)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelship_dev import node_demo as demo


def md(ready: str = "False", stalled: str = "False", message: str = "") -> dict[str, Any]:
    stall = {"type": "Stalled", "status": stalled, "reason": "S", "message": message}
    return {"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "R"}, stall]}}


class Kubectl:
    """``kubectl get modeldeployment`` / ``get pod`` answers, one per call, the last one repeated."""

    def __init__(self, states: list[Any], service_account: str = "default") -> None:
        self.states: Iterator[Any] = iter(states)
        self.last: Any = None
        self.service_account = service_account
        self.calls: list[tuple[str, ...]] = []

    def kjson(self, *args: str) -> Any:
        self.calls.append(("kjson", *args))
        self.last = next(self.states, self.last)
        return self.last

    def kc(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        self.calls.append(("kc", *args))
        if args[:2] == ("get", "serviceaccount"):
            return self.service_account
        return "client-1 1/1 Running 0 1s" if args[:2] == ("get", "pods") else "the pod's output\n"


@pytest.fixture
def kubectl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def install(fake: Kubectl) -> Kubectl:
        monkeypatch.setattr(demo, "kjson", fake.kjson)
        monkeypatch.setattr(demo, "kc", fake.kc)
        monkeypatch.setattr(demo, "say", lambda msg: None)
        return fake

    yield install


def test_watch_many_looks_until_every_one_is_ready(kubectl: Any) -> None:
    fake = kubectl(Kubectl([md(), md(ready="True")]))
    done = demo.watch_many(30, ("digits",))
    assert done["digits"]["status"]["applyToReadySeconds"] >= 0
    looked = ("kjson", "get", "modeldeployment", "digits", "-n", demo.NS)
    assert [c for c in fake.calls if c[0] == "kjson"] == [looked] * 2


def test_watch_many_raises_a_stall_at_once_and_names_what_is_not_ready_at_its_deadline(kubectl: Any) -> None:
    kubectl(Kubectl([md(stalled="True", message="claim gone")]))
    with pytest.raises(RuntimeError, match="digits stalled: claim gone"):
        demo.watch_many(30, ("digits",))
    kubectl(Kubectl([md()]))
    with pytest.raises(TimeoutError, match=r"digits not all Ready after 0\.\ds \(last: not Ready: digits\)"):
        demo.watch_many(0, ("digits",))


def test_pod_python_waits_for_the_pod_to_finish_and_says_how_it_ended(kubectl: Any) -> None:
    pending, running = {"status": {"phase": "Pending"}}, {"status": {"phase": "Running"}}
    fake = kubectl(Kubectl([pending, running, {"status": {"phase": "Succeeded"}}]))
    assert demo.pod_python("print(1)", timeout=30) == "the pod's output\n"
    assert [c[1:3] for c in fake.calls if c[0] == "kjson"] == [("get", "pod")] * 3
    assert fake.calls[-1][:3] == ("kc", "delete", "pod")  # deleted afterwards
    kubectl(Kubectl([{"status": {"phase": "Failed"}}]))
    with pytest.raises(RuntimeError, match="failed:\nthe pod's output"):
        demo.pod_python("raise SystemExit(1)", timeout=30)
    fake = kubectl(Kubectl([running]))
    with pytest.raises(TimeoutError, match=r"not finished after 0\.\ds \(last: still Running\)"):
        demo.pod_python("import time; time.sleep(99)", timeout=0)
    assert fake.calls[-1][:3] == ("kc", "delete", "pod")
    fake = kubectl(Kubectl([running], service_account=""))
    with pytest.raises(TimeoutError, match=f"no default ServiceAccount in {demo.CLIENT_NS}"):
        demo.pod_python("print(1)", timeout=0)
    assert not [c for c in fake.calls if c[1:2] == ("apply",)]  # no pod made
