"""Request decoding and response encoding for TF Serving REST (v1) and the Open Inference Protocol (v2).

Decoders turn a body into ``{input name: array}`` in the caller's datatypes plus the batch size, and raise
:class:`BadRequest` naming the problem. Encoders turn result arrays into response bytes.
Decoding JSON costs memory beyond the body: :func:`modelship.serve.jsonparse.decode_cost` bounds it before
anything is parsed. The JSON text itself is parsed in :mod:`modelship.serve.jsonparse` (large bodies with
simdjson, tensor data straight into numeric buffers).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import BadRequest
from .jsonparse import Body, loads_v1, loads_v2
from .model import ServedModel
from .tensors import (
    DATATYPES,
    TF_DTYPES,
    Array,
    FastData,
    NativeArray,
    TensorSpec,
    array_to_binary,
    binary_to_array,
    datatype_of,
    json_to_array,
    jsonable,
)

_DUMP_OPTS = orjson.OPT_SERIALIZE_NUMPY
#: called with a number of bytes about to be allocated for a request's tensors; raises when they do not fit
Charge = Callable[[int], None]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_DUMP_OPTS)


def _check_rows(model: ServedModel, arrays: Mapping[str, Array], how: str) -> int:
    if not model.batchable:
        return 1
    rows = -1
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise BadRequest(f"input '{name}' is a scalar but the model takes a batch")
        if rows < 0:
            rows = int(arr.shape[0])
        elif arr.shape[0] != rows:
            raise BadRequest(f"inputs disagree on the batch size ({how}): '{name}' has {arr.shape[0]}, expected {rows}")
    if rows == 0:
        raise BadRequest("the batch is empty")
    return rows


def _check_names(model: ServedModel, names: Any, what: str) -> None:
    unknown = [n for n in names if n not in model.input_by_name]
    if unknown:
        raise BadRequest(f"unknown {what} {unknown}; the model's inputs are {list(model.input_by_name)}")
    missing = [n for n in model.input_by_name if n not in names]
    if missing:
        raise BadRequest(f"missing {what} {missing}; the model's inputs are {list(model.input_by_name)}")


# =============================================================================================
# TF Serving REST (v1)


@dataclass(slots=True)
class V1Request:
    inputs: dict[str, Array]
    rows: int
    row_format: bool

    #: bytes of tensors the request owns (all of them: JSON is decoded into new arrays)
    @property
    def owned_bytes(self) -> int:
        return sum(_nbytes(a) for a in self.inputs.values())

    #: whether a tensor is a view into the request body (never for JSON)
    body_views = False


def v1_decode(model: ServedModel, body: Body, threads: int = 1) -> V1Request:
    """Decode a TF Serving request; ``threads`` 2 lets a large flat tensor be parsed on two threads."""
    obj = loads_v1(body, {s.name: s.datatype for s in model.inputs}, threads)
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object with 'instances' or 'inputs'")
    sig = obj.get("signature_name")
    if sig is not None and sig != "serving_default":
        raise BadRequest(f"signature_name '{sig}' not found; this model serves 'serving_default'")
    has_rows, has_cols = "instances" in obj, "inputs" in obj
    if has_rows and has_cols:
        raise BadRequest("request has both 'instances' and 'inputs'; send exactly one")
    if not has_rows and not has_cols:
        raise BadRequest("request needs 'instances' (row format) or 'inputs' (columnar format)")
    specs = model.input_by_name
    arrays: dict[str, Array] = {}
    if has_rows:
        inst = obj["instances"]
        if not isinstance(inst, list | FastData | NativeArray) or not len(inst):
            raise BadRequest("'instances' must be a non-empty list")
        if isinstance(inst, list) and isinstance(inst[0], dict) and not _is_b64(inst[0]):
            for i, row in enumerate(inst):
                if not isinstance(row, dict):
                    raise BadRequest(f"instance {i} is not an object like the others")
                if len(row) != len(specs) or any(k not in specs for k in row):
                    _check_names(model, list(row), f"input names in instance {i}")
            for name, spec in specs.items():
                arrays[name] = json_to_array([row[name] for row in inst], spec.datatype, f"input '{name}'")
        else:
            if len(specs) != 1:
                raise BadRequest(
                    f"the model has {len(specs)} inputs {list(specs)}; each instance must be an object naming them"
                )
            ((name, spec),) = specs.items()
            arrays[name] = json_to_array(inst, spec.datatype, f"input '{name}'")
    else:
        cols = obj["inputs"]
        if isinstance(cols, dict) and not _is_b64(cols):
            _check_names(model, list(cols), "inputs")
            for name, spec in specs.items():
                arrays[name] = json_to_array(cols[name], spec.datatype, f"input '{name}'")
        else:
            if len(specs) != 1:
                raise BadRequest(f"the model has {len(specs)} inputs {list(specs)}; 'inputs' must be an object")
            ((name, spec),) = specs.items()
            arrays[name] = json_to_array(cols, spec.datatype, f"input '{name}'")
    for name, arr in arrays.items():
        specs[name].check_shape(arr.shape)
    rows = _check_rows(model, arrays, "v1")
    return V1Request(arrays, rows, has_rows)


def _nbytes(a: Array) -> int:
    if a.dtype != object:
        return int(a.nbytes)
    return int(a.nbytes) + sum(len(v) + 33 for v in a.reshape(-1) if isinstance(v, bytes))


def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and "b64" in v


def v1_encode(model: ServedModel, req: V1Request, result: Mapping[str, Array]) -> bytes:
    outs = model.outputs
    if req.row_format:
        if len(outs) == 1:
            return dumps({"predictions": jsonable(result[outs[0].name])})
        names = [s.name for s in outs]
        arrays = [result[n] for n in names]
        rows = [{n: _row(a, i) for n, a in zip(names, arrays, strict=True)} for i in range(req.rows)]
        return dumps({"predictions": rows})
    if len(outs) == 1:
        return dumps({"outputs": jsonable(result[outs[0].name])})
    return dumps({"outputs": {s.name: jsonable(result[s.name]) for s in outs}})


def _row(a: Array, i: int) -> Any:
    v = a[i]
    if isinstance(v, np.ndarray):
        return jsonable(v)
    if a.dtype.kind in "OSU":
        return jsonable(np.asarray(v, dtype=np.object_))
    return v


def v1_status(model: ServedModel | None, name: str, version: str, state: str) -> dict[str, Any]:
    """TF Serving GetModelStatus, plus KServe v1's ``name``/``ready`` fields."""
    return {
        "model_version_status": [
            {"version": version, "state": state, "status": {"error_code": "OK", "error_message": ""}}
        ],
        "name": name,
        "ready": state == "AVAILABLE" and model is not None,
    }


