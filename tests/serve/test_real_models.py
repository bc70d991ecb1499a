"""Real TFLite models from the converter (digits CNN: float32, int8, int8 I/O, float16, dynamic range) served
over both protocols; every answer must equal the interpreter's own output for the same rows."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelship import numerics
from modelship.serve.model import load_model

from .conftest import Digits
from .fakes import ServerThread

pytestmark = pytest.mark.slow

KINDS = ["float32", "int8", "int8_io", "float16", "dynamic"]
N = 37  # more than the largest batch bucket (8): exercises chunking and padding


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    """The interpreter's own answer, one row at a time (int8 I/O quantized with the tensors' own parameters and
    LiteRT's rounding, which tests/serve/test_numerics.py checks against LiteRT's QUANTIZE kernel)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for row in x:
        v = row[None]
        if inp["dtype"] == np.int8:
            scale, zp = inp["quantization"]
            v = numerics.quantize(v, scale, zp, np.int8)
        it.set_tensor(inp["index"], v)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            scale, zp = out["quantization"]
            y = numerics.dequantize(y, scale, zp)
        rows.append(y[0].astype(np.float32))
    return np.stack(rows)


@pytest.fixture(scope="module", params=KINDS)
def served(request: pytest.FixtureRequest, digits: Digits) -> Any:
    path = digits.path(request.param)
    with ServerThread(load_model(path, name="digits"), workers=2, max_batch_size=8) as s:
        yield request.param, s, reference(path, digits.x[:N])


def f32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def test_metadata_comes_from_the_model(served: Any) -> None:
    _, s, _ = served
    meta = httpx.get(f"{s.url}/v2/models/digits").json()
    assert meta["platform"] == "tflite"
    # int8 I/O is quantized for the caller: the API takes and returns floats
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    sig = httpx.get(f"{s.url}/v1/models/digits/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert sig["serving_default"]["inputs"]["image"]["name"] == "serving_default_image:0"


def test_v1_row_format(served: Any, digits: Digits) -> None:
    _, s, ref = served
    r = httpx.post(f"{s.url}/v1/models/digits:predict", json={"instances": digits.x[:N].tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(f32(r.json()["predictions"]), ref)


def test_v1_columnar_format(served: Any, digits: Digits) -> None:
    _, s, ref = served
    r = httpx.post(f"{s.url}/v1/models/digits:predict", json={"inputs": {"image": digits.x[:N].tolist()}}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(f32(r.json()["outputs"]), ref)


def test_v2_json(served: Any, digits: Digits) -> None:
    _, s, ref = served
    x = digits.x[:N]
    body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = httpx.post(f"{s.url}/v2/models/digits/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "probs" and out["shape"] == [N, 10] and out["datatype"] == "FP32"
    np.testing.assert_array_equal(f32(out["data"]).reshape(N, 10), ref)


def test_v2_binary(served: Any, digits: Digits) -> None:
    _, s, ref = served
    x = digits.x[:N].astype("<f4")
    head = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": list(x.shape), "datatype": "FP32",
                 "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    r = httpx.post(
        f"{s.url}/v2/models/digits/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], dtype="<f4").reshape(N, 10), ref)


def test_int8_io_model_also_accepts_raw_int8_input(digits: Digits) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = digits.path("int8_io")
    scale, zp = Interpreter(model_path=str(path)).get_input_details()[0]["quantization"]
    q = numerics.quantize(digits.x[:N], scale, zp, np.int8)
    body = {"inputs": [{"name": "image", "shape": list(q.shape), "datatype": "INT8", "data": q.ravel().tolist()}]}
    with ServerThread(load_model(path, name="digits")) as s:
        r = httpx.post(f"{s.url}/v2/models/digits/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(f32(r.json()["outputs"][0]["data"]).reshape(N, 10), reference(path, digits.x[:N]))


def test_concurrent_callers_each_get_their_own_rows(served: Any, digits: Digits) -> None:
    _, s, ref = served

    def call(i: int) -> tuple[int, np.ndarray]:
        x = digits.x[i : i + 1]
        with httpx.Client(base_url=s.url, timeout=30) as c:
            outs = []
            for _ in range(5):
                body = {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}  # fmt: skip
                r = c.post("/v2/models/digits/infer", json=body)
                assert r.status_code == 200, r.text
                outs.append(f32(r.json()["outputs"][0]["data"]))
        return i, np.stack(outs)

    with ThreadPoolExecutor(N) as pool:
        for i, outs in pool.map(call, range(N)):
            for o in outs:
                np.testing.assert_array_equal(o, ref[i])


def test_the_served_model_is_the_trained_one(served: Any, digits: Digits) -> None:
    _, s, _ = served
    x = digits.x
    r = httpx.post(f"{s.url}/v1/models/digits:predict", json={"instances": x.tolist()}, timeout=60)
    pred = f32(r.json()["predictions"]).argmax(axis=1)
    y = np.load(digits.dir / "y_test.npy")
    assert (pred == y).mean() > 0.9


def test_thread_safe_predict_api(digits: Digits) -> None:
    m = load_model(digits.path("int8_io"))
    assert m.name == "digits_int8_io" and m.version == "1" and m.batchable
    ref = reference(digits.path("int8_io"), digits.x[:N])
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: m.predict({"image": digits.x[i : i + 3]})["probs"], range(0, 30, 3)))
    np.testing.assert_array_equal(np.concatenate(outs), ref[:30])


def test_fixed_batch_model_is_served_without_batching(digits: Digits) -> None:
    path = digits.dir / "digits_fixed.tflite"
    ref = reference(path, digits.x[:12])
    with ServerThread(load_model(path, name="fixed"), workers=2, max_batch_size=8) as s:
        meta = httpx.get(f"{s.url}/v2/models/fixed").json()
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8, 1]}]

        def call(i: int) -> np.ndarray:
            body = {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32",
                                "data": digits.x[i].ravel().tolist()}]}  # fmt: skip
            r = httpx.post(f"{s.url}/v2/models/fixed/infer", json=body, timeout=30)
            assert r.status_code == 200, r.text
            return f32(r.json()["outputs"][0]["data"])

        with ThreadPoolExecutor(12) as pool:
            for i, out in enumerate(pool.map(call, range(12))):
                np.testing.assert_array_equal(out, ref[i])
        two = {"instances": digits.x[:2].tolist()}
        r = httpx.post(f"{s.url}/v1/models/fixed:predict", json=two, timeout=30)
        assert r.status_code == 400 and "[1, 8, 8, 1]" in r.json()["error"]


def test_dynamic_non_batch_dimension_is_resized_per_request(digits: Digits) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = digits.dir / "sequence.tflite"
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((1 + i % 3, 2 + (i * 5) % 7, 3)).astype(np.float32) for i in range(24)]
    it = Interpreter(model_path=str(path))
    expected = []
    for x in seqs:
        it.resize_tensor_input(0, list(x.shape))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        expected.append(it.get_tensor(it.get_output_details()[0]["index"]))
    with ServerThread(load_model(path), workers=2, max_batch_size=4) as s:
        assert httpx.get(f"{s.url}/v2/models/sequence").json()["inputs"][0]["shape"] == [-1, -1, 3]

        def call(i: int) -> np.ndarray:
            r = httpx.post(f"{s.url}/v1/models/sequence:predict", json={"instances": seqs[i].tolist()}, timeout=30)
            assert r.status_code == 200, r.text
            return f32(r.json()["predictions"])

        with ThreadPoolExecutor(24) as pool:
            for i, out in enumerate(pool.map(call, range(24))):
                np.testing.assert_allclose(out, expected[i], rtol=1e-6, atol=1e-6)
