"""The state a price write reports as ``before`` is the market's state in Redis just before the write, whoever
wrote it: this process (the price script answers "the body you hold" and the held state is used), another
pod's writer, a status write in between (version and status move, the body stays), or a put. The change log
and the odds records are derived from ``before``: a stale one would log the wrong old prices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

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


async def status_write(a: RedisOddsCache, b: RedisOddsCache, ev: str, m: str) -> None:
    await a.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "BET_STOP", T0 + 150)])


async def other_writer(a: RedisOddsCache, b: RedisOddsCache, ev: str, m: str) -> None:
    await b.write_prices([prices(ev, m, T0 + 200, "3.00")])


async def put(a: RedisOddsCache, b: RedisOddsCache, ev: str, m: str) -> None:
    assert [w.applied for w in await a.put_markets([market(ev, m, 5, "7.00")])] == [True]


Between = Callable[[RedisOddsCache, RedisOddsCache, str, str], Awaitable[None]]


@pytest.mark.parametrize(
    ("between", "expected"),
    [
        # the body is still this writer's: the held state, with the version and status the script reports
        (status_write, (2, MarketStatus.SUSPENDED, "BET_STOP", ["2.00"])),
        (other_writer, (2, MarketStatus.ACTIVE, "", ["3.00"])),  # not the 2.00 this writer holds
        (put, (5, MarketStatus.ACTIVE, "", ["7.00"])),
    ],
)
async def test_before_is_the_state_in_redis_whoever_wrote_it(
    pods: tuple[RedisOddsCache, RedisOddsCache], between: Between, expected: tuple[object, ...]
) -> None:
    a, b = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    await between(a, b, ev, m)
    [again] = await a.write_prices([prices(ev, m, T0 + 300, "4.00")])
    before = again.before
    assert before is not None
    assert (before.version, before.status, before.status_reason, odds_of(before)) == expected


async def test_two_writes_of_one_market_in_one_batch(pods: tuple[RedisOddsCache, RedisOddsCache]) -> None:
    a, _ = pods
    ev = uid("ev")
    m = f"{ev}:mr"
    await a.write_prices([prices(ev, m, T0 + 100, "2.00")])
    first, second = await a.write_prices([prices(ev, m, T0 + 200, "2.50"), prices(ev, m, T0 + 300, "3.00")])
    assert first.before is not None and second.before is not None
    assert (odds_of(first.before), odds_of(second.before)) == (["2.00"], ["2.50"])
