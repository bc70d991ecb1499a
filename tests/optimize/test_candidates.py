"""The Auto candidate set follows what the data allows."""

from __future__ import annotations

from modelship.api.candidates import auto_candidates
from modelship.api.optimization import ExportFormat, QuantizeMode, StepType


def names(**kw: object) -> list[str]:
    return [c.name for c in auto_candidates(**kw)]  # type: ignore[arg-type]


def test_full_data_tries_every_technique() -> None:
    got = names(trainable=True, calibration=True, fine_tune=True)
    assert got[:3] == ["dynamic", "float16", "int8"]  # cheap ones first
    for want in ("prune80+int8", "cluster16+int8", "prune80+cluster16+int8", "lowRank90+int8", "qat"):
        assert want in got
    for cand in auto_candidates(trainable=True, calibration=True, fine_tune=True):
        assert all(s.fine_tune is not None for s in cand.steps if s.type != StepType.QUANTIZE)


def test_without_calibration_no_int8() -> None:
    cands = auto_candidates(trainable=True, calibration=False, fine_tune=True)
    modes = {s.quantize.mode for c in cands for s in c.steps if s.quantize is not None}
    assert QuantizeMode.INT8 not in modes and QuantizeMode.INT16X8 not in modes
    assert "prune80+dynamic" in [c.name for c in cands]


def test_without_fine_tune_data_one_shot_and_no_qat() -> None:
    cands = auto_candidates(trainable=True, calibration=True, fine_tune=False)
    assert all(s.fine_tune is None for c in cands for s in c.steps)
    assert "qat" not in [c.name for c in cands]
    assert "cluster16+int8" in [c.name for c in cands]


def test_ptq_only_input() -> None:
    assert names(trainable=False, calibration=True, fine_tune=True) == ["dynamic", "float16", "int8"]


def test_savedmodel_export_has_no_quantization() -> None:
    cands = auto_candidates(trainable=True, calibration=True, fine_tune=True, export=ExportFormat.SAVEDMODEL)
    assert cands and all(s.type != StepType.QUANTIZE for c in cands for s in c.steps)
