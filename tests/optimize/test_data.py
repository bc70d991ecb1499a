"""Data sets: formats, shapes, labels, calibration coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelship.api.optimization import DataFormat, DataRef, MetricType
from modelship.optimize import data
from modelship.optimize.errors import OptimizeError
from modelship.optimize.signature import TensorInfo


def ref(fmt: DataFormat, **kw: object) -> DataRef:
    return DataRef(uri="pvc://data/set", format=fmt, **kw)  # type: ignore[arg-type]


def only(ds: data.Dataset) -> np.ndarray:  # type: ignore[type-arg]
    """The features of a one-input data set."""
    (x,) = ds.inputs.values()
    return x


def model_input(*shape: int | None) -> list[TensorInfo]:
    return [TensorInfo("x", shape)]


def test_npz(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, images=np.ones((5, 8, 8)), target=np.arange(5))
    ds = data.load("evaluation", ref(DataFormat.NPZ, features="images", labels="target"), p, needs_labels=True)
    assert only(ds).shape == (5, 8, 8) and list(ds.y) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    with pytest.raises(OptimizeError, match=r"no array named 'x' in the \.npz \(it has images, target\)"):
        data.load("evaluation", ref(DataFormat.NPZ), p, needs_labels=True)


def test_npy_plain_and_structured(tmp_path: Path) -> None:
    plain = tmp_path / "x.npy"
    np.save(plain, np.zeros((4, 3), dtype=np.float32))
    ds = data.load("calibration", ref(DataFormat.NPY), plain, needs_labels=False)
    assert only(ds).shape == (4, 3) and ds.y is None
    with pytest.raises(OptimizeError, match=r"plain \.npy array holds features only"):
        data.load("evaluation", ref(DataFormat.NPY), plain, needs_labels=True)
    rec = np.zeros(3, dtype=[("x", np.float32, (2,)), ("y", np.int64)])
    rec["y"] = [1, 0, 1]
    structured = tmp_path / "s.npy"
    np.save(structured, rec)
    ds = data.load("evaluation", ref(DataFormat.NPY), structured, needs_labels=True)
    assert only(ds).shape == (3, 2) and list(ds.y) == [1, 0, 1]  # type: ignore[arg-type]


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("px0,px1,label,other\n1,2,0,9\n3,4,1,9\n\n")
    ds = data.load("evaluation", ref(DataFormat.CSV, features="px", labels="label"), p, needs_labels=True)
    assert only(ds).tolist() == [[1, 2], [3, 4]] and ds.y is not None and ds.y.dtype.kind == "i"
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
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros((3, 64))}, y=np.zeros(3))
    data.conform(ds, model_input(None, 8, 8, 1))
    assert only(ds).shape == (3, 8, 8, 1) and only(ds).dtype == np.float32 and ds.notes
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros(7)}, y=np.zeros(7))
    data.conform(ds, model_input(None, 1))
    assert only(ds).shape == (7, 1)
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros((3, 10))})
    with pytest.raises(OptimizeError, match=r"features have shape \(10\) per sample but the model expects \(64\)"):
        data.conform(ds, model_input(None, 64))


def test_check_labels() -> None:
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros((3, 4))}, y=np.array([0, 9, 12]))
    with pytest.raises(OptimizeError, match=r"class labels span 0\.\.12 but the model outputs 10 classes"):
        data.check_labels(ds, (None, 10), MetricType.ACCURACY)
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros((3, 4))}, y=np.zeros((3, 3)))
    with pytest.raises(OptimizeError, match=r"labels have shape \(3\) per sample but the model outputs \(10\)"):
        data.check_labels(ds, (None, 10), MetricType.ACCURACY)
    with pytest.raises(OptimizeError, match=r"labels have shape \(3\) per sample but the model outputs \(1\)"):
        data.check_labels(ds, (None, 1), MetricType.MSE)
    ds = data.Dataset("evaluation", "pvc://d/e", inputs={"x": np.zeros((3, 1))}, y=np.array([1.0, 2.0, 3.0]))
    data.check_labels(ds, (None, 1), MetricType.MAE)
    assert ds.y is not None and ds.y.shape == (3, 1)


def test_coverage_flags_the_linear_trap() -> None:
    cal = data.Dataset("calibration", "c", inputs={"x": np.linspace(-1, 4, 64).reshape(-1, 1)})
    inside = data.Dataset("evaluation", "e", inputs={"x": np.linspace(-0.5, 3.5, 20).reshape(-1, 1)})
    assert data.coverage_warning(cal, inside) is None
    wide = data.Dataset("evaluation", "e", inputs={"x": np.array([[-1.0], [0.0], [4.0], [10.0]])})
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
    assert only(ds).shape == (4, 6) and ds.y is not None and ds.y.tolist() == [0, 1, 0, 1]
    ds = data.load("calibration", ref(DataFormat.TFRECORD, features="tensor"), p, needs_labels=False)
    assert only(ds).shape == (4, 2, 3) and float(only(ds)[3, 1, 2]) == 3.0
    with pytest.raises(OptimizeError, match="has no feature 'pixels'"):
        data.load("calibration", ref(DataFormat.TFRECORD, features="pixels"), p, needs_labels=False)
    two = ref(DataFormat.TFRECORD, inputs={"first": "image", "second": "tensor"}, labels="label")
    ds = data.load("evaluation", two, p, needs_labels=True)
    assert ds.inputs["first"].shape == (4, 6) and ds.inputs["second"].shape == (4, 2, 3)
    assert float(ds.inputs["second"][2, 0, 0]) == 2.0 and ds.y is not None and ds.y.tolist() == [0, 1, 0, 1]


TWO = [TensorInfo("first", (None, 2)), TensorInfo("second", (None, 3))]


def test_npz_inputs_by_name_follow_the_models_order(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, a=np.ones((4, 3)), b=np.zeros((4, 2)), y=np.arange(4))
    ds = data.load("evaluation", ref(DataFormat.NPZ, inputs={"second": "a", "first": "b"}), p, needs_labels=True)
    assert ds.mapped and set(ds.inputs) == {"first", "second"} and len(ds) == 4
    data.conform(ds, TWO)
    assert list(ds.inputs) == ["first", "second"]  # the model's order, whatever the mapping's
    assert ds.inputs["first"].shape == (4, 2) and ds.inputs["second"].shape == (4, 3)
    assert ds.inputs["second"].dtype == np.float32
    with pytest.raises(OptimizeError, match=r"no array named 'c' in the \.npz \(it has a, b, y\)"):
        data.load("evaluation", ref(DataFormat.NPZ, inputs={"first": "b", "second": "c"}), p, needs_labels=True)


def test_inputs_must_match_the_models_inputs(tmp_path: Path) -> None:
    def dataset(**inputs: np.ndarray) -> data.Dataset:  # type: ignore[type-arg]
        return data.Dataset("evaluation", "pvc://d/e", inputs=dict(inputs), mapped=True)

    with pytest.raises(OptimizeError, match=r"data\.evaluation\.inputs names third, not an input of the model"):
        data.conform(dataset(first=np.zeros((2, 2)), third=np.zeros((2, 3))), TWO)
    with pytest.raises(OptimizeError, match=r"data\.evaluation\.inputs has no entry for the model input second"):
        data.conform(dataset(first=np.zeros((2, 2))), TWO)
    unmapped = data.Dataset("fineTune", "pvc://d/t", inputs={"x": np.zeros((2, 5))})
    with pytest.raises(OptimizeError, match=r"the model has 2 inputs \(first, second\); map each to its data with "):
        data.conform(unmapped, TWO)
    wrong = dataset(first=np.zeros((2, 2)), second=np.zeros((2, 4)))
    with pytest.raises(OptimizeError, match=r"input second has shape \(4\) per sample but the model expects \(3\)"):
        data.conform(wrong, TWO)


def test_inputs_need_as_many_rows(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, a=np.ones((4, 3)), b=np.zeros((3, 2)))
    with pytest.raises(OptimizeError, match="input second has 3 rows but input first has 4"):
        data.load("calibration", ref(DataFormat.NPZ, inputs={"first": "a", "second": "b"}), p, needs_labels=False)
    np.savez(p, a=np.ones((4, 3)), b=np.full((4, 2), np.nan))
    with pytest.raises(OptimizeError, match="input second contain NaN or infinite values"):
        data.load("calibration", ref(DataFormat.NPZ, inputs={"first": "a", "second": "b"}), p, needs_labels=False)


def test_csv_column_prefixes_longest_match_wins(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("x1_0,x1_1,x10_0,x10_1,x10_2,y\n1,2,3,4,5,0\n6,7,8,9,10,1\n")
    ds = data.load("evaluation", ref(DataFormat.CSV, inputs={"first": "x1", "second": "x10"}), p, needs_labels=True)
    assert ds.inputs["first"].tolist() == [[1, 2], [6, 7]]
    assert ds.inputs["second"].tolist() == [[3, 4, 5], [8, 9, 10]] and ds.y is not None and ds.y.tolist() == [0, 1]
    with pytest.raises(OptimizeError, match="no CSV column starts with 'z'"):
        data.load("evaluation", ref(DataFormat.CSV, inputs={"first": "x1", "second": "z"}), p, needs_labels=True)


def test_npy_structured_fields_per_input(tmp_path: Path) -> None:
    rec = np.zeros(3, dtype=[("a", np.float32, (2,)), ("b", np.float32, (3,)), ("y", np.int64)])
    p = tmp_path / "s.npy"
    np.save(p, rec)
    ds = data.load("evaluation", ref(DataFormat.NPY, inputs={"first": "a", "second": "b"}), p, needs_labels=True)
    assert ds.inputs["first"].shape == (3, 2) and ds.inputs["second"].shape == (3, 3)
    plain = tmp_path / "x.npy"
    np.save(plain, np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(OptimizeError, match=r"a plain \.npy array holds one input; several inputs need \.npz"):
        data.load("calibration", ref(DataFormat.NPY, inputs={"first": "a", "second": "b"}), plain, needs_labels=False)


def test_coverage_is_checked_per_input() -> None:
    cal = data.Dataset(
        "calibration", "c", inputs={"first": np.zeros((4, 2)), "second": np.linspace(0, 1, 12).reshape(4, 3)}
    )
    ev = data.Dataset(
        "evaluation", "e", inputs={"first": np.zeros((2, 2)), "second": np.array([[0, 0.5, 1], [0, 0, 3.0]])}
    )
    warning = data.coverage_warning(cal, ev)
    assert warning is not None and warning.startswith("input second: calibration inputs span [0, 1]")
    assert "input first" not in warning and "50.0% of evaluation samples" in warning
    ids = data.Dataset("evaluation", "e", inputs={"first": np.zeros((2, 2)), "second": np.array([[0, 1, 9]] * 2)})
    cal_ids = data.Dataset("calibration", "c", inputs={"first": np.zeros((2, 2)), "second": np.array([[0, 1, 2]] * 2)})
    assert data.coverage_warning(cal_ids, ids) is None  # integer inputs (token ids) are not quantized


def test_integer_inputs_take_whole_numbers() -> None:
    tokens = [TensorInfo("tokens", (None, 3), "int32")]
    ds = data.Dataset("evaluation", "e", inputs={"x": np.array([[1.0, 2.0, 3.0]], dtype=np.float32)})
    data.conform(ds, tokens)
    assert ds.inputs["tokens"].dtype == np.int32 and ds.inputs["tokens"].tolist() == [[1, 2, 3]]
    ds = data.Dataset("evaluation", "e", inputs={"x": np.array([[1.0, 2.5, 3.0]])})
    with pytest.raises(OptimizeError, match=r"features must be whole numbers \(the model's input tokens is int32\)"):
        data.conform(ds, tokens)
    ds = data.Dataset("evaluation", "e", inputs={"x": np.array([[1, 2, 2**40]], dtype=np.int64)})
    with pytest.raises(OptimizeError, match="outside the range of int32"):
        data.conform(ds, tokens)
