"""The asyncio tasks of a stuck test, printed before pytest-timeout kills it (``inplay.diagnostics``).

pytest-timeout prints the threads' stacks, and a hung asyncio test shows nothing there but the event loop
in ``select``. A watchdog sends SIGUSR1 to this process shortly before a test phase's timeout.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from inplay.diagnostics import dump_tasks, install

__all__ = ["dump_tasks", "install", "watchdog"]


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Sends SIGUSR1 to this process if the block is still running after ``seconds``."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    if seconds > 0:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()
