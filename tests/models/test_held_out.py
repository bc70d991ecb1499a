"""Held-out models through the whole local path: `modelship optimize --spec` (a fresh process, as the Job runs it)
-> `modelship serve` (a fresh process) -> KServe's own REST client over HTTP, Open Inference Protocol v2 (binary
tensors) for the whole evaluation set and TF Serving v1 JSON for a few rows.

The gate's figures are checked against the test's own evaluation: the metric the report says the shipped artifact
scores equals the metric computed here from the served answers, and the report's baseline equals the original
model's metric computed here with tf-keras."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from modelship.fetch import sha256_path

from .zoo import CASES, Case, metric

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64
"""Rows per v2 request (a model with a fixed batch size gets exactly that many)."""
V1_ROWS = 8


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_")}
    env["PYTHONPATH"] = f"{REPO / 'operator'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Optimized:
    case: Case
    report: dict[str, Any]
    artifact: Path
    seconds: float


@pytest.fixture(scope="module", params=sorted(CASES))
def optimized(request: pytest.FixtureRequest, zoo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Optimized:
    from modelship.optimize import tfenv

    keras = tfenv.load().keras
    keras.utils.set_random_seed(0)
    case = CASES[request.param](zoo_root, keras)
    work = tmp_path_factory.mktemp(case.name)
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(case.spec))
    out = work / "out"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "modelship", "optimize", "--spec", str(spec), "--pvc-root", str(zoo_root),
         "--out", str(out), "--latency-seconds", "0.05", "--termination-log", str(work / "summary")],
        capture_output=True, text=True, env=_env(), timeout=900, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["summary"].get("artifact"), report["summary"]["message"]
    return Optimized(case, report, out / report["summary"]["artifact"], seconds)


@dataclass
class Server:
    url: str
    name: str
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def served(optimized: Optimized) -> Iterator[Server]:
    port = _free_port()
    name = optimized.case.name
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelship", "serve", "--model", str(optimized.artifact), "--name", name,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "1", "--drain-seconds", "0"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)
    try:
        yield Server(url, name, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32"}


async def _v2_predict(server: Server, inputs: dict[str, Any]) -> dict[str, Any]:
    """Every output for every row, through kserve's InferenceRESTClient (v2, binary tensors), in requests of the
    batch the server's metadata allows."""
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    meta = httpx.get(f"{server.url}/v2/models/{server.name}", timeout=10).json()
    fixed = {int(i["shape"][0]) for i in meta["inputs"] if i["shape"] and int(i["shape"][0]) > 0}
    step = min(fixed) if fixed else CHUNK
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    parts: dict[str, list[Any]] = {}
    try:
        n = len(next(iter(inputs.values())))
        for start in range(0, n, step):
            infer_inputs = []
            for name, values in inputs.items():
                rows = np.ascontiguousarray(values[start : start + step])
                item = InferInput(name=name, shape=list(rows.shape), datatype=_DATATYPES[rows.dtype])
                item.set_data_from_numpy(rows, binary_data=True)
                infer_inputs.append(item)
            res = await client.infer(server.url, InferRequest(model_name=server.name, infer_inputs=infer_inputs),
                                     model_name=server.name)  # fmt: skip
            for out in res.outputs:
                parts.setdefault(out.name, []).append(out.as_numpy())
    finally:
        await client.close()
    return {name: np.concatenate(p) for name, p in parts.items()}


async def _v1_predict(server: Server, inputs: dict[str, Any], rows: int) -> list[Any]:
    """TF Serving REST row format through kserve's client (v1): one instance per row, one request per row."""
    from kserve import InferenceRESTClient, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=60))
    answers = []
    try:
        for i in range(rows):
            instance: Any = {k: v[i].tolist() for k, v in inputs.items()}
            if len(inputs) == 1:
                instance = next(iter(instance.values()))
            res = await client.infer(server.url, {"instances": [instance]}, model_name=server.name)
            answers.append(res["predictions"][0])
    finally:
        await client.close()
    return answers


def test_gate_figures_match_the_served_model(optimized: Optimized, served: Server) -> None:
    case, s = optimized.case, optimized.report["summary"]
    assert s["ok"] and s["gate"] == "Passed" and s["decision"] == "Optimized", s
    assert s["artifactDigest"] == sha256_path(optimized.artifact)
    outputs = asyncio.run(_v2_predict(served, case.inputs))
    assert len(outputs) == 1, outputs.keys()  # every held-out model has one output
    served_metric = metric(case.metric, case.y, next(iter(outputs.values())))
    print(
        f"\n{case.name:<17} {case.spec['spec']['model']['format']:<10} {s['candidate']:<12} "
        f"{case.metric} keras {case.keras_metric:.4f} | report baseline {s['baseline']:.4f}, shipped {s['value']:.4f} "
        f"| served {served_metric:.4f} | {s.get('compressionRatio')}x smaller | optimize {optimized.seconds:.0f}s"
    )
    assert s["baseline"] == pytest.approx(case.keras_metric, rel=1e-5, abs=1e-7)
    assert served_metric == pytest.approx(s["value"], rel=1e-5, abs=1e-7)
    drop = case.keras_metric - served_metric if case.metric == "accuracy" else served_metric - case.keras_metric
    if optimized.report["gate"]["dropType"] == "relative":
        drop /= abs(case.keras_metric)
    assert drop <= optimized.report["gate"]["maxDrop"] + 1e-9


def test_tf_serving_rest_answers_like_v2(optimized: Optimized, served: Server) -> None:
    inputs = {k: v[:V1_ROWS] for k, v in optimized.case.inputs.items()}
    v2 = next(iter(asyncio.run(_v2_predict(served, inputs)).values()))
    v1 = np.asarray(asyncio.run(_v1_predict(served, inputs, V1_ROWS)), dtype=np.float32)
    np.testing.assert_allclose(v1.reshape(v2.shape), v2, rtol=1e-6, atol=1e-7)
