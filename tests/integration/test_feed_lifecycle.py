"""Provider (producer) lifecycle on the real stack: a provider silent past INPLAY_FEED_PRODUCER_DOWN_MS is DOWN
and only the markets it is the active source of are suspended PROVIDER_DOWN (the other provider's markets are
untouched); its next valid message asks it (Kafka inplay.feed.recovery.v1) for a recovery snapshot; its prices
are stored but the markets reopen only when the snapshot-complete message for that request arrives."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from prometheus_client import REGISTRY

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.kafka_bus import ensure_topics
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.admin.v1 import admin_pb2, admin_pb2_grpc
from inplay.domain.feed import wire
from inplay.domain.feed.pipeline import TOPIC_FEED_RECOVERY, RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketStatus
from inplay.ports import EventBus, WalletStore
from inplay.servicers import admin as admin_servicer
from tests.integration.conftest_odds import OPERATOR, OddsEnv, build_env, consume, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

RULES = FeedRules(heartbeat_timeout_ms=1_000, producer_down_ms=2_000, failback_after_ms=1_000)
SUSPENDED, ACTIVE = MarketStatus.SUSPENDED, MarketStatus.ACTIVE


@pytest.fixture
async def env(
    live_cache: RedisOddsCache,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    odds_topics: str,
    kafka_bootstrap: str,
    unique_id: Callable[[str], str],
) -> OddsEnv:
    await ensure_topics(kafka_bootstrap, {odds_topics + TOPIC_FEED_RECOVERY: 1})
    return await build_env(live_cache, bus, change_log, odds_topics, unique_id, RULES)


@pytest.fixture
async def admin(env: OddsEnv, wallet: WalletStore) -> AsyncIterator[admin_pb2_grpc.AdminServiceStub]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    admin_servicer.add_to_server(server, env.control, env.changes, wallet)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield admin_pb2_grpc.AdminServiceStub(channel)
    await server.stop(0)


async def producers(admin: admin_pb2_grpc.AdminServiceStub) -> dict[str, tuple[int, str]]:
    got = await admin.ListProducers(admin_pb2.ListProducersRequest(), metadata=OPERATOR)
    return {p.provider: (p.status, p.recovery_request_id) for p in got.producers}


async def state(env: OddsEnv, market_id: str) -> tuple[MarketStatus, str]:
    m = await env.market(market_id)
    return m.status, m.status_reason


def gauge(provider: str) -> float | None:
    return REGISTRY.get_sample_value("inplay_feed_producer_up", {"provider": provider})


async def test_provider_down_suspends_only_its_markets_and_recovery_snapshot_reopens(
    env: OddsEnv, kafka_bootstrap: str, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    # ev_a is priced by alpha only, ev_b by bravo only (no failover for either)
    ev_a, ev_b, alpha_a, match_b = (
        f"{env.event_id}a",
        f"{env.event_id}b",
        f"A-{uuid.uuid4().hex[:8]}",
        env.bravo_match + 1,
    )
    doc = wire.two_provider_mapping(ev_a, alpha_a, env.bravo_match + 2, secondary="")
    doc["events"] += wire.two_provider_mapping(ev_b, f"X-{alpha_a}", match_b, primary="bravo", secondary="")["events"]
    await env.mappings.load(doc)
    pipe = env.pipeline

    def alpha(ts: int, home: str) -> RawMessage:
        body = wire.alpha_odds(
            env.seq("alpha"),
            ts,
            alpha_a,
            f"{alpha_a}-MR",
            {f"{alpha_a}-MR-H": home, f"{alpha_a}-MR-D": "3.40", f"{alpha_a}-MR-A": "3.80"},
        )
        return RawMessage("alpha", body, ts + 5)

    def bravo(ts: int) -> RawMessage:
        offers = [wire.bravo_offer("1X2", {"1": 110, "X": 240, "2": 280})]
        return RawMessage("bravo", wire.bravo_price(env.seq("bravo"), ts, match_b, offers), ts + 5)

    t = now_ms() - 60_000
    out = await pipe.ingest([alpha(t, "2.00"), bravo(t)])
    assert out.accepted == 2
    # alpha goes silent; bravo keeps sending
    for k in range(1, 6):
        await pipe.ingest([RawMessage("bravo", wire.bravo_alive(env.seq("bravo"), t + k * 500), t + k * 500 + 5)])
    await pipe.tick(t + 2_600)
    assert await state(env, f"{ev_a}:mr") == (SUSPENDED, "PROVIDER_DOWN")
    assert await state(env, f"{ev_b}:mr") == (ACTIVE, "")  # the other provider's markets are untouched
    assert pipe.producers()["alpha"]["status"] == "DOWN" and gauge("alpha") == 0.0
    assert pipe.producers()["bravo"]["status"] == "UP"
    assert await producers(admin) == {
        "alpha": (admin_pb2.PRODUCER_STATUS_DOWN, ""),
        "bravo": (admin_pb2.PRODUCER_STATUS_UP, ""),
    }
    # alpha is back: a recovery snapshot is asked for; its prices are stored, the market stays suspended
    out = await pipe.ingest([alpha(t + 3_000, "2.20")])
    assert out.accepted == 1 and pipe.producers()["alpha"]["status"] == "RECOVERING" and gauge("alpha") == 0.5
    m = await env.market(f"{ev_a}:mr")
    assert (m.status, m.status_reason, m.selections[0].odds.decimal_str()) == (SUSPENDED, "PROVIDER_DOWN", "2.20")
    request_id = str(pipe.producers()["alpha"]["recovery_id"])
    assert (await producers(admin))["alpha"] == (admin_pb2.PRODUCER_STATUS_RECOVERING, request_id)
    found = await consume(
        kafka_bootstrap,
        env.topic_prefix + TOPIC_FEED_RECOVERY,
        lambda key, value: value.get("request_id") == request_id,
        1,
    )
    assert found and found[0][0] == "alpha" and found[0][1]["since_ms"] == t + 5
    # a snapshot-complete for another request changes nothing; the one asked for reopens alpha's markets
    await pipe.ingest(
        [RawMessage("alpha", wire.alpha_snapshot_complete(env.seq("alpha"), t + 3_100, "other"), t + 3_105)]
    )
    assert await state(env, f"{ev_a}:mr") == (SUSPENDED, "PROVIDER_DOWN")
    await pipe.ingest(
        [RawMessage("alpha", wire.alpha_snapshot_complete(env.seq("alpha"), t + 3_200, request_id), t + 3_205)]
    )
    assert await state(env, f"{ev_a}:mr") == (ACTIVE, "")
    assert pipe.producers()["alpha"]["status"] == "UP" and gauge("alpha") == 1.0
    assert (await producers(admin))["alpha"] == (admin_pb2.PRODUCER_STATUS_UP, "")
    assert await state(env, f"{ev_b}:mr") == (ACTIVE, "")
    changes, _ = await env.changes.list(f"{ev_a}:mr", 100, "")
    assert [c.new_value for c in changes if c.kind == "STATUS"][-2:] == ["SUSPENDED:PROVIDER_DOWN", "ACTIVE"]
    assert json.dumps(pipe.producers())  # plain data (what AdminService would serve)


async def test_recovery_snapshot_never_completed_is_requested_again_and_only_the_newest_reopens(
    env: OddsEnv, kafka_bootstrap: str, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    """Before: a recovery request lost by the connector (or a connector that died while replaying) left the
    provider RECOVERING and its markets PROVIDER_DOWN for good. Now the watchdog asks again after
    INPLAY_FEED_RECOVERY_RESEND_MS, under a new request id; only that request's completion reopens."""
    pipe = env.pipeline
    pipe.rules = FeedRules(heartbeat_timeout_ms=5_000, producer_down_ms=2_000, recovery_resend_ms=1_000)
    alpha_only = f"{env.event_id}s"
    ref = f"A-{uuid.uuid4().hex[:8]}"
    await env.mappings.load(wire.two_provider_mapping(alpha_only, ref, env.bravo_match + 3, secondary=""))

    def price(ts: int) -> RawMessage:
        prices = {f"{ref}-MR-H": "2.00", f"{ref}-MR-D": "3.40", f"{ref}-MR-A": "3.80"}
        return RawMessage("alpha", wire.alpha_odds(env.seq("alpha"), ts, ref, f"{ref}-MR", prices), ts + 5)

    def complete(ts: int, request_id: str) -> RawMessage:
        return RawMessage("alpha", wire.alpha_snapshot_complete(env.seq("alpha"), ts, request_id), ts + 5)

    t = now_ms() - 60_000
    assert (await pipe.ingest([price(t)])).accepted == 1
    await pipe.tick(t + 2_600)  # silent: DOWN
    assert await state(env, f"{alpha_only}:mr") == (SUSPENDED, "PROVIDER_DOWN")
    await pipe.ingest([price(t + 3_000)])  # back: first request
    first = str(pipe.producers()["alpha"]["recovery_id"])
    await pipe.tick(t + 3_500)  # not overdue yet: no second request
    assert pipe.producers()["alpha"]["recovery_id"] == first
    await pipe.tick(t + 4_100)  # overdue: asked again
    second = str(pipe.producers()["alpha"]["recovery_id"])
    assert second != first and (await producers(admin))["alpha"] == (admin_pb2.PRODUCER_STATUS_RECOVERING, second)
    found = await consume(
        kafka_bootstrap,
        env.topic_prefix + TOPIC_FEED_RECOVERY,
        lambda key, value: value.get("request_id") in (first, second),
        2,
    )
    assert [v["request_id"] for _, v in found] == [first, second]
    assert {v["since_ms"] for _, v in found} == {t + 5}  # both replay from the last message before the silence
    await pipe.ingest([complete(t + 4_200, first)])  # the superseded request's completion: ignored
    assert await state(env, f"{alpha_only}:mr") == (SUSPENDED, "PROVIDER_DOWN")
    await pipe.ingest([complete(t + 4_300, second)])
    assert await state(env, f"{alpha_only}:mr") == (ACTIVE, "")
    assert (await producers(admin))["alpha"] == (admin_pb2.PRODUCER_STATUS_UP, "")
