"""The simulation's findings (docs/simulation.md) as short hand-written scenarios over the memory stores,
faults injected through the ports (``tests.support.faults.Faulty``). Each failed before its fix (seen as a
strict xfail on the commit that found it); each now guards its fix.

The same findings are also pinned as seeds in ``test_sim.py`` (``test_finding``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.app import BetPath, open_bet_path
from inplay.config import BetRules, JournalSettings
from inplay.core import AcceptancePolicy, Odds
from inplay.domain.commit import wait_for_projection
from inplay.model import BetRequest, EntryKind, LedgerEntry, Leg, MarketState, MarketStatus, SelectionPrice
from inplay.ports import Credit, JournalRejected
from tests.sim.world import SimOdds
from tests.support.faults import Faulty

RULES = BetRules(max_price_age_prematch_ms=10**9, max_price_age_inplay_ms=10**9)
JOURNAL = JournalSettings(shards=1, max_batch=10, commit_timeout_s=0.2, lease_ttl_ms=3_000)


class FaultyLedger(Faulty):
    """``Faulty`` that stays in front of the ledger the bet path binds to its journal."""

    def with_journal(self, name: str) -> FaultyLedger:
        return self


def kill(path: BetPath) -> None:
    """kill -9 of a bet process: its writer, lease and projector tasks stop where they are."""
    for task in (path.writer._task, path.writer._lease_task, path.projector._task):
        if task is not None:
            task.cancel()


class Stack:
    """One deployment's stores; ``path()`` starts a bet process on them (``writer-0``: a restart takes
    its shard back). An abandoned path is a killed process (its objects are never used again)."""

    def __init__(self) -> None:
        self.odds = SimOdds()
        now = time.time_ns() // 1_000_000
        self.odds.markets["m"] = MarketState(
            "m", "E", "football", "1x2", "m", False, MarketStatus.ACTIVE, "",
            (SelectionPrice("h", "Home", Odds.from_decimal("2.00")),), 1, now,
        )  # fmt: skip
        self.wallet_store = MemoryWallet(market_status=self.odds.status)
        self.ledger_store = MemoryLedger()
        self.wallet = Faulty(self.wallet_store)
        self.ledger = FaultyLedger(self.ledger_store)
        self.bus = MemoryEventBus()

    async def path(self) -> BetPath:
        wallet: Any = self.wallet
        ledger: Any = self.ledger
        return await open_bet_path(self.odds, wallet, ledger, self.bus, RULES, JOURNAL, "f", "f.", owner="writer-0")

    async def fund(self, account: str, amount: int = 10_000) -> None:
        entry = LedgerEntry(f"deposit:{account}", account, EntryKind.DEPOSIT, amount, "EUR", "", "t", 1)
        await self.ledger_store.append_entries([entry])
        await self.wallet_store.credit_batch([Credit(account, entry.entry_id, amount)])

    async def money(self, account: str) -> tuple[int, int]:
        """(Redis balance, Σ ledger entries)."""
        redis = (await self.wallet_store.balances([account]))[0]
        return redis, (await self.ledger_store.account_balances()).get(account, 0)

    async def stake_entries(self, account: str) -> list[str]:
        entries, _ = await self.ledger_store.account_entries(account, 1000, "")
        return [e.bet_id for e in entries if e.kind == EntryKind.STAKE]


def slip(account: str, key: str, stake: int = 100) -> BetRequest:
    leg = Leg("m", "h", Odds.from_decimal("2.00"), "E")
    return BetRequest(account, (leg,), stake, "EUR", AcceptancePolicy.NONE, key)


class Switch:
    """A fault condition that can be turned off (``Faulty`` faults cannot be disarmed)."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, _args: tuple[Any, ...]) -> bool:
        return self.on


async def test_redis_loss_rebuild_counts_the_stakes_the_views_have_not_caught_up_with() -> None:
    stack = Stack()
    await stack.fund("a")
    views_down = Switch()
    stack.ledger.fail("project_bets", when=views_down, times=10**6)
    first = await stack.path()
    placed = await first.placement.place(slip("a", "k1"))
    assert placed.bet is not None  # acknowledged: in the journal; its STAKE view not written yet
    # The process dies with its projection behind, and Redis loses everything.
    kill(first)
    stack.wallet_store.forget_everything()
    views_down.on = False
    second = await stack.path()  # start-up: projection lost -> rebuilt from the ledger
    await second.caught_up(5.0)
    redis, ledger = await stack.money("a")
    assert (redis, ledger) == (9_900, 9_900), "the rebuilt balance does not carry the stake: money created"


