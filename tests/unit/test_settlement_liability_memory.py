"""Issue 12 on the memory twins (the fast loop; the real-stack proof is
tests/integration/test_settlement_liability.py): settling releases each bet's liability once, whatever
write of the page fails and is redone, and a correction reopens (counts again) before releasing once more."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from inplay.ids import bet_liability
from inplay.model import PlacedBet
from tests.support.faults import InjectedFault
from tests.support.memory_world import MemoryWorld, memory_world
from tests.support.settlement import L, W, clock, placed_bet, record_bet, res

_n = itertools.count(1)


async def placed(world: MemoryWorld, account: str, selection: str) -> PlacedBet:
    """A bet of 1000 at 3.00 (liability 2000), its liability counted as the debit counts it."""
    n = next(_n)
    bet = placed_bet(account, [("ev", "m", selection, "3.00")], 1000, bet_id=f"lb{n:05d}", key=f"lk{n}", at_ms=clock())
    bet = replace(bet, potential_return_minor=3000)
    await record_bet(world.inner_ledger, world.wallet, [bet])
    keys, amount = bet_liability(bet)
    for key in keys:
        world.wallet._inner._liability[key] += amount
    return bet


def counter(world: MemoryWorld, selection: str) -> int:
    return int(world.wallet._inner._liability[f"m/{selection}"])


@pytest.fixture
def world() -> MemoryWorld:
    return memory_world()


@pytest.mark.parametrize(
    ("port", "method", "applied"),
    [
        ("wallet", "settle_liability", True),
        ("wallet", "settle_liability", False),
        ("store", "append_checkpoints", True),
    ],
)
async def test_a_failed_page_is_redone_and_releases_once(
    world: MemoryWorld, port: str, method: str, applied: bool
) -> None:
    account = await world.account()
    bets = [await placed(world, account, "home" if i % 2 else "away") for i in range(6)]
    assert counter(world, "home") == counter(world, "away") == 6000
    getattr(world, port).fail(method, applied=applied)
    with pytest.raises(InjectedFault):
        await world.service.settle_event("ev", res(("m", "home", W)), "r1")
    run = await world.service.settle_event("ev", res(("m", "home", W)), "r1")
    assert run.stats.bets_processed == len(bets)
    assert counter(world, "home") == counter(world, "away") == 0
    await world.check()


async def test_a_correction_counts_again_then_releases_once(world: MemoryWorld) -> None:
    account = await world.account()
    await placed(world, account, "home")
    await world.service.settle_event("ev", res(("m", "home", W)), "r1")
    assert counter(world, "home") == 0
    rollback = await world.service.rollback("ev", "ev.s.r1")
    assert rollback.stats.bets_still_open == 1 and counter(world, "home") == 2000  # open again: counted
    await world.service.settle_event("ev", res(("m", "home", L)), "r2")
    assert counter(world, "home") == 0
    _, fixed = await world.service.resettle("ev", res(("m", "home", W)), "r3")
    assert fixed.stats.bets_still_open == 0 and counter(world, "home") == 0  # never -2000
    await world.check()
