"""The embedded stores (inplay.adapters.memory) keep the real adapters' semantics: the same scenarios as the
Redis wallet / Cassandra ledger integration tests, on memory."""

from __future__ import annotations

import asyncio
import json

import pytest

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.journal import PLACED_SEQ_KEY
from inplay.errors import InvalidArgument
from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, Leg, PlacedBet
from inplay.ports import AccountLimits, BusMessage, Credit, Debit, DebitResult

DAY = "20260301"
NOW = 1_772_323_200_000


def debit(
    account: str,
    amount: int,
    key: str,
    bet_id: str | None = None,
    *,
    liability_keys: tuple[str, ...] = (),
    liability: int = 0,
    cap: int = 0,
    day: str = DAY,
    now_ms: int = NOW,
) -> Debit:
    return Debit(account, key, bet_id or f"bet-{key}", amount, liability_keys, liability, cap, day, now_ms)


def bet(account: str, events: tuple[str, ...], at_ms: int, bet_id: str, stake: int = 100) -> PlacedBet:
    legs = tuple(Leg(f"{ev}:mr", "home", Odds(3, 1), ev) for ev in events)
    return PlacedBet(bet_id, account, legs, stake, "EUR", stake * 3, AcceptancePolicy.ANY, f"key-{bet_id}", at_ms)


# --- wallet --------------------------------------------------------------------------------------------


async def test_every_debit_status_in_one_batch() -> None:
    w = MemoryWallet()
    await w.set_balances({"rich": 100_000, "poor": 50, "limited": 100_000, "excluded": 100_000})
    await w.set_limits("limited", AccountLimits(daily_stake_limit_minor=1_000))
    await w.set_limits("excluded", AccountLimits(self_excluded_until_ms=NOW + 1))
    results = await w.debit_batch(
        [
            debit("rich", 1_000, "d1", liability_keys=("m/s",), liability=9_000, cap=10_000),
            debit("rich", 1_000, "d1", "other"),
            debit("poor", 51, "p"),
            debit("limited", 600, "l1"),
            debit("limited", 600, "l2"),
            debit("excluded", 10, "x"),
            debit("rich", 100, "r2", liability_keys=("m/s",), liability=1_001, cap=10_000),
        ]
    )
    assert [r.status for r in results] == [
        "DEBITED",
        "DUPLICATE",
        "INSUFFICIENT_FUNDS",
        "DEBITED",
        "DAILY_STAKE_LIMIT",
        "SELF_EXCLUDED",
        "LIABILITY_EXCEEDED",
    ]
    assert results[0] == DebitResult("DEBITED", 99_000)
    assert results[1].existing == "PENDING:bet-d1:"
    assert await w.balances(["rich", "poor", "limited", "excluded", "nobody"]) == [99_000, 50, 99_400, 100_000, 0]
    # A retried debit (same bet id) finds its own reservation and is not applied twice.
    assert (await w.debit_batch([debit("rich", 1_000, "d1")]))[0].status == "DEBITED"
    assert await w.balances(["rich"]) == [99_000]


async def test_credits_once_and_compensation_once() -> None:
    w = MemoryWallet()
    dep = Credit("a", "deposit:a:k", 1_000)
    assert await w.credit_batch([dep, dep]) == [True, False]
    assert await w.credit_batch([dep]) == [False]
    await w.set_limits("a", AccountLimits(daily_stake_limit_minor=500))
    d = debit("a", 400, "k", liability_keys=("m/s",), liability=100, cap=100)
    assert (await w.debit_batch([d]))[0].status == "DEBITED"
    await w.compensate([d, d])
    await w.compensate([d])
    await w.compensate([debit("a", 400, "never")])  # never debited: nothing to refund
    assert await w.balances(["a"]) == [1_000]
    assert await w.get_idempotent([("a", "k")]) == [None]
    again = debit("a", 400, "k", "bet-2", liability_keys=("m/s",), liability=100, cap=100)
    assert (await w.debit_batch([again]))[0].status == "DEBITED"  # counters were released


