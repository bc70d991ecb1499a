"""Measurements: weight statistics, artifact sizes (raw and gzip -9), TFLite inference, latency and throughput.

Inference runs on the LiteRT interpreter (``ai_edge_litert``) through :mod:`modelship.numerics`, the same runtime and
the same quantization arithmetic the server uses.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..numerics import dequantize_output, new_interpreter, quantize_input, run
from .errors import OptimizeError
from .signature import Signature, TensorInfo, bind, count, rows
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
    """A LiteRT interpreter for a flatbuffer, tensors allocated (native banners silenced)."""
    with quiet_native_stderr():
        return new_interpreter(content, threads)


def signature_details(it: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """Named (input, output) details: the default signature's keys, as the server names them (their tensor
    indices are the interpreter's), else the tensor names without the ``serving_default_`` prefix and ``:N``."""
    sigs = it.get_signature_list()
    if sigs:
        key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
        runner = it.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        return (
            [(n, dict(ins[n])) for n in sigs[key]["inputs"]],
            [(n, dict(outs[n])) for n in sigs[key]["outputs"]],
        )
    return (
        [(_clean(d["name"]), dict(d)) for d in it.get_input_details()],
        [(_clean(d["name"]), dict(d)) for d in it.get_output_details()],
    )


def _clean(tensor_name: str) -> str:
    return re.sub(r"^serving_default_", "", re.sub(r":\d+$", "", tensor_name))


def _tensor_info(name: str, d: dict[str, Any]) -> TensorInfo:
    dims = d.get("shape_signature")
    dims = dims if dims is not None and len(dims) else d["shape"]
    return TensorInfo(name, tuple(None if int(v) < 0 else int(v) for v in dims), np.dtype(d["dtype"]).name)


def tflite_signature(content: bytes) -> Signature:
    """The named inputs and outputs of a TFLite model."""
    ins, outs = signature_details(interpreter(content))
    return Signature(
        inputs=tuple(_tensor_info(n, d) for n, d in ins), outputs=tuple(_tensor_info(n, d) for n, d in outs)
    )


class Runner:
    """Runs a TFLite model on float inputs (quantizing and dequantizing integer I/O), with a fixed batch size.

    Inputs and outputs are matched by their signature names (TFLite does not keep the Keras order)."""

    def __init__(self, content: bytes, batch_size: int = 1, threads: int = 1) -> None:
        self.content = content
        self.threads = threads
        self.interpreter = interpreter(content, threads)
        self._read_details()
        self.batch_size = 1
        if batch_size != 1:
            self.batch_size = self._resize(batch_size)

    def _read_details(self) -> None:
        ins, outs = signature_details(self.interpreter)
        self.inputs: dict[str, dict[str, Any]] = dict(ins)
        self.outputs: dict[str, dict[str, Any]] = dict(outs)

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def _resize(self, batch_size: int) -> int:
        shapes = [list(d["shape"]) for d in self.inputs.values()]
        if any(not shape for shape in shapes):
            return 1
        if all(shape[0] == batch_size for shape in shapes):
            return batch_size
        try:
            with quiet_native_stderr():
                for d, shape in zip(self.inputs.values(), shapes, strict=True):
                    self.interpreter.resize_tensor_input(d["index"], [batch_size, *shape[1:]], strict=True)
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError):
            self.interpreter = interpreter(self.content, self.threads)
            self._read_details()
            return 1
        self._read_details()
        return batch_size

    def run(self, features: Mapping[str, Array]) -> dict[str, Array]:
        """Every output for whole arrays of every input, in batches (the last one padded)."""
        bound = bind(features, self.input_names, "the TFLite model")
        b = self.batch_size
        total = count(bound)
        out: dict[str, list[Array]] = {name: [] for name in self.outputs}
        for start in range(0, total, b):
            chunk = rows(bound, slice(start, start + b))
            n = count(chunk)
            feeds: dict[int, Array] = {}
            for name, d in self.inputs.items():
                x = chunk[name]
                if n < b:
                    x = np.concatenate([x, np.repeat(x[-1:], b - n, axis=0)], axis=0)
                feeds[d["index"]] = quantize_input(x, d)
            results = run(self.interpreter, feeds, [d["index"] for d in self.outputs.values()])
            for (name, d), y in zip(self.outputs.items(), results, strict=True):
                out[name].append(dequantize_output(y, d)[:n])
        if total == 0:
            return {name: np.zeros((0, *d["shape"][1:]), dtype=np.float32) for name, d in self.outputs.items()}
        return {name: np.concatenate(parts, axis=0) for name, parts in out.items()}

    def __call__(self, x: Array) -> Array:
        """The output of a one-input, one-output model for a whole array."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise OptimizeError(
                f"the TFLite model has {len(self.inputs)} inputs and {len(self.outputs)} outputs: use Runner.run"
            )
        return next(iter(self.run({self.input_names[0]: x}).values()))


@dataclass(frozen=True)
class Speed:
    p50_ms: float
    p95_ms: float
    throughput_per_s: float | None
    runs: int


def speed(
    content: bytes,
    sample: Mapping[str, Array],
    *,
    threads: int = 1,
    batch_size: int = 32,
    min_runs: int = 20,
    max_runs: int = 300,
    max_seconds: float = 1.5,
) -> Speed:
    """Single-sample latency (set every input, invoke, read every output) and batch throughput, after a warm-up."""
    runner = Runner(content, batch_size=1, threads=threads)
    it = runner.interpreter
    x = _feed(runner, sample, 1)
    outputs = [d["index"] for d in runner.outputs.values()]
    for _ in range(5):
        _invoke(it, x)
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        _invoke(it, x)
        for index in outputs:
            it.get_tensor(index)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    p50, p95 = (float(v) for v in np.percentile(times, [50, 95]))
    throughput: float | None = None
    batch = Runner(content, batch_size=batch_size, threads=threads)
    if batch.batch_size == batch_size:
        xb = _feed(batch, sample, batch_size)
        bit = batch.interpreter
        batch_outputs = [d["index"] for d in batch.outputs.values()]
        _invoke(bit, xb)
        n = 0
        begin = time.perf_counter()
        deadline = begin + max_seconds / 2
        while n < 3 or (time.perf_counter() < deadline and n < max_runs):
            _invoke(bit, xb)
            for index in batch_outputs:
                bit.get_tensor(index)
            n += 1
        throughput = n * batch_size / (time.perf_counter() - begin)
    return Speed(p50_ms=p50, p95_ms=p95, throughput_per_s=throughput, runs=len(times))


def _feed(runner: Runner, sample: Mapping[str, Array], batch_size: int) -> list[tuple[int, Array]]:
    """(tensor index, quantized rows): the sample's first row repeated to the batch size, for every input."""
    bound = bind(sample, runner.input_names, "the TFLite model")
    return [
        (d["index"], quantize_input(np.repeat(bound[name][:1], batch_size, axis=0), d))
        for name, d in runner.inputs.items()
    ]


def _invoke(it: Any, feed: list[tuple[int, Array]]) -> None:
    for index, x in feed:
        it.set_tensor(index, x)
    it.invoke()
