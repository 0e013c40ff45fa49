"""What must hold after every seed, computed from the stores alone (the ledger is the truth):

1. conservation: deposits + stakes (negative) + payouts (incl. refunds) + reversals = Σ entries = the Redis
   balance of every account (``tests.support.ledger_checks``: also every entry id at most once, so each
   ``payout:<run>:<bet>`` is paid at most once, and each bet's settlement money = its history's deltas);
2. every acknowledged bet is in the journal exactly once, with the slip the bettor sent;
3. no idempotency key has two bets in the journal, and every key the bettors sent answers the same bet;
4. no key is left IN_PROGRESS (PENDING) and no intent is unresolved after recovery;
5. every journal bet has its STAKE entry in the views (the views caught up);
6. settlement: every journal bet of an event is paid exactly what the results in effect at the end say
   (a rolled-back event: nothing); no bet is paid that is not in the journal.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from inplay.adapters.memory import PENDING
from inplay.domain.journal import decode_bet_row
from inplay.domain.settlement import Results
from inplay.model import EntryKind, PlacedBet
from tests.sim.world import SHARDS, World
from tests.support.ledger_checks import all_entries, assert_money_invariants


async def check(world: World) -> dict[str, int]:
    s = world.stores
    journal: list[PlacedBet] = []
    async for batch in s.ledger.scan_journal():
        journal.extend(decode_bet_row(row.body)[0] for row in batch.rows)
    counts = Counter(b.bet_id for b in journal)
    assert all(n == 1 for n in counts.values()), f"a bet written twice in the journal: {counts.most_common(3)}"
    by_id = {b.bet_id: b for b in journal}
    for ack in world.acks:
        bet = by_id.get(ack.bet_id)
        assert bet is not None, f"acknowledged bet {ack.bet_id} ({ack.account}/{ack.key}) is not in the journal"
        assert (bet.account_id, bet.idempotency_key) == (ack.account, ack.key), f"{ack.bet_id} answered another key"
    per_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b in journal:
        per_key[(b.account_id, b.idempotency_key)].add(b.bet_id)
    for ack in world.acks:
        per_key[(ack.account, ack.key)].add(ack.bet_id)
    doubled = {k: v for k, v in per_key.items() if len(v) > 1}
    assert not doubled, f"idempotency keys with two bets: {doubled}"
    records = await s.wallet.get_idempotent(sorted(set(world.keys)))
    stuck = [
        k for k, r in zip(sorted(set(world.keys)), records, strict=True) if r is not None and r.startswith(PENDING)
    ]
    assert not stuck, f"keys left IN_PROGRESS after recovery: {stuck}"
    assert not any(await s.wallet.intents_pending(SHARDS)), "journal intents left unresolved after recovery"
    entries = [e for a in world.accounts for e in await all_entries(s.ledger, a)]
    stakes = {e.bet_id for e in entries if e.kind == EntryKind.STAKE}
    assert stakes == set(by_id), f"journal bets without a STAKE entry: {sorted(set(by_id) - stakes)[:5]}"
    truth = await s.ledger.account_balances()
    projected = dict(zip(world.accounts, await s.wallet.balances(world.accounts), strict=True))
    differ = {a: (projected[a], truth.get(a, 0)) for a in world.accounts if projected[a] != truth.get(a, 0)}
    assert not differ, f"Redis balance != Σ ledger entries (redis, ledger): {differ}"
    summary = await assert_money_invariants(s.ledger, s.wallet, world.accounts, deposits=world.deposits)
    paid: dict[str, int] = defaultdict(int)
    for e in summary.entries:
        if e.kind in (EntryKind.PAYOUT, EntryKind.PAYOUT_REVERSAL):
            paid[e.bet_id] += e.amount_minor
    assert set(paid) <= set(by_id), "payouts to bets that are not in the journal"
    for bet in journal:
        expected = expected_return(bet, world.final.get(bet.legs[0].event_id))
        assert paid.get(bet.bet_id, 0) == expected, (
            f"bet {bet.bet_id} on {bet.legs[0].market_id}/{bet.legs[0].selection_id} paid "
            f"{paid.get(bet.bet_id, 0)}, expected {expected} under {world.final.get(bet.legs[0].event_id)}"
        )
    return {
        "journal_bets": len(journal),
        "acked": len({a.bet_id for a in world.acks}),
        "paid_minor": sum(paid.values()),
    }


def expected_return(bet: PlacedBet, results: Results | None) -> int:
    """A single at decimal odds: WIN = stake * odds, LOSE = 0, a void market = the stake back."""
    if results is None:
        return 0
    leg = bet.legs[0]
    market = results.markets.get(leg.market_id)
    if market is None:
        return 0
    if market.void:
        return bet.stake_minor
    outcome = market.selections.get(leg.selection_id)
    if outcome is None or outcome.outcome.name != "WIN":
        return 0
    return bet.stake_minor * leg.odds.num // leg.odds.den
