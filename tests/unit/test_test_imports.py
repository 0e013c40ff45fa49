"""Test modules share helpers through tests/support, never by importing another test module (a test module
imported by another runs its tests twice, and a change to one file's helper breaks the other's tests)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_test_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [n for n in names if n.startswith("tests.") and n.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): modules
        for path in sorted(TESTS.rglob("test_*.py"))
        if (modules := _imported_test_modules(path))
    }
    assert offenders == {}, f"move the shared helpers to tests/support/: {offenders}"


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("from tests.integration.test_other import helper\nimport tests.unit.test_y\n")
    assert _imported_test_modules(module) == ["tests.integration.test_other", "tests.unit.test_y"]


def test_test_module_basenames_are_unique() -> None:
    """pytest imports the test modules of the package-less directories (unit/, integration/, e2e/) by
    basename: two files of the same name stop the whole collection ("import file mismatch")."""
    seen: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        if not (path.parent / "__init__.py").exists():
            seen.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
