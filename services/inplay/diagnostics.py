"""SIGUSR1 prints every asyncio task of the running loop with the await chain it is parked on.

A hung asyncio process shows nothing useful in a thread dump (the loop sits in ``select``): what is stuck
is a task. The server and the operator CLI install this at start (``kill -USR1 <pid>``); the test suite's
watchdog sends it shortly before a test phase's timeout, and the CLI harness before it kills a stuck command.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from types import FrameType
from typing import Any


def dump_tasks(_signum: int = 0, _frame: FrameType | None = None) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        print("[taskdump] no event loop is running", file=sys.stderr, flush=True)
        return
    tasks = asyncio.all_tasks(loop)
    print(f"[taskdump] {len(tasks)} asyncio tasks", file=sys.stderr, flush=True)
    for task in tasks:
        print(f"--- {task.get_name()}: {task!r}"[:400], file=sys.stderr)
        for line in _await_chain(task.get_coro()):
            print("    " + line, file=sys.stderr)
    sys.stderr.flush()


def _await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine is parked: each frame of its ``await`` chain (a task's own stack shows
    only the outermost frame of a suspended coroutine), then the non-coroutine object it waits on."""
    lines: list[str] = []
    while coro is not None and len(lines) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            lines.append(f"awaiting {coro!r}"[:300])
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return lines


def install() -> None:
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, dump_tasks)
