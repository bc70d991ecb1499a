"""pyproject.toml declares what the code imports, no more and no less.

Each runtime requirement (the core dependencies and the optimize / serve / build / examples extras) is imported
by the code its extra serves; each third-party import of the package is declared for the code that makes it
(an import guarded by ``except ImportError`` is an optional speed-up or backend and may be undeclared). Test-extra
requirements are imported by tests/, bench/, modelship_dev/ or are tools named here with their use.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "modelship"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

# extra -> the code it is installed for (paths under operator/modelship; the shared numerics module serves both
# the optimizer and the server)
SCOPES: dict[str, tuple[str, ...]] = {
    "optimize": ("optimize", "numerics.py"),
    "serve": ("serve", "numerics.py"),
    "build": ("build",),
    "examples": ("optimize/examples.py",),
}
# test-extra requirements that are tools or plugins, not imports
TOOLS = {
    "ruff": "hack/test: lint",
    "mypy": "hack/test: mypy --strict",
    "import-linter": "hack/test: lint-imports",
    "types-pyyaml": "stubs for mypy",
    "pytest-timeout": "pytest plugin: timeout in [tool.pytest.ini_options]",
    "pytest-asyncio": "pytest plugin: @pytest.mark.asyncio",
    "py-spy": "bench/serve.py --profile: samples the model server (a command, not an import)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0])


def _provides() -> dict[str, set[str]]:
    """distribution -> the top-level modules it installs."""
    out: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            out.setdefault(_norm(dist), set()).add(module)
    return out


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of statements inside a try whose handlers catch ImportError, and of those handlers (a
    fallback import runs only when the first one is missing)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catching = [h for h in node.handlers if _catches_import_error(h.type)]
        for stmt in node.body + [s for h in catching for s in h.body] if catching else []:
            lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _catches_import_error(kind: ast.expr | None) -> bool:
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(top-level module, optional) of every absolute import in a file, importlib.import_module("x") included."""
    tree = ast.parse(path.read_text())
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            yield name.split(".")[0], node.lineno in guarded


def _files(*roots: Path) -> list[Path]:
    return [p for r in roots for p in ([r] if r.suffix == ".py" else r.rglob("*.py")) if r.exists()]


def _scope_files(extra: str) -> list[Path]:
    return _files(*(PACKAGE / s for s in SCOPES[extra]))


def _used(files: list[Path]) -> set[str]:
    return {m for f in files for m, _optional in imports(f)}


def _extras() -> dict[str, list[str]]:
    extras: dict[str, list[str]] = PROJECT["optional-dependencies"]
    return extras


def test_every_runtime_extra_has_a_scope() -> None:
    assert set(_extras()) == set(SCOPES) | {"test"}


def test_every_core_dependency_is_imported_by_the_package() -> None:
    provides, used = _provides(), _used(_files(PACKAGE))
    unused = [r for r in PROJECT["dependencies"] if not provides.get(_req_name(r), set()) & used]
    assert unused == []


def test_every_runtime_extra_requirement_is_imported_by_its_code() -> None:
    provides = _provides()
    unused = {
        extra: [r for r in reqs if not provides.get(_req_name(r), set()) & _used(_scope_files(extra))]
        for extra, reqs in _extras().items()
        if extra != "test"
    }
    assert unused == {extra: [] for extra in SCOPES}


def test_every_test_requirement_is_imported_or_a_named_tool() -> None:
    provides = _provides()
    used = _used(_files(REPO / "tests", REPO / "bench", REPO / "modelship_dev"))
    unused = [
        r for r in _extras()["test"] if _req_name(r) not in TOOLS and not provides.get(_req_name(r), set()) & used
    ]
    assert unused == []
    assert set(TOOLS) <= {_req_name(r) for r in _extras()["test"]}


def test_every_third_party_import_of_the_package_is_declared_for_its_code() -> None:
    provides = _provides()
    declared = {name for r in PROJECT["dependencies"] for name in provides.get(_req_name(r), set())}
    by_extra = {e: {n for r in reqs for n in provides.get(_req_name(r), set())} for e, reqs in _extras().items()}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    undeclared = []
    for path in _files(PACKAGE):
        allowed = set(declared) | {"modelship"}
        for extra in SCOPES:
            if path in _scope_files(extra):
                allowed |= by_extra[extra]
        for module, optional in imports(path):
            if module not in stdlib and module not in allowed and not optional:
                undeclared.append(f"{path.relative_to(REPO)}: {module}")
    assert undeclared == []
