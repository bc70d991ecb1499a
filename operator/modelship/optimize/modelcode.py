"""A model is code: find what in a model file would run its author's code when the optimizer loads or runs it.

Keras deserializes a model from its config: a ``Lambda`` layer carries marshalled Python bytecode (or names a
function to import), a custom class needs its author's module, and a ``TFOpLambda`` layer calls any TensorFlow
symbol by name (``tf.io.write_file`` included) while the model is rebuilt. Which config each format keeps:

- ``.h5``: the ``model_config`` attribute (JSON);
- ``.keras``: ``config.json`` in the zip;
- SavedModel: ``keras_metadata.pb`` (one JSON config per layer, when tf-keras saved it) and ``saved_model.pb``.
  A SavedModel's functions are graphs of TensorFlow ops, not Python: loading one runs no Python of the author.
  But some ops call back into Python (``PyFunc``, ``EagerPyFunc``: only ever resolvable in the process that built
  them, so they are refused outright) and some read or write files (``WriteFile``, ``ReadFile``, the
  checkpoint and dataset file ops); the latter are legitimate in the functions that save and restore variables and
  initialise tables from assets, so they are refused only where the serving signatures can reach them.

``scan`` reports every finding (the layer or op, and why) without importing or calling anything from the model;
the caller refuses the model unless the spec opted in (``spec.model.allowCode``, under the platform's policy), and
tf-keras then loads it in safe mode as a second line (no bytecode is ever unmarshalled without the opt-in).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..api.source import ModelFormat

MAX_CONFIG_BYTES = 64 * 1024 * 1024
"""A model config larger than this is refused before it is parsed (a bound on a hostile file)."""

SAFE_OP_PREFIXES = ("math.", "nn.", "linalg.", "__operators__.", "image.", "signal.", "bitwise.", "random.")
"""TFOpLambda functions under these namespaces are tensor math (no files, no Python, no network)."""
SAFE_OPS = frozenset(
    {
        "reshape", "concat", "stack", "unstack", "transpose", "expand_dims", "squeeze", "cast", "clip_by_value",
        "gather", "gather_nd", "where", "split", "tile", "pad", "identity", "shape", "ones_like", "zeros_like",
        "fill", "slice", "strided_slice", "matmul", "einsum", "one_hot", "range", "broadcast_to", "boolean_mask",
        "sort", "argsort", "reverse", "roll", "searchsorted", "size", "rank", "convert_to_tensor", "stop_gradient",
        "norm", "ones", "zeros", "eye", "meshgrid", "repeat", "add", "multiply", "subtract", "divide", "maximum",
        "minimum", "abs", "exp", "sqrt", "square", "argmax", "argmin", "reduce_sum", "reduce_mean", "reduce_max",
        "reduce_min", "reduce_prod", "reduce_any", "reduce_all", "clip_by_norm", "cumsum",
    }
)  # fmt: skip
"""Plain array TFOpLambda functions outside those namespaces."""

PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
"""Graph ops that call back into Python: refused anywhere in a SavedModel."""
FILE_OPS = frozenset(
    {
        "WriteFile", "ReadFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2",
        "RestoreSlice", "MergeV2Checkpoints", "ImmutableConst", "WholeFileReader", "WholeFileReaderV2",
        "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
        "TFRecordReader", "TFRecordReaderV2", "IdentityReader", "IdentityReaderV2", "LMDBReader", "PrintV2",
        "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
        "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
        "WriteRawProtoSummary", "DebugIdentityV2", "DebugIdentityV3", "SaveDataset", "SaveDatasetV2",
        "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "LoadDataset", "TextLineDataset", "TFRecordDataset",
        "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "CSVDataset", "CSVDatasetV2",
        "SqlDataset", "ExperimentalSqlDataset", "SnapshotDataset", "SnapshotDatasetV2", "CacheDataset",
        "CacheDatasetV2", "MatchingFilesDataset", "ExperimentalMatchingFilesDataset", "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2", "LoadAndRemapMatrix", "GenerateVocabRemapping",
    }
)  # fmt: skip
"""Graph ops that touch the file system (or any TF file system: gs://, s3://): refused where a serving signature
reaches them."""

DATA_CLASSES = frozenset({"TensorShape", "__tuple__", "__ellipsis__", "__bytes__", "__tensor__", "__numpy__",
                          "CompositeTensor"})  # fmt: skip
"""tf-keras's JSON helpers for plain values (shapes, tuples, constants): data, never code."""

MAX_FINDINGS = 8


@dataclass(frozen=True)
class Finding:
    """One piece of the model that runs code."""

    where: str
    """The layer (Keras) or function (SavedModel) it is in."""
    what: str
    """Why it is code."""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


class ModelCodeError(ValueError):
    """The model file cannot be scanned (unreadable or oversized config); the message says why."""


def scan(path: Path, fmt: ModelFormat) -> list[Finding]:
    """Every finding in the model at ``path`` (a file, or a SavedModel directory); [] for a plain model."""
    if fmt == ModelFormat.H5:
        findings = list(_scan_configs([_h5_config(path)]))
    elif fmt == ModelFormat.KERAS:
        findings = list(_scan_configs([_keras_zip_config(path)]))
    elif fmt == ModelFormat.SAVEDMODEL:
        findings = [*_scan_configs(_keras_metadata_configs(path)), *_scan_graph(path)]
    else:
        findings = []
    return list(dict.fromkeys(findings))


def describe(findings: list[Finding]) -> str:
    """The findings in one line (at most MAX_FINDINGS named)."""
    shown = "; ".join(str(f) for f in findings[:MAX_FINDINGS])
    more = len(findings) - MAX_FINDINGS
    return shown + (f"; and {more} more" if more > 0 else "")


# -- Keras configs -------------------------------------------------------------------------------------------------


def _h5_config(path: Path) -> Any:
    try:
        import h5py  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # pragma: no cover - h5py comes with TensorFlow
        raise ModelCodeError("cannot read an HDF5 model without h5py") from None

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except (OSError, ValueError) as exc:
        raise ModelCodeError(f"cannot read the HDF5 model_config ({exc})") from None
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return _json(str(raw), "model_config")


def _keras_zip_config(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelCodeError(f"config.json is {info.file_size} bytes (more than {MAX_CONFIG_BYTES})")
            return _json(archive.read(info).decode("utf-8", errors="replace"), "config.json")
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise ModelCodeError(f"cannot read config.json ({exc})") from None


def _keras_metadata_configs(path: Path) -> list[Any]:
    meta = path / "keras_metadata.pb"
    if not meta.is_file():
        return []
    if meta.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelCodeError(f"keras_metadata.pb is larger than {MAX_CONFIG_BYTES} bytes")
    from tf_keras.protobuf import saved_metadata_pb2  # type: ignore[import-untyped,unused-ignore]

    proto = saved_metadata_pb2.SavedMetadata()
    try:
        proto.ParseFromString(meta.read_bytes())
    except Exception as exc:
        raise ModelCodeError(f"cannot parse keras_metadata.pb ({exc})") from None
    return [_json(node.metadata, f"keras_metadata.pb node {node.node_path}") for node in proto.nodes if node.metadata]


def _json(text: str, what: str) -> Any:
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelCodeError(f"{what} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelCodeError(f"{what} is not JSON ({exc})") from None


NOT_LOADED = frozenset({"compile_config", "training_config"})
"""Where a saved model keeps how it was compiled (optimizer, loss, metrics): the optimizer loads with
``compile=False``, so nothing under these keys is ever deserialized (a custom loss there runs nothing)."""


def _objects(node: Any, layer: str = "model") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every serialized Keras object (a dict with class_name) with the name of the layer it belongs to, except
    the compile configuration (``NOT_LOADED``)."""
    stack: list[tuple[Any, str]] = [(node, layer)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            if "class_name" in item:
                config = item.get("config")
                name = config.get("name") if isinstance(config, dict) else None
                if isinstance(name, str) and name:
                    where = name
                yield where, item
            stack.extend((v, where) for k, v in item.items() if k not in NOT_LOADED)
        elif isinstance(item, list):
            stack.extend((v, where) for v in item)


def _scan_configs(configs: Iterable[Any]) -> Iterator[Finding]:
    builtins = keras_builtins()
    for config in configs:
        for where, obj in _objects(config):
            finding = _judge(obj, builtins)
            if finding is not None:
                yield Finding(where, finding)


def _judge(obj: dict[str, Any], builtins: frozenset[str]) -> str | None:
    cls = obj.get("class_name")
    if not isinstance(cls, str):
        return "a serialized object without a class name"
    raw = obj.get("config")
    config: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if cls in DATA_CLASSES:
        return None
    if cls == "TypeSpec":  # a registered TensorFlow type spec (tf.TensorSpec, ...), looked up by name
        spec = obj.get("type_spec")
        return None if isinstance(spec, str) and spec.startswith("tf.") else f"custom type spec {spec!r}"
    if cls == "__lambda__":
        return "a serialized Python lambda"
    if cls == "Lambda":
        kind = config.get("function_type", "lambda")
        return f"Lambda layer ({'Python bytecode' if kind == 'lambda' else 'a Python function ' + repr(kind)})"
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        function = str(config.get("function", ""))
        if function.startswith(SAFE_OP_PREFIXES) or function in SAFE_OPS:
            return None
        return f"{cls} calling tf.{function} (not tensor math)"
    registered = obj.get("registered_name")
    module = obj.get("module")
    if isinstance(registered, str) and registered not in (cls, "") and not registered.startswith("keras."):
        return f"custom object {registered}"
    if isinstance(module, str) and not module.startswith(("keras", "tf_keras")):
        return f"custom object {cls} from module {module}"
    if cls not in builtins:
        return f"custom object {cls} (not a tf-keras built-in)"
    return None


@cache
def keras_builtins() -> frozenset[str]:
    """The class names tf-keras deserializes by itself (layers, initializers, regularizers, constraints, models,
    dtype policy; metrics, losses and optimizers, which a compiled SavedModel's metadata lists as nodes), Lambda
    and the tf-op layers excluded."""
    import tf_keras  # type: ignore[import-untyped,unused-ignore]

    names: set[str] = {"Functional", "Sequential", "Model", "Policy", "DTypePolicy", "InputLayer"}
    for module in (tf_keras.layers, tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints,
                   tf_keras.activations, tf_keras.metrics, tf_keras.losses, tf_keras.optimizers):  # fmt: skip
        names.update(n for n in dir(module) if n[:1].isupper())
    return frozenset(names - {"Lambda", "TFOpLambda", "SlicingOpLambda", "Layer"})


# -- SavedModel graphs ---------------------------------------------------------------------------------------------


def _scan_graph(path: Path) -> list[Finding]:
    pb = path / "saved_model.pb"
    if not pb.is_file():
        return []
    from tensorflow.core.protobuf import saved_model_pb2  # type: ignore[import-untyped,unused-ignore]

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except Exception as exc:
        raise ModelCodeError(f"cannot parse saved_model.pb ({exc})") from None
    findings: list[Finding] = []
    for meta in saved.meta_graphs:
        functions = {f.signature.name: f for f in meta.graph_def.library.function}
        for node in meta.graph_def.node:
            if node.op in PYTHON_OPS:
                findings.append(Finding(node.name, f"{node.op} op (calls Python)"))
        for fname, function in functions.items():
            for node in function.node_def:
                if node.op in PYTHON_OPS:
                    findings.append(Finding(fname, f"{node.op} op (calls Python)"))
        for key, signature in meta.signature_def.items():
            roots = [t.name.split(":")[0].lstrip("^") for t in signature.outputs.values()]
            for where, op in _reachable_ops(meta.graph_def, functions, roots):
                if op in FILE_OPS:
                    findings.append(Finding(where, f"{op} op reachable from the {key!r} signature (touches files)"))
    return findings


def _func_names(node: Any, functions: dict[str, Any]) -> Iterator[str]:
    if node.op in functions:
        yield node.op
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _reachable_ops(graph: Any, functions: dict[str, Any], roots: list[str]) -> Iterator[tuple[str, str]]:
    """(where, op type) of every op the named graph nodes depend on, through the functions they call."""
    nodes = {n.name: n for n in graph.node}
    seen_nodes: set[str] = set()
    seen_funcs: set[str] = set()
    todo = list(roots)
    funcs: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        yield name, node.op
        todo.extend(i.split(":")[0].lstrip("^") for i in node.input)
        funcs.extend(_func_names(node, functions))
    while funcs:
        fname = funcs.pop()
        if fname in seen_funcs or fname not in functions:
            continue
        seen_funcs.add(fname)
        for node in functions[fname].node_def:
            yield fname, node.op
            funcs.extend(_func_names(node, functions))
