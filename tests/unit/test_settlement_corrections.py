"""Corrections check their preconditions before they change any money (H4, H5), run ids are unambiguous
(H6), results are validated against the markets (M6), markets are closed before bets are read (H7).
Every test ends with the shared money invariants (tests/support/ledger_checks.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from inplay.domain.settlement import SettlementService
from inplay.errors import FailedPrecondition, InvalidArgument
from inplay.model import BetState, RunKind, RunState
from tests.support.memory_world import MemoryWorld, memory_world
from tests.support.settlement import Catalog, W, clock, market, res


@pytest.fixture
def world() -> MemoryWorld:
    return memory_world()


async def test_request_id_like_a_rollback_id_does_not_collide(world: MemoryWorld) -> None:
    alice, bob = await world.account(), await world.account()
    a = await world.bet(alice, [("E", "m1", "h", "2.00")])
    b = await world.bet(bob, [("E", "m2", "h", "3.00")])
    first = await world.service.settle_event("E", res(("m1", "h", W)), "x")
    second = await world.service.settle_event("E", res(("m2", "h", W)), "x.r1")
    assert first.run_id != second.run_id
    rollback = await world.service.rollback("E", first.run_id)
    assert rollback.run_id not in (first.run_id, second.run_id)
    assert rollback.record.kind == RunKind.ROLLBACK and rollback.state == RunState.COMPLETED
    assert await world.settled(a) == (BetState.OPEN, 0)  # alice's payout reversed
    assert await world.settled(b) == (BetState.WON, 3000)
    history = {r.run_id: r for r in (await world.service.status("E")).history}
    assert history[second.run_id].record.kind == RunKind.SETTLE
    assert history[second.run_id].record.results == res(("m2", "h", W))
    await world.check()


async def test_event_and_request_ids_with_dots_give_distinct_runs(world: MemoryWorld) -> None:
    acc = await world.account()
    await world.bet(acc, [("X", "m", "h", "2.00")])
    await world.bet(acc, [("X.s", "n", "h", "2.00")])
    one = await world.service.settle_event("X", res(("m", "h", W)), "s.y")
    two = await world.service.settle_event("X.s", res(("n", "h", W)), "y")
    assert one.run_id != two.run_id
    assert (await world.check()).by_kind["PAYOUT"] == 4000


async def test_resettle_that_cannot_apply_changes_nothing(world: MemoryWorld) -> None:
    alice, bob = await world.account(), await world.account()
    ht = await world.bet(alice, [("E", "ht", "h", "2.00")])
    ft = await world.bet(bob, [("E", "ft", "h", "3.00")])
    await world.service.settle_event("E", res(("ht", "h", W)), "half-time")
    await world.service.settle_event("E", res(("ft", "h", W)), "full-time")
    before = await world.wallet.balances([alice, bob])
    with pytest.raises(FailedPrecondition) as exc:
        await world.service.resettle("E", res(("ht", "a", W)), "fix-ht")
    assert exc.value.reason == "MARKET_ALREADY_SETTLED"
    assert await world.wallet.balances([alice, bob]) == before
    assert await world.settled(ft) == (BetState.WON, 3000) and await world.settled(ht) == (BetState.WON, 2000)
    runs = (await world.service.status("E")).history
    assert [r.record.kind for r in runs] == [RunKind.SETTLE, RunKind.SETTLE]  # no rollback was created
    with pytest.raises(FailedPrecondition):  # a retry fails the same way, still with no effect
        await world.service.resettle("E", res(("ht", "a", W)), "fix-ht")
    assert await world.wallet.balances([alice, bob]) == before
    await world.check()


async def test_rollback_of_a_rollback_refuses_to_reinstate_a_superseded_run(world: MemoryWorld) -> None:
    alice, bob = await world.account(), await world.account()
    a = await world.bet(alice, [("E", "m", "A", "2.00")])
    b = await world.bet(bob, [("E", "m", "B", "3.00")])
    s1 = await world.service.settle_event("E", res(("m", "A", W)), "r1")
    r1 = await world.service.rollback("E", s1.run_id)
    await world.service.settle_event("E", res(("m", "B", W)), "r2")
    before = await world.wallet.balances([alice, bob])
    with pytest.raises(FailedPrecondition) as exc:
        await world.service.rollback("E", r1.run_id)
    assert exc.value.reason == "MARKET_RESETTLED" and s1.run_id in str(exc.value)
    assert await world.wallet.balances([alice, bob]) == before
    assert await world.settled(a) == (BetState.LOST, 0) and await world.settled(b) == (BetState.WON, 3000)
    assert await world.service.effective_results("E") == res(("m", "B", W))
    await world.check()


async def test_rollback_of_a_rollback_still_reinstates_when_nothing_superseded(world: MemoryWorld) -> None:
    alice = await world.account()
    a = await world.bet(alice, [("E", "m", "A", "2.00")])
    s1 = await world.service.settle_event("E", res(("m", "A", W)), "r1")
    r1 = await world.service.rollback("E", s1.run_id)
    again = await world.service.rollback("E", r1.run_id)
    assert again.state == RunState.COMPLETED
    assert await world.settled(a) == (BetState.WON, 2000)
    await world.check()


def validated(world: MemoryWorld, catalog: Catalog) -> SettlementService:
    return SettlementService(
        world.store,  # type: ignore[arg-type]
        world.ledger,  # type: ignore[arg-type]
        world.wallet,  # type: ignore[arg-type]
        world.bus,
        world.locks,
        config=world.config,
        clock=clock,
        markets=catalog,
    )


@pytest.mark.parametrize(
    ("results", "field", "message"),
    [
        (res(("m", "nonexistent", W)), "outcomes[m/nonexistent].selection_id", "not a selection"),
        (res(("other", "h", W)), "outcomes[other/h].market_id", "belongs to event F"),
        (res(("ghost", "h", W)), "outcomes[ghost/h].market_id", "unknown market"),
        (res(void=["other"]), "void_market_ids[other]", "belongs to event F"),
    ],
)
async def test_results_are_validated_against_the_market(
    world: MemoryWorld, results: Any, field: str, message: str
) -> None:
    acc = await world.account()
    await world.bet(acc, [("E", "m", "h", "2.00")])
    service = validated(world, Catalog(market("m", "E", "h", "a"), market("other", "F", "h")))
    with pytest.raises(InvalidArgument) as exc:
        await service.settle_event("E", results, "r")
    assert [(v.field, message in v.description) for v in exc.value.violations] == [(field, True)]
    with pytest.raises(InvalidArgument):
        await service.resettle("E", results, "r2")
    assert await world.store.event_runs("E") == [] and world.closed == []
    run = await service.settle_event("E", res(("m", "h", W)), "ok")
    assert run.state == RunState.COMPLETED
    await world.check()


async def test_markets_are_closed_before_any_bet_is_read(world: MemoryWorld) -> None:
    acc = await world.account()
    await world.bet(acc, [("E", "m", "h", "2.00")])
    order: list[str] = []
    inner = world.inner_ledger
    real = inner.event_bets

    def event_bets(event_id: str, page_size: int = 5000) -> Any:
        order.append("read")
        return real(event_id, page_size)

    async def close(market_ids: Sequence[str]) -> None:
        order.append("close:" + ",".join(market_ids))

    class Watermark:
        async def wait_visible(self, event_id: str, closed_at_ms: int) -> None:
            order.append(f"watermark:{event_id}")

    inner.event_bets = event_bets  # type: ignore[method-assign]
    service = SettlementService(
        world.store,  # type: ignore[arg-type]
        world.ledger,  # type: ignore[arg-type]
        world.wallet,  # type: ignore[arg-type]
        world.bus,
        world.locks,
        config=world.config,
        clock=clock,
        mark_settled=close,
        bet_watermark=Watermark(),
    )
    await service.settle_event("E", res(("m", "h", W)), "r")
    reads = [i for i, o in enumerate(order) if o == "read"]
    assert order.index("close:m") < order.index("watermark:E") < reads[0], order
    await world.check()