async def test_finish_keeps_reservations_from_rejections() -> None:
    w = MemoryWallet()
    await w.set_balances({"a": 100})
    await w.debit_batch([debit("a", 100, "k", "b1")])
    await w.finish_idempotent([("a", "k", '{"rejection":{}}'), ("a", "free", '{"rejection":{}}')])
    assert await w.get_idempotent([("a", "k"), ("a", "free")]) == ["PENDING:b1:", '{"rejection":{}}']
    await w.finish_idempotent([("a", "k", '{"bet":{}}')])
    assert await w.get_idempotent([("a", "k")]) == ['{"bet":{}}']
    await w.finish_idempotent([("a", "k", '{"rejection":{}}')])
    assert await w.get_idempotent([("a", "k")]) == ['{"bet":{}}']


async def test_concurrent_debits_never_overdraw() -> None:
    w = MemoryWallet()
    await w.credit_batch([Credit("a", "deposit:a:1", 5_000)])
    results = await asyncio.gather(*(w.debit_batch([debit("a", 100, f"c{i}")]) for i in range(200)))
    flat = [r for batch in results for r in batch]
    assert [r.status for r in flat].count("DEBITED") == 50
    assert all(r.balance_minor >= 0 for r in flat)
    assert await w.balances(["a"]) == [0]


# --- ledger --------------------------------------------------------------------------------------------


async def test_ledger_round_trip_paging_and_history() -> None:
    ledger = MemoryLedger()
    bets = [bet("acc", ("ev",), NOW + i, f"b{i:02d}") for i in range(25)]
    assert await ledger.append_bets(bets) == [None] * 25
    assert await ledger.append_bets(bets[:3]) == [None] * 3  # rewriting stores the same rows
    assert await ledger.get_bet("b07") == bets[7]
    assert await ledger.get_bet_by_idempotency("acc", "key-b07") == "b07"

    pages, token = [], ""
    while True:
        page, token = await ledger.list_account_bets("acc", 10, token)
        pages.append(page)
        if not token:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [b.bet_id for p in pages for b in p] == [f"b{i:02d}" for i in reversed(range(25))]
    with pytest.raises(InvalidArgument):
        await ledger.list_account_bets("acc", 10, "garbage")

    entries, _ = await ledger.account_entries("acc", 100, "")
    assert len(entries) == 25 and all(e.kind == EntryKind.STAKE and e.amount_minor == -100 for e in entries)

    settled = BetEvent("b01", f"{NOW + 10:013d}:run", "SETTLED", BetState.WON, 300, "run", NOW + 10, (LegOutcome.WIN,))
    await ledger.append_bet_events([settled, settled])
    history = await ledger.bet_history("b01")
    assert [(h.seq_key, h.kind) for h in history] == [(PLACED_SEQ_KEY, "PLACED"), (settled.seq_key, "SETTLED")]


async def test_event_bets_each_once_and_balances_as_of() -> None:
    ledger = MemoryLedger()
    bets = [bet(f"a{i % 7}", ("ev", "other") if i % 5 == 0 else ("ev",), NOW + i, f"b{i:04d}") for i in range(1000)]
    await ledger.append_bets(bets)
    pages = [p async for p in ledger.event_bets("ev", page_size=128)]
    assert all(len(p) <= 128 for p in pages)
    assert sorted(b.bet_id for p in pages for b in p) == sorted(b.bet_id for b in bets)
    assert sum(len(p) for p in [p async for p in ledger.event_bets("other")]) == 200

    await ledger.append_entries([LedgerEntry("deposit:a0:1", "a0", EntryKind.DEPOSIT, 50_000, "EUR", "", "", NOW - 1)])
    balances = await ledger.account_balances()
    entries, _ = await ledger.account_entries("a0", 10_000, "")
    assert balances["a0"] == sum(e.amount_minor for e in entries) == 50_000 - 143 * 100
    assert (await ledger.account_balances(as_of_ms=NOW - 1)) == {"a0": 50_000}


# --- bus -----------------------------------------------------------------------------------------------


async def test_event_bus_keeps_order_and_refuses_after_close() -> None:
    bus = MemoryEventBus(max_per_topic=3)
    await bus.publish([BusMessage("t", "k", json.dumps({"n": i}).encode()) for i in range(5)])
    await bus.flush()
    assert bus.decoded("t") == [{"n": 2}, {"n": 3}, {"n": 4}]  # bounded: the newest kept
    assert bus.decoded("other") == []
    await bus.close()
    with pytest.raises(RuntimeError):
        await bus.publish([BusMessage("t", "k", b"{}")])
