"""The held-out model tier: models the optimizer's own tests never see go through `modelship optimize` ->
`modelship serve` -> a real client over HTTP. Every test here trains and converts TensorFlow models: marked slow
(CI runs them)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --pvc-root the models and data are written under (pvc://models/<case>/...)."""
    return tmp_path_factory.mktemp("zoo")
