"""docs/modules.md (the module map) names every module of the runtime package and the edge tooling, and no
module that no longer exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> set[str]:
    found = set()
    for package in ("inplay", "inplay_edge"):
        for path in (ROOT / "services" / package).rglob("*.py"):
            rel = path.relative_to(ROOT / "services").as_posix()
            if "/v1/" in rel or (path.name == "__init__.py" and path.stat().st_size < 100):
                continue
            found.add(rel)
    return found


def test_every_module_is_in_the_map_and_every_entry_exists() -> None:
    listed = set(re.findall(r"^- `([^`]+\.py)`", (ROOT / "docs" / "modules.md").read_text(), flags=re.M))
    modules = _modules()
    assert sorted(modules - listed) == [], "add these modules to docs/modules.md"
    assert sorted(listed - modules) == [], "these modules are gone: remove them from docs/modules.md"
