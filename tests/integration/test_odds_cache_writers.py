"""The state a price write reports as ``before`` is the market's state in Redis just before the write, whoever
wrote it: this process (the price script answers "the body you hold" and the held state is used), another
pod's writer, a status write in between (version and status move, the body stays), or a put. The change log
and the odds records are derived from ``before``: a stale one would log the wrong old prices."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.model import MarketStatus
from inplay.ports import StatusWrite
from tests.support.contracts import uid
from tests.support.contracts.odds import T0, market, prices

pytestmark = pytest.mark.integration


@pytest.fixture
async def pods(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[RedisOddsCache, RedisOddsCache]]:
    first = await RedisOddsCache.connect(redis_url, redis_prefix)
    second = await RedisOddsCache.connect(redis_url, redis_prefix)
    yield first, second
    await first.close()
    await second.close()


def odds_of(state: object) -> list[str]:
    return [s.odds.decimal_str() for s in state.selections]  # type: ignore[attr-defined]


async def test_before_is_this_writers_state_after_a_status_write(pods: tuple[RedisOddsCache, RedisOddsCache]) -> None:
    a, _ = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    [first] = await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    await a.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "BET_STOP", T0 + 150)])
    [second] = await a.write_prices([prices(ev, m, T0 + 200, "2.50")])
    assert second.before is not None and first.after is not None
    assert (second.before.version, second.before.status, second.before.status_reason) == (
        2,
        MarketStatus.SUSPENDED,
        "BET_STOP",
    )
    assert odds_of(second.before) == ["2.00"]


async def test_before_is_the_other_writers_state(pods: tuple[RedisOddsCache, RedisOddsCache]) -> None:
    a, b = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    await b.write_prices([prices(ev, m, T0 + 200, "3.00")])
    [again] = await a.write_prices([prices(ev, m, T0 + 300, "4.00")])
    assert again.before is not None and again.before.version == 2
    assert odds_of(again.before) == ["3.00"]  # not the 2.00 this writer holds


async def test_before_is_a_put_state(pods: tuple[RedisOddsCache, RedisOddsCache]) -> None:
    a, _ = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    assert [w.applied for w in await a.put_markets([market(ev, m, 5, "7.00")])] == [True]
    [again] = await a.write_prices([prices(ev, m, T0 + 300, "4.00")])
    assert again.before is not None and again.before.version == 5
    assert odds_of(again.before) == ["7.00"]


async def test_two_writes_of_one_market_in_one_batch(pods: tuple[RedisOddsCache, RedisOddsCache]) -> None:
    a, _ = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    first, second = await a.write_prices([prices(ev, m, T0 + 200, "2.50"), prices(ev, m, T0 + 300, "3.00")])
    assert first.before is not None and second.before is not None
    assert (odds_of(first.before), odds_of(second.before)) == (["2.00"], ["2.50"])
