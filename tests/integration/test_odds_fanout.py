"""StreamOdds fan-out at CI size on the real Redis: 200 subscribers over 10 events (10 markets each, every
market updated ~5 times a second for 3 s, then a burst of 3,000 updates on event 0), 20 of them (on event 0)
never reading after their SNAPSHOT. Every reading
subscriber ends on the latest version of every market; the server holds at most one pending state per market
per client; 200 simultaneous opens cost one Redis snapshot read per event. The full figure (1,000 subscribers,
10,000 deliveries/s, then 10x) is ``perf/bench_odds.py --grid``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
import pytest

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.core import Odds
from inplay.model import MarketState, SelectionPrice
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.ports import PriceWrite
from inplay.servicers import odds as odds_servicer
from tests.integration.conftest_odds import BETTOR, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

EVENTS, MARKETS, SUBSCRIBERS, SLOW = 10, 10, 200, 20


class CountingLists:
    """The odds cache with its event reads counted."""

    def __init__(self, inner: RedisOddsCache) -> None:
        self._inner = inner
        self.lists = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        self.lists += 1
        return await self._inner.list_event_markets(event_id)

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        return await self._inner.get_markets(market_ids)


async def test_200_subscribers_latest_state_bounded_slow_clients(live_cache: RedisOddsCache, unique_id: object) -> None:
    tag = unique_id("fan")  # type: ignore[operator]
    events = [f"{tag}-e{e}" for e in range(EVENTS)]
    markets = [(ev, f"{ev}:m{j}") for ev in events for j in range(MARKETS)]
    last: dict[str, int] = {}

    def write(ev: str, mid: str, k: int) -> PriceWrite:
        ts = max(now_ms(), last.get(mid, 0) + 1)
        last[mid] = ts
        sels = (SelectionPrice("h", "Home", Odds(200 + k % 9, 100)), SelectionPrice("a", "Away", Odds(180, 100)))
        return PriceWrite(mid, ev, "football", "MATCH_RESULT", mid, True, sels, ts, ts, "test")

    await live_cache.write_prices([write(ev, mid, 0) for ev, mid in markets])
    counting = CountingLists(live_cache)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hub = odds_servicer.add_to_server(server, counting)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    seen: list[dict[str, int]] = [{} for _ in range(SUBSCRIBERS)]
    latencies: list[int] = []
    opened = asyncio.Semaphore(0)

    def event_of(i: int) -> str:
        return events[0] if i < SLOW else events[i % EVENTS]  # the slow ones all on event 0

    async def subscriber(i: int) -> None:
        stub = odds_pb2_grpc.OddsServiceStub(channels[i % len(channels)])
        call = stub.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[event_of(i)]), metadata=BETTOR)
        first = await call.read()
        assert isinstance(first, odds_pb2.StreamOddsResponse) and len(first.markets) == MARKETS
        opened.release()
        if i < SLOW:
            await asyncio.Event().wait()
        while (msg := await call.read()) is not grpc.aio.EOF:
            assert isinstance(msg, odds_pb2.StreamOddsResponse)
            now = now_ms()
            for m in msg.markets:
                seen[i][m.market_id] = m.version
                latencies.append(now - m.updated_at.ToMilliseconds())

    tasks = [asyncio.create_task(subscriber(i)) for i in range(SUBSCRIBERS)]
    try:
        for _ in range(SUBSCRIBERS):
            await asyncio.wait_for(opened.acquire(), 60)
        assert counting.lists <= EVENTS  # one snapshot read per event, not per subscriber
        k = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:  # ~500 updates/s: 10 x 10 markets, every 200 ms
            await live_cache.write_prices([write(ev, mid, k) for ev, mid in markets])
            k += 1
            await asyncio.sleep(0.2)
        for _ in range(300):  # then a burst on event 0: far more than a gRPC window for the slow clients
            await live_cache.write_prices([write(ev, mid, k) for ev, mid in markets if ev == events[0]])
            k += 1
        final = {m.market_id: m.version for m in await live_cache.get_markets([mid for _, mid in markets]) if m}
        readers = range(SLOW, SUBSCRIBERS)

        def behind() -> list[int]:
            return [
                i for i in readers if any(seen[i].get(mid, 0) < final[mid] for ev, mid in markets if ev == event_of(i))
            ]

        for _ in range(200):  # up to 20 s
            if not behind():
                break
            await asyncio.sleep(0.1)
        assert behind() == []  # every reading subscriber got the latest state of each of its markets
        # a client that never reads holds at most one pending state per market (plus gRPC's flow-control window)
        # the server holds at most one pending state per market per client (the rest of what a client does not
        # read sits in gRPC's flow-control window): no per-client queue grows
        assert max(len(c.pending) for clients in hub._clients.values() for c in clients) <= MARKETS
        lat = sorted(latencies)
        assert lat[int(0.99 * len(lat))] < 2_000, lat[int(0.99 * len(lat))]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        await hub.close()
        await server.stop(0)
