"""Settlement runs over the embedded stores: outcome math through the run, accumulators across events,
idempotent re-runs, failures mid-run, rollbacks, resettlement and money conservation.

(The same behaviours are tested against the real Redis/Cassandra/Kafka in tests/integration.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.core import LegOutcome
from inplay.domain.settlement import Results, SettlementConfig, SettlementService
from inplay.domain.settlement.ids import fingerprint
from inplay.errors import FailedPrecondition, InvalidArgument, NotFound
from inplay.model import BetState, EntryKind, LedgerEntry, PlacedBet, RunKind, RunState
from inplay.ports import TOPIC_SETTLEMENTS, Credit
from tests.support.ledger_checks import assert_money_invariants
from tests.support.settlement import DH, HL, HW, P, V, W, clock, fund, placed_bet, record_bet, res, settled_state

_ids = itertools.count(1)


class FlakyWallet(MemoryWallet):
    """Fails the n-th credit call (as a crash between the ledger write and the Redis credit would)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_on: int | None = None
        self.calls = 0

    def fail_call(self, n: int) -> None:
        self.calls = 0
        self.fail_on = n

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            self.fail_on = None
            raise ConnectionError("redis went away")
        return await super().credit_batch(credits)


@dataclass
class World:
    ledger: MemoryLedger
    wallet: FlakyWallet
    bus: MemoryEventBus
    store: MemorySettlementStore
    service: SettlementService
    settled_markets: list[str]
    accounts: list[str]

    async def account(self, deposit: int = 100_000) -> str:
        account = f"acc{next(_ids)}"
        await fund(self.ledger, self.wallet, account, deposit, clock())
        self.accounts.append(account)
        return account

    async def bet(self, account: str, legs: Sequence[tuple[str, str, str, str]], stake: int = 1000) -> PlacedBet:
        bet = placed_bet(account, legs, stake, bet_id=f"bet{next(_ids):06d}", key=f"k{next(_ids)}", at_ms=clock())
        await record_bet(self.ledger, self.wallet, [bet])
        return bet

    async def settled(self, bet: PlacedBet) -> tuple[BetState, int]:
        """Last settlement status of a bet and what it has been paid (from the ledger)."""
        return await settled_state(self.ledger, bet)

    async def check_conservation(self) -> dict[str, int]:
        """Σ balances (ledger) = deposits - stakes + payouts (incl. refunds) - reversals (- withdrawals), and
        the Redis projection == the ledger, per account; and the shared invariants (tests/support)."""
        await assert_money_invariants(self.ledger, self.wallet, self.accounts)
        truth = await self.ledger.account_balances()
        by_kind: dict[EntryKind, int] = {}
        for account in self.accounts:
            token = ""
            while True:
                entries, token = await self.ledger.account_entries(account, 100, token)
                for e in entries:
                    by_kind[e.kind] = by_kind.get(e.kind, 0) + e.amount_minor
                if not token:
                    break
        total = sum(truth.get(a, 0) for a in self.accounts)
        assert total == sum(by_kind.values())
        assert total == (
            by_kind.get(EntryKind.DEPOSIT, 0)
            + by_kind.get(EntryKind.STAKE, 0)
            + by_kind.get(EntryKind.PAYOUT, 0)
            + by_kind.get(EntryKind.PAYOUT_REVERSAL, 0)
            + by_kind.get(EntryKind.WITHDRAWAL, 0)
        )
        projected = await self.wallet.balances(self.accounts)
        assert dict(zip(self.accounts, projected, strict=True)) == {a: truth.get(a, 0) for a in self.accounts}
        return {k.name: v for k, v in by_kind.items()}


@pytest.fixture
def world() -> World:
    ledger = MemoryLedger()
    wallet = FlakyWallet()
    bus = MemoryEventBus()
    store = MemorySettlementStore(ledger)
    settled: list[str] = []

    async def mark(market_ids: Sequence[str]) -> None:
        settled.extend(market_ids)

    config = SettlementConfig(page_size=3, multi_page_size=2, lock_ttl_ms=5_000, lock_wait_ms=200, commit_concurrency=1)
    service = SettlementService(
        store, ledger, wallet, bus, MemoryLocks(), mark_settled=mark, config=config, clock=clock
    )
    return World(ledger, wallet, bus, store, service, settled, [])


