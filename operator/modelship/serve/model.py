"""Served models: a TFLite flatbuffer (ai-edge-litert) or a SavedModel (TensorFlow, imported only then).

``load_model(path)`` inspects the model and returns a :class:`ServedModel` with its signature. The model
itself is not thread-safe; each worker thread asks for its own :class:`Runner` (``create_runner``) and
only that thread calls it. ``ServedModel.predict`` is a thread-safe convenience for callers outside the
server (an accuracy gate, a smoke test).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import numerics
from .errors import BadRequest
from .logs import native_stderr_to_log
from .nativequant import quantize
from .tensors import Array, Quantization, TensorSpec, datatype_of, from_model, to_model

log = logging.getLogger("modelship.serve.model")

#: models whose single-row invoke() is shorter than this have it timed on a sample of calls (numerics.InvokeMeter)
SAMPLED_INVOKE_S = 0.001


class Runner(ABC):
    """Runs batches on one worker thread. Inputs arrive in the model's own dtypes (already quantized)."""

    @abstractmethod
    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run a batch; every input shares the first dimension when the model is batchable."""

    #: seconds one warm single-row run takes (set by ``warmup``); None when unknown
    single_row_seconds: float | None = None
    #: CPU time spent inside the interpreter's ``invoke()`` by this runner (None: not measured)
    meter: numerics.InvokeMeter | None = None

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run every code path once so the first request does not pay for allocation."""

    def run_parts(
        self, model: ServedModel, parts: Sequence[Mapping[str, Array]], rows: Sequence[int]
    ) -> dict[str, Array]:
        """Run several requests' inputs (request dtypes, in order) as one batch; outputs in the model's dtypes.

        The default converts each part, concatenates and runs; a runner that can write straight into its
        input tensors overrides it.
        """
        if len(parts) == 1:
            return self.run(model.encode_inputs(parts[0]))
        encoded = [model.encode_inputs(p) for p in parts]
        return self.run({name: np.concatenate([e[name] for e in encoded]) for name in encoded[0]})


