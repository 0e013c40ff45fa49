"""Two processes starting on a lost projection both repair it (every start does, and an operator's
``reconcile --repair`` too): the one overtaken must wait for the other's rebuild, not fail (the chaos suite's
FLUSHALL during a settlement run: the CLI's repair lost the fence to the resumed worker's and exited 1)."""

from __future__ import annotations

import asyncio

from inplay.adapters.memory import MemoryLedger, MemoryWallet
from inplay.domain.wallet import ensure_projection_ready
from inplay.ports import Credit, WalletRebuild


class SlowRebuild(MemoryWallet):
    """A rebuild that takes a while (a real one reads the whole ledger), so that two repairs overlap."""

    async def rebuild(self, state: WalletRebuild, fence: str = "1") -> None:
        await asyncio.sleep(0.05)
        await super().rebuild(state, fence)


async def test_an_overtaken_repair_waits_for_the_other_one() -> None:
    wallet, ledger = MemoryWallet(), MemoryLedger()
    assert await ensure_projection_ready(wallet, ledger, "p", shards=2) == "fresh"
    await wallet.credit_batch([Credit("acc", "seed", 500)])
    lost = SlowRebuild()  # the same projection, its data gone (no epoch marker)
    results = await asyncio.gather(
        ensure_projection_ready(lost, ledger, "p", shards=2),
        ensure_projection_ready(lost, ledger, "p", shards=2),
        return_exceptions=True,
    )
    assert results == ["rebuilt", "rebuilt"], results  # before: WalletUnavailable for the overtaken one
    assert await lost.epoch() is not None