async def test_every_outcome_type_of_a_single(world: World) -> None:
    acc = await world.account()
    e = "ev1"
    cases = [
        (("m1", "home", "2.50"), (BetState.WON, 2500)),
        (("m1", "away", "3.00"), (BetState.LOST, 0)),
        (("m2", "over", "1.90"), (BetState.WON, 1450)),  # half win
        (("m3", "under", "1.90"), (BetState.PARTIAL, 500)),  # half lose
        (("m4", "x", "2.00"), (BetState.REFUNDED, 1000)),  # void selection
        (("m5", "y", "2.00"), (BetState.REFUNDED, 1000)),  # push
        (("m6", "a", "5.00"), (BetState.WON, 2500)),  # dead heat 1/2
        (("m6", "b", "1.50"), (BetState.PARTIAL, 750)),  # dead heat 1/2 below evens
        (("m7", "z", "4.00"), (BetState.REFUNDED, 1000)),  # whole market voided
        (("m8", "q", "2.00"), (BetState.OPEN, 0)),  # not resulted
    ]
    bets = [await world.bet(acc, [(e, m, s, o)]) for (m, s, o), _ in cases]
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
    run = await world.service.settle_event(e, results, "r1")
    assert run.state == RunState.COMPLETED
    assert run.stats.bets_total == len(cases) and run.stats.bets_processed == len(cases)
    assert run.stats.bets_still_open == 1
    expected_payout = sum(ret for _, (_, ret) in cases)
    assert run.stats.payouts_minor == expected_payout
    for bet, (_, want) in zip(bets, cases, strict=True):
        assert await world.settled(bet) == want
    assert sorted(world.settled_markets) == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    kinds = await world.check_conservation()
    assert kinds["PAYOUT"] == expected_payout
    # One BetsSettled item per changed bet, in messages keyed by event.
    msgs = world.bus.decoded(TOPIC_SETTLEMENTS)
    items = [bet for m in msgs for bet in m["bets"]]  # type: ignore[attr-defined]
    assert len(items) == len(cases) - 1 and {m["event_id"] for m in msgs} == {e}
    assert {m["type"] for m in msgs} == {"BetsSettled"}
    # The open bet gets settled by a later run on its market; nothing else moves.
    run2 = await world.service.settle_event(e, res(("m8", "q", W)), "r2")
    assert run2.stats.payouts_minor == 2000 and run2.stats.bets_changed == 1
    assert await world.settled(bets[-1]) == (BetState.WON, 2000)
    await world.check_conservation()


async def test_accumulators_across_two_events(world: World) -> None:
    acc = await world.account()
    both_win = await world.bet(acc, [("e1", "a1", "h", "2.00"), ("e2", "b1", "h", "3.00")], 100)
    first_loses = await world.bet(acc, [("e1", "a1", "x", "2.00"), ("e2", "b1", "h", "3.00")], 100)
    void_leg = await world.bet(acc, [("e1", "a2", "h", "2.00"), ("e2", "b1", "h", "3.00")], 100)
    same_event_acca = await world.bet(acc, [("e1", "a1", "h", "2.00"), ("e1", "a3", "o", "1.50")], 100)
    run1 = await world.service.settle_event("e1", res(("a1", "h", W), ("a3", "o", HW), void=["a2"]), "r")
    # Only the same-event accumulator settles now; the others wait for e2 (or lose at once).
    assert await world.settled(same_event_acca) == (BetState.WON, 250)
    assert await world.settled(first_loses) == (BetState.LOST, 0)
    history = [e for e in await world.ledger.bet_history(both_win.bet_id) if e.run_id]
    assert [(e.status, e.leg_outcomes) for e in history] == [(BetState.OPEN, (W, LegOutcome.OPEN))]
    assert run1.stats.bets_still_open == 2
    await world.service.settle_event("e2", res(("b1", "h", W)), "r")
    assert await world.settled(both_win) == (BetState.WON, 600)
    assert await world.settled(void_leg) == (BetState.WON, 300)
    assert await world.settled(first_loses) == (BetState.LOST, 0)
    await world.check_conservation()

    # Correct e1: a1 was actually lost. The accumulator paid by e2's run is reversed by e1's correction.
    rb, settle = await world.service.resettle("e1", res(("a1", "x", W), ("a3", "o", HW), void=["a2"]), "fix")
    assert rb.state == settle.state == RunState.COMPLETED
    assert await world.settled(both_win) == (BetState.LOST, 0)
    assert await world.settled(first_loses) == (BetState.WON, 600)
    assert await world.settled(same_event_acca) == (BetState.LOST, 0)
    await world.check_conservation()


