"""Settlement against the real Cassandra (ledger + settlement tables), Redis (balances, event lock) and
Kafka (BetSettled events, result messages): every outcome type, accumulators across events, re-runs,
void markets, rollback, rollback of a rollback, resettlement, money conservation, progress, audit.

The world of each test (stores, service, accounts, bets) is tests/support/settlement.py's SettleEnv.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from inplay.audit import balance_at, bet_audit
from inplay.domain.settlement.consumer import ResultsConsumer
from inplay.domain.settlement.messages import result_message
from inplay.errors import Aborted, FailedPrecondition
from inplay.model import BetState, EntryKind, LedgerEntry, RunKind, RunState
from inplay.ports import TOPIC_RESULTS, BusMessage, Credit
from tests.support.settlement import (
    DH,
    HL,
    HW,
    OPEN,
    P,
    SettleEnv,
    V,
    W,
    now_ms,
    open_senv,
    read_topic,
    res,
    source_factory,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def senv(
    ledger: Any,
    wallet: Any,
    bus: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[SettleEnv]:
    async with open_senv(ledger, wallet, bus, topic_prefix, kafka_bootstrap, redis_url, redis_prefix, unique_id) as env:
        yield env


# --------------------------------------------------------------------------------------------------------


async def test_every_outcome_type_of_a_single(senv: SettleEnv) -> None:
    acc = await senv.account()
    ev = senv.unique_id("ev")
    cases = [
        (("m1", "home", "2.50"), (BetState.WON, 2500)),
        (("m1", "away", "3.00"), (BetState.LOST, 0)),
        (("m2", "over", "1.90"), (BetState.WON, 1450)),  # half win: (1.90 + 1) / 2
        (("m3", "under", "1.90"), (BetState.PARTIAL, 500)),  # half lose: half the stake back
        (("m4", "x", "2.00"), (BetState.REFUNDED, 1000)),  # void selection
        (("m5", "y", "2.00"), (BetState.REFUNDED, 1000)),  # push
        (("m6", "a", "5.00"), (BetState.WON, 2500)),  # dead heat 1/2
        (("m6", "b", "1.50"), (BetState.PARTIAL, 750)),  # dead heat 1/2 below evens
        (("m6", "c", "9.00"), (BetState.LOST, 0)),  # not among the dead heat
        (("m7", "z", "4.00"), (BetState.REFUNDED, 1000)),  # market voided as a whole
        (("m8", "q", "2.00"), (BetState.OPEN, 0)),  # market not resulted
    ]
    bets = [senv.make_bet(acc, [(ev, m, s, o)]) for (m, s, o), _ in cases]
    await senv.place(bets)
    results = res(
        ("m1", "home", W),
        ("m2", "over", HW),
        ("m3", "under", HL),
        ("m4", "x", V),
        ("m5", "y", P),
        ("m6", "a", DH, (1, 2)),
        ("m6", "b", DH, (1, 2)),
        void=["m7"],
    )
    run = await senv.service.settle_event(ev, results, "r1", reason="full time")
    assert run.state == RunState.COMPLETED and run.record.kind == RunKind.SETTLE
    expected = sum(ret for _, (_, ret) in cases)
    assert (run.stats.bets_total, run.stats.bets_processed, run.stats.bets_still_open) == (11, 11, 1)
    assert run.stats.payouts_minor == expected
    for bet, (_, want) in zip(bets, cases, strict=True):
        assert await senv.settled(bet) == want, bet.legs[0]
    # Payout entries: deterministic ids, created at the run's start, only for returns > 0.
    winner_entries = await senv.entries_of(bets[0])
    assert [(e.kind, e.amount_minor, e.entry_id, e.created_at_ms) for e in winner_entries] == [
        (EntryKind.STAKE, -1000, f"stake:{bets[0].bet_id}", bets[0].placed_at_ms),
        (EntryKind.PAYOUT, 2500, f"payout:{run.run_id}:{bets[0].bet_id}", run.record.started_at_ms),
    ]
    assert [e.kind for e in await senv.entries_of(bets[1])] == [EntryKind.STAKE]
    assert sorted(senv.settled_markets) == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    kinds = await senv.check_conservation()
    assert kinds["PAYOUT"] == expected and kinds["STAKE"] == -11_000
    # BetSettled events on Kafka, keyed by the event, one per bet the run changed.
    messages = senv.settlement_messages(ev, expect=10)
    assert len(messages) == 10
    by_bet = {m["bet_id"]: m for m in messages}
    assert by_bet[bets[0].bet_id]["status"] == "WON" and by_bet[bets[0].bet_id]["amount_minor"] == 2500
    assert by_bet[bets[7].bet_id]["legs"][0]["outcome"] == "DEAD_HEAT"


async def test_accumulators_with_mixed_legs_across_two_events(senv: SettleEnv) -> None:
    acc = await senv.account()
    e1, e2 = senv.unique_id("ev"), senv.unique_id("ev")
    both = senv.make_bet(acc, [(e1, "a1", "h", "2.00"), (e2, "b1", "h", "3.00")], 100)
    first_loses = senv.make_bet(acc, [(e1, "a1", "x", "2.00"), (e2, "b1", "h", "3.00")], 100)
    void_leg = senv.make_bet(acc, [(e1, "a2", "h", "2.00"), (e2, "b1", "h", "3.00")], 100)
    half = senv.make_bet(acc, [(e1, "a3", "o", "1.50"), (e2, "b2", "u", "2.00")], 100)
    same_event = senv.make_bet(acc, [(e1, "a1", "h", "2.00"), (e1, "a3", "o", "1.50")], 100)
    await senv.place([both, first_loses, void_leg, half, same_event])

    run1 = await senv.service.settle_event(e1, res(("a1", "h", W), ("a3", "o", HW), void=["a2"]), "ft")
    assert run1.stats.bets_processed == 5 and run1.stats.bets_still_open == 3
    assert await senv.settled(same_event) == (BetState.WON, 250)  # 100 x 2.00 x 1.25
    assert await senv.settled(first_loses) == (BetState.LOST, 0)  # a lost leg loses at once
    hist = [e for e in await senv.ledger.bet_history(both.bet_id) if e.run_id]
    assert [(e.kind, e.status, e.leg_outcomes) for e in hist] == [("SETTLED", BetState.OPEN, (W, OPEN))]

    run2 = await senv.service.settle_event(e2, res(("b1", "h", W), ("b2", "u", HL)), "ft")
    assert run2.stats.bets_processed == 4 and run2.stats.bets_still_open == 0
    assert await senv.settled(both) == (BetState.WON, 600)
    assert await senv.settled(void_leg) == (BetState.WON, 300)
    assert await senv.settled(half) == (BetState.PARTIAL, 62)  # floor(100 x 1.25 x 0.5)
    assert await senv.settled(first_loses) == (BetState.LOST, 0)
    kinds = await senv.check_conservation()
    assert kinds["PAYOUT"] == 250 + 600 + 300 + 62

    # e1 corrected: a1 was won by "x". The accumulator paid by e2's run is reversed by e1's correction.
    rb, settle = await senv.service.resettle(e1, res(("a1", "x", W), ("a3", "o", HW), void=["a2"]), "fix")
    assert rb.state == settle.state == RunState.COMPLETED
    assert await senv.settled(both) == (BetState.LOST, 0)
    assert await senv.settled(first_loses) == (BetState.WON, 600)
    assert await senv.settled(same_event) == (BetState.LOST, 0)
    assert await senv.settled(void_leg) == (BetState.WON, 300)
    await senv.check_conservation()


async def test_rerun_is_idempotent(senv: SettleEnv) -> None:
    acc = await senv.account()
    ev = senv.unique_id("ev")
    bets = [senv.make_bet(acc, [(ev, "m", "h" if i % 3 else "a", "2.00")]) for i in range(20)]
    await senv.place(bets)
    results = res(("m", "h", W))
    run = await senv.service.settle_event(ev, results, "req")
    again = await senv.service.settle_event(ev, results, "req")
    assert again.run_id == run.run_id and again.stats == run.stats and again.state == RunState.COMPLETED
    # A fresh service (another process) with the same request: the same completed run, nothing written.
    third = await senv.new_service().settle_event(ev, results, "req")
    assert third.run_id == run.run_id
    with pytest.raises(FailedPrecondition) as exc:
        await senv.service.settle_event(ev, results, "other-request")
    assert exc.value.reason == "MARKET_ALREADY_SETTLED"
    winners = [b for i, b in enumerate(bets) if i % 3]
    for bet in winners:
        assert [e.kind for e in await senv.entries_of(bet)] == [EntryKind.STAKE, EntryKind.PAYOUT]
    assert (await senv.check_conservation())["PAYOUT"] == len(winners) * 2000
    assert len(senv.settlement_messages(ev, expect=20)) == 20


async def test_void_market_refunds_stakes_exactly_once(senv: SettleEnv) -> None:
    acc = await senv.account(10_000)
    ev = senv.unique_id("ev")
    bets = [senv.make_bet(acc, [(ev, "m", s, "3.00")], 500) for s in ("a", "b", "c", "d")]
    await senv.place(bets)
    assert await senv.wallet.balances([acc]) == [8000]
    run = await senv.service.settle_event(ev, res(void=["m"]), "abandoned")
    await senv.service.settle_event(ev, res(void=["m"]), "abandoned")
    assert run.stats.payouts_minor == 2000
    for bet in bets:
        assert await senv.settled(bet) == (BetState.REFUNDED, 500)
    assert await senv.wallet.balances([acc]) == [10_000]
    await senv.check_conservation()


async def test_rollback_then_resettle(senv: SettleEnv) -> None:
    winner, loser = await senv.account(1000), await senv.account(1000)
    ev = senv.unique_id("ev")
    home = await senv.bet(winner, [(ev, "m", "h", "3.00")])
    away = await senv.bet(loser, [(ev, "m", "a", "2.00")])
    settle = await senv.service.settle_event(ev, res(("m", "h", W)), "ft")
    assert await senv.wallet.balances([winner, loser]) == [3000, 0]
    # The winner withdraws; the rollback then leaves the account negative, and says so.
    await senv.ledger.append_entries(
        [LedgerEntry(f"wd:{winner}", winner, EntryKind.WITHDRAWAL, -2500, "EUR", "", "atm", now_ms())]
    )
    await senv.wallet.credit_batch([Credit(winner, f"wd:{winner}", -2500)])
    rb = await senv.service.rollback(ev, settle.run_id, reason="wrong result")
    assert rb.state == RunState.COMPLETED and rb.record.target_run_id == settle.run_id
    assert rb.stats.payouts_minor == -3000 and rb.stats.negative_balance_accounts == (winner,)
    assert await senv.wallet.balances([winner]) == [-2500]
    assert await senv.settled(home) == (BetState.OPEN, 0)
    reversal = [e for e in await senv.entries_of(home) if e.kind == EntryKind.PAYOUT_REVERSAL]
    assert [(e.amount_minor, e.entry_id) for e in reversal] == [(-3000, f"reversal:{rb.run_id}:{home.bet_id}")]
    # Same rollback again: the same run.
    assert (await senv.service.rollback(ev, settle.run_id)).run_id == rb.run_id
    # Settle with the corrected result.
    fixed = await senv.service.settle_event(ev, res(("m", "a", W)), "corrected")
    assert await senv.settled(away) == (BetState.WON, 2000)
    assert await senv.settled(home) == (BetState.LOST, 0)
    # A later correction through ResettleEvent (rollback of the latest settlement + settle).
    rb2, again = await senv.service.resettle(ev, res(("m", "h", W)), "re-fix")
    assert rb2.record.target_run_id == fixed.run_id
    assert await senv.settled(home) == (BetState.WON, 3000)
    assert await senv.settled(away) == (BetState.LOST, 0)
    rb3, again3 = await senv.service.resettle(ev, res(("m", "h", W)), "re-fix")  # idempotent
    assert (rb3.run_id, again3.run_id) == (rb2.run_id, again.run_id)
    history = (await senv.service.status(ev)).history
    assert [r.record.kind for r in history] == [
        RunKind.SETTLE,
        RunKind.ROLLBACK,
        RunKind.SETTLE,
        RunKind.ROLLBACK,
        RunKind.SETTLE,
    ]
    assert all(r.state == RunState.COMPLETED for r in history)
    kinds = await senv.check_conservation()
    assert kinds["PAYOUT"] == 3000 + 2000 + 3000 and kinds["PAYOUT_REVERSAL"] == -3000 - 2000
    # The bet's full history in order, from the ledger (the audit command's view).
    audit = await bet_audit(senv.ledger, home.bet_id)
    assert [(e.kind, e.status) for e in audit.history] == [
        ("PLACED", BetState.OPEN),
        ("SETTLED", BetState.WON),
        ("ROLLED_BACK", BetState.OPEN),
        ("SETTLED", BetState.LOST),
        ("ROLLED_BACK", BetState.OPEN),
        ("SETTLED", BetState.WON),
    ]
    assert audit.net_minor == -1000 + 3000 - 3000 + 3000


async def test_rollback_of_a_rollback_reapplies_the_original(senv: SettleEnv) -> None:
    acc = await senv.account(5000)
    ev = senv.unique_id("ev")
    bets = [senv.make_bet(acc, [(ev, "m", s, "2.50")], 1000) for s in ("h", "h", "a")]
    await senv.place(bets)
    settle = await senv.service.settle_event(ev, res(("m", "h", W)), "ft")
    rb = await senv.service.rollback(ev, settle.run_id)
    assert await senv.wallet.balances([acc]) == [2000]
    rr = await senv.service.rollback(ev, rb.run_id, reason="the rollback was a mistake")
    assert rr.record.target_run_id == rb.run_id and rr.stats.payouts_minor == 5000
    assert await senv.wallet.balances([acc]) == [7000]
    assert [await senv.settled(b) for b in bets] == [(BetState.WON, 2500), (BetState.WON, 2500), (BetState.LOST, 0)]
    kinds = [e.kind for e in await senv.ledger.bet_history(bets[0].bet_id)]
    assert kinds == ["PLACED", "SETTLED", "ROLLED_BACK", "REINSTATED"]
    reinstated = [e for e in await senv.entries_of(bets[0]) if e.entry_id.startswith(f"reversal:{rr.run_id}")]
    assert [(e.kind, e.amount_minor) for e in reinstated] == [(EntryKind.PAYOUT_REVERSAL, 2500)]
    # The original is in effect again: it can be rolled back again (a new run), and a new settlement of
    # the same market is refused.
    with pytest.raises(FailedPrecondition):
        await senv.service.settle_event(ev, res(("m", "a", W)), "again")
    rb2 = await senv.service.rollback(ev, settle.run_id)
    assert rb2.run_id not in (rb.run_id, rr.run_id) and rb2.stats.payouts_minor == -5000
    await senv.check_conservation()


async def test_audit_balance_at_any_instant_from_the_ledger(senv: SettleEnv) -> None:
    acc = await senv.account(1000)
    t_deposit = now_ms()
    ev = senv.unique_id("ev")
    await asyncio.sleep(0.01)
    await senv.bet(acc, [(ev, "m", "h", "2.00")], 400)
    t_bet = now_ms()
    await asyncio.sleep(0.01)
    settle = await senv.service.settle_event(ev, res(("m", "h", W)), "ft")
    await asyncio.sleep(0.01)
    rb = await senv.service.rollback(ev, settle.run_id)
    assert (await balance_at(senv.ledger, acc, t_deposit)).balance_minor == 1000
    assert (await balance_at(senv.ledger, acc, t_bet)).balance_minor == 600
    at_settle = await balance_at(senv.ledger, acc, settle.record.started_at_ms)
    assert at_settle.balance_minor == 1400 and at_settle.by_kind["PAYOUT"] == 800
    assert (await balance_at(senv.ledger, acc, rb.record.started_at_ms)).balance_minor == 600
    assert (await balance_at(senv.ledger, acc, now_ms())).balance_minor == (await senv.wallet.balances([acc]))[0]
    await senv.check_conservation()  # the shared money invariants after every settlement test


async def test_progress_and_history_of_a_running_run(senv: SettleEnv) -> None:
    acc = await senv.account(10**7)
    ev = senv.unique_id("ev")
    bets = [senv.make_bet(acc, [(ev, "m", "h", "2.00")], 100) for _ in range(40)]
    await senv.place(bets)
    # One page at a time (8 pages x 150 ms): with 4 workers x 2 pages in flight the whole run could pass
    # between two polls of a loaded box (seen once at load 17).
    slow = senv.new_service(page_size=5, page_delay_ms=150, workers=1, commit_concurrency=1)
    started = await slow.settle_event(ev, res(("m", "h", W)), "slow", wait=False)
    assert started.state == RunState.RUNNING
    seen: list[tuple[int, int]] = []
    for _ in range(100):
        report = await senv.service.status(ev)
        seen.append((report.run.stats.bets_processed, report.run.stats.bets_total))
        if report.run.state == RunState.COMPLETED:
            break
        await asyncio.sleep(0.1)
    await slow.drain()
    assert any(0 < p < 40 for p, _ in seen), seen  # observed part-way
    assert all(t in (0, 40) for _, t in seen)
    final = await senv.service.status(ev, started.run_id)
    assert final.run.state == RunState.COMPLETED
    assert (final.run.stats.bets_processed, final.run.stats.payouts_minor) == (40, 40 * 200)
    # While the run held the event's lock, another request for the event was refused (ABORTED) or waited.
    await senv.check_conservation()


async def test_runs_of_one_event_are_serialized_and_events_run_in_parallel(senv: SettleEnv) -> None:
    acc = await senv.account(10**7)
    e1, e2 = senv.unique_id("ev"), senv.unique_id("ev")
    await senv.place([senv.make_bet(acc, [(e, "m", "h", "2.00")], 100) for e in (e1, e2) for _ in range(30)])
    slow = senv.new_service(page_size=5, page_delay_ms=100, lock_wait_ms=100)
    t0 = time.monotonic()
    first = await slow.settle_event(e1, res(("m", "h", W)), "a", wait=False)
    other = await slow.settle_event(e2, res(("m", "h", W)), "a", wait=False)  # another event: not blocked
    assert first.state == other.state == RunState.RUNNING
    with pytest.raises(Aborted):  # same event, another request, while the run holds the lock
        await slow.settle_event(e1, res(("m2", "x", W)), "b")
    # The same request while it runs: its progress, not an error.
    assert (await slow.settle_event(e1, res(("m", "h", W)), "a")).run_id == first.run_id
    await slow.drain()
    elapsed = time.monotonic() - t0
    assert elapsed < 2 * 6 * 0.1 + 3, elapsed  # the two events overlapped
    for ev in (e1, e2):
        assert (await senv.service.status(ev)).run.state == RunState.COMPLETED
    assert (await senv.check_conservation())["PAYOUT"] == 60 * 200


async def test_results_from_kafka_settle_the_event(senv: SettleEnv) -> None:
    acc = await senv.account()
    ev = senv.unique_id("ev")
    bets = [senv.make_bet(acc, [(ev, "m", s, "2.00")]) for s in ("h", "a")]
    await senv.place(bets)
    topic = senv.topic_prefix + TOPIC_RESULTS
    await senv.bus.publish(
        [
            BusMessage(topic, ev, result_message(ev, "feed-1", [("m", "h", "WIN")])),
            BusMessage(topic, ev, result_message(ev, "feed-1", [("m", "h", "WIN")])),  # duplicate delivery
            BusMessage(topic, ev, b"not json"),  # poison: parked in the dead-letter topic
        ]
    )
    await senv.bus.flush()
    source = source_factory(senv.kafka_bootstrap, senv.unique_id("group"), topic)
    consumer = ResultsConsumer(senv.service, source, topic, bus=senv.bus)
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if consumer.processed >= 2 and consumer.dead_lettered >= 1:
                break
            await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task
    assert await senv.settled(bets[0]) == (BetState.WON, 2000)
    assert await senv.settled(bets[1]) == (BetState.LOST, 0)
    history = (await senv.service.status(ev)).history
    assert [r.run_id for r in history] == [f"{ev}.s.feed-1"]
    assert consumer.dead_lettered == 1
    parked = read_topic(senv.kafka_bootstrap, topic + ".dlq", lambda key, value: value["value"] == "not json", 1, 20)
    assert len(parked) == 1 and parked[0]["reason"].startswith("unparseable")
    await senv.check_conservation()
