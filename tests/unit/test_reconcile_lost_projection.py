"""``reconcile`` of a projection that lost its data (no epoch marker: a flushed or failed-over Redis).

With ``repair`` it is rebuilt at once: no comparison scan first. That scan reads the whole ledger while
every debit answers NOT_READY, and the rebuild reads the ledger itself (the last session's note: a lost
projection was scanned twice). Without ``repair`` the report says it is lost even where its balances
happen to agree with the ledger, because its idempotency records and once-markers went too.
"""

from __future__ import annotations

from inplay.adapters.memory import MemoryLedger, MemoryWallet
from inplay.domain.wallet import ensure_projection_ready, reconcile
from inplay.model import EntryKind, LedgerEntry
from inplay.ports import Credit


class CountingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.comparisons = 0

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        self.comparisons += 1
        return await super().account_balances(as_of_ms)


async def funded() -> tuple[CountingLedger, MemoryWallet]:
    ledger, wallet = CountingLedger(), MemoryWallet()
    assert await ensure_projection_ready(wallet, ledger, "p", shards=1) == "fresh"
    deposit = LedgerEntry("dep:acc:1", "acc", EntryKind.DEPOSIT, 1_000, "EUR", "", "k1", 1)
    await ledger.append_entries([deposit])
    await wallet.credit_batch([Credit("acc", deposit.entry_id, deposit.amount_minor)])
    return ledger, wallet


async def test_a_lost_projection_is_repaired_without_a_comparison_scan() -> None:
    ledger, _ = await funded()
    lost = MemoryWallet()  # the same deployment's Redis, flushed: no epoch, no balances
    report = await reconcile(lost, ledger, repair=True, projection="p", shards=1)
    assert (report.lost, report.repaired) == (True, True)
    assert ledger.comparisons == 0  # before: one full scan, then the repair's own
    assert await lost.epoch() is not None
    assert await lost.balances(["acc"]) == [1_000]


async def test_a_lost_projection_is_reported_lost_even_where_balances_agree() -> None:
    ledger, _ = await funded()
    report = await reconcile(MemoryWallet(), ledger, repair=False, accounts=["never-funded"], shards=1)
    assert (report.lost, report.repaired, report.mismatched) == (True, False, {})


async def test_a_live_projection_is_compared_and_repaired_only_on_a_mismatch() -> None:
    ledger, wallet = await funded()
    report = await reconcile(wallet, ledger, repair=True, projection="p", shards=1)
    assert (report.lost, report.repaired, report.mismatched, ledger.comparisons) == (False, False, {}, 1)
