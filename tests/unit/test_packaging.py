"""Developer-only code (modelship_dev: the test control plane, the demo drivers) stays out of what ships: the
wheel (setuptools finds packages under operator/ only) and the images (.dockerignore whitelists operator/modelship)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "modelship"


def test_the_wheel_finds_packages_under_operator_only() -> None:
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert conf["tool"]["setuptools"]["packages"]["find"]["where"] == ["operator"]
    assert not (REPO / "operator" / "modelship_dev").exists()
    assert not (PACKAGE / "devcluster.py").exists() and not (PACKAGE / "demo.py").exists()


def test_the_images_copy_no_developer_code() -> None:
    kept = [line[1:].strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert "operator/modelship" in kept
    assert not [k for k in kept if "modelship_dev" in k or k.startswith(("hack", "tests", "bench"))]


def test_the_package_never_imports_developer_code() -> None:
    offenders = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "modelship_dev" in p.read_text()]
    assert offenders == []
