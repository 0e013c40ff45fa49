"""L1: a bet's status and settled return (the total paid, not the last row's delta) from its history,
and the states of many bets (for ListBets, which shows every bet OPEN/0 today)."""

from __future__ import annotations

from inplay.domain.settlement.model import settlement_state
from inplay.domain.settlement.reads import settlement_states
from inplay.model import BetEvent, BetState
from tests.support.memory_world import memory_world
from tests.support.settlement import W, res


def row(seq: str, kind: str, status: BetState, amount: int) -> BetEvent:
    return BetEvent("b1", seq, kind, status, amount, "" if kind == "PLACED" else f"run{seq}", 0)


def test_settled_return_is_the_sum_of_the_deltas() -> None:
    # A run moves the bet between two non-zero returns (1000 -> 1500): its row stores the delta (+500).
    history = [
        row("0", "PLACED", BetState.OPEN, 1000),
        row("1", "SETTLED", BetState.PARTIAL, 1000),
        row("2", "SETTLED", BetState.WON, 500),
    ]
    assert settlement_state(history) == (BetState.WON, 1500)
    assert settlement_state(history[:1]) == (BetState.OPEN, 0)


async def test_states_of_many_bets_from_their_histories() -> None:
    world = memory_world()
    acc = await world.account()
    bet = await world.bet(acc, [("E", "m", "h", "3.00")], 1000)
    other = await world.bet(acc, [("E", "n", "h", "3.00")], 1000)
    await world.service.settle_event("E", res(void=["m"]), "r1")
    await world.service.resettle("E", res(("m", "h", W)), "r2")
    states = await settlement_states(world.inner_ledger, [bet.bet_id, other.bet_id])
    assert states == {bet.bet_id: (BetState.WON, 3000), other.bet_id: (BetState.OPEN, 0)}
    await world.check()