def _tf_tensor(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": TF_DTYPES[spec.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False},
        "name": spec.tensor_name or spec.name,
    }


def v1_metadata(model: ServedModel) -> dict[str, Any]:
    """TF Serving GetModelMetadata (signature_def) in its JSON mapping."""
    sig = {
        "inputs": {s.name: _tf_tensor(s) for s in model.inputs},
        "outputs": {s.name: _tf_tensor(s) for s in model.outputs},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": model.version},
        "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
    }


# =============================================================================================
# Open Inference Protocol (v2)


@dataclass(slots=True)
class V2Request:
    inputs: dict[str, Array]
    rows: int
    id: str | None
    outputs: list[str]
    binary_outputs: set[str] = field(default_factory=set)
    #: bytes of tensors the request owns (decoded from JSON or converted), not views into its body
    owned_bytes: int = 0
    #: whether a tensor is a view into the request body (the binary extension, no conversion)
    body_views: bool = False


def json_length(body: Body, header_length: str | None) -> int:
    """Bytes of JSON text in an inference request: all of it, or the binary extension's header part."""
    if header_length is None:
        return len(body)
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest("Inference-Header-Content-Length must be an integer") from None
    if n < 0 or n > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return n


def v2_decode(
    model: ServedModel, body: Body, header_length: str | None, charge: Charge | None = None, threads: int = 1
) -> V2Request:
    """Decode an inference request. ``charge`` is told the bytes of tensors the binary extension makes the server
    allocate (datatype conversions) before they are; JSON text is bounded beforehand by :func:`decode_cost`.
    ``threads`` 2 lets a large flat JSON tensor be parsed on two threads (libmsjson)."""
    binary: memoryview | None = None
    key: tuple[bytes, int] | None = None
    if header_length is not None:
        n = json_length(body, header_length)
        view = memoryview(body)
        binary = view[n:]
        if n <= PLAN_HEADER_BYTES:
            key = (bytes(view[:n]), len(binary))
            plan = _PLANS.get(model, {}).get(key)
            if plan is not None:
                return plan.apply(binary)
        obj = loads_v2(view[:n], threads)
    else:
        obj = loads_v2(body, threads)
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object with 'inputs'")
    req_id = obj.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("'id' must be a string")
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    arrays: dict[str, Array] = {}
    offset = 0
    owned = 0
    views = False
    in_place: list[_Slice] = []  # inputs that are views of the binary data as they are (a plan, below)
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise BadRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = t.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"inputs[{i}] needs a string 'name'")
        spec = model.input_by_name.get(name)
        if spec is None:
            raise BadRequest(f"unknown input '{name}'; the model's inputs are {list(model.input_by_name)}")
        if name in arrays:
            raise BadRequest(f"input '{name}' appears twice")
        datatype = t.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise BadRequest(f"input '{name}' needs a 'datatype', one of {sorted(DATATYPES)}")
        if not spec.accepts(datatype):
            raise BadRequest(f"input '{name}' has datatype {datatype} but the model expects {spec.datatype}")
        shape = t.get("shape")
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or len(shape) > 32
        ):
            raise BadRequest(f"input '{name}' needs 'shape', a list of non-negative integers")
        spec.check_shape(shape)
        tparams = t.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise BadRequest(f"input '{name}': 'parameters' must be an object")
        size = tparams.get("binary_data_size")
        what = f"input '{name}'"
        if size is not None:
            if binary is None:
                raise BadRequest(f"{what} has binary_data_size but the request has no Inference-Header-Content-Length")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"{what}: binary_data_size {size} does not fit the binary data")
            if charge is not None and datatype == "BYTES":
                charge(size * 10)  # a Python bytes object per element
            arr = binary_to_array(binary[offset : offset + size], datatype, shape, what)
            offset += size
        else:
            if "data" not in t:
                raise BadRequest(f"{what} has no 'data'")
            arr = json_to_array(t["data"], datatype, what)
            if arr.size != math.prod(shape):
                raise BadRequest(f"{what}: shape {shape} needs {math.prod(shape)} values but 'data' has {arr.size}")
            arr = arr.reshape(shape)
        if datatype != spec.datatype and not (spec.quantization is not None and datatype == spec.raw_datatype):
            target = DATATYPES[spec.datatype]
            if charge is not None and size is not None:
                charge(arr.size * target.itemsize)
            arr = arr.astype(target)
            owned += _nbytes(arr)
        elif size is not None and datatype != "BYTES":
            views = True  # the binary extension's data, in place
            in_place.append((name, datatype, tuple(shape), offset - size, size, what))
        else:
            owned += _nbytes(arr)
        arrays[name] = arr
    if binary is not None and offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    _check_names(model, list(arrays), "inputs")
    rows = _check_rows(model, arrays, "v2")

    wanted = [s.name for s in model.outputs]
    binary_out: set[str] = set()
    default_binary = bool(params.get("binary_data_output", False))
    req_outputs = obj.get("outputs")
    if req_outputs is not None:
        if not isinstance(req_outputs, list):
            raise BadRequest("'outputs' must be a list")
        wanted = []
        for i, o in enumerate(req_outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise BadRequest(f"outputs[{i}] needs a string 'name'")
            oname = o["name"]
            if oname not in model.output_by_name:
                raise BadRequest(f"unknown output '{oname}'; the model's outputs are {list(model.output_by_name)}")
            wanted.append(oname)
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise BadRequest(f"output '{oname}': 'parameters' must be an object")
            if bool(op.get("binary_data", default_binary)):
                binary_out.add(oname)
    elif default_binary:
        binary_out = set(wanted)
    if key is not None and len(in_place) == len(arrays):
        _remember(model, key, _Plan(tuple(in_place), rows, req_id, tuple(wanted), frozenset(binary_out)))
    return V2Request(arrays, rows, req_id, wanted, binary_out, owned, views)


#: a binary-extension request whose JSON header is at most this long may be decoded from a plan (below)
PLAN_HEADER_BYTES = 1024
#: plans kept per model; when full they are all forgotten (a client varying its header, an ``id`` per request
#: say, only ever misses: it costs one dictionary insert per request and at most this many headers of memory)
MAX_PLANS = 64

# (input name, datatype, shape, offset and size in the binary data, how errors name it)
_Slice = tuple[str, str, tuple[int, ...], int, int, str]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a binary-extension request's JSON header decoded to, when every input is a view of the binary data
    as it is (no datatype conversion, no BYTES): a request with the same header bytes and the same length of
    binary data decodes to the same names, shapes, rows and outputs, so only the arrays are made anew (and their
    bytes checked, as :func:`binary_to_array` does: BOOL values). Every check of the header passed for these
    bytes; none depends on anything but them, the binary data's length and the model."""

    inputs: tuple[_Slice, ...]
    rows: int
    id: str | None
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str]

    def apply(self, binary: memoryview) -> V2Request:
        arrays = {
            name: binary_to_array(binary[offset : offset + size], datatype, shape, what)
            for name, datatype, shape, offset, size, what in self.inputs
        }
        return V2Request(arrays, self.rows, self.id, list(self.outputs), set(self.binary_outputs), 0, True)


#: per model (weakly: a model dropped takes its plans along): header bytes and binary length -> plan
_PLANS: weakref.WeakKeyDictionary[ServedModel, dict[tuple[bytes, int], _Plan]] = weakref.WeakKeyDictionary()


def _remember(model: ServedModel, key: tuple[bytes, int], plan: _Plan) -> None:
    plans = _PLANS.get(model)
    if plans is None:
        plans = _PLANS[model] = {}
    elif len(plans) >= MAX_PLANS:
        plans.clear()
    plans[key] = plan


def v2_encode(model: ServedModel, req: V2Request, result: Mapping[str, Array]) -> tuple[bytes, int | None]:
    """-> (body, JSON header length when binary outputs were requested)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in req.outputs:
        arr = result[name]
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in req.binary_outputs:
            blob = array_to_binary(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = jsonable(arr.reshape(-1))
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if req.id is not None:
        doc["id"] = req.id
    doc["outputs"] = outputs
    head = dumps(doc)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def v2_model_metadata(model: ServedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in model.inputs],
        "outputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in model.outputs],
    }
