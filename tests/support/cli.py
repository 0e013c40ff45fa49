"""The operator's command line, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def run_reconcile(env: dict[str, str], *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m inplay.cli reconcile ARGS`` in ``env``, off the event loop; the finished process."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inplay.cli", "reconcile", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
