"""Money invariants every settlement test ends with, computed from the ledger alone (plus the Redis
projection compared against it):

1. each ledger entry id (``payout:<run>:<bet>``, ``reversal:<run>:<bet>``, ...) appears at most once;
2. per settled bet, the settlement money in the ledger equals the deltas its bet history records
   (a second PAYOUT row for one history row is exactly the C1 double payment);
3. money is conserved: deposits + stakes (negative) + stake reversals + payouts (incl. refunds) +
   payout reversals + withdrawals = Σ balances, with no entry of another kind;
4. the Redis projection equals the ledger balance of every account.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inplay.model import EntryKind, LedgerEntry

SETTLEMENT_KINDS = frozenset({"SETTLED", "ROLLED_BACK", "REINSTATED"})
KNOWN_KINDS = frozenset(
    {
        EntryKind.DEPOSIT,
        EntryKind.STAKE,
        EntryKind.STAKE_REVERSAL,
        EntryKind.PAYOUT,
        EntryKind.PAYOUT_REVERSAL,
        EntryKind.WITHDRAWAL,
    }
)


@dataclass
class LedgerSummary:
    by_kind: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)

    def payout_entry_ids(self) -> list[str]:
        return [e.entry_id for e in self.entries if e.kind in (EntryKind.PAYOUT, EntryKind.PAYOUT_REVERSAL)]


async def all_entries(ledger: Any, account_id: str, page_size: int = 1000) -> list[LedgerEntry]:
    out: list[LedgerEntry] = []
    token = ""
    while True:
        page, token = await ledger.account_entries(account_id, page_size, token)
        out.extend(page)
        if not token:
            return out


async def assert_money_invariants(
    ledger: Any, wallet: Any, accounts: Sequence[str], *, deposits: int | None = None
) -> LedgerSummary:
    """Asserts the four invariants above for ``accounts``; returns the sums (by entry kind name)."""
    summary = LedgerSummary()
    for account in accounts:
        entries = await all_entries(ledger, account)
        summary.entries.extend(entries)
        summary.balances[account] = sum(e.amount_minor for e in entries)
    ids = Counter(e.entry_id for e in summary.entries)
    duplicates = {i: n for i, n in ids.items() if n > 1}
    assert not duplicates, f"ledger entries written more than once: {duplicates}"
    unknown = [e for e in summary.entries if e.kind not in KNOWN_KINDS]
    assert not unknown, f"entries of unknown kinds: {unknown[:5]}"
    for e in summary.entries:
        summary.by_kind[e.kind.name] = summary.by_kind.get(e.kind.name, 0) + e.amount_minor
    await _assert_history_matches_money(ledger, summary.entries)
    total = sum(summary.balances.values())
    assert total == sum(summary.by_kind.get(k.name, 0) for k in KNOWN_KINDS), "money not conserved"
    if deposits is not None:
        assert summary.by_kind.get("DEPOSIT", 0) == deposits
    projected = await wallet.balances(list(accounts))
    assert dict(zip(accounts, projected, strict=True)) == summary.balances, "Redis differs from the ledger"
    return summary


async def _assert_history_matches_money(ledger: Any, entries: Sequence[LedgerEntry]) -> None:
    money: dict[str, int] = {}
    for e in entries:
        if e.kind in (EntryKind.PAYOUT, EntryKind.PAYOUT_REVERSAL) and e.bet_id:
            money[e.bet_id] = money.get(e.bet_id, 0) + e.amount_minor
    for bet_id, paid in sorted(money.items()):
        history = await ledger.bet_history(bet_id)
        recorded = sum(ev.amount_minor for ev in history if ev.kind in SETTLEMENT_KINDS)
        assert paid == recorded, f"bet {bet_id}: ledger settlement money {paid} != history deltas {recorded}"
