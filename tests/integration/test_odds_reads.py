"""Fast reads: GetMarket / ListMarkets from the in-process read cache (``MarketReadCache``), kept fresh by the
event channel on the real Redis. A read of a watched event costs no Redis round trip; a change made by
another process arrives by pub/sub (version-checked); a lost subscription sends reads back to Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import grpc
import pytest

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.domain.feed.hub import MarketReadCache, OddsHub
from inplay.model import MarketState, MarketStatus
from inplay.odds.v1 import odds_pb2
from inplay.ports import OddsNotice, StatusWrite
from tests.integration.conftest_odds import BETTOR, OddsEnv, OddsGrpc, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration


class Counting:
    """The odds cache with its reads counted (every other call passes through)."""

    def __init__(self, inner: RedisOddsCache) -> None:
        self._inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        self.reads += 1
        return await self._inner.get_markets(market_ids)

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        self.reads += 1
        return await self._inner.list_event_markets(event_id)


@pytest.fixture
async def other_pod(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisOddsCache]:
    """Another process's connection: its writes reach this one only through pub/sub."""
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    yield cache
    await cache.close()


async def until(check: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def priced_reads(env: OddsEnv, cache: Counting) -> tuple[OddsHub, MarketReadCache]:
    """The event priced once through the pipeline, and a read cache (with its hub) over ``cache``."""
    t = now_ms() - 1_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    hub = OddsHub(cache)  # type: ignore[arg-type]
    return hub, MarketReadCache(cache, hub)  # type: ignore[arg-type]


async def test_reads_served_in_process_and_fresh_by_pub_sub(odds_env: OddsEnv, other_pod: RedisOddsCache) -> None:
    env = odds_env
    counting = Counting(env.cache)
    hub, reads = await priced_reads(env, counting)
    try:
        first = await reads.get_market(env.mr)
        assert first is not None and first.version == 1
        loaded = counting.reads
        for _ in range(50):
            assert (await reads.get_market(env.mr)) == first
        assert [m.market_id for m in await reads.list_event_markets(env.event_id)] == [env.mr]
        assert counting.reads == loaded  # no Redis round trip while nothing changed
        # another process suspends the market: the channel brings the new version
        await other_pod.write_status([StatusWrite(env.mr, MarketStatus.SUSPENDED, "OPERATOR")])
        await until(lambda: reads._events[env.event_id].markets[env.mr].version == 2)
        got = await reads.get_market(env.mr)
        assert got is not None and (got.version, got.status_reason) == (2, "OPERATOR")
        # an older version on the channel (the channel keeps the cache's order: only a cache reset does that)
        # never shows: the event is read again from Redis, which holds the truth
        reads._events[env.event_id].offer(OddsNotice(first))
        assert (await reads.get_market(env.mr)) == got
        loaded = counting.reads
        # a market of the event created by another process appears in ListMarkets
        await other_pod.put_markets([replace(first, market_id=env.ou, version=1)])
        await until(lambda: env.ou in reads._events[env.event_id].markets)
        assert [m.market_id for m in await reads.list_event_markets(env.event_id)] == [env.mr, env.ou]
        assert counting.reads == loaded
        # subscription lost: reads go to Redis until the hub is subscribed again
        hub._recovering = True
        assert (await reads.get_market(env.mr)) == got and counting.reads > loaded
    finally:
        hub._recovering = False
        await reads.close()
        await hub.close()


async def test_get_market_over_grpc_reads_own_writes_at_once(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 1_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    got = await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
    assert got.market.version == 1
    for i in range(1, 6):  # each write of this process is read back at once, not after its pub/sub echo
        await env.ingest(("alpha", env.alpha_mr(t + i * 10, "2.00", "3.40", "3.80"), t + i * 10 + 5))
        await env.pipeline.control.suspend([env.mr], "OPERATOR", "operator:test", "OPERATOR")
        got = await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
        assert got.market.version == (await env.market(env.mr)).version
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id="nope"), metadata=BETTOR)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


class Gated(Counting):
    """Reads that wait for a gate when one is set: the test decides which read returns first."""

    def __init__(self, inner: RedisOddsCache) -> None:
        super().__init__(inner)
        self.get_gate: asyncio.Event | None = None
        self.list_gate: asyncio.Event | None = None

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        gate, self.get_gate = self.get_gate, None
        got = await super().get_markets(market_ids)
        if gate is not None:
            await gate.wait()
        return got

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        gate, self.list_gate = self.list_gate, None
        got = await super().list_event_markets(event_id)
        if gate is not None:
            await gate.wait()
        return got


async def test_a_late_first_read_never_empties_a_loaded_event(odds_env: OddsEnv) -> None:
    # Found by perf/bench_odds.py --reads (1-2 NOT_FOUND of ~5,000 GetMarket of an existing market, at the
    # start): of the first concurrent reads of an event, one whose Redis read came back after another had
    # loaded the event loaded it again, emptying the held markets while the event stayed live. A read in
    # that window found the market missing.
    env = odds_env
    gated = Gated(env.cache)
    hub, reads = await priced_reads(env, gated)
    try:
        late_read, reload_read = asyncio.Event(), asyncio.Event()
        gated.get_gate = late_read
        late = asyncio.create_task(reads.get_market(env.mr))  # its Redis read returns last
        await until(lambda: gated.reads == 1)
        first = await reads.get_market(env.mr)  # loads the event
        assert first is not None
        gated.list_gate = reload_read  # a reload of the event, if one starts, waits here
        late_read.set()
        await asyncio.sleep(0.05)  # the late read goes on (on the old code: into a reload)
        during = [await reads.get_market(env.mr) for _ in range(3)]
        reload_read.set()
        assert during == [first] * 3
        assert await late == first
        assert await reads.get_market(env.mr) == first
    finally:
        await reads.close()
        await hub.close()
