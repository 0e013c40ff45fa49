"""Parallel workers of one run (engine._run_workers): each worker settles a contiguous range of the event's
by-event buckets under the run's event lease. Every bet is settled by exactly one worker; a failure in
one worker stops all of them before the run reports it; a retry (or the next lease holder) pays each bet
exactly once; losing the lease in the middle stops every worker."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.domain.settlement import SettlementConfig, SettlementService
from inplay.domain.settlement.lease import LeaseLost, event_lock_key
from inplay.model import BetState, PlacedBet, RunState
from tests.support.faults import Faulty, InjectedFault
from tests.support.memory_world import MemoryWorld
from tests.support.settlement import SlowPages, W, clock, res

BUCKETS = 8


class BucketedLedger(MemoryLedger):
    """The memory ledger with the Cassandra ledger's bucket-range read (``event_bets_in``)."""

    EVENT_BUCKETS = BUCKETS

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, ...]] = []
        self.read_by_range: dict[tuple[int, ...], list[str]] = {}

    async def event_bets_in(
        self, event_id: str, buckets: Sequence[int], page_size: int = 5000, *, lean: bool = False
    ) -> AsyncIterator[list[PlacedBet]]:
        wanted = tuple(buckets)
        self.ranges.append(wanted)
        seen = self.read_by_range.setdefault(wanted, [])
        page: list[PlacedBet] = []
        async for chunk in self.event_bets(event_id, page_size):
            for bet in chunk:
                if zlib.crc32(bet.bet_id.encode()) % BUCKETS in wanted:
                    page.append(bet)
                    seen.append(bet.bet_id)
                if len(page) == page_size:
                    yield page
                    page = []
                    await asyncio.sleep(0)  # let the other workers interleave
        if page:
            yield page


def parallel_world(*, page_delay_ms: int = 0, **config: Any) -> tuple[MemoryWorld, BucketedLedger]:
    inner = BucketedLedger()
    ledger = Faulty(inner)
    wallet = Faulty(MemoryWallet())
    store = Faulty(MemorySettlementStore(inner))
    locks = MemoryLocks()
    cfg = SettlementConfig(
        **{"page_size": 3, "multi_page_size": 2, "lock_ttl_ms": 5_000, "lock_wait_ms": 200, "workers": 4, **config}
    )
    bus = MemoryEventBus()
    closed: list[str] = []

    async def mark(market_ids: Sequence[str]) -> None:
        closed.extend(market_ids)

    paced = SlowPages(store, page_delay_ms / 1000) if page_delay_ms else store
    service = SettlementService(paced, ledger, wallet, bus, locks, mark_settled=mark, config=cfg, clock=clock)  # type: ignore[arg-type]
    return MemoryWorld(inner, ledger, wallet, bus, store, locks, cfg, service, closed=closed), inner


async def book(world: MemoryWorld, n: int) -> tuple[list[PlacedBet], list[PlacedBet]]:
    accounts = [await world.account(10**6) for _ in range(5)]
    bets = [await world.bet(accounts[i % 5], [("E", "m", "h" if i % 3 else "a", "2.50")], 100 + i) for i in range(n)]
    return [b for i, b in enumerate(bets) if i % 3], [b for i, b in enumerate(bets) if i % 3 == 0]


