"""Shadow traffic over real HTTP on loopback: a stable server mirrors a share of its requests to a candidate
server, compares the answers, and exports the figures on its metrics port; its own clients never wait for the
candidate, nor fail because of it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelship.serve.comparison import compare
from modelship.serve.mirrorconfig import parse_config
from modelship.serve.model import Runner
from modelship.serve.tensors import Array

from .fakes import FakeModel, FakeRunner, ServerThread, W, wait_for

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0], [3.0, 1.0, -2.0, 0.25]]


class _Negated(FakeRunner):
    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return {"y": -(inputs["x"].astype(np.float32) @ W)}


class OtherModel(FakeModel):
    """Same signature, another function: y = -(x @ W), so the top-1 index differs on every row of X."""

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        return _Negated(self)


def v2(x: Any = X) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": list(np.shape(x)), "datatype": "FP32", "data": np.ravel(x).tolist()}]}


def metrics(server: ServerThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.metrics_url}/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def mirrored(server: ServerThread, outcome: str, candidate: str = "cand") -> float:
    key = ("modelship_mirror_requests_total", (("candidate", candidate), ("outcome", outcome)))
    return metrics(server).get(key, 0.0)


def rows(server: ServerThread, result: str, candidate: str = "cand") -> float:
    key = ("modelship_mirror_rows_total", (("candidate", candidate), ("result", result)))
    return metrics(server).get(key, 0.0)


def mirror_file(path: Path, url: str, percent: float, **extra: Any) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "percent": percent, "candidate": "cand", **extra}))
    tmp.replace(path)  # atomic, as the kubelet swaps a ConfigMap volume
    return path


def drained(stable: ServerThread) -> bool:
    assert stable.server is not None and stable.server.mirror is not None
    return stable.server.mirror.drain(10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_share_of_requests_is_mirrored_and_an_agreeing_candidate_agrees(
    tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loop == "uvloop":  # what `modelship serve` runs on
        import asyncio

        import uvloop

        monkeypatch.setattr(asyncio, "new_event_loop", uvloop.new_event_loop)
    with ServerThread(FakeModel("m"), revision="cand") as cand:
        cfg = mirror_file(tmp_path / "mirror.json", cand.url, 20)
        with ServerThread(FakeModel("m"), revision="stable", mirror_config=str(cfg)) as stable:
            with httpx.Client() as client:
                for _ in range(50):
                    r = client.post(f"{stable.url}/v2/models/m/infer", json=v2())
                    assert r.status_code == 200 and r.headers["x-modelship-revision"] == "stable"
            assert drained(stable)
            assert mirrored(stable, "compared") == 10  # exactly every fifth request
            assert rows(stable, "agree") == 10 * len(X) and rows(stable, "disagree") == 0
            m = metrics(stable)
            assert m[("modelship_mirror_percent", (("candidate", "cand"),))] == 20
            assert m[("modelship_mirror_candidate_duration_seconds_count", (("candidate", "cand"),))] == 10
        # the candidate answered the mirrored requests as ordinary ones, and names its own revision
        answered = metrics(cand)[("modelship_requests_total", (("code", "200"), ("model", "m"), ("protocol", "v2")))]
        assert answered == 10
        assert httpx.post(f"{cand.url}/v2/models/m/infer", json=v2()).headers["x-modelship-revision"] == "cand"


def test_a_candidate_that_answers_differently_disagrees_on_every_row_and_clients_see_only_the_stable(
    tmp_path: Path,
) -> None:
    with ServerThread(OtherModel("m")) as cand:
        cfg = mirror_file(tmp_path / "mirror.json", cand.url, 100)
        with ServerThread(FakeModel("m"), mirror_config=str(cfg)) as stable:
            for _ in range(5):
                r = httpx.post(f"{stable.url}/v2/models/m/infer", json=v2())
                got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(len(X), 3)
                np.testing.assert_array_equal(got, FakeModel.expected(X))
                r1 = httpx.post(f"{stable.url}/v1/models/m:predict", json={"instances": X})
                np.testing.assert_array_equal(np.asarray(r1.json()["predictions"], np.float32), FakeModel.expected(X))
            assert drained(stable)
            assert mirrored(stable, "compared") == 10  # v2 and v1 alike
            assert rows(stable, "disagree") == 10 * len(X) and rows(stable, "agree") == 0


def test_a_candidate_that_never_answers_delays_and_fails_no_client(tmp_path: Path) -> None:
    slow = FakeModel("m")
    slow.gate = threading.Event()  # the candidate's model blocks until the test lets it go
    with ServerThread(slow) as cand:
        cfg = mirror_file(tmp_path / "mirror.json", cand.url, 100, timeoutSeconds=30)
        with ServerThread(FakeModel("m"), mirror_config=str(cfg)) as stable:
            assert stable.server is not None and stable.server.mirror is not None
            stable.server.mirror.max_entries = 4  # a small bound, to see it reached
            with httpx.Client() as client:
                for _ in range(40):  # every one answered while the candidate has answered none
                    assert client.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
            assert mirrored(stable, "compared") == 0
            # four mirrors wait for the candidate, the other 36 were dropped
            assert mirrored(stable, "dropped") == 36
            slow.gate.set()
            assert drained(stable)
            assert mirrored(stable, "compared") == 4


def test_a_candidate_that_hangs_past_the_timeout_counts_as_failed(tmp_path: Path) -> None:
    slow = FakeModel("m")
    slow.gate = threading.Event()
    with ServerThread(slow) as cand:
        cfg = mirror_file(tmp_path / "mirror.json", cand.url, 100, timeoutSeconds=0.5)
        with ServerThread(FakeModel("m"), mirror_config=str(cfg)) as stable:
            for _ in range(3):
                assert httpx.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
            assert drained(stable)
            assert mirrored(stable, "failed") == 3 and mirrored(stable, "compared") == 0
            slow.gate.set()
            assert httpx.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
            assert drained(stable) and mirrored(stable, "compared") == 1  # a fresh connection


def test_an_unreachable_candidate_counts_as_failed(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = mirror_file(tmp_path / "mirror.json", dead, 50)
    with ServerThread(FakeModel("m"), mirror_config=str(cfg)) as stable:
        for _ in range(10):
            assert httpx.post(f"{stable.url}/v2/models/m/infer", json=v2()).status_code == 200
        assert drained(stable)
        assert mirrored(stable, "failed") == 5


def test_the_mirror_file_is_read_again_while_serving(tmp_path: Path) -> None:
    path = tmp_path / "mirror.json"
    with ServerThread(FakeModel("m")) as cand, ServerThread(FakeModel("m"), mirror_config=str(path)) as stable:
        assert stable.server is not None and stable.server.mirror is not None
        mirror = stable.server.mirror
        assert mirror.config is None  # no file yet: no mirroring
        httpx.post(f"{stable.url}/v2/models/m/infer", json=v2())
        mirror_file(path, cand.url, 100)
        wait_for(lambda: mirror.config is not None, 10, "the mirror file to be read")
        httpx.post(f"{stable.url}/v2/models/m/infer", json=v2())
        assert drained(stable) and mirrored(stable, "compared") == 1
        path.write_text("{not json")
        wait_for(lambda: mirror.config is None, 10, "a broken file to turn mirroring off")
        mirror_file(path, cand.url, 100)
        wait_for(lambda: mirror.config is not None, 10, "the fixed file")
        path.unlink()
        wait_for(lambda: mirror.config is None, 10, "a removed file to turn mirroring off")
        httpx.post(f"{stable.url}/v2/models/m/infer", json=v2())
        assert drained(stable) and mirrored(stable, "compared") == 1


def test_the_stable_server_mirrors_to_whatever_candidate_offers_at_its_url() -> None:
    """In a cluster the stable pods read the settings a candidate offers on its metrics port (through the
    candidate's Service): a candidate that comes is mirrored to within a second, one that goes is not."""
    with ServerThread(FakeModel("m")) as probe:
        offer_port = probe.server.metrics_port if probe.server else 0
    # nothing listens at the offer's address yet: no mirroring
    url = f"http://127.0.0.1:{offer_port}/mirror"
    with ServerThread(FakeModel("m"), mirror_config=url) as stable:
        assert stable.server is not None and stable.server.mirror is not None
        mirror = stable.server.mirror
        assert mirror.config is None
        offer = {"url": "", "percent": 100, "candidate": "cand", "comparison": "tolerance", "rtol": 0.0, "atol": 0.0}
        with ServerThread(OtherModel("m"), metrics_port=offer_port, mirror_offer="{}") as cand:
            assert cand.server is not None
            offer["url"] = cand.url
            cand.server.app.mirror_offer = json.dumps(offer).encode()
            assert httpx.get(f"{cand.metrics_url}/mirror").json() == offer
            wait_for(lambda: mirror.config is not None, 10, "the offer to be read")
            assert mirror.config is not None and mirror.config.comparison == "tolerance"
            httpx.post(f"{stable.url}/v2/models/m/infer", json=v2())
            assert drained(stable) and mirrored(stable, "compared") == 1 and rows(stable, "disagree") == len(X)
        wait_for(lambda: mirror.config is None, 10, "mirroring to stop once the candidate is gone")
    with ServerThread(FakeModel("m")) as plain:  # a server that offers nothing answers 404
        assert httpx.get(f"{plain.metrics_url}/mirror").status_code == 404


def test_large_bodies_are_not_mirrored(tmp_path: Path) -> None:
    with ServerThread(FakeModel("m")) as cand:
        cfg = mirror_file(tmp_path / "mirror.json", cand.url, 100)
        with ServerThread(FakeModel("m"), mirror_config=str(cfg)) as stable:
            big = np.ones((70000, 4), dtype=np.float32).tolist()  # > 1 MiB of JSON
            assert httpx.post(f"{stable.url}/v2/models/m/infer", json=v2(big), timeout=60).status_code == 200
            assert drained(stable)
            assert mirrored(stable, "skipped") == 1 and mirrored(stable, "compared") == 0


def _v2_answer(name: str, data: Any) -> bytes:
    arr = np.asarray(data)
    return json.dumps({"outputs": [{"name": name, "shape": list(arr.shape), "data": arr.ravel().tolist()}]}).encode()


@pytest.mark.parametrize(
    ("stable", "candidate", "comparison", "expected"),
    [
        # classifier rows: top-1 index
        (_v2_answer("p", [[0.1, 0.9], [0.8, 0.2]]), _v2_answer("p", [[0.3, 0.7], [0.4, 0.6]]), "auto", (1, 2)),
        # regression: within atol + rtol * |stable|
        (_v2_answer("y", [[1.0], [10.0]]), _v2_answer("y", [[1.04], [10.6]]), "auto", (1, 2)),
        (_v2_answer("y", [[1.0], [10.0]]), _v2_answer("y", [[1.04], [10.4]]), "tolerance", (2, 2)),
        # another shape, another output name, not JSON at all: every row disagrees
        (_v2_answer("y", [[1.0], [10.0]]), _v2_answer("y", [1.0, 10.0, 3.0]), "auto", (0, 2)),
        (_v2_answer("y", [[1.0], [10.0]]), _v2_answer("z", [[1.0], [10.0]]), "auto", (0, 2)),
        (_v2_answer("y", [[1.0], [10.0]]), b"<html>", "auto", (0, 2)),
        # large outputs take the numpy path: the same answers
        (_v2_answer("p", np.eye(2)[[0, 1] * 600]), _v2_answer("p", np.eye(2)[[0, 0] * 600]), "auto", (600, 1200)),
        (_v2_answer("p", np.eye(2)[[0, 1] * 600]), _v2_answer("p", np.eye(2)[[0, 1] * 600] * 2), "auto", (1200, 1200)),
        # v1 row format, plain and named
        (b'{"predictions": [[0.0, 1.0], [1.0, 0.0]]}', b'{"predictions": [[0.2, 0.8], [0.9, 0.1]]}', "top1", (2, 2)),
        (b'{"predictions": [{"a": 1.0}, {"a": 2.0}]}', b'{"predictions": [{"a": 1.0}, {"a": 3.0}]}', "auto", (1, 2)),
    ],
)
def test_compare_rows(stable: bytes, candidate: bytes, comparison: str, expected: tuple[int, int]) -> None:
    assert compare(stable, candidate, comparison, rtol=0.05, atol=0.01) == expected


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"url": "https://x:1", "percent": 5}, "http://host:port"),
        ({"url": "http://x:1/path", "percent": 5}, "http://host:port"),
        ({"url": "http://x:1", "percent": 500}, "percent"),
        ({"url": "http://x:1", "percent": 5, "comparison": "l2"}, "comparison"),
    ],
)
def test_a_bad_mirror_file_is_refused_with_the_reason(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_config(json.dumps(doc).encode())
    assert parse_config(b"") is None and parse_config(b'{"url": "http://x:1", "percent": 0}') is None
