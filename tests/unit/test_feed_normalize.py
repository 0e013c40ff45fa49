"""Normalization of a price message's selections (``FeedPipeline._selections``): every provider ref mapped,
every selection of the market priced, a ref given twice takes its last price, odds above ``max_odds`` never
offered. Each rule gives its own rejection reason; the rejected message writes nothing."""

from __future__ import annotations

import orjson
import pytest

from inplay.domain.feed.messages import ODDS_INVALID, SCHEMA, UNMAPPED
from inplay.domain.feed.pipeline import RawMessage
from inplay.domain.feed.wire import iso_ms
from tests.support.feed import make_pipeline


def message(ts: int, prices: list[tuple[str, str]]) -> bytes:
    doc = {
        "type": "odds",
        "seq": 1,
        "ts": iso_ms(ts),
        "correction": False,
        "event": {"id": "A-EV"},
        "market": {"id": "A-EV-MR", "prices": [{"id": ref, "odds": odds} for ref, odds in prices]},
    }
    return orjson.dumps(doc)


H, D, A = "A-EV-MR-H", "A-EV-MR-D", "A-EV-MR-A"


@pytest.mark.parametrize(
    ("prices", "reason"),
    [
        ([(H, "2.00"), (D, "3.40"), ("A-EV-MR-X", "3.80")], UNMAPPED),  # a ref the mapping does not know
        ([(H, "2.00"), (D, "3.40")], SCHEMA),  # a selection not priced
        ([(H, "2.00"), (D, "3.40"), (D, "3.50")], SCHEMA),  # three prices, still one selection missing
        ([(H, "2.00"), (D, "3.40"), (A, "1001.00")], ODDS_INVALID),  # above max_odds (1,000)
    ],
)
async def test_an_unusable_market_is_rejected_for_its_reason(prices: list[tuple[str, str]], reason: str) -> None:
    pipe, cache, clock = await make_pipeline()
    summary = await pipe.ingest([RawMessage("alpha", message(clock[0] - 10, prices), clock[0])])
    assert (summary.accepted, dict(summary.rejected)) == (0, {reason: 1})
    assert await cache.get_markets(["ev:mr"]) == [None]


async def test_a_ref_given_twice_takes_its_last_price_in_mapping_order() -> None:
    pipe, cache, clock = await make_pipeline()
    prices = [(A, "3.80"), (H, "2.00"), (D, "3.40"), (H, "2.10")]
    summary = await pipe.ingest([RawMessage("alpha", message(clock[0] - 10, prices), clock[0])])
    assert summary.accepted == 1
    [state] = await cache.get_markets(["ev:mr"])
    assert state is not None
    assert [(s.selection_id, s.odds.decimal_str()) for s in state.selections] == [
        ("ev:mr:home", "2.10"),
        ("ev:mr:draw", "3.40"),
        ("ev:mr:away", "3.80"),
    ]