async def test_rerun_is_idempotent_and_conflicts_are_refused(world: World) -> None:
    acc = await world.account()
    bets = [await world.bet(acc, [("ev", "m", "h", "2.00")]) for _ in range(7)]
    results = res(("m", "h", W))
    run = await world.service.settle_event("ev", results, "req")
    again = await world.service.settle_event("ev", results, "req")
    assert again.run_id == run.run_id and again.stats == run.stats
    with pytest.raises(FailedPrecondition, match="other results"):
        await world.service.settle_event("ev", res(("m", "a", W)), "req")
    with pytest.raises(FailedPrecondition) as exc:
        await world.service.settle_event("ev", results, "another-request")
    assert exc.value.reason == "MARKET_ALREADY_SETTLED"
    for bet in bets:
        assert await world.settled(bet) == (BetState.WON, 2000)
    assert (await world.check_conservation())["PAYOUT"] == 7 * 2000
    with pytest.raises(InvalidArgument):
        await world.service.settle_event("ev", Results(), "empty")


@pytest.mark.parametrize("fail_on", [1, 2, 3])
async def test_failure_mid_run_then_resume_pays_exactly_once(world: World, fail_on: int) -> None:
    acc = await world.account()
    bets = [await world.bet(acc, [("ev", "m", "h" if i % 2 else "a", "2.00")]) for i in range(8)]
    world.wallet.fail_call(fail_on)  # pages of 3: the credit of page `fail_on` fails after its ledger rows
    with pytest.raises(ConnectionError):
        await world.service.settle_event("ev", res(("m", "h", W)), "req")
    status = await world.service.status("ev")
    assert status.run.state == RunState.FAILED
    assert status.run.stats.bets_processed == 3 * (fail_on - 1)
    # The ledger has rows the projection does not: the retry (same request) completes the run.
    run = await world.service.settle_event("ev", res(("m", "h", W)), "req")
    assert run.state == RunState.COMPLETED and run.stats.bets_processed == 8
    assert run.stats.payouts_minor == 4 * 2000
    for i, bet in enumerate(bets):
        assert await world.settled(bet) == ((BetState.WON, 2000) if i % 2 else (BetState.LOST, 0))
    assert (await world.check_conservation())["PAYOUT"] == 4 * 2000


async def test_resume_skips_checkpointed_bets(world: World) -> None:
    acc = await world.account()
    for _ in range(9):
        await world.bet(acc, [("ev", "m", "h", "2.00")])
    world.wallet.fail_call(3)
    with pytest.raises(ConnectionError):
        await world.service.settle_event("ev", res(("m", "h", W)), "req")
    calls = world.wallet.calls
    await world.service.settle_event("ev", res(("m", "h", W)), "req")
    assert world.wallet.calls - calls == 1  # pages 1-2 skipped by their checkpoints, page 3 redone
    cps = [c for c in await world.store.checkpoints("ev.s.req", with_bet_ids=True) if c.phase == "S"]
    assert len(cps) == 3 and all(len(c.bet_ids) == 3 and c.page_key == fingerprint(c.bet_ids) for c in cps)
    assert len({b for c in cps for b in c.bet_ids}) == 9
    assert sum(c.stats.bets_processed for c in cps) == 9
    await world.check_conservation()  # the shared money invariants after every settlement test


async def test_void_market_refunds_once(world: World) -> None:
    acc = await world.account(10_000)
    bets = [await world.bet(acc, [("ev", "m", s, "3.00")], 500) for s in ("a", "b", "c")]
    run = await world.service.settle_event("ev", res(void=["m"]), "void")
    await world.service.settle_event("ev", res(void=["m"]), "void")
    assert run.stats.payouts_minor == 1500
    for bet in bets:
        assert await world.settled(bet) == (BetState.REFUNDED, 500)
    assert (await world.wallet.balances([acc])) == [10_000]
    await world.check_conservation()


