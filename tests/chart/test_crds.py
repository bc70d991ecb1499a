"""The chart's crds/ is a byte-identical copy of the generated top-level crds/ (hack/sync-chart-crds)."""

from __future__ import annotations

import subprocess

import yaml

from tests.chart.helm import CHART, REPO_ROOT, Helm

TOP = REPO_ROOT / "crds"
IN_CHART = CHART / "crds"


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    top = sorted(p.name for p in TOP.glob("*.yaml"))
    assert top, "no CRDs in crds/"
    assert sorted(p.name for p in IN_CHART.glob("*.yaml")) == top, "run hack/sync-chart-crds"
    for name in top:
        assert (IN_CHART / name).read_bytes() == (TOP / name).read_bytes(), f"{name} differs: run hack/sync-chart-crds"


def test_sync_script_check_mode_agrees() -> None:
    proc = subprocess.run(["bash", str(REPO_ROOT / "hack" / "sync-chart-crds"), "--check"], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_helm_ships_the_crd_unchanged(helm: Helm) -> None:
    """helm template --include-crds emits the CRD exactly as the file says (helm never templates crds/)."""
    objs = helm.template(include_crds=True)
    crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    expected = [yaml.safe_load(p.read_text()) for p in sorted(TOP.glob("*.yaml"))]
    assert crds == expected
    assert not [o for o in helm.template() if o["kind"] == "CustomResourceDefinition"]