async def assert_each_paid_once(world: MemoryWorld, winners: list[PlacedBet], losers: list[PlacedBet]) -> None:
    for bet in winners:
        assert await world.settled(bet) == (BetState.WON, bet.stake_minor * 5 // 2), bet.bet_id
    for bet in losers:
        assert await world.settled(bet) == (BetState.LOST, 0), bet.bet_id
    summary = await world.check()  # each entry id once, ledger = history deltas, conservation, Redis = ledger
    assert len(summary.payout_entry_ids()) == len(winners)
    assert summary.by_kind["PAYOUT"] == sum(b.stake_minor * 5 // 2 for b in winners)


def slow_history(ledger: MemoryLedger) -> None:
    real = ledger.append_bet_events

    async def slow(rows: Any) -> None:
        await asyncio.sleep(0.01)
        await real(rows)

    ledger.append_bet_events = slow  # type: ignore[method-assign]


def nth_call(n: int) -> Any:
    """A fault predicate true for the n-th matching call only (the middle of the run)."""
    calls = [0]

    def when(_args: tuple[Any, ...]) -> bool:
        calls[0] += 1
        return calls[0] == n

    return when


async def test_workers_split_the_buckets_and_settle_every_bet_once() -> None:
    world, inner = parallel_world()
    winners, losers = await book(world, 60)
    run = await world.service.settle_event("E", res(("m", "h", W)), "ft")
    assert run.state == RunState.COMPLETED and run.stats.bets_processed == 60
    # Four workers over contiguous, disjoint bucket ranges covering all of them; each bet read once.
    assert sorted(inner.ranges) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    read = [b for ids in inner.read_by_range.values() for b in ids]
    assert sorted(read) == sorted(b.bet_id for b in winners + losers)
    await assert_each_paid_once(world, winners, losers)


FAULTS = [
    ("ledger", "append_bet_events", False),
    ("ledger", "append_bet_events", True),
    ("ledger", "append_entries", False),
    ("ledger", "append_entries", True),
    ("store", "append_bet_rows", True),
    ("wallet", "credit_batch", False),
    ("wallet", "credit_batch", True),
    ("store", "append_checkpoints", True),
]


@pytest.mark.parametrize(("port", "method", "applied"), FAULTS)
async def test_a_fault_in_one_worker_stops_all_and_the_retry_pays_each_bet_once(
    port: str, method: str, applied: bool
) -> None:
    world, inner = parallel_world()
    winners, losers = await book(world, 60)
    slow_history(inner)  # other workers are mid-page (history sent, entries not yet) when the fault fires
    target = getattr(world, port)
    # The 5th call: other workers have pages in flight or done, some pages are not read yet.
    target.fail(method, applied=applied, when=nth_call(5 if method != "append_checkpoints" else 6))
    with pytest.raises(InjectedFault):
        await world.service.settle_event("E", res(("m", "h", W)), "ft")
    assert target.fired == [method]
    # Every worker stopped with the failure: nothing is written afterwards.
    written = len(world.inner_ledger._entries)
    await asyncio.sleep(0.05)
    assert len(world.inner_ledger._entries) == written
    status = await world.service.status("E")
    assert status.run.state == RunState.FAILED and status.run.stats.bets_processed < 60
    run = await world.service.settle_event("E", res(("m", "h", W)), "ft")
    assert run.state == RunState.COMPLETED and run.stats.bets_processed == 60
    await assert_each_paid_once(world, winners, losers)


async def test_lease_lost_mid_parallel_run_stops_every_worker_and_the_next_holder_pays_once() -> None:
    world, _ = parallel_world()
    winners, losers = await book(world, 60)
    inner = world.inner_ledger
    slow_history(inner)
    real = inner.append_entries
    calls = [0]
    thief: list[Any] = []

    async def entries(rows: Any) -> None:
        calls[0] += 1
        if calls[0] == 4:  # the holder stalls past its TTL: another process takes the event lock
            world.locks.held.pop(event_lock_key("E"))
            thief.append(await world.locks.acquire(event_lock_key("E"), 5_000))
        await real(rows)

    inner.append_entries = entries  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        await world.service.settle_event("E", res(("m", "h", W)), "ft")
    inner.append_entries = real  # type: ignore[method-assign]
    # Each worker's next page saw the new fence and stopped; none writes after the run stopped.
    written = len(inner._entries)
    await asyncio.sleep(0.05)
    assert len(inner._entries) == written
    processed = (await world.service.status("E")).run.stats.bets_processed
    assert processed < 60
    # The next holder (here: after the thief let go) resumes the same run and pays each bet once.
    await thief[0].release()
    run = await world.service.settle_event("E", res(("m", "h", W)), "ft")
    assert run.state == RunState.COMPLETED and run.stats.bets_processed == 60
    await assert_each_paid_once(world, winners, losers)


async def test_progress_is_visible_while_the_workers_run() -> None:
    world, _ = parallel_world(page_delay_ms=20)
    await book(world, 60)
    task = asyncio.create_task(world.service.settle_event("E", res(("m", "h", W)), "ft"))
    seen: list[tuple[int, int]] = []
    while not task.done():
        try:
            stats = (await world.service.status("E")).run.stats
            seen.append((stats.bets_processed, stats.bets_total))
        except Exception:  # no run yet
            pass
        await asyncio.sleep(0.005)
    assert (await task).state == RunState.COMPLETED
    assert any(0 < done < 60 and total == 60 for done, total in seen), seen
