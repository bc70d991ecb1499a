"""Recognizing input models without TensorFlow: corrupt, truncated, wrong-format and Keras 3 files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelship.api.source import ModelFormat
from modelship.optimize import modelio
from modelship.optimize.errors import OptimizeError


def _h5(path: Path, version: str = "2.21.0") -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
        f.attrs["keras_version"] = version
        f.create_dataset("model_weights/w", data=np.arange(50_000, dtype=np.float32))
    return path


def _keras_zip(path: Path, version: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": version}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential"}))
        z.writestr("model.weights.h5", b"\0" * 100)
    return path


def test_formats_are_recognized(tmp_path: Path) -> None:
    assert modelio.inspect_model(_h5(tmp_path / "m.h5")).format == ModelFormat.H5
    assert modelio.inspect_model(_keras_zip(tmp_path / "m.keras", "2.21.0")).format == ModelFormat.KERAS
    sm = tmp_path / "sm"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"x")
    assert modelio.inspect_model(sm).format == ModelFormat.SAVEDMODEL
    renamed = tmp_path / "model.bin"
    renamed.write_bytes((tmp_path / "m.h5").read_bytes())
    assert modelio.inspect_model(renamed).format == ModelFormat.H5  # from the content


def test_corrupt_file_names_file_and_expectation(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    p.write_bytes(b"this is not a model at all")
    with pytest.raises(OptimizeError) as exc:
        modelio.inspect_model(p)
    assert str(exc.value) == (
        f"{p}: expected an HDF5 Keras model (.h5) but the content is not recognizable (corrupt or not a model)"
    )


def test_truncated_h5(tmp_path: Path) -> None:
    p = _h5(tmp_path / "model.h5")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        OptimizeError, match=r"model\.h5: corrupt or truncated HDF5 file .*expected an HDF5 Keras model"
    ):
        modelio.inspect_model(p)


def test_weights_only_h5(tmp_path: Path) -> None:
    import h5py

    p = tmp_path / "weights.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(OptimizeError, match="has no model_config"):
        modelio.inspect_model(p)


def test_wrong_format(tmp_path: Path) -> None:
    p = _keras_zip(tmp_path / "model.h5", "2.21.0")
    with pytest.raises(
        OptimizeError, match=r"expected an HDF5 Keras model \(\.h5\) but the content looks like a tf-keras"
    ):
        modelio.inspect_model(p)
    h5 = _h5(tmp_path / "x.h5")
    with pytest.raises(OptimizeError, match=r"expected a SavedModel directory .* but found a file"):
        modelio.inspect_model(h5, ModelFormat.SAVEDMODEL)


def test_truncated_keras_archive(tmp_path: Path) -> None:
    p = _keras_zip(tmp_path / "m.keras", "2.21.0")
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(OptimizeError, match=r"m\.keras: .*(corrupt|truncated)"):
        modelio.inspect_model(p)


def test_keras3_archive_is_refused_with_advice(tmp_path: Path) -> None:
    p = _keras_zip(tmp_path / "m.keras", "3.15.1")
    with pytest.raises(OptimizeError) as exc:
        modelio.inspect_model(p)
    msg = str(exc.value)
    assert "Keras 3.15.1" in msg and "model.export(DIR)" in msg and "tf-keras" in msg


def test_empty_and_missing(tmp_path: Path) -> None:
    p = tmp_path / "m.h5"
    p.write_bytes(b"")
    with pytest.raises(OptimizeError, match="the file is empty"):
        modelio.inspect_model(p)
    with pytest.raises(OptimizeError, match="no such file"):
        modelio.inspect_model(tmp_path / "nope.h5")
    d = tmp_path / "dir"
    d.mkdir()
    with pytest.raises(OptimizeError, match=r"saved_model\.pb is missing"):
        modelio.inspect_model(d)