async def test_unknown_batch_is_resolved_without_waiting_for_another_slip() -> None:
    stack = Stack()
    await stack.fund("a")
    stack.wallet.fail("debit_batch", applied=True)  # the debit's reply is lost: the outcome is unknown
    path = await stack.path()
    first = await path.placement.place(slip("a", "k1"))
    assert first.rejection is not None and first.rejection.reason == "UNAVAILABLE"
    await asyncio.sleep(1.0)  # nothing else arrives on this shard (the match is over)
    visible = await wait_for_projection(stack.wallet_store, stack.ledger_store, 1, timeout_s=1.0)
    retry = await path.placement.place(slip("a", "k1"))
    assert visible, "the settlement watermark waits forever for the unknown batch"
    assert retry.bet is not None, f"the key stays {retry.rejection}"


async def test_a_refused_batch_whose_stake_was_returned_is_never_rolled_forward() -> None:
    stack = Stack()
    await stack.fund("a")
    real_write = stack.ledger_store.write_journal
    refused_slots = {1}

    async def refuse_slot_1(batch: Any, claimant: str = "") -> None:  # the store certainly refuses slot 1, once
        if batch.slot in refused_slots:
            refused_slots.discard(batch.slot)
            raise JournalRejected("refused (test)")
        await real_write(batch, claimant)

    stack.ledger_store.write_journal = refuse_slot_1  # type: ignore[method-assign]
    # The stake is returned; then the finish that drops the intent fails until the commit timeout (a Redis
    # blip), so the intent of the refused batch survives.
    finish_down = Switch()
    stack.wallet.fail("finish_batch", when=lambda args: finish_down.on and args[1] == 1, times=10**6)
    path = await stack.path()
    refused = await path.placement.place(slip("a", "k1"))
    assert refused.rejection is not None and refused.rejection.reason == "UNAVAILABLE"
    finish_down.on = False
    accepted = await path.placement.place(slip("a", "k2"))  # the next batch first "recovers" slot 1
    assert accepted.bet is not None
    await path.caught_up(5.0)
    journal = [row for batch in stack.ledger_store.journal.values() for row in batch.rows]
    redis, ledger = await stack.money("a")
    assert len(journal) == 1, "the refused batch, its stake returned, was rolled forward into the journal"
    assert redis == ledger, f"Redis {redis} != ledger {ledger}"


async def test_projector_never_passes_a_slot_whose_intent_is_still_unresolved() -> None:
    stack = Stack()
    await stack.fund("a")
    journal_down = Switch()
    stack.ledger.fail("write_journal", when=journal_down, times=10**6)
    first = await stack.path()
    unknown = await first.placement.place(slip("a", "k1"))  # slot 1: outcome unknown, the intent is kept
    assert unknown.rejection is not None and unknown.rejection.reason == "UNAVAILABLE"
    # The process dies; its successor's start-up recovery fails once (a Redis blip), its projector starts.
    kill(first)
    journal_down.on = False
    stack.wallet.fail("pending_intents")
    second = await stack.path()
    await second.placement.place(slip("a", "k2"))  # recovery writes slot 1, then slot 2 is committed
    await second.caught_up(5.0)
    assert len(await stack.stake_entries("a")) == 2, "slot 1's bet is in the journal but never in the views"


async def test_a_repair_whose_fence_lift_fails_does_not_stop_the_wallet_forever() -> None:
    stack = Stack()
    await stack.fund("a")
    first = await stack.path()  # a known projection (its epoch is in the ledger)
    kill(first)
    stack.wallet_store.forget_everything()  # Redis lost: the next start rebuilds
    # The rebuild completes (epoch written), then lifting the fence fails once (a Redis blip).
    stack.wallet.fail("set_fence", when=lambda args: args[0] is False)
    with pytest.raises(ConnectionError):
        await stack.path()
    second = await stack.path()  # the epoch is there: "ready", no repair, nobody lifts the fence
    placed = await second.placement.place(slip("a", "k1"))
    assert placed.bet is not None, f"every debit refused: {placed.rejection}"


async def test_a_slot_claimed_by_another_writer_is_skipped_before_anything_is_debited() -> None:
    """docs/ledger.md step 3: a writer paused past its lease may still write into the slot it claimed; the
    writer that took the shard over never writes there (it would mix two batches in one slot). The slot is
    skipped before the debit, so nothing is debited for it and the bet lands in the next slot."""
    from inplay.domain.journal import parse_journal_bet_id

    stack = Stack()
    await stack.fund("a")
    first_slot = stack.wallet_store._heads[0] + 1
    assert await stack.ledger_store.claim_slot(0, first_slot, "paused-writer#0")
    path = await stack.path()
    try:
        placed = await path.placement.place(slip("a", "k1"))
        assert placed.bet is not None, placed
        position = parse_journal_bet_id(placed.bet.bet_id)
        assert position is not None and position[2] == first_slot + 1, position  # (tag, shard, slot, pos)
        assert await stack.ledger_store.read_journal(0, first_slot) is None
        replay = await path.placement.place(slip("a", "k1"))
        assert replay.replayed and replay.bet is not None and replay.bet.bet_id == placed.bet.bet_id
        await path.caught_up(5.0)
        assert await stack.money("a") == (10_000 - 100, 10_000 - 100)  # debited once, and the ledger agrees
    finally:
        await path.close()