class ServedModel(ABC):
    """A loaded model and its signature, independent of protocol and transport."""

    platform: str = ""

    def __init__(
        self,
        name: str,
        version: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        batchable: bool,
        path: str,
    ) -> None:
        self.name = name
        self.version = version
        self.inputs: tuple[TensorSpec, ...] = tuple(inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(outputs)
        self.input_by_name: dict[str, TensorSpec] = {s.name: s for s in self.inputs}
        self.output_by_name: dict[str, TensorSpec] = {s.name: s for s in self.outputs}
        #: first dimension of every input and output is the batch; requests may be coalesced
        self.batchable = batchable
        self.path = path
        self.load_seconds = 0.0
        self._lock = threading.Lock()
        self._runner: Runner | None = None

    @abstractmethod
    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        """A runner for one worker thread, using ``threads`` intra-op threads."""

    def encode_inputs(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Request arrays (logical dtypes) -> model arrays (quantized where the model is int8)."""
        return {name: to_model(inputs[name], spec) for name, spec in self.input_by_name.items()}

    def decode_outputs(self, outputs: Mapping[str, Array]) -> dict[str, Array]:
        """Model arrays -> response arrays (dequantized)."""
        return {name: from_model(outputs[name], spec) for name, spec in self.output_by_name.items()}

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run one request synchronously (thread-safe, no batching). Inputs are keyed by input name."""
        missing = [n for n in self.input_by_name if n not in inputs]
        if missing:
            raise BadRequest(f"missing inputs {missing}")
        with self._lock:
            if self._runner is None:
                self._runner = self.create_runner(threads=1, max_batch_size=1)
            raw = self.encode_inputs({n: np.asarray(inputs[n]) for n in self.input_by_name})
            return self.decode_outputs(self._runner.run(raw))

    def close(self) -> None:
        """Release resources (runners are dropped with their worker threads)."""
        self._runner = None


# ---------------------------------------------------------------------------------------------
# TFLite


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to ``max_batch_size`` (and ``max_batch_size`` itself): padding wastes < 2x."""
    out: list[int] = []
    b = 1
    while b < max_batch_size:
        out.append(b)
        b *= 2
    out.append(max(1, max_batch_size))
    return tuple(out)


class _TFLiteRunner(Runner):
    """One interpreter per batch bucket, all owned by a single worker thread."""

    def __init__(self, model: TFLiteModel, threads: int, max_batch_size: int) -> None:
        self.model = model
        self.threads = threads
        self.buckets = batch_buckets(max_batch_size) if model.batchable else (0,)
        self.meter = numerics.InvokeMeter(threads)
        self._interps: dict[int, Any] = {}
        # per bucket: the non-batch shape each input is currently allocated for
        self._alloc: dict[int, dict[int, tuple[int, ...]]] = {}
        #: whether run_parts may write requests straight into the input tensors: not with a BYTES (string) input,
        #: whose numpy view is no writable array of numbers; those take ``set_tensor`` (``Runner.run_parts``)
        self._direct = not any(s.raw_datatype == "BYTES" for s in model.inputs)
        for b in self.buckets:
            self._interps[b] = self._make(b)

    def _make(self, bucket: int) -> Any:
        interp = self.model.new_interpreter(self.threads)
        alloc: dict[int, tuple[int, ...]] = {}
        if bucket:
            for idx, shape in self.model.default_shapes.items():
                tail = tuple(d if d > 0 else 1 for d in shape[1:])  # dynamic dims start at 1
                interp.resize_tensor_input(idx, [bucket, *tail], strict=False)
                alloc[idx] = tail
        interp.allocate_tensors()
        self._alloc[bucket] = alloc
        return interp

    def _bucket(self, rows: int) -> int:
        for b in self.buckets:
            if b >= rows:
                return b
        return self.buckets[-1]

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        m = self.model
        if not m.batchable:
            return self._invoke(0, inputs, 0)
        rows = int(next(iter(inputs.values())).shape[0])
        biggest = self.buckets[-1]
        if rows <= biggest:
            return self._invoke(self._bucket(rows), inputs, rows)
        parts: list[dict[str, Array]] = []
        for start in range(0, rows, biggest):
            chunk = {k: v[start : start + biggest] for k, v in inputs.items()}
            n = min(biggest, rows - start)
            parts.append(self._invoke(self._bucket(n), chunk, n))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _invoke(self, bucket: int, inputs: Mapping[str, Array], rows: int) -> dict[str, Array]:
        m = self.model
        interp = self._interps[bucket]
        if bucket:
            self._fit(bucket, interp, {name: tuple(inputs[name].shape[1:]) for name in m.input_index})
            feeds: dict[int, Array] = {}
            for name, idx in m.input_index.items():
                arr = inputs[name]
                if rows != bucket:
                    pad_shape = (bucket, *arr.shape[1:])
                    # a BYTES input pads with empty strings (a string tensor takes no number)
                    padded = (
                        np.full(pad_shape, b"", dtype=arr.dtype)
                        if arr.dtype == np.object_
                        else np.zeros(pad_shape, dtype=arr.dtype)
                    )
                    padded[:rows] = arr
                    arr = padded
                feeds[idx] = arr
        else:
            feeds = {idx: inputs[name] for name, idx in m.input_index.items()}
        results = numerics.run(interp, feeds, m.output_index.values(), self.meter)
        out: dict[str, Array] = {}
        for name, res in zip(m.output_index, results, strict=True):
            out[name] = res[:rows] if bucket and rows != bucket else res
        return out

    def run_parts(
        self, model: ServedModel, parts: Sequence[Mapping[str, Array]], rows: Sequence[int]
    ) -> dict[str, Array]:
        """Write each request's rows straight into the input tensors (quantizing on the way), pad, invoke.

        One pass from the request's arrays into the interpreter, a lone request's too (the quantize writes into
        the tensor), instead of quantize (allocating) + concatenate + pad + ``set_tensor``. Batches larger than the
        biggest bucket take the chunked path of :meth:`run`; so does a fixed-shape model's request whose shapes are
        not the model's (``set_tensor`` reports them), and every request of a model with a BYTES input.
        """
        m = self.model
        total = sum(rows)
        if not self._direct:
            return super().run_parts(model, parts, rows)
        if m.batchable and total <= self.buckets[-1]:
            bucket = self._bucket(total)
            interp = self._interps[bucket]
            first = parts[0]
            self._fit(bucket, interp, {name: tuple(first[name].shape[1:]) for name in m.input_index})
        elif (
            not m.batchable
            and len(parts) == 1
            and all(tuple(parts[0][name].shape) == m.default_shapes[idx] for name, idx in m.input_index.items())
        ):
            bucket, interp = 0, self._interps[0]
        else:
            return super().run_parts(model, parts, rows)
        for name, idx in m.input_index.items():
            q = m.input_by_name[name].quantization
            view = interp.tensor(idx)()
            try:
                if not bucket:
                    _write(parts[0][name], view, q)
                    continue
                off = 0
                for part, n in zip(parts, rows, strict=True):
                    _write(part[name], view[off : off + n], q)
                    off += n
                if off < bucket:
                    view[off:bucket] = 0
            finally:
                del view  # the interpreter refuses to run while a view of its buffers is alive
        results = numerics.run(interp, {}, m.output_index.values(), self.meter)
        names = m.output_index
        if not bucket or total == bucket:
            return dict(zip(names, results, strict=True))
        return {name: res[:total] for name, res in zip(names, results, strict=True)}

    def _fit(self, bucket: int, interp: Any, tails: Mapping[str, tuple[int, ...]]) -> None:
        """Resize the bucket's inputs when a request's non-batch dimensions differ from the allocated ones."""
        alloc = self._alloc[bucket]
        resized = False
        for name, idx in self.model.input_index.items():
            tail = tails[name]
            if alloc.get(idx) != tail:
                interp.resize_tensor_input(idx, [bucket, *tail], strict=False)
                alloc[idx] = tail
                resized = True
        if resized:
            interp.allocate_tensors()

    def warmup(self) -> None:
        m = self.model
        for b in self.buckets:
            inputs = {}
            for spec in m.inputs:
                shape = [d if d > 0 else 1 for d in m.default_shapes[m.input_index[spec.name]]]
                if b:
                    shape[0] = b
                inputs[spec.name] = np.zeros(shape, dtype=np.dtype(m.raw_dtypes[spec.name]))
            self._invoke(b, inputs, b)
            if b == self.buckets[0]:
                t0 = time.perf_counter()
                self._invoke(b, inputs, b)
                self.single_row_seconds = time.perf_counter() - t0
        if self.meter is not None and (self.single_row_seconds or 0.0) < SAMPLED_INVOKE_S:
            self.meter.sample_every = 16  # a thread-clock read would cost about as much as the invoke
        if self.meter is not None:
            self.meter.cpu_seconds, self.meter.calls = 0.0, 0  # warming up is not serving


class TFLiteModel(ServedModel):
    """A ``.tflite`` flatbuffer. Signature names (from the SavedModel it was converted from) name the I/O."""

    platform = "tflite"

    def __init__(self, path: str, name: str, version: str) -> None:
        self._content = Path(path).read_bytes()
        with native_stderr_to_log(log):  # LiteRT prints its delegate banner on the first allocation
            probe = numerics.new_interpreter(self._content, 1)
        in_details, out_details = self._signature_details(probe)
        self.input_index: dict[str, int] = {}
        self.output_index: dict[str, int] = {}
        self.default_shapes: dict[int, tuple[int, ...]] = {}
        self.raw_dtypes: dict[str, Any] = {}
        inputs = [self._spec(n, d, self.input_index) for n, d in in_details]
        outputs = [self._spec(n, d, self.output_index) for n, d in out_details]
        for n, d in in_details:
            sig = [int(x) for x in d["shape_signature"]] or [int(x) for x in d["shape"]]
            self.default_shapes[int(d["index"])] = tuple(sig)
            self.raw_dtypes[n] = d["dtype"]
        batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in inputs) and all(
            len(s.shape) >= 1 and s.shape[0] == -1 for s in outputs
        )
        if not batchable:
            # Fixed shapes: serve exactly what the model declares.
            inputs = [_fixed(s, self.default_shapes[self.input_index[s.name]]) for s in inputs]
        super().__init__(name, version, inputs, outputs, batchable=batchable, path=path)
        del probe

    def new_interpreter(self, threads: int) -> Any:
        return numerics.new_interpreter(self._content, threads, allocate=False)

    @staticmethod
    def _signature_details(interp: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """Named I/O from the default signature, else the raw tensor names."""
        sigs = interp.get_signature_list()
        if sigs:
            key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
            runner = interp.get_signature_runner(key)
            ins = runner.get_input_details()
            outs = runner.get_output_details()
            return (
                [(n, ins[n]) for n in sigs[key]["inputs"]],
                [(n, outs[n]) for n in sigs[key]["outputs"]],
            )
        return (
            [(_clean(d["name"]), d) for d in interp.get_input_details()],
            [(_clean(d["name"]), d) for d in interp.get_output_details()],
        )

    @staticmethod
    def _spec(name: str, d: Any, index: dict[str, int]) -> TensorSpec:
        index[name] = int(d["index"])
        raw = datatype_of(d["dtype"])
        scale, zero_point = d.get("quantization", (0.0, 0))
        quant = None
        if raw in ("INT8", "UINT8", "INT16") and scale:
            quant = Quantization(float(scale), int(zero_point), raw)
        shape = tuple(int(x) for x in (d["shape_signature"] if len(d["shape_signature"]) else d["shape"]))
        return TensorSpec(
            name=name,
            datatype="FP32" if quant else raw,
            shape=shape,
            tensor_name=str(d["name"]),
            quantization=quant,
        )

    def create_runner(self, threads: int, max_batch_size: int) -> Runner:
        return _TFLiteRunner(self, threads, max_batch_size)


def _write(arr: Array, dest: Array, q: Quantization | None) -> None:
    """A request's array into (a slice of) an input tensor: quantized when the tensor is integer and the array not."""
    if q is not None and arr.dtype != dest.dtype:
        quantize(arr, q.scale, q.zero_point, dest.dtype, out=dest)
    else:
        np.copyto(dest, arr, casting="unsafe")


def _fixed(spec: TensorSpec, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(spec.name, spec.datatype, shape, spec.tensor_name, spec.quantization)


def _clean(tensor_name: str) -> str:
    name = re.sub(r":\d+$", "", tensor_name)
    return re.sub(r"^serving_default_", "", name)


# ---------------------------------------------------------------------------------------------
# loading


TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier (bytes 4-8) of every TFLite model."""


def _refuse_what_is_not_tflite(p: Path) -> None:
    """A file that is not a TFLite flatbuffer (a Keras .h5/.keras, a report.json...) in one line that says what
    serve takes, not LiteRT's 'The model is not a valid Flatbuffer buffer'."""
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError:
        return  # the interpreter names the error
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"{p} is not a TFLite model: modelship serve takes a .tflite file or a SavedModel directory "
            "(optimize a Keras .h5/.keras model first: modelship optimize)"
        )


def resolve_model_path(path: str | os.PathLike[str]) -> tuple[Path, str, str | None]:
    """-> (file or SavedModel dir, kind 'tflite'|'savedmodel', version from a numeric directory or None).

    Accepts a ``.tflite`` file, a SavedModel directory, a directory holding one ``.tflite`` file, or a
    TF Serving base path with numeric version subdirectories (the highest wins).
    """
    p = Path(path)
    if p.is_file():
        _refuse_what_is_not_tflite(p)
        return p, "tflite", None
    if not p.is_dir():
        raise FileNotFoundError(f"model path {p} does not exist")
    if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
        version = p.name if p.name.isdigit() else None
        return p, "savedmodel", version
    versions = sorted((c for c in p.iterdir() if c.is_dir() and c.name.isdigit()), key=lambda c: int(c.name))
    if versions:
        target, kind, _ = resolve_model_path(versions[-1])
        return target, kind, versions[-1].name
    tflites = sorted(p.glob("*.tflite"))
    if len(tflites) == 1:
        return tflites[0], "tflite", None
    if len(tflites) > 1:
        raise ValueError(f"{p} holds several .tflite files: {[t.name for t in tflites]}")
    raise ValueError(f"{p} holds neither a SavedModel nor a .tflite file")


def load_model(
    path: str | os.PathLike[str],
    name: str | None = None,
    version: str | None = None,
) -> ServedModel:
    """Load a model for serving. TensorFlow is imported only for a SavedModel."""
    t0 = time.perf_counter()
    target, kind, dir_version = resolve_model_path(path)
    name = name or (target.stem if kind == "tflite" else target.parent.name if dir_version else target.name)
    version = version or dir_version or "1"
    model: ServedModel
    if kind == "tflite":
        model = TFLiteModel(str(target), name, version)
    else:
        from .savedmodel import SavedModelModel

        model = SavedModelModel(str(target), name, version)
    model.load_seconds = time.perf_counter() - t0
    log.info(
        "model loaded",
        extra={
            "model": name,
            "version": version,
            "platform": model.platform,
            "path": str(target),
            "batchable": model.batchable,
            "inputs": [(s.name, s.datatype, list(s.shape)) for s in model.inputs],
            "outputs": [(s.name, s.datatype, list(s.shape)) for s in model.outputs],
            "seconds": round(model.load_seconds, 4),
        },
    )
    return model
