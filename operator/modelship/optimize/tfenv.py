"""The one place TensorFlow is imported, in the order TFMOT needs (Keras 2 through tf-keras, never Keras 3).

Call :func:`load` from inside functions only: importing this module does not import TensorFlow, so the top-level
CLI starts fast and the operator image (no TensorFlow) can import the optimizer's light modules.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import OptimizeError, first_line


@dataclass(frozen=True)
class TF:
    """The imported modules (typed Any: TensorFlow has no stubs)."""

    tf: Any
    keras: Any
    tfmot: Any


_LOADED: TF | None = None


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (absl/MLIR/XNNPACK banners) for the duration.

    Python exceptions are unaffected. Set MODELSHIP_DEBUG=1 to see everything.
    """
    if not enabled or os.environ.get("MODELSHIP_DEBUG") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load() -> TF:
    """Import TensorFlow, tf-keras and TFMOT (once per process) with Keras 2 selected.

    Raises OptimizeError when Keras 3 was already bound to ``tf.keras`` in this process, or the stack is missing.
    """
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before the first `import tensorflow`
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|keras|tensorflow_model_optimization)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*HDF5 file via `model.save\(\)`.*")
    warnings.filterwarnings("ignore", message=r".*Statistics for quantized inputs were expected.*")
    try:
        with quiet_native_stderr():
            import tensorflow as tf
            import tensorflow_model_optimization as tfmot
            import tf_keras as keras

            tf.config.list_physical_devices()  # device probing (cuInit) logs natively: do it while quiet
    except ImportError as exc:
        if exc.name is None:  # raised by the package itself (TensorFlow's native runtime, an interrupted import)
            raise OptimizeError(f"TensorFlow is installed but failed to import: {_import_failure(exc)}") from None
        raise OptimizeError(
            f"the optimizer needs TensorFlow, tf-keras and TFMOT ({exc.name} is missing): "
            "pip install 'modelship[optimize]'"
        ) from None
    tf.get_logger().setLevel(logging.ERROR)
    if keras.Model is not tf.keras.Model:
        raise OptimizeError(
            "tf.keras resolved to Keras 3 in this process (TF_USE_LEGACY_KERAS was set too late); "
            "run the optimizer in a fresh process"
        )
    _LOADED = TF(tf=tf, keras=keras, tfmot=tfmot)
    return _LOADED


def _import_failure(exc: ImportError) -> str:
    """The line that says why: TensorFlow's native-runtime error starts with the traceback it caught."""
    for line in str(exc).splitlines():
        if line.strip() and not line[0].isspace() and not line.startswith("Traceback (most recent call last)"):
            return line.strip()
    return first_line(exc)


def versions() -> dict[str, str]:
    """Versions of the optimization stack (for the report)."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    for dist in (
        "tensorflow-cpu",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "numpy",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out
