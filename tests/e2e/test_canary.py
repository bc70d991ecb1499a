"""The Canary strategy on the real node, the operator installed with its Helm chart, a load loop through the
Service throughout: (1) a good new revision (same model, another optimization) goes shadow -> canary ->
promoted by itself with 0 failed requests, the candidate's measured share of answers at the canary step within
10 points of its weight (each answer names its revision in x-modelship-revision); (2) a bad new revision (a model
of another function) is caught by the agreement check during shadow and rolled back by itself, 0 failed
requests, the stable revision answering every one, status naming the failed criterion and the agreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from modelship_dev import node_demo as demo
from tests.e2e.conftest import RealNode, prepare_pipeline

pytestmark = pytest.mark.e2e

CANARY = {
    "strategy": "Canary",
    "canary": {
        # the shortest that still judge every criterion over thousands of requests (the two load loops below send
        # several hundred a second through the Service): the API's minimum shadow, a 10 s step
        "shadow": {"percent": 50, "durationSeconds": 10},
        "steps": [{"weight": 50, "pauseSeconds": 10}],
        "analysis": {
            "minRequests": 40,
            "maxErrorRate": 0.01,
            "maxLatencyRatio": 5.0,  # two CPUs shared by every pod and the load loop: latency is noisy
            "minAgreement": 0.99,
            "comparison": "Tolerance",
            "relativeTolerance": 0.05,
            "absoluteTolerance": 0.05,
        },
    },
}
OTHER_MODEL = "other.h5"
"""y = -x + 3: a model trained on another function (same input and output)."""


def _write_other_model(models: Any) -> None:
    path = models / OTHER_MODEL
    if path.exists():
        return
    code = (
        "import tf_keras as keras, numpy as np; "
        "m = keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)], name='linear'); "
        "m.layers[0].set_weights([np.array([[-1.0]], np.float32), np.array([3.0], np.float32)]); "
        f"m.save({str(path)!r})"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    path.chmod(0o644)


def _md(name: str) -> dict[str, Any]:
    return demo.kjson("get", "modeldeployment", name, "-n", demo.NS)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def canary(real_node: RealNode) -> Iterator[ModuleType]:
    prepare_pipeline(real_node)
    # before the storage: prepare_storage waits out the claim of the one deleted, and makes its PV anew
    demo.kc("delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=true")
    models = demo.prepare_storage()
    _write_other_model(models)
    op = demo.ChartOperator(log_name="operator-test_canary.log")
    op.start()
    try:
        demo.forget_revisions()
        md = demo.manifest()
        md["spec"]["serving"]["replicas"] = 2
        md["spec"]["serving"]["rollout"] = CANARY
        demo.kc("apply", "-n", demo.NS, "-f", "-", input_text=json.dumps(md))
        first = demo.watch(600)
        conds = {c["type"]: c for c in first["status"]["conditions"]}
        assert conds["Verified"]["reason"] == "NoStableRevision"  # the first revision is served at once
        yield demo
    finally:
        op.stop()
        demo.kc(
            "delete", "modeldeployment", demo.NAME, "-n", demo.NS, "--ignore-not-found", "--wait=false", check=False
        )


class LoadLoop(threading.Thread):
    """Predicts y(4) = 7 through the Service (at the address status.url's host resolves to), a new connection per
    request, until stopped; records which revision answered each request (x-modelship-revision) and every
    failure."""

    def __init__(self, ip: str, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://{ip}:{port}/v1/models/{demo.NAME}:predict"
        self.stop = threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        body = json.dumps({"instances": [[4.0]]}).encode()
        while not self.stop.is_set():
            req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    y = json.loads(resp.read())["predictions"][0][0]
                    rev = resp.headers.get("x-modelship-revision", "")
                if abs(y - 7.0) > 0.1:
                    self.errors.append(f"wrong answer {y} from {rev}")
                self.answers.append((time.monotonic(), rev))
            except Exception as exc:  # every failure counts, whatever its kind
                self.errors.append(f"{type(exc).__name__}: {exc}")


class Watcher(threading.Thread):
    """Records the rollout's status as it goes: (time, phase, step, phaseStartedAt, weight), and each new
    LatencyRatio the analysis reports (phase/step, observed, requests, required, verdict)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.seen: list[tuple[float, str, int, str | None, int]] = []
        self.latency: list[tuple[str, Any, int, Any, str]] = []
        self.look_errors: list[str] = []

    def run(self) -> None:
        # one look begins after stop is set: the state the test waited for (read before it set stop) is always
        # seen, even when the last periodic look began before it was written
        while True:
            stopping = self.stop.is_set()
            try:
                self._look()
            except Exception as exc:  # said by the test (look_errors), not lost with the thread
                self.look_errors.append(f"{type(exc).__name__}: {exc}")
            if stopping:
                return
            self.stop.wait(0.5)

    def _look(self) -> None:
        ro = (_md(demo.NAME).get("status") or {}).get("rollout") or {}
        if not ro:
            return
        self.seen.append((time.monotonic(), ro["phase"], ro.get("step", 0), ro.get("phaseStartedAt"),
                          ro.get("weight", 0)))  # fmt: skip
        for c in ro.get("criteria") or []:
            where = f"{ro['phase']}/{ro.get('step', 0)}"
            seen = (where, c.get("observed"), c.get("requests", 0), c.get("required"), c["verdict"])
            if c["name"] == "LatencyRatio" and (not self.latency or self.latency[-1] != seen):
                self.latency.append(seen)

    def latency_report(self) -> str:
        return "; ".join(f"{w} {obs} over {n}/{req} {v}" for w, obs, n, req, v in self.latency)


def _answered(loops: list[LoadLoop], more: int, when: str, timeout: float = 60) -> None:
    """Wait until every loop has had ``more`` further answers (or failures: those fail the test later)."""
    start = [len(loop.answers) + len(loop.errors) for loop in loops]
    deadline = time.monotonic() + timeout
    while any(len(loop.answers) + len(loop.errors) < n + more for loop, n in zip(loops, start, strict=True)):
        assert time.monotonic() < deadline, f"the load loops answered fewer than {more} requests {when}"
        assert all(loop.is_alive() for loop in loops)
        time.sleep(0.1)


def _run_with_load(change: list[dict[str, Any]], done: Any, timeout: float = 900) -> tuple[dict[str, Any], list[
        LoadLoop], Watcher, float]:  # fmt: skip
    ip, port = demo.service_address(demo.NAME)  # by status.url, through the cluster DNS, as a client would
    loops = [LoadLoop(ip, port) for _ in range(2)]
    watcher = Watcher()
    for t in (*loops, watcher):
        t.start()
    try:
        _answered(loops, 20, "before the change")  # both loops reach the Service before the change
        t0 = time.monotonic()
        demo.kc("patch", "modeldeployment", demo.NAME, "-n", demo.NS, "--type=json", "-p", json.dumps(change))
        deadline = t0 + timeout
        while (md := done(_md(demo.NAME))) is None:
            assert time.monotonic() < deadline, (f"timed out; last status {json.dumps(_md(demo.NAME)['status'])}\n"
                                                 f"{demo.diagnose((demo.NAME,))}")  # fmt: skip
            assert all(loop.is_alive() for loop in loops)
            time.sleep(1)
        elapsed = time.monotonic() - t0
        _answered(loops, 100, "after the change was done")  # a few more requests against what serves now
    finally:
        for t in (*loops, watcher):
            t.stop.set()
        for t in (*loops, watcher):
            t.join(30)
        print(f"LatencyRatio as the analysis saw it: {watcher.latency_report() or '-'}")  # also when it failed
    return md, loops, watcher, elapsed


def _event_reasons() -> set[str]:
    events = demo.kjson("get", "events", "-n", demo.NS, "--field-selector",
                        f"involvedObject.name={demo.NAME},involvedObject.kind=ModelDeployment")["items"]  # fmt: skip
    return {e["reason"] for e in events}


def _conditions(md: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in md["status"].get("conditions", [])}


def test_a_good_revision_is_shadowed_canaried_and_promoted_by_itself(canary: ModuleType) -> None:
    before = _md(demo.NAME)
    old = before["status"]["revision"]

    def promoted(md: dict[str, Any]) -> dict[str, Any] | None:
        st = md.get("status") or {}
        ro = st.get("rollout") or {}
        ready = _conditions(md).get("Ready", {}).get("status") == "True"
        if ro.get("phase") == "RolledBack":
            raise AssertionError(f"rolled back: {ro.get('message')}")
        ok = ready and ro.get("phase") == "Promoted" and st.get("servingRevision") == ro.get("candidate") != old
        return md if ok else None

    change = [{"op": "replace", "path": "/spec/optimization/steps/0/quantize/mode", "value": "float16"}]
    md, loops, watcher, elapsed = _run_with_load(change, promoted)
    new = md["status"]["revision"]
    errors = [e for loop in loops for e in loop.errors]
    answers = sorted(a for loop in loops for a in loop.answers)
    print(f"good revision: apply -> promoted {elapsed:.1f} s; {len(answers)} answers, {len(errors)} failed")
    assert errors == [], errors[:10]
    phases = [p for _, p, *_ in watcher.seen]
    assert {"Shadow", "Canary", "Promoted"} <= set(phases), (phases, watcher.look_errors)
    assert phases.index("Shadow") < phases.index("Canary") < phases.index("Promoted")
    # shadow: the candidate answers no client; the canary step: its share of answers is about its weight
    shadow = [t for t, p, _, started, _ in watcher.seen if p == "Shadow" and started]
    step = [(t, w) for t, p, _, started, w in watcher.seen if p == "Canary" and started]
    assert shadow and step
    in_shadow = [rev for t, rev in answers if shadow[0] <= t <= shadow[-1]]
    assert in_shadow and new not in in_shadow
    weight = step[0][1]
    in_step = [rev for t, rev in answers if step[0][0] <= t <= step[-1][0]]
    share = 100 * sum(rev == new for rev in in_step) / len(in_step)
    print(f"canary step at weight {weight}%: the candidate answered {share:.1f}% of {len(in_step)} requests")
    assert len(in_step) >= 50 and abs(share - weight) <= 10
    crit = {c["name"]: c for c in md["status"]["rollout"]["criteria"]}
    assert {c["verdict"] for c in crit.values()} == {"Passed"}
    print("criteria: " + ", ".join(f"{n} {c['observed']} (threshold {c['threshold']})" for n, c in crit.items()))
    # every latency verdict was reached over at least the requests its quantile needs on each side
    assert all(n >= (req or 0) for _, _, n, req, v in watcher.latency if v != "Pending")
    wanted = {"VerifiedShadow", "VerifiedCanary", "VerifiedPromoting", "VerifiedPromoted"}
    deadline = time.monotonic() + 30  # Events are posted after the status they explain
    while not wanted <= (reasons := _event_reasons()):
        assert time.monotonic() < deadline, reasons
        time.sleep(1)
    assert demo.kjson("get", "deployment", f"{demo.NAME}-canary", "-n", demo.NS)["spec"]["replicas"] == 0


def test_a_bad_revision_is_caught_in_shadow_and_rolled_back_by_itself(canary: ModuleType) -> None:
    before = _md(demo.NAME)
    stable = before["status"]["servingRevision"]

    def rolled_back(md: dict[str, Any]) -> dict[str, Any] | None:
        ro = (md.get("status") or {}).get("rollout") or {}
        stalled = _conditions(md).get("Stalled", {})
        ok = ro.get("phase") == "RolledBack" and ro.get("candidate") != stable and stalled.get("status") == "True"
        return md if ok else None

    uri = before["spec"]["model"]["uri"].rsplit("/", 1)[0] + "/" + OTHER_MODEL
    change = [{"op": "replace", "path": "/spec/model/uri", "value": uri}]
    md, loops, watcher, elapsed = _run_with_load(change, rolled_back)
    errors = [e for loop in loops for e in loop.errors]
    answers = [rev for loop in loops for _, rev in loop.answers]
    print(f"bad revision: apply -> rolled back {elapsed:.1f} s; {len(answers)} answers, {len(errors)} failed")
    assert errors == [], errors[:10]
    assert set(answers) == {stable}  # the stable revision answered every request
    st = md["status"]
    assert st["servingRevision"] == stable and st["rollout"]["stable"] == stable
    assert "Canary" not in [p for _, p, *_ in watcher.seen]  # caught during shadow
    stalled = _conditions(md)["Stalled"]
    assert stalled["reason"] == "AnalysisFailed" and "Agreement" in stalled["message"]
    agreement = next(c for c in st["rollout"]["criteria"] if c["name"] == "Agreement")
    assert agreement["verdict"] == "Failed" and agreement["observed"] < 0.99
    print(f"rollback: {stalled['message']}")
    demo_dep = demo.kjson("get", "deployment", f"{demo.NAME}-canary", "-n", demo.NS)
    assert demo_dep["spec"]["replicas"] == 0