async def test_rollback_rollback_of_rollback_and_negative_balances(world: World) -> None:
    winner = await world.account(1000)
    loser = await world.account(1000)
    b1 = await world.bet(winner, [("ev", "m", "h", "3.00")], 1000)
    b2 = await world.bet(loser, [("ev", "m", "a", "2.00")], 1000)
    settle = await world.service.settle_event("ev", res(("m", "h", W)), "s")
    assert await world.wallet.balances([winner, loser]) == [3000, 0]
    # The winner spends the winnings; the rollback then drives the account negative and reports it.
    await world.wallet.credit_batch([Credit(winner, "withdraw-1", -2500)])
    await world.ledger.append_entries(
        [LedgerEntry("withdraw-1", winner, EntryKind.WITHDRAWAL, -2500, "EUR", "", "atm", clock())]
    )
    rb = await world.service.rollback("ev", settle.run_id, reason="wrong result")
    assert rb.record.kind == RunKind.ROLLBACK and rb.record.target_run_id == settle.run_id
    assert rb.stats.payouts_minor == -3000 and rb.stats.negative_balance_accounts == (winner,)
    assert await world.wallet.balances([winner]) == [-2500]
    assert await world.settled(b1) == (BetState.OPEN, 0)
    history = await world.ledger.bet_history(b1.bet_id)
    assert [e.kind for e in history] == ["PLACED", "SETTLED", "ROLLED_BACK"]
    # Rolling back the same run again is the same rollback.
    assert (await world.service.rollback("ev", settle.run_id)).run_id == rb.run_id
    # A rollback of the rollback re-applies the original settlement.
    rr = await world.service.rollback("ev", rb.run_id)
    assert rr.stats.payouts_minor == 3000
    assert await world.settled(b1) == (BetState.WON, 3000)
    assert await world.settled(b2) == (BetState.LOST, 0)
    assert [e.kind for e in await world.ledger.bet_history(b1.bet_id)] == [
        "PLACED",
        "SETTLED",
        "ROLLED_BACK",
        "REINSTATED",
    ]
    # ... and the original can be rolled back again (a new rollback run).
    rb2 = await world.service.rollback("ev", settle.run_id)
    assert rb2.run_id != rb.run_id and rb2.stats.payouts_minor == -3000
    with pytest.raises(NotFound):
        await world.service.rollback("ev", "nope")
    kinds = await world.check_conservation()
    assert kinds["PAYOUT"] == 3000 and kinds["PAYOUT_REVERSAL"] == -3000
    history_runs = (await world.service.status("ev")).history
    assert [r.record.kind for r in history_runs] == [
        RunKind.SETTLE,
        RunKind.ROLLBACK,
        RunKind.ROLLBACK,
        RunKind.ROLLBACK,
    ]


async def test_resettle_is_idempotent_and_changes_the_outcome(world: World) -> None:
    acc = await world.account()
    home = await world.bet(acc, [("ev", "m", "h", "2.00")])
    away = await world.bet(acc, [("ev", "m", "a", "4.00")])
    with pytest.raises(FailedPrecondition):
        await world.service.resettle("ev", res(("m", "a", W)), "fix")
    await world.service.settle_event("ev", res(("m", "h", W)), "first")
    rb, settle = await world.service.resettle("ev", res(("m", "a", W)), "fix")
    rb2, settle2 = await world.service.resettle("ev", res(("m", "a", W)), "fix")
    assert (rb2.run_id, settle2.run_id) == (rb.run_id, settle.run_id)
    assert await world.settled(home) == (BetState.LOST, 0)
    assert await world.settled(away) == (BetState.WON, 4000)
    assert [e.kind for e in await world.ledger.bet_history(home.bet_id)] == [
        "PLACED",
        "SETTLED",
        "ROLLED_BACK",
        "SETTLED",
    ]
    kinds = await world.check_conservation()
    assert kinds["PAYOUT"] == 2000 + 4000 and kinds["PAYOUT_REVERSAL"] == -2000
    assert (await world.service.effective_results("ev")).markets["m"].outcome_of("a").outcome == W


async def test_status_reports_progress_and_history(world: World) -> None:
    acc = await world.account()
    for _ in range(4):
        await world.bet(acc, [("ev", "m", "h", "2.00")])
    with pytest.raises(NotFound):
        await world.service.status("ev")
    run = await world.service.settle_event("ev", res(("m", "h", W)), "a", wait=False)
    assert run.state == RunState.RUNNING
    await world.service.drain()
    report = await world.service.status("ev", run.run_id)
    assert report.run.state == RunState.COMPLETED
    assert (report.run.stats.bets_total, report.run.stats.bets_processed) == (4, 4)
    assert [r.run_id for r in report.history] == [run.run_id]
    await world.check_conservation()  # the shared money invariants after every settlement test
