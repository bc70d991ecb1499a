"""One arithmetic for the accuracy gate and for production: modelship.numerics against LiteRT's own kernels, and
the optimizer's evaluation path against the server's request path on the same tensors (identical bytes into
the interpreter, identical outputs)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelship import numerics
from modelship.optimize.measure import Runner
from modelship.serve import nativejson, nativequant
from modelship.serve.model import load_model

from .conftest import Digits
from .fakes import ServerThread

pytestmark = pytest.mark.slow


def _tie_values(scale: float, lo: float, hi: float) -> np.ndarray:
    """Float32 values in [lo, hi] that are exact ties both ways the kernels could compute them: x / scale and
    x * (1 / scale) land on k + 0.5. Half to even, half away from zero and the two products disagree on them."""
    s = np.float32(scale)
    inv = np.float32(1.0) / s
    ks = np.arange(np.floor(lo / scale) - 1, np.ceil(hi / scale) + 1)
    by_div = ((ks + 0.5).astype(np.float32) * s).astype(np.float32)
    by_mul = ((ks + 0.5).astype(np.float32) / inv).astype(np.float32)
    x = np.concatenate([by_div[(by_div / s) == ks + 0.5], by_mul[(by_mul * inv) == ks + 0.5]])
    return x[(x >= lo) & (x <= hi)]


def _op_tensors(path: Path, op_name: str) -> tuple[Any, int, int, dict[str, Any]]:
    """An interpreter keeping every intermediate tensor, and the (input, output) tensor of the model's first
    ``op_name`` op with the details of its quantized side."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        it = numerics.interpreter_class()(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    op = next(o for o in it._get_ops_details() if o["op_name"] == op_name)
    src, dst = int(op["inputs"][0]), int(op["outputs"][0])
    quantized = dst if op_name == "QUANTIZE" else src
    detail = next(t for t in it.get_tensor_details() if t["index"] == quantized)
    return it, src, dst, detail


