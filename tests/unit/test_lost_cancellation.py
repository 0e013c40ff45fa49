"""A shutdown must not hang on a periodic task whose cancellation was lost on the way down.

CI once hung 600 s in the teardown of a bet path (twice in one run) with the event loop idle on a 0.2 s
timer: the orphan adopter's period in the tests. CPython 3.11's ``asyncio.wait_for`` can swallow a
cancellation that arrives as the awaited future completes (gh-86296); a ``while True`` loop stopped only by
``cancel()`` then runs on and ``stop()`` waits for it forever. The loops now also end at their stop flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.domain.commit import OrphanAdopter, ShardWriter, WriterConfig

CONFIG = WriterConfig(shards=2, lease_ttl_ms=300)


async def returns_within(call: Coroutine[Any, Any, None], seconds: float) -> bool:
    """Whether ``call`` ends within ``seconds`` (not wait_for: on a timeout it would wait for the cancelled
    call, which is exactly what never ends here)."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return task in done


class SwallowsOneCancel(OrphanAdopter):
    """A pass whose store call lost the cancellation (as 3.11's wait_for can)."""

    swallowed = 0

    async def run_once(self) -> list[int]:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.swallowed += 1  # lost: the task goes on as if nothing happened
        return []


async def test_the_adopter_stops_although_a_pass_swallowed_its_cancellation() -> None:
    adopter = SwallowsOneCancel(
        MemoryWallet(), MemoryLedger(), MemoryEventBus(), "bets", CONFIG, owner="w", period_s=0.01
    )
    adopter.start()
    await asyncio.sleep(0.035)  # inside a pass (a pass sleeps 50 ms of every 60): the cancel lands in it
    assert await returns_within(adopter.stop(), 3.0)  # before: never returned
    assert adopter.swallowed == 1
    assert adopter._task is not None and adopter._task.done()


class RenewSwallowsOneCancel(MemoryWallet):
    swallowed = 0

    async def renew_shard(self, shard: int, owner: str, ttl_ms: int) -> bool:
        if ttl_ms:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.swallowed += 1
        return await super().renew_shard(shard, owner, ttl_ms)


async def test_the_writer_stops_although_its_lease_renewal_swallowed_its_cancellation() -> None:
    wallet = RenewSwallowsOneCancel()
    config = WriterConfig(shards=2, lease_ttl_ms=150)  # renewed every 50 ms: the stop lands in a renewal
    writer = ShardWriter(wallet, MemoryLedger(), config, owner="w", on_batch=lambda *_: None)
    await writer.start()
    await asyncio.sleep(0.075)
    assert await returns_within(writer.stop(), 3.0)  # before: never returned
    assert wallet.swallowed == 1
