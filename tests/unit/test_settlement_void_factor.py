"""The void factor as Sportradar defines it (share of the stake refunded) in result messages."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from inplay.core import LegOutcome
from inplay.domain.settlement.messages import parse_result_message
from inplay.domain.settlement.model import apply_void_factor
from inplay.errors import InvalidArgument
from inplay.model import BetState
from tests.support.memory_world import memory_world

W, L = LegOutcome.WIN, LegOutcome.LOSE


@pytest.mark.parametrize(
    ("outcome", "factor", "expected"),
    [
        (W, "1", LegOutcome.VOID),
        (L, "1", LegOutcome.VOID),
        (W, "0.5", LegOutcome.HALF_WIN),
        (L, "0.5", LegOutcome.HALF_LOSE),
        (W, "0", W),
    ],
)
def test_void_factor_maps_to_a_refund_share(outcome: LegOutcome, factor: str, expected: LegOutcome) -> None:
    assert apply_void_factor(outcome, Fraction(factor)) == expected


def message(result: str, factor: object) -> bytes:
    outcome = {"market_id": "m", "selection_id": "h", "result": result, "void_factor": factor}
    return json.dumps({"event_id": "E", "request_id": "r", "outcomes": [outcome]}).encode()


async def test_result_messages_with_void_factors_settle_as_refunds() -> None:
    world = memory_world()
    acc = await world.account()
    bets = [await world.bet(acc, [("E", m, "h", "3.00")], 1000) for m in ("m1", "m2", "m3")]
    outcomes = [
        {"market_id": "m1", "selection_id": "h", "result": "WIN", "void_factor": 0.5},
        {"market_id": "m2", "selection_id": "h", "result": "LOSE", "void_factor": "0.5"},
        {"market_id": "m3", "selection_id": "h", "result": "LOSE", "void_factor": 1},
    ]
    raw = json.dumps({"event_id": "E", "request_id": "r", "outcomes": outcomes}).encode()
    parsed = parse_result_message(raw, "fallback")
    await world.service.settle_event("E", parsed.results, parsed.request_id)
    assert [await world.settled(b) for b in bets] == [
        (BetState.WON, 2000),  # half at 3.00 (1500) + half refunded (500)
        (BetState.PARTIAL, 500),  # half lost, half refunded
        (BetState.REFUNDED, 1000),
    ]
    await world.check()
    with pytest.raises(InvalidArgument):
        parse_result_message(message("WIN", "0.3"), "f")
