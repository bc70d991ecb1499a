"""Measurements: weight statistics, artifact sizes (raw and gzip -9), TFLite inference, latency and throughput.

Inference runs on the LiteRT interpreter (``ai_edge_litert``), the same runtime the server uses.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptimizeError
from .tfenv import quiet_native_stderr

Array = np.ndarray[Any, Any]

_BOOKKEEPING = re.compile(r"(_min|_max|optimizer_step|pruning_step|mask|threshold)(:\d+)?$")


@dataclass(frozen=True)
class WeightStats:
    params: int
    nonzero: int
    complexity: float


def weight_stats(arrays: Iterable[Array]) -> WeightStats:
    """Parameter count, non-zero parameters and the complexity C = sum of w^2 (float64 accumulation)."""
    params = nonzero = 0
    complexity = 0.0
    for w in arrays:
        a = np.asarray(w)
        if a.dtype.kind not in "fiu":
            continue
        params += int(a.size)
        nonzero += int(np.count_nonzero(a))
        complexity += float(np.sum(np.square(a.astype(np.float64))))
    return WeightStats(params=params, nonzero=nonzero, complexity=complexity)


def keras_weight_stats(model: Any) -> WeightStats:
    """Weight statistics of a tf-keras model, without quantization/pruning bookkeeping variables."""
    arrays = [v.numpy() for v in model.weights if not _BOOKKEEPING.search(v.name)]
    return weight_stats(arrays)


def variables_weight_stats(variables: Iterable[Any]) -> WeightStats:
    """Weight statistics of tf.Variables (a plain SavedModel)."""
    return weight_stats(v.numpy() for v in variables)


def gzip_size(data: bytes) -> int:
    """Bytes after gzip -9 (mtime fixed, so the number is reproducible)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def tar_bytes(directory: Path) -> bytes:
    """A deterministic tar of a directory (sorted names, zero times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def path_sizes(path: Path) -> tuple[int, int]:
    """(raw bytes, gzip -9 bytes) of a file, or of a directory (sum of files; gzip of a deterministic tar)."""
    if path.is_dir():
        raw = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return raw, gzip_size(tar_bytes(path))
    data = path.read_bytes()
    return len(data), gzip_size(data)


def interpreter(content: bytes, threads: int = 1) -> Any:
    """A LiteRT interpreter for a flatbuffer, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        it = Interpreter(model_content=content, num_threads=threads)
        it.allocate_tensors()
    return it


def tflite_io(content: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input details, output details) of a one-input, one-output TFLite model."""
    it = interpreter(content)
    inputs, outputs = it.get_input_details(), it.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise OptimizeError(
            f"the TFLite model has {len(inputs)} inputs and {len(outputs)} outputs; "
            "the optimizer handles models with one input and one output"
        )
    return dict(inputs[0]), dict(outputs[0])


def quantize_input(x: Array, detail: dict[str, Any]) -> Array:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    if scale == 0:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero)
    return np.asarray(np.clip(q, info.min, info.max), dtype=dtype)


def _dequantize_output(y: Array, detail: dict[str, Any]) -> Array:
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    if scale == 0:
        return y.astype(np.float32)
    return np.asarray((y.astype(np.float32) - zero) * scale, dtype=np.float32)


class Runner:
    """Runs a TFLite model on float inputs (quantizing and dequantizing integer I/O), with a fixed batch size."""

    def __init__(self, content: bytes, batch_size: int = 1, threads: int = 1) -> None:
        self.content = content
        self.threads = threads
        self.interpreter = interpreter(content, threads)
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise OptimizeError(
                f"the TFLite model has {len(inp)} inputs and {len(out)} outputs; "
                "the optimizer handles models with one input and one output"
            )
        self.input, self.output = dict(inp[0]), dict(out[0])
        self.batch_size = 1
        if batch_size != 1:
            self.batch_size = self._resize(batch_size)

    def _resize(self, batch_size: int) -> int:
        shape = list(self.input["shape"])
        if not shape or shape[0] == batch_size:
            return int(shape[0]) if shape else 1
        try:
            with quiet_native_stderr():
                self.interpreter.resize_tensor_input(self.input["index"], [batch_size, *shape[1:]], strict=True)
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError):
            self.interpreter = interpreter(self.content, self.threads)
            return 1
        self.input = dict(self.interpreter.get_input_details()[0])
        self.output = dict(self.interpreter.get_output_details()[0])
        return batch_size

    def __call__(self, x: Array) -> Array:
        """Outputs for a whole array, in batches (the last one padded)."""
        b = self.batch_size
        out: list[Array] = []
        for start in range(0, len(x), b):
            chunk = x[start : start + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)], axis=0)
            self.interpreter.set_tensor(self.input["index"], quantize_input(chunk, self.input))
            self.interpreter.invoke()
            out.append(_dequantize_output(self.interpreter.get_tensor(self.output["index"]), self.output)[:n])
        if not out:
            return np.zeros((0, *self.output["shape"][1:]), dtype=np.float32)
        return np.concatenate(out, axis=0)


@dataclass(frozen=True)
class Speed:
    p50_ms: float
    p95_ms: float
    throughput_per_s: float | None
    runs: int


def speed(
    content: bytes,
    sample: Array,
    *,
    threads: int = 1,
    batch_size: int = 32,
    min_runs: int = 20,
    max_runs: int = 300,
    max_seconds: float = 1.5,
) -> Speed:
    """Single-sample latency (set input, invoke, read output) and batch throughput, after a warm-up."""
    runner = Runner(content, batch_size=1, threads=threads)
    it, inp, out = runner.interpreter, runner.input, runner.output
    x = quantize_input(sample[:1], inp)
    for _ in range(5):
        it.set_tensor(inp["index"], x)
        it.invoke()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        it.set_tensor(inp["index"], x)
        it.invoke()
        it.get_tensor(out["index"])
        times.append((time.perf_counter_ns() - t0) / 1e6)
    p50, p95 = (float(v) for v in np.percentile(times, [50, 95]))
    throughput: float | None = None
    batch = Runner(content, batch_size=batch_size, threads=threads)
    if batch.batch_size == batch_size:
        xb = quantize_input(np.repeat(sample[:1], batch_size, axis=0), batch.input)
        bit = batch.interpreter
        bit.set_tensor(batch.input["index"], xb)
        bit.invoke()
        n = 0
        begin = time.perf_counter()
        deadline = begin + max_seconds / 2
        while n < 3 or (time.perf_counter() < deadline and n < max_runs):
            bit.set_tensor(batch.input["index"], xb)
            bit.invoke()
            bit.get_tensor(batch.output["index"])
            n += 1
        throughput = n * batch_size / (time.perf_counter() - begin)
    return Speed(p50_ms=p50, p95_ms=p95, throughput_per_s=throughput, runs=len(times))
