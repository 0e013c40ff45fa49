"""Fixtures of the odds pipeline tests (real Redis, Kafka, Cassandra), loaded with
``pytest_plugins = ["tests.integration.conftest_odds"]``.

``odds_env`` is one event mapped on both providers (alpha primary, bravo secondary) with a pipeline wired
to the real odds cache (Redis, per-test prefix), the real bus (Kafka, per-session topic prefix) and the
real change log (Cassandra, the session keyspace); ``odds_grpc`` serves Odds/Feed/Admin over real gRPC.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from confluent_kafka import Consumer

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache
from inplay.admin.v1 import admin_pb2_grpc
from inplay.domain.feed import wire
from inplay.domain.feed.hub import OddsHub
from inplay.domain.feed.mapping import FeedMappingService
from inplay.domain.feed.pipeline import FeedPipeline, IngestSummary, RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.domain.markets import ChangeRecorder, MarketControl
from inplay.feed.v1 import feed_pb2_grpc
from inplay.model import MarketState
from inplay.odds.v1 import odds_pb2_grpc
from inplay.ports import (
    TOPIC_FEED_RAW,
    TOPIC_MARKET_CHANGES,
    TOPIC_ODDS,
    EventBus,
    WalletStore,
)
from inplay.servicers import admin as admin_servicer
from inplay.servicers import feed as feed_servicer
from inplay.servicers import odds as odds_servicer

OPERATOR = (("x-inplay-subject", "op-alice"), ("x-inplay-roles", "operator"))
FEEDER = (("x-inplay-subject", "connector-1"), ("x-inplay-roles", "feed"))
BETTOR = (("x-inplay-subject", "acc-bob"), ("x-inplay-roles", "bettor"))

_match_numbers = itertools.count(random.Random().randint(1_000_000, 9_000_000))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="session")
async def odds_topics(kafka_bootstrap: str, topic_prefix: str) -> str:
    from inplay.adapters.kafka_bus import ensure_topics

    await ensure_topics(
        kafka_bootstrap,
        {topic_prefix + t: 3 for t in (TOPIC_ODDS, TOPIC_FEED_RAW, TOPIC_MARKET_CHANGES)},
    )
    return topic_prefix


@pytest.fixture
async def live_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisOddsCache]:
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    yield cache
    await cache.close()


@pytest.fixture
def change_log(ledger: Any) -> CassandraMarketChangeLog:
    return CassandraMarketChangeLog(ledger.session)


@dataclass
class OddsEnv:
    cache: RedisOddsCache
    bus: EventBus
    pipeline: FeedPipeline
    control: MarketControl
    changes: CassandraMarketChangeLog
    mappings: FeedMappingService
    topic_prefix: str
    event_id: str
    alpha_event: str
    bravo_match: int
    _seq: dict[str, int] = field(default_factory=lambda: {"alpha": 0, "bravo": 0})

    @property
    def mr(self) -> str:
        return f"{self.event_id}:mr"

    @property
    def ou(self) -> str:
        return f"{self.event_id}:ou"

    def seq(self, provider: str) -> int:
        self._seq[provider] += 1
        return self._seq[provider]

    # alpha / bravo messages for this event (next sequence number unless given)
    def alpha_mr(self, ts: int, h: str, d: str, a: str, seq: int | None = None, correction: bool = False) -> bytes:
        e = self.alpha_event
        return wire.alpha_odds(
            self.seq("alpha") if seq is None else seq,
            ts,
            e,
            f"{e}-MR",
            {f"{e}-MR-H": h, f"{e}-MR-D": d, f"{e}-MR-A": a},
            correction,
        )

    def alpha_ou(self, ts: int, over: str, under: str, seq: int | None = None) -> bytes:
        e = self.alpha_event
        return wire.alpha_odds(
            self.seq("alpha") if seq is None else seq,
            ts,
            e,
            f"{e}-OU",
            {f"{e}-OU-O": over, f"{e}-OU-U": under},
        )

    def bravo_prices(self, ts: int, mr: Sequence[int | str], ou: Sequence[int | str] | None = None) -> bytes:
        offers = [wire.bravo_offer("1X2", dict(zip("1X2", mr, strict=True)))]
        if ou is not None:
            offers.append(wire.bravo_offer("OU", dict(zip("OU", ou, strict=True)), "2.5"))
        return wire.bravo_price(self.seq("bravo"), ts, self.bravo_match, offers)

    async def ingest(self, *messages: tuple[str, bytes, int]) -> IngestSummary:
        return await self.pipeline.ingest([RawMessage(p, b, r) for p, b, r in messages])

    async def market(self, market_id: str) -> MarketState:
        (state,) = await self.cache.get_markets([market_id])
        assert state is not None, market_id
        return state

    async def prices(self, market_id: str) -> list[str]:
        return [s.odds.decimal_str() for s in (await self.market(market_id)).selections]


async def build_env(
    live_cache: RedisOddsCache,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    topic_prefix: str,
    unique_id: Callable[[str], str],
    rules: FeedRules | None = None,
    log_from_bus: bool = False,
) -> OddsEnv:
    """``log_from_bus``: the change rows are left to the change-log writer (INPLAY_FEED_CHANGE_LOG=kafka)."""
    event_id = unique_id("ev")
    alpha_event = f"A-{uuid.uuid4().hex[:10]}"
    bravo_match = next(_match_numbers)
    mappings = FeedMappingService(RedisFeedMappings(live_cache.client, live_cache.prefix))
    await mappings.load(wire.two_provider_mapping(event_id, alpha_event, bravo_match))
    control = MarketControl(live_cache, ChangeRecorder(change_log, bus, topic_prefix, log_from_bus=log_from_bus))
    pipeline = FeedPipeline(live_cache, bus, mappings, control, rules or FeedRules(), topic_prefix=topic_prefix)
    return OddsEnv(
        live_cache,
        bus,
        pipeline,
        control,
        change_log,
        mappings,
        topic_prefix,
        event_id,
        alpha_event,
        bravo_match,
    )


@pytest.fixture
async def odds_env(
    live_cache: RedisOddsCache,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    odds_topics: str,
    unique_id: Callable[[str], str],
) -> OddsEnv:
    return await build_env(live_cache, bus, change_log, odds_topics, unique_id)


@dataclass
class OddsGrpc:
    env: OddsEnv
    channel: grpc.aio.Channel
    odds: odds_pb2_grpc.OddsServiceStub
    feed: feed_pb2_grpc.FeedServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    hub: OddsHub
    target: str


@pytest.fixture
async def odds_grpc(odds_env: OddsEnv, wallet: WalletStore) -> AsyncIterator[OddsGrpc]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hub = odds_servicer.add_to_server(server, odds_env.cache)
    feed_servicer.add_to_server(server, odds_env.pipeline)
    admin_servicer.add_to_server(server, odds_env.control, odds_env.changes, wallet)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield OddsGrpc(
            odds_env,
            channel,
            odds_pb2_grpc.OddsServiceStub(channel),
            feed_pb2_grpc.FeedServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            hub,
            target,
        )
    finally:
        await channel.close()
        await hub.close()
        await server.stop(0)


def _consume(
    bootstrap: str, topic: str, want: Callable[[str, dict[str, Any]], bool], n: int, timeout_s: float
) -> list[tuple[str, dict[str, Any]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"odds-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < n:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            key = (msg.key() or b"").decode()
            value = json.loads(msg.value())
            if want(key, value):
                found.append((key, value))
    finally:
        consumer.close()
    return found


async def consume(
    bootstrap: str, topic: str, want: Callable[[str, dict[str, Any]], bool], n: int, timeout_s: float = 30.0
) -> list[tuple[str, dict[str, Any]]]:
    """Reads ``topic`` from the beginning until ``n`` messages match ``want`` (or the timeout)."""
    return await asyncio.to_thread(_consume, bootstrap, topic, want, n, timeout_s)
