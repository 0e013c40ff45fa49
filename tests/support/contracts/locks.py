"""The LockService contract (inplay.domain.settlement.ports): one holder per key, a fencing token that
grows with every acquisition, heartbeat and release only by the holder, expiry. The same over
``MemoryLocks`` and ``RedisLocks``."""

from __future__ import annotations

import asyncio

from inplay.domain.settlement.ports import LockService
from tests.support.contracts import uid


class LocksContract:
    async def test_one_holder_and_growing_fences(self, lock_service: LockService) -> None:
        key = uid("settle")
        first = await lock_service.acquire(key, 10_000)
        assert first is not None
        assert await lock_service.acquire(key, 10_000) is None  # held
        assert await first.check()
        await first.release()
        assert not await first.check()  # released: no longer ours
        second = await lock_service.acquire(key, 10_000)
        assert second is not None and second.fence > first.fence
        await first.release()  # a stale holder's release never frees the new holder's lock
        assert await second.check()
        assert await lock_service.acquire(key, 10_000) is None
        other = await lock_service.acquire(uid("settle"), 10_000)  # per key
        assert other is not None
        await second.release()
        await other.release()

    async def test_an_expired_lease_is_lost(self, lock_service: LockService) -> None:
        key = uid("settle")
        lease = await lock_service.acquire(key, 100)
        assert lease is not None
        await asyncio.sleep(0.3)
        successor = await lock_service.acquire(key, 10_000)
        assert successor is not None and successor.fence > lease.fence
        assert not await lease.check()  # the heartbeat finds it lost
        await successor.release()
