"""C1: every settlement row is deterministic and the history row (the intent) is acknowledged before the
money row, so a run resumed after a partial failure in any write writes nothing twice.

Faults are injected through the ports (tests/support/faults.py), once, in the accumulator (multi-event)
phase of the run; the same request is then retried and must complete with each entry once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inplay.model import BetState, RunState
from tests.support.faults import InjectedFault
from tests.support.memory_world import MemoryWorld, memory_world
from tests.support.settlement import W, res


@pytest.fixture
def world() -> MemoryWorld:
    return memory_world()


def _touches(bet_ids: set[str]) -> Any:
    """A fault predicate: the call writes a row of one of ``bet_ids`` (first argument: a row list)."""
    return lambda args: any(getattr(row, "bet_id", "") in bet_ids for row in args[0])


FAULTS = [
    ("ledger", "append_bet_events", False),
    ("ledger", "append_bet_events", True),
    ("ledger", "append_entries", False),
    ("ledger", "append_entries", True),
    ("store", "append_bet_rows", False),
    ("store", "append_bet_rows", True),
    ("wallet", "credit_batch", True),
    ("store", "append_checkpoints", True),
]


@pytest.mark.parametrize(("port", "method", "applied"), FAULTS)
async def test_accumulator_phase_fault_then_retry_pays_each_bet_once(
    world: MemoryWorld, port: str, method: str, applied: bool
) -> None:
    accounts = [await world.account() for _ in range(3)]
    accas = [
        await world.bet(accounts[i % 3], [("A", "ma", "h", "2.00"), ("B", "mb", "h", "3.00")], 100) for i in range(5)
    ]
    await world.service.settle_event("B", res(("mb", "h", W)), "r1")
    assert [await world.settled(b) for b in accas] == [(BetState.OPEN, 0)] * 5
    ids = {b.bet_id for b in accas}
    target = getattr(world, port)
    if method == "credit_batch":
        target.fail(method, applied=applied, when=lambda args: any(c.account_id in accounts for c in args[0]))
    elif method == "append_checkpoints":
        target.fail(method, applied=applied, when=lambda args: any(c.phase == "M" for c in args[0]))
    else:
        target.fail(method, applied=applied, when=_touches(ids))
    with pytest.raises(InjectedFault):
        await world.service.settle_event("A", res(("ma", "h", W)), "r1")
    assert target.fired == [method]
    run = await world.service.settle_event("A", res(("ma", "h", W)), "r1")
    assert run.state == RunState.COMPLETED
    for bet in accas:
        assert await world.settled(bet) == (BetState.WON, 600)
    summary = await world.check()
    assert summary.by_kind["PAYOUT"] == 5 * 600
    assert len(summary.payout_entry_ids()) == 5


async def test_history_is_acknowledged_before_the_money_row(world: MemoryWorld) -> None:
    """The order of the writes of a page: no entry is sent before its bet's history row returned."""
    acc = await world.account()
    bets = [await world.bet(acc, [("A", "ma", "h", "2.00")]) for _ in range(4)]
    bets += [await world.bet(acc, [("A", "ma", "h", "2.00"), ("B", "mb", "h", "2.00")]) for _ in range(3)]
    await world.service.settle_event("B", res(("mb", "h", W)), "r")
    order: list[tuple[str, str]] = []
    inner = world.inner_ledger
    real_events, real_entries = inner.append_bet_events, inner.append_entries

    async def events(rows: Any) -> None:
        await asyncio.sleep(0.01)  # a slow partition: anything sent concurrently overtakes it
        await real_events(rows)
        order.extend(("history", r.bet_id) for r in rows)

    async def entries(rows: Any) -> None:
        order.extend(("entry", r.bet_id) for r in rows)
        await real_entries(rows)

    inner.append_bet_events = events  # type: ignore[method-assign]
    inner.append_entries = entries  # type: ignore[method-assign]
    await world.service.settle_event("A", res(("ma", "h", W)), "r")
    for kind, bet_id in order:
        if kind == "entry":
            assert ("history", bet_id) in order[: order.index((kind, bet_id))], bet_id
    assert {b for k, b in order if k == "entry"} == {b.bet_id for b in bets}
    await world.check()


@pytest.mark.parametrize(
    ("method", "applied"), [("append_bet_events", False), ("append_bet_events", True), ("append_entries", True)]
)
async def test_cancelled_in_the_accumulator_phase_then_retry_pays_once(
    world: MemoryWorld, method: str, applied: bool
) -> None:
    """A cancel (client deadline on SettleEvent(wait=true)) while a write of the accumulator phase is in
    flight, then a retry of the same request."""
    acc = await world.account()
    accas = [await world.bet(acc, [("A", "ma", "h", "2.00"), ("B", "mb", "h", "3.00")], 100) for _ in range(5)]
    await world.service.settle_event("B", res(("mb", "h", W)), "r1")
    entered = world.ledger.hang(method, applied=applied, when=_touches({b.bet_id for b in accas}))
    task = asyncio.create_task(world.service.settle_event("A", res(("ma", "h", W)), "r1"))
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run = await world.service.settle_event("A", res(("ma", "h", W)), "r1")
    assert run.state == RunState.COMPLETED
    assert [await world.settled(b) for b in accas] == [(BetState.WON, 600)] * 5
    assert len((await world.check()).payout_entry_ids()) == 5


async def test_multi_lease_lost_during_the_page_reads_writes_nothing(world: MemoryWorld) -> None:
    """M7 (narrowed): the multi-event lease is checked again after the page's history reads, right before
    its writes; a lease lost in between (another run may hold it now) stops the run before any row."""
    from inplay.domain.settlement.lease import MULTI_LOCK_KEY, LeaseLost

    acc = await world.account()
    accas = [await world.bet(acc, [("A", "ma", "h", "2.00"), ("B", "mb", "h", "3.00")], 100) for _ in range(2)]
    await world.service.settle_event("B", res(("mb", "h", W)), "r1")
    inner = world.inner_ledger
    real = inner.bet_history
    lost = {"done": False}

    async def history(bet_id: str) -> Any:
        if not lost["done"]:
            lost["done"] = True
            world.locks.held.pop(MULTI_LOCK_KEY, None)  # expired and (possibly) taken by another run
        return await real(bet_id)

    inner.bet_history = history  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        await world.service.settle_event("A", res(("ma", "h", W)), "r1")
    inner.bet_history = real  # type: ignore[method-assign]
    for bet in accas:
        assert [e.kind for e in await inner.bet_history(bet.bet_id)] == ["PLACED", "SETTLED"]  # B's row only
    await world.check()
    await world.service.settle_event("A", res(("ma", "h", W)), "r1")
    assert [await world.settled(b) for b in accas] == [(BetState.WON, 600)] * 2
    await world.check()
