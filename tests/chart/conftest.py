"""Fixtures for the Helm chart tests: the helm binary (hack/tools/install-helm puts it in the cache)."""

from __future__ import annotations

import os

import pytest

from tests.chart.helm import Helm, helm_path


@pytest.fixture(scope="session")
def helm() -> Helm:
    path = helm_path()
    if path is None or not os.access(path, os.X_OK):
        message = "helm not found: run hack/tools/install-helm (or set MODELSHIP_HELM)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return Helm(path)
