"""Recognize and load the input model: tf-keras ``.h5`` / ``.keras``, SavedModel directories, ``.tflite``.

:func:`inspect_model` reads only file headers and archive metadata (no TensorFlow): a corrupt, truncated or
wrong-format file, or a Keras 3 ``.keras`` file, fails there with one message naming the file and what was expected.
:func:`load_model` then imports TensorFlow and loads it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.source import ModelFormat
from . import modelcode, tfenv
from .errors import OptimizeError, first_line
from .signature import Features, Signature, TensorInfo, count, keras_inputs, rows

Array = np.ndarray[Any, Any]
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
TFLITE_IDENTIFIER = b"TFL3"

EXPECTED = {
    ModelFormat.H5: "an HDF5 Keras model (.h5)",
    ModelFormat.KERAS: "a tf-keras .keras archive (zip)",
    ModelFormat.SAVEDMODEL: "a SavedModel directory (with saved_model.pb)",
    ModelFormat.TFLITE: "a TFLite flatbuffer (.tflite)",
}

KERAS3_ADVICE = (
    "the optimizer uses tf-keras (Keras 2) because TFMOT does not support Keras 3: export a SavedModel with "
    "model.export(DIR) (post-training quantization only) or build and save the model with tf-keras"
)

PTQ_ONLY_NOTE = (
    "the input is a SavedModel without tf-keras metadata (e.g. a Keras 3 model.export()): "
    "only post-training quantization applies; prune, cluster, lowRank and QAT steps are skipped"
)


SET_FORMAT = "set spec.model.format (--format)"


def declared_format(value: str | None) -> ModelFormat | None:
    """A format a source declares (an OCI artifact's annotation), when it is one of ours."""
    try:
        return ModelFormat(value) if value else None
    except ValueError:
        return None


def sniff(path: Path) -> ModelFormat | None:
    """The format the content looks like, or None when it is none of ours."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return ModelFormat.SAVEDMODEL
        return None
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(HDF5_MAGIC):
        return ModelFormat.H5
    if head.startswith(ZIP_MAGIC):
        return ModelFormat.KERAS
    if len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER:
        return ModelFormat.TFLITE
    return None


def format_from_name(path: Path) -> ModelFormat | None:
    """Format from the file extension (a directory is a SavedModel)."""
    if path.is_dir():
        return ModelFormat.SAVEDMODEL
    suffix = path.suffix.lower()
    return {
        ".h5": ModelFormat.H5,
        ".hdf5": ModelFormat.H5,
        ".keras": ModelFormat.KERAS,
        ".tflite": ModelFormat.TFLITE,
    }.get(suffix)


@dataclass
class ModelInfo:
    """What inspect_model found out without TensorFlow."""

    path: Path
    format: ModelFormat
    keras_version: str | None = None
    notes: list[str] = field(default_factory=list)


def inspect_model(path: Path, declared: ModelFormat | None = None) -> ModelInfo:
    """Check that ``path`` holds a model of the declared (or inferred) format; raise OptimizeError if not."""
    if not path.exists():
        raise OptimizeError(f"{path}: no such file or directory")
    fmt = declared or format_from_name(path) or sniff(path)
    if fmt is None:
        raise OptimizeError(
            f"{path}: cannot tell the model format from the name or content; expected .h5, .keras, .tflite or a "
            f"SavedModel directory: {SET_FORMAT}"
        )
    if path.is_dir() != (fmt == ModelFormat.SAVEDMODEL):
        what = "a directory" if path.is_dir() else "a file"
        raise OptimizeError(f"{path}: expected {EXPECTED[fmt]} but found {what}")
    if path.is_file() and path.stat().st_size == 0:
        raise OptimizeError(f"{path}: the file is empty; expected {EXPECTED[fmt]}")
    found = sniff(path)
    if found != fmt:
        if found is None:
            detail = "the content is not recognizable (corrupt or not a model)"
            if fmt == ModelFormat.SAVEDMODEL:
                detail = "saved_model.pb is missing"
        else:
            detail = f"the content looks like {EXPECTED[found]}"
        # inferred, and the content contradicts the name (or a directory is no SavedModel): the spec must say
        ambiguous = declared is None and (found is not None or path.is_dir())
        advice = f" (format inferred from the name: {SET_FORMAT})" if ambiguous else ""
        raise OptimizeError(f"{path}: expected {EXPECTED[fmt]} but {detail}{advice}")
    info = ModelInfo(path=path, format=fmt)
    if fmt == ModelFormat.KERAS:
        _inspect_keras_zip(info)
    elif fmt == ModelFormat.H5:
        _inspect_h5(info)
    elif fmt == ModelFormat.SAVEDMODEL and not (path / "variables").is_dir():
        info.notes.append("the SavedModel has no variables/ directory")
    return info


def _inspect_keras_zip(info: ModelInfo) -> None:
    path = info.path
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
            if bad is not None:
                raise OptimizeError(f"{path}: corrupt .keras archive ({bad} fails its checksum)")
            if "config.json" not in names:
                raise OptimizeError(f"{path}: expected {EXPECTED[ModelFormat.KERAS]} but it has no config.json")
            meta: dict[str, Any] = {}
            if "metadata.json" in names:
                meta = json.loads(archive.read("metadata.json"))
    except zipfile.BadZipFile as exc:
        raise OptimizeError(
            f"{path}: expected {EXPECTED[ModelFormat.KERAS]} but the zip is corrupt or truncated ({exc})"
        ) from None
    except (OSError, ValueError, EOFError) as exc:  # EOFError/zlib errors on truncated members
        raise OptimizeError(f"{path}: corrupt .keras archive ({exc})") from None
    version = str(meta.get("keras_version", ""))
    info.keras_version = version or None
    if version.startswith("3"):
        raise OptimizeError(f"{path} is a Keras {version} model: {KERAS3_ADVICE}")


def _inspect_h5(info: ModelInfo) -> None:
    path = info.path
    try:
        import h5py  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # pragma: no cover - h5py comes with TensorFlow
        return
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if "model_config" not in attrs:
                raise OptimizeError(
                    f"{path}: expected {EXPECTED[ModelFormat.H5]} but the HDF5 file has no model_config "
                    "(weights only? save the whole model with model.save)"
                )
            version = attrs.get("keras_version")
    except OptimizeError:
        raise
    except (OSError, ValueError) as exc:
        reason = first_line(exc)
        raise OptimizeError(
            f"{path}: corrupt or truncated HDF5 file ({reason}); expected {EXPECTED[ModelFormat.H5]}"
        ) from None
    if isinstance(version, bytes):
        version = version.decode()
    info.keras_version = str(version) if version is not None else None
    if info.keras_version and info.keras_version.startswith("3"):
        info.notes.append(f"the .h5 file was written by Keras {info.keras_version}; loading it with tf-keras")


@dataclass
class LoadedModel:
    """The input model, loaded."""

    info: ModelInfo
    signature: Signature
    """Named inputs and outputs (tf-keras names, or the serving signature's keys)."""
    keras: Any | None = None
    """tf-keras model (None for SavedModel-only and TFLite inputs)."""
    saved_model: Any | None = None
    """tf.saved_model.load() result when there is no tf-keras model."""
    tflite: bytes | None = None
    """The bytes of a .tflite input."""
    notes: list[str] = field(default_factory=list)

    @property
    def ptq_only(self) -> bool:
        """Only post-training quantization applies (no tf-keras model to train)."""
        return self.keras is None

    @property
    def path(self) -> Path:
        return self.info.path

    def predict(self, x: Features, batch_size: int = 256) -> dict[str, Array]:
        """Outputs of the original model (not a TFLite conversion), by output name."""
        if self.keras is not None:
            out = self.keras.predict(keras_inputs(x), batch_size=batch_size, verbose=0)
            arrays = out if isinstance(out, list) else [out]
            return {name: np.asarray(a) for name, a in zip(self.signature.output_names, arrays, strict=True)}
        if self.saved_model is not None:
            fn = self.saved_model.signatures["serving_default"]
            parts: dict[str, list[Array]] = {name: [] for name in self.signature.output_names}
            for start in range(0, count(x), batch_size):
                result = fn(**rows(x, slice(start, start + batch_size)))
                for name in parts:
                    parts[name].append(result[name].numpy())
            return {name: np.concatenate(p, axis=0) for name, p in parts.items()}
        raise OptimizeError("a .tflite input has no original model to evaluate besides itself")


def _shape(value: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in value)


CODE_ADVICE = (
    "set spec.model.allowCode: true (--allow-code) to run it if you trust its author (the platform's policy must "
    "allow it), or save the model without custom code"
)


def check_code(info: ModelInfo, allow_code: bool) -> list[str]:
    """Refuse a model that carries code (``modelcode.scan``) unless ``allow_code``; the notes to report."""
    try:
        findings = modelcode.scan(info.path, info.format)
    except modelcode.ModelCodeError as exc:
        raise OptimizeError(f"{info.path}: {exc}") from None
    if not findings:
        return []
    text = modelcode.describe(findings)
    if not allow_code:
        raise OptimizeError(f"{info.path}: the model carries code that would run when it is loaded ({text}): "
                            f"refused; {CODE_ADVICE}")  # fmt: skip
    return [f"the model carries code, run because spec.model.allowCode is true: {text}"]


def load_model(info: ModelInfo, allow_code: bool = False) -> LoadedModel:
    """Load an inspected model with TensorFlow (a .tflite input with the LiteRT interpreter only); a model that
    carries code needs ``allow_code``."""
    if info.format == ModelFormat.TFLITE:
        from .measure import tflite_signature

        content = info.path.read_bytes()
        try:
            signature = tflite_signature(content)
        except Exception as exc:
            raise OptimizeError(f"{info.path}: not a valid TFLite model ({first_line(exc)})") from None
        return LoadedModel(info=info, signature=signature, tflite=content, notes=list(info.notes))
    t = tfenv.load()
    info.notes += check_code(info, allow_code)
    keras_model = None
    if info.format in (ModelFormat.H5, ModelFormat.KERAS) or (info.path / "keras_metadata.pb").is_file():
        keras_model = _load_keras(t, info, allow_code)
    if keras_model is None:
        saved = _load_saved_model(t, info.path)
        fn = saved.signatures["serving_default"]
        inputs = tuple(
            TensorInfo(name, _shape(spec.shape), spec.dtype.name)
            for name, spec in fn.structured_input_signature[1].items()
        )
        outputs = tuple(
            TensorInfo(name, _shape(spec.shape), spec.dtype.name) for name, spec in fn.structured_outputs.items()
        )
        return LoadedModel(
            info=info,
            signature=Signature(inputs, outputs),
            saved_model=saved,
            notes=[*info.notes, PTQ_ONLY_NOTE],
        )
    signature = Signature(
        inputs=tuple(
            TensorInfo(name, _shape(tensor.shape), tensor.dtype.name)
            for name, tensor in zip(keras_model.input_names, keras_model.inputs, strict=True)
        ),
        outputs=tuple(
            TensorInfo(name, _shape(tensor.shape), tensor.dtype.name)
            for name, tensor in zip(keras_model.output_names, keras_model.outputs, strict=True)
        ),
    )
    return LoadedModel(info=info, signature=signature, keras=keras_model, notes=list(info.notes))


def _load_keras(t: tfenv.TF, info: ModelInfo, allow_code: bool) -> Any:
    from tf_keras.src.saving.serialization_lib import SafeModeScope  # type: ignore[import-untyped,unused-ignore]

    try:
        # safe mode for every format (tf-keras applies safe_mode to .keras files only; the scope covers .h5 and
        # SavedModel configs too): no Lambda bytecode is unmarshalled unless the spec allowed code
        with tfenv.quiet_native_stderr(), SafeModeScope(not allow_code):
            return t.keras.models.load_model(str(info.path), compile=False, safe_mode=not allow_code)
    except Exception as exc:
        reason = first_line(exc)
        if info.format == ModelFormat.SAVEDMODEL:
            info.notes.append(f"tf-keras could not load the SavedModel ({reason}); treating it as a plain SavedModel")
            return None
        if "batch_shape" in str(exc) or (info.keras_version or "").startswith("3"):
            raise OptimizeError(f"{info.path} looks like a Keras 3 model: {KERAS3_ADVICE}") from None
        if "truncated" in str(exc).lower() or "unable to" in str(exc).lower():
            raise OptimizeError(
                f"{info.path}: corrupt or truncated file ({reason}); expected {EXPECTED[info.format]}"
            ) from None
        raise OptimizeError(f"{info.path}: cannot load as a tf-keras model: {reason}") from None


def _load_saved_model(t: tfenv.TF, path: Path) -> Any:
    try:
        with tfenv.quiet_native_stderr():
            loaded = t.tf.saved_model.load(str(path))
    except Exception as exc:
        raise OptimizeError(f"{path}: cannot load the SavedModel: {first_line(exc)}") from None
    if "serving_default" not in getattr(loaded, "signatures", {}):
        raise OptimizeError(f"{path}: the SavedModel has no serving_default signature to convert")
    return loaded
