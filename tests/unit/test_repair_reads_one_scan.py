"""A repair's rebuild must count every credit it marks as applied (the chaos suite's open finding: after a
FLUSHALL during a settlement run, one wallet balance ended below its ledger sum).

The settlement run keeps appending payout entries to the ledger while a repair rebuilds the wallet (only
the Redis credits are fenced, not the ledger rows). The rebuild read the balances and the credit entry ids
in two scans: a payout appended between them was marked applied without being counted, so its credit,
refused under the fence and retried after it, was skipped as a duplicate and the payout never reached the
wallet. One pass over the entries gives both, so such an entry is in both or in neither.
"""

from __future__ import annotations

from typing import Any

from inplay.adapters.memory import MemoryLedger, MemoryWallet
from inplay.domain.wallet import ensure_projection_ready, repair_projection
from inplay.model import EntryKind, LedgerEntry
from inplay.ports import Credit, WalletUnavailable

PAYOUT = LedgerEntry("payout:bet-1:run-1", "acc", EntryKind.PAYOUT, 700, "EUR", "bet-1", "run-1", 2)


class PayoutDuringTheScan(MemoryLedger):
    """A settlement page lands in the ledger right after the repair's first read of the entries (and its
    Redis credit is refused by the fence)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.wallet: MemoryWallet | None = None

    async def _land_payout(self) -> None:
        if not self.armed:
            return
        self.armed = False
        await self.append_entries([PAYOUT])
        assert self.wallet is not None
        try:
            await self.wallet.credit_batch([Credit("acc", PAYOUT.entry_id, PAYOUT.amount_minor)])
            raise AssertionError("the repair fence should refuse the credit")
        except WalletUnavailable:
            pass  # the settlement engine retries the page after the repair

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        out = await super().account_balances(as_of_ms)
        await self._land_payout()
        return out

    async def scan_balances(self) -> Any:
        out = await super().scan_balances()
        await self._land_payout()
        return out


async def test_a_payout_appended_during_the_rebuild_reaches_the_wallet_once() -> None:
    ledger = PayoutDuringTheScan()
    wallet = MemoryWallet()
    ledger.wallet = wallet
    assert await ensure_projection_ready(wallet, ledger, "p", shards=1) == "fresh"
    deposit = LedgerEntry("dep:acc:1", "acc", EntryKind.DEPOSIT, 1_000, "EUR", "", "k1", 1)
    await ledger.append_entries([deposit])
    await wallet.credit_batch([Credit("acc", deposit.entry_id, deposit.amount_minor)])
    ledger.armed = True
    await repair_projection(wallet, ledger, "p", shards=1)
    assert not ledger.armed, "the payout was not injected: the test did not exercise the race"
    # The settlement engine redoes the refused page: the ledger row again (idempotent), then the credit.
    await ledger.append_entries([PAYOUT])
    await wallet.credit_batch([Credit("acc", PAYOUT.entry_id, PAYOUT.amount_minor)])
    truth = await ledger.account_balances()
    assert truth == {"acc": 1_700}
    assert await wallet.balances(["acc"]) == [1_700]  # before the fix: 1_000 (the payout marked, not counted)
