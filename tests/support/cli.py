"""The operator's command line, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd``; a command still running at ``timeout_s`` is asked where it waits (SIGUSR1: the CLI
    prints its asyncio tasks, inplay.diagnostics), then killed, and the error carries that dump."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        stuck = " ".join(cmd[2:])
        raise AssertionError(f"{stuck} still running after {timeout_s} s; its stderr:\n{err[-12000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


async def run_reconcile(env: dict[str, str], *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m inplay.cli reconcile ARGS`` in ``env``, off the event loop; the finished process."""
    return await asyncio.to_thread(_run, [sys.executable, "-m", "inplay.cli", "reconcile", *args], env, timeout_s)
