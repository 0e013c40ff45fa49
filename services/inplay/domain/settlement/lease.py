"""Use of the settlement leases (the per-event lock and the multi-event lock, behind ``LockService``):
polling for one, keeping it alive while a run executes, and checking it before every write.

A holder that pauses longer than the TTL loses the lock; its next ``verify`` (before every page's writes)
fails and it stops (``LeaseLost``). The window between a successful check and the writes that follow is
harmless for the run itself (its rows are deterministic: another holder resuming the same run writes
identical rows) and narrow for different runs (a new run starts only after reading the run history under
the lock). The Redis implementation is ``adapters/redis_lease.py``, its twin ``adapters/memory_settlement.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from inplay.domain.settlement.ports import Lease, LockService

log = logging.getLogger("inplay.settlement")

# Accumulators (bets with legs on several events) are settled under this one global lock.
MULTI_LOCK_KEY = "settlement:multi"


def event_lock_key(event_id: str) -> str:
    return f"settlement:event:{event_id}"


class LeaseLost(Exception):
    """The lock was lost (expired and taken over): stop writing at once."""


class Guard:
    """Keeps a lease alive in the background while a run executes; ``verify`` before each write."""

    def __init__(self, lease: Lease, ttl_ms: int) -> None:
        self.lease = lease
        self._interval = max(ttl_ms / 3000, 0.05)
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Guard:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beat(self) -> None:
        while not self._lost:
            await asyncio.sleep(self._interval)
            try:
                if not await self.lease.check():
                    self._lost = True
            except Exception:  # a Redis hiccup: verify() will tell
                log.warning("lease renewal failed", exc_info=True)

    async def verify(self) -> None:
        if self._lost or not await self.lease.check():
            self._lost = True
            raise LeaseLost("settlement lock lost")


async def acquire(locks: LockService, key: str, ttl_ms: int, wait_ms: int) -> Lease | None:
    """Polls for a lock for up to ``wait_ms``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_ms / 1000
    delay = 0.02
    while True:
        lease = await locks.acquire(key, ttl_ms)
        if lease is not None:
            return lease
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
