"""A finished worker command exits even when a thread of its stores is stuck (seen on the 3-node cluster:
`resume` completed the run, then never exited): the end of ``inplay.worker._run`` is bounded."""

from __future__ import annotations

import subprocess
import sys
import time

STUCK_THREAD = """
import asyncio, time
import inplay.worker as worker
worker.CLOSE_TIMEOUT_S = 0.5

async def command() -> int:
    asyncio.get_running_loop().run_in_executor(None, time.sleep, 60)  # a client call that never returns
    print("done", flush=True)
    return 3

raise SystemExit(worker._run(command()))
"""


def test_a_stuck_executor_thread_does_not_keep_a_finished_command_alive() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", STUCK_THREAD], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout.strip()) == (3, "done"), proc.stderr
    assert time.monotonic() - start < 20
    assert "did not finish" in proc.stderr or proc.stderr == ""
