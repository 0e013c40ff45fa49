"""Lint: the INPLAY_* settings table (services/inplay/config.py SETTINGS) is complete, alive and documented.

Fails when
  1. docs/configuration.md differs from ``python -m inplay.config --markdown``;
  2. a module under services/inplay (generated */v1/* stubs excluded) names an ``INPLAY_*`` variable that
     is not in SETTINGS (names ending in ``_`` are prefix mentions in prose, e.g. ``INPLAY_FEED_*``);
  3. a registered setting is no longer read by a module its ``read_by`` lists: no string constant with
     its name outside docstrings (and, in config.py, outside the SETTINGS table itself). This is how a
     documented-but-never-read variable (INPLAY_AUTH_MODE before it was implemented) is caught.

Variables used only by scripts/stack, perf and tests are tooling, not service settings: not scanned.

    PYTHONPATH=services python scripts/lint/check_config.py [--root DIR] [--fix]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

NAME_RE = re.compile(r"INPLAY_[A-Z0-9_]+")


def service_modules(package: Path) -> Iterator[Path]:
    for path in sorted(package.rglob("*.py")):
        if "v1" not in path.relative_to(package).parts[:-1]:
            yield path


def names_in(text: str) -> set[str]:
    return {n for n in NAME_RE.findall(text) if not n.endswith("_")}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _table_nodes(tree: ast.Module) -> set[int]:
    """Nodes of the ``SETTINGS_LIST = (...)`` table: naming a variable there is not reading it."""
    found: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign | ast.Assign):
            targets = [stmt.target] if isinstance(stmt, ast.AnnAssign) else stmt.targets
            if any(isinstance(t, ast.Name) and t.id == "SETTINGS_LIST" for t in targets):
                found |= {id(n) for n in ast.walk(stmt)}
    return found


def read_names(source: str) -> set[str]:
    """INPLAY_* names a module uses as string constants in code (not in docstrings, not in the table)."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree) | _table_nodes(tree)
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and NAME_RE.fullmatch(node.value)
    }


def check(root: Path, fix: bool = False) -> list[str]:
    sys.path.insert(0, str(root / "services"))
    from inplay import config

    problems: list[str] = []
    doc = root / "docs" / "configuration.md"
    expected = config.markdown()
    if not doc.is_file() or doc.read_text(encoding="utf-8") != expected:
        if fix:
            doc.write_text(expected, encoding="utf-8")
        else:
            problems.append(
                f"{doc.relative_to(root)} is stale: run "
                "`PYTHONPATH=services python -m inplay.config --markdown > docs/configuration.md`"
            )
    reads: dict[str, set[str]] = {}
    # Runtime modules are named relative to services/inplay; the edge tooling as inplay_edge/<module>.
    for package, prefix in ((root / "services" / "inplay", ""), (root / "services" / "inplay_edge", "inplay_edge/")):
        for path in service_modules(package):
            source = path.read_text(encoding="utf-8")
            module = prefix + path.relative_to(package).with_suffix("").as_posix()
            reads[module] = read_names(source)
            for name in sorted(names_in(source) - config.SETTINGS.keys()):
                problems.append(f"{path.relative_to(root)}: {name} is not registered in inplay.config.SETTINGS")
    for entry in config.SETTINGS_LIST:
        for module in entry.read_by:
            if entry.name not in reads.get(module, set()):
                path = f"services/{module}.py" if module.startswith("inplay_edge/") else f"services/inplay/{module}.py"
                problems.append(f"{entry.name}: SETTINGS says {path} reads it; it does not")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--fix", action="store_true", help="regenerate docs/configuration.md")
    args = parser.parse_args()
    problems = check(args.root.resolve(), fix=args.fix)
    for problem in problems:
        print(f"check_config: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