def test_quantize_and_dequantize_match_litert_kernels(digits: Digits) -> None:
    """The float-I/O int8 model quantizes its input with LiteRT's QUANTIZE kernel and dequantizes its output
    with DEQUANTIZE: numerics must produce the same integers and floats, ties included."""
    path = digits.path("int8")
    it, src, dst, detail = _op_tensors(path, "QUANTIZE")
    scale, zp = detail["quantization"]
    ties = _tie_values(scale, -0.5, 1.5)
    assert len(ties) > 100
    rng = np.random.default_rng(0)
    x = np.concatenate([ties, rng.uniform(-0.5, 1.5, 4096).astype(np.float32), [-9.0, 9.0]]).astype(np.float32)
    x = np.concatenate([x, np.zeros(-len(x) % 64, np.float32)]).reshape(-1, 8, 8, 1)
    kernel = []
    for row in x:
        it.set_tensor(src, row[None])
        it.invoke()
        kernel.append(it.get_tensor(dst)[0].copy())
    ours = numerics.quantize(x, scale, zp, detail["dtype"])
    np.testing.assert_array_equal(ours, np.stack(kernel))
    # the server's rule before this module (x / scale, half away from zero) disagrees with the kernel on ties
    v = x / np.float32(scale)
    away = np.clip(np.copysign(np.floor(np.abs(v.astype(np.float64)) + 0.5), v) + zp, -128, 127)
    assert np.any(away != ours)

    it, src, dst, detail = _op_tensors(path, "DEQUANTIZE")
    scale, zp = detail["quantization"]
    seen = 0
    for row in x[:: max(1, len(x) // 64)]:
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        q, y = it.get_tensor(src), it.get_tensor(dst)
        np.testing.assert_array_equal(numerics.dequantize(q, scale, zp), y)
        seen += q.size
    assert seen > 100


class Feeds:
    """What the input tensors of interpreters made through numerics hold when ``invoke()`` runs, recorded under the
    current path's name (the optimizer sets tensors, the server writes into them: both are seen)."""

    def __init__(self) -> None:
        self.path = ""
        self.by_path: dict[str, list[tuple[int, np.ndarray]]] = {}

    def record(self, path: str) -> None:
        self.path = path

    def rows(self, path: str, index: int) -> np.ndarray:
        chunks = [v for i, v in self.by_path.get(path, []) if i == index]
        assert chunks, f"nothing was fed on the {path} path"
        return np.concatenate(chunks)


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Feeds]:
    feeds = Feeds()
    base = numerics.interpreter_class()

    class Recording(base):  # type: ignore[misc, valid-type]
        def invoke(self) -> None:
            if feeds.path:
                for d in self.get_input_details():
                    feeds.by_path.setdefault(feeds.path, []).append((d["index"], self.get_tensor(d["index"])))
            super().invoke()

    monkeypatch.setattr(numerics, "interpreter_class", lambda: Recording)
    yield feeds
    feeds.record("")


@pytest.mark.parametrize("quantize_path", ["native", "numpy"])
def test_optimizer_and_server_feed_identical_bytes_and_get_identical_outputs(
    digits: Digits, fed: Feeds, quantize_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accuracy gate (optimize.measure.Runner, as the optimizer's evaluation runs it) and a request to the
    server (HTTP, binary FP32 tensors) on the same int8-I/O model and the same float inputs, ties included; the
    server quantizing with libmsjson (native) and without it (numpy, as with ``$MODELSHIP_JSON_LIB=none``)."""
    native = nativequant.QUANTIZE
    used: list[int] = []
    if quantize_path == "numpy":
        monkeypatch.setattr(nativequant, "QUANTIZE", None)
    elif native is None:
        if os.environ.get("CI"):
            pytest.fail(f"libmsjson is missing in CI: {nativejson.WHY_NOT}")
        pytest.skip(f"libmsjson is not built: {nativejson.WHY_NOT}")
    else:

        def counted(*args: Any) -> int:
            used.append(int(args[1]))
            return int(native(*args))

        monkeypatch.setattr(nativequant, "QUANTIZE", counted)
    path = digits.path("int8_io")
    content = path.read_bytes()
    probe = numerics.new_interpreter(content)
    (inp,) = probe.get_input_details()
    scale, _ = inp["quantization"]
    ties = _tie_values(scale, 0.0, 1.0)
    x = digits.x[:35].copy()
    x.reshape(len(x), -1)[:, : min(64, len(ties))] = ties[:64]  # every image carries tie pixels
    x = x.astype(np.float32)
    n = len(x)

    fed.record("optimizer")
    y_opt = Runner(content, batch_size=min(64, n))(x)
    fed.record("")

    with ServerThread(load_model(path, name="digits"), workers=1, max_batch_size=8) as s:
        fed.record("server")
        # requests of 8 rows are written straight into the input tensor; the last 3 are padded to a bucket of 4
        answers = [_infer_binary(s.url, x[i : i + 8]) for i in range(0, n, 8)]
        fed.record("")
    y_srv = np.concatenate(answers)
    opt_rows, srv_rows = fed.rows("optimizer", inp["index"]), fed.rows("server", inp["index"])
    assert opt_rows.dtype == srv_rows.dtype == np.int8
    # the optimizer pads its last batch by repeating the last row, the server with zeros: compare real rows
    assert len(srv_rows) == n + 1 and not srv_rows[n:].any()
    assert opt_rows[:n].tobytes() == srv_rows[:n].tobytes()
    assert opt_rows[:n].tobytes() == numerics.quantize(x, scale, inp["quantization"][1], np.int8).tobytes()
    np.testing.assert_array_equal(y_opt, y_srv)
    # every request's rows went through the path under test (5 requests: 4 of 8 rows, 1 of 3)
    assert (sum(used), len(used)) == ((n * x[0].size, 5) if quantize_path == "native" else (0, 0))


def _infer_binary(url: str, x: np.ndarray) -> np.ndarray:
    head = json.dumps(
        {
            "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()  # fmt: skip
    r = httpx.post(
        f"{url}/v2/models/digits/infer",
        content=head + x.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    hl = int(r.headers["inference-header-content-length"])
    return np.frombuffer(r.content[hl:], dtype="<f4").reshape(len(x), -1)
