"""Lint: functions stay short (a ratchet, as TigerBeetle's tidy keeps its 70-line limit).

A function (or method) of services/inplay or services/inplay_edge longer than ``LIMIT`` lines fails, unless
it is listed in ``function_size_allowlist.txt`` (``path::qualified.name max_lines``) — the debt that existed
when the rule came in. A listed function may shrink, never grow; once it fits the limit its line must be
removed, so the list only gets shorter. Generated stubs (``*/v1/*``) are not checked.

    python scripts/lint/check_function_size.py [--root DIR] [--write-allowlist]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

LIMIT = 70
PACKAGES = ("services/inplay", "services/inplay_edge")
ALLOWLIST = Path(__file__).with_name("function_size_allowlist.txt")


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, length in lines) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield name, (node.end_lineno or node.lineno) - start + 1
            yield from functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")


def measure(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "/v1/" in rel:
                continue
            for name, lines in functions(ast.parse(path.read_text(encoding="utf-8"))):
                sizes[f"{rel}::{name}"] = max(lines, sizes.get(f"{rel}::{name}", 0))
    return sizes


def read_allowlist(path: Path) -> dict[str, int]:
    allowed: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        line = line.split("#", 1)[0].strip()
        if line:
            key, lines = line.rsplit(maxsplit=1)
            allowed[key] = int(lines)
    return allowed


def check(sizes: dict[str, int], allowed: dict[str, int], limit: int = LIMIT) -> list[str]:
    problems = []
    for key, lines in sorted(sizes.items()):
        if lines <= limit:
            if key in allowed:
                problems.append(f"{key} is {lines} lines now (limit {limit}): remove it from the allowlist")
        elif key not in allowed:
            problems.append(f"{key} is {lines} lines (limit {limit}): split it")
        elif lines > allowed[key]:
            problems.append(f"{key} grew to {lines} lines (allowlisted at {allowed[key]}): it may only shrink")
    problems += [f"{key}: in the allowlist but no longer exists" for key in sorted(set(allowed) - set(sizes))]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--write-allowlist", action="store_true", help="record today's long functions")
    args = parser.parse_args()
    sizes = measure(args.root.resolve())
    if args.write_allowlist:
        long = {k: v for k, v in sizes.items() if v > LIMIT}
        header = "# Functions over the 70-line limit when the ratchet came in: they may shrink, never grow.\n"
        ALLOWLIST.write_text(header + "".join(f"{k} {v}\n" for k, v in sorted(long.items())), encoding="utf-8")
        return 0
    problems = check(sizes, read_allowlist(ALLOWLIST))
    for problem in problems:
        print(f"check_function_size: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
