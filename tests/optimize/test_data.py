"""Data sets: formats, shapes, labels, calibration coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelship.api.optimization import DataFormat, DataRef, MetricType
from modelship.optimize import data
from modelship.optimize.errors import OptimizeError


def ref(fmt: DataFormat, **kw: object) -> DataRef:
    return DataRef(uri="pvc://data/set", format=fmt, **kw)  # type: ignore[arg-type]


def test_npz(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, images=np.ones((5, 8, 8)), target=np.arange(5))
    ds = data.load("evaluation", ref(DataFormat.NPZ, features="images", labels="target"), p, needs_labels=True)
    assert ds.x.shape == (5, 8, 8) and list(ds.y) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    with pytest.raises(OptimizeError, match=r"no array named 'x' in the \.npz \(it has images, target\)"):
        data.load("evaluation", ref(DataFormat.NPZ), p, needs_labels=True)


def test_npy_plain_and_structured(tmp_path: Path) -> None:
    plain = tmp_path / "x.npy"
    np.save(plain, np.zeros((4, 3), dtype=np.float32))
    ds = data.load("calibration", ref(DataFormat.NPY), plain, needs_labels=False)
    assert ds.x.shape == (4, 3) and ds.y is None
    with pytest.raises(OptimizeError, match=r"plain \.npy array holds features only"):
        data.load("evaluation", ref(DataFormat.NPY), plain, needs_labels=True)
    rec = np.zeros(3, dtype=[("x", np.float32, (2,)), ("y", np.int64)])
    rec["y"] = [1, 0, 1]
    structured = tmp_path / "s.npy"
    np.save(structured, rec)
    ds = data.load("evaluation", ref(DataFormat.NPY), structured, needs_labels=True)
    assert ds.x.shape == (3, 2) and list(ds.y) == [1, 0, 1]  # type: ignore[arg-type]


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("px0,px1,label,other\n1,2,0,9\n3,4,1,9\n\n")
    ds = data.load("evaluation", ref(DataFormat.CSV, features="px", labels="label"), p, needs_labels=True)
    assert ds.x.tolist() == [[1, 2], [3, 4]] and ds.y is not None and ds.y.dtype.kind == "i"
    p.write_text("px0,label\n1,0\nabc,1\n")
    with pytest.raises(OptimizeError, match="line 3 has a missing or non-numeric value"):
        data.load("evaluation", ref(DataFormat.CSV, features="px", labels="label"), p, needs_labels=True)


def test_samples_limit_and_empty(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.arange(10.0).reshape(10, 1))
    assert len(data.load("calibration", ref(DataFormat.NPZ, samples=3), p, needs_labels=False)) == 3
    np.savez(p, x=np.zeros((0, 1)))
    with pytest.raises(OptimizeError, match=r"calibration data pvc://data/set: the data set holds no samples"):
        data.load("calibration", ref(DataFormat.NPZ), p, needs_labels=False)


def test_label_count_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(OptimizeError, match="5 feature rows but 4 labels"):
        data.load("evaluation", ref(DataFormat.NPZ), p, needs_labels=True)


def test_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    p.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(OptimizeError, match="cannot read npz file"):
        data.load("evaluation", ref(DataFormat.NPZ), p, needs_labels=True)


def test_conform_reshapes_or_explains() -> None:
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros((3, 64)), y=np.zeros(3))
    data.conform(ds, (None, 8, 8, 1))
    assert ds.x.shape == (3, 8, 8, 1) and ds.x.dtype == np.float32 and ds.notes
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros(7), y=np.zeros(7))
    data.conform(ds, (None, 1))
    assert ds.x.shape == (7, 1)
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros((3, 10)))
    with pytest.raises(OptimizeError, match=r"features have shape \(10\) per sample but the model expects \(64\)"):
        data.conform(ds, (None, 64))


def test_check_labels() -> None:
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros((3, 4)), y=np.array([0, 9, 12]))
    with pytest.raises(OptimizeError, match=r"class labels span 0\.\.12 but the model outputs 10 classes"):
        data.check_labels(ds, (None, 10), MetricType.ACCURACY)
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros((3, 4)), y=np.zeros((3, 3)))
    with pytest.raises(OptimizeError, match=r"labels have shape \(3\) per sample but the model outputs \(10\)"):
        data.check_labels(ds, (None, 10), MetricType.ACCURACY)
    with pytest.raises(OptimizeError, match=r"labels have shape \(3\) per sample but the model outputs \(1\)"):
        data.check_labels(ds, (None, 1), MetricType.MSE)
    ds = data.Dataset("evaluation", "pvc://d/e", x=np.zeros((3, 1)), y=np.array([1.0, 2.0, 3.0]))
    data.check_labels(ds, (None, 1), MetricType.MAE)
    assert ds.y is not None and ds.y.shape == (3, 1)


def test_coverage_flags_the_linear_trap() -> None:
    cal = data.Dataset("calibration", "c", x=np.linspace(-1, 4, 64).reshape(-1, 1))
    inside = data.Dataset("evaluation", "e", x=np.linspace(-0.5, 3.5, 20).reshape(-1, 1))
    assert data.coverage_warning(cal, inside) is None
    wide = data.Dataset("evaluation", "e", x=np.array([[-1.0], [0.0], [4.0], [10.0]]))
    warning = data.coverage_warning(cal, wide)
    assert warning is not None
    assert "[-1, 4]" in warning and "[-1, 10]" in warning and "25.0%" in warning


@pytest.mark.slow
def test_tfrecord(tmp_path: Path) -> None:
    from modelship.optimize import tfenv

    tf = tfenv.load().tf
    p = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(p)) as w:
        for i in range(4):
            feats = {
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i)] * 6)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                "tensor": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(tf.fill([2, 3], float(i))).numpy()])
                ),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    ds = data.load("evaluation", ref(DataFormat.TFRECORD, features="image", labels="label"), p, needs_labels=True)
    assert ds.x.shape == (4, 6) and ds.y is not None and ds.y.tolist() == [0, 1, 0, 1]
    ds = data.load("calibration", ref(DataFormat.TFRECORD, features="tensor"), p, needs_labels=False)
    assert ds.x.shape == (4, 2, 3) and float(ds.x[3, 1, 2]) == 3.0
    with pytest.raises(OptimizeError, match="has no feature 'pixels'"):
        data.load("calibration", ref(DataFormat.TFRECORD, features="pixels"), p, needs_labels=False)
