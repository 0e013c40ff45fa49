"""The rendered Envoy config is a committed file checked by ``k8s/render_envoy.py --check``: it must not vary
from one process to the next. The edge's shed answer packs an ErrorInfo (a protobuf map field, serialized in
a per-process order unless asked to be deterministic): CI failed once on exactly that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_shed_status_is_the_same_in_every_process() -> None:
    code = "from inplay_edge.render import shed_status_bin; print(shed_status_bin(1000))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()
        for _ in range(8)
    }
    assert len(outputs) == 1, outputs
