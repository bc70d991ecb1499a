"""`helm lint --strict` is clean for the defaults and for every ci/*-values.yaml (warnings fail too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import CHART, Helm

VALUE_FILES = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]


@pytest.mark.parametrize("values", VALUE_FILES, ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(helm: Helm, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", "modelship-system"]
    if values is not None:
        args += ["-f", str(values)]
    proc = helm.run(*args)
    out = proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_helm_lint_strict_fails_on_a_schema_violation(helm: Helm) -> None:
    proc = helm.run("lint", "--strict", str(CHART), "--set", "operator.workers=0", check=False)
    assert proc.returncode != 0 and "/operator/workers" in proc.stdout + proc.stderr


def test_chart_version_follows_the_package(helm: Helm) -> None:
    """appVersion is the operator's version: the default image tags come from it."""
    import yaml

    from modelship import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert chart["apiVersion"] == "v2" and chart["type"] == "application"
    out = helm.run("show", "chart", str(CHART)).stdout
    assert f"appVersion: {__version__}" in out
