"""The layer contracts in pyproject.toml ([tool.importlinter], run by hack/test as `lint-imports`) hold on the
tree, and each one FAILS when a forbidden import is added: lint-imports runs on a copy of the package with one
import injected and must exit non-zero naming exactly that contract."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {c["id"]: c["name"] for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
             ["contracts"]}  # fmt: skip

# contract id -> (file under operator/modelship, the import that breaks it)
INJECTIONS = {
    "api": ("api/__init__.py", "from modelship.resources import meta"),
    "config": ("config.py", "from modelship.resources import meta"),
    "resources": ("resources/__init__.py", "from modelship.controller import store"),
    "sources": ("sources/__init__.py", "from modelship import fetch"),
    "fetch": ("fetch.py", "from modelship.optimize import errors"),
    "controller": ("controller/__init__.py", "from modelship.build import context"),
    "kopf": ("controller/__init__.py", "import kopf"),
    "serve": ("serve/__init__.py", "from modelship import config"),
}

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (test extra)")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "operator"), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "operator" / "modelship", tree / "operator" / "modelship",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _verdicts(output: str) -> dict[str, str]:
    """contract name -> KEPT | BROKEN, from lint-imports' summary."""
    flat = " ".join(output.split())
    return {name: m.group(1) for name in CONTRACTS.values() if (m := re.search(re.escape(name) + r" (KEPT|BROKEN)",
                                                                               flat))}  # fmt: skip


def test_every_contract_has_an_injection() -> None:
    assert set(INJECTIONS) == set(CONTRACTS)


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    proc = _lint(_copy(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(_verdicts(proc.stdout).values()) == {"KEPT"} and len(_verdicts(proc.stdout)) == len(CONTRACTS)


@pytest.mark.parametrize("contract", sorted(INJECTIONS))
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, contract: str) -> None:
    tree = _copy(tmp_path)
    rel, line = INJECTIONS[contract]
    target = tree / "operator" / "modelship" / rel
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    proc = _lint(tree)
    assert proc.returncode != 0, proc.stdout
    verdicts = _verdicts(proc.stdout)
    assert verdicts[CONTRACTS[contract]] == "BROKEN", proc.stdout
    assert [c for c, v in verdicts.items() if v == "BROKEN"] == [CONTRACTS[contract]], proc.stdout
    assert rel.replace("/", ".").removesuffix(".py").removesuffix(".__init__") in proc.stdout
