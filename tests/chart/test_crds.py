"""The chart's crds/ is a byte-identical copy of the generated top-level crds/ (hack/sync-chart-crds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


# YAML 1.1 booleans that PyYAML reads as strings but Go's YAML (kubectl, helm, Argo CD, Flux) reads as true/false
_GO_YAML_BOOLS = {"y", "Y", "n", "N"}


def _plain_go_bools(node: yaml.Node, path: str = "") -> list[str]:
    if isinstance(node, yaml.ScalarNode):
        return [f"{path}: {node.value}"] if node.style is None and node.value in _GO_YAML_BOOLS else []
    if isinstance(node, yaml.SequenceNode):
        return [hit for i, child in enumerate(node.value) for hit in _plain_go_bools(child, f"{path}[{i}]")]
    if isinstance(node, yaml.MappingNode):
        return [hit for key, value in node.value for hit in _plain_go_bools(value, f"{path}.{key.value}")]
    return []


def _compose(path: Path) -> yaml.Node:
    node = yaml.compose(path.read_text())
    assert node is not None, path
    return node


def test_crd_has_no_plain_scalars_go_reads_as_booleans() -> None:
    hits = [hit for p in sorted(TOP.glob("*.yaml")) for hit in _plain_go_bools(_compose(p))]
    assert hits == []


def test_examples_have_no_plain_scalars_go_reads_as_booleans() -> None:
    """`kubectl apply -f examples/...` must send what the file means: a bare `labels: y` arrives as true."""
    examples = sorted((TOP.parent / "examples").glob("*.yaml"))
    assert examples
    hits = [f"{p.name}{hit}" for p in examples for hit in _plain_go_bools(_compose(p))]
    assert hits == []
