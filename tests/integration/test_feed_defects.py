"""Regression tests of the odds-pipeline review (../shared/reviews/odds-5b1550c.md) on the real stack:
Redis (odds cache, Lua scripts, pub/sub), Kafka (odds topic), Cassandra (change log), over real gRPC where
the defect is visible through the API. C1 match end, C2 partial mapping, C3 store errors mid-chunk, H1
StreamOdds after a Redis outage, H2 sequence restart, H3 status changes on the odds topic, H4 provider clock
ahead, H5 rejected messages as liveness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache
from inplay.admin.v1 import admin_pb2
from inplay.domain.feed import wire
from inplay.domain.feed.mapping import FeedMappingService
from inplay.domain.feed.pipeline import FeedPipeline, RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketChange, MarketState, MarketStatus
from inplay.odds.v1 import odds_pb2
from inplay.ports import TOPIC_MARKET_CHANGES, TOPIC_ODDS, StatusWrite, WriteResult
from inplay.servicers import odds as odds_servicer
from inplay.type.v1 import types_pb2
from tests.integration.conftest_odds import BETTOR, FEEDER, OPERATOR, OddsEnv, OddsGrpc, consume, now_ms
from tests.support.feed import ingest_requests

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

SUSPENDED = types_pb2.MARKET_STATUS_SUSPENDED


async def get(g: OddsGrpc, market_id: str) -> odds_pb2.Market:
    return (await g.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=market_id), metadata=BETTOR)).market


async def priced(env: OddsEnv, t: int) -> None:
    out = await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("alpha", env.alpha_ou(t, "1.90", "1.90"), t + 10),
    )
    assert out.accepted == 2, out


# --- C1 ------------------------------------------------------------------------------------------------------


async def test_c1_price_after_match_end_keeps_market_ended(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    items = [
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("alpha", wire.alpha_end(env.seq("alpha"), t + 1000, env.alpha_event), t + 1010),
        ("alpha", env.alpha_mr(t + 1500, "2.10", "3.40", "3.80"), t + 1510),  # a late closing price
    ]
    resp = await odds_grpc.feed.IngestOdds(ingest_requests(items), metadata=FEEDER)
    assert resp.received == 3
    m = await get(odds_grpc, env.mr)
    assert (m.status, m.status_reason) == (SUSPENDED, "MATCH_END")


async def test_c1_disconnect_and_kill_switch_do_not_replace_match_end(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 20_000
    await priced(env, t)
    await env.ingest(("alpha", wire.alpha_end(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
    # the provider goes quiet after the end: the watchdog's PROVIDER_DISCONNECT must not replace MATCH_END
    await env.pipeline.tick(t + 110 + env.pipeline.rules.heartbeat_timeout_ms + 1)
    kill = admin_pb2.SetKillSwitchRequest(scope=admin_pb2.KILL_SWITCH_SCOPE_EVENT, target=env.event_id, engaged=True)
    await odds_grpc.admin.SetKillSwitch(kill, metadata=OPERATOR)
    kill.engaged = False
    await odds_grpc.admin.SetKillSwitch(kill, metadata=OPERATOR)
    t2 = t + 5_000
    await env.ingest(("alpha", env.alpha_mr(t2, "2.10", "3.40", "3.80"), t2 + 10))
    for mid in (env.mr, env.ou):
        m = await get(odds_grpc, mid)
        assert (m.status, m.status_reason) == (SUSPENDED, "MATCH_END"), mid
    assert await env.control.settle([env.mr]) == 1


# --- C2 ------------------------------------------------------------------------------------------------------


async def test_c2_bet_stop_with_an_unmapped_market_suspends_the_mapped_ones(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await priced(env, t)
    stop = wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event, [f"{env.alpha_event}-MR", "CORNERS"])
    out = await env.ingest(("alpha", stop, t + 110))
    assert (out.accepted, dict(out.rejected), out.anomalies["UNMAPPED"]) == (1, {}, 1)
    m = await get(odds_grpc, env.mr)
    assert (m.status, m.status_reason) == (SUSPENDED, "BET_STOP")


async def test_c2_one_unmapped_offer_keeps_the_other_prices(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    env.pipeline.router.active[env.event_id] = "bravo"
    offers = [
        wire.bravo_offer("1X2", {"1": 140, "X": 210, "2": 180}),
        wire.bravo_offer("OU", {"O": -110, "U": -110}, "3.5"),  # a line the book does not offer
    ]
    out = await env.ingest(
        ("bravo", wire.bravo_alive(env.seq("bravo"), t), t + 5),
        ("bravo", wire.bravo_price(env.seq("bravo"), t + 10, env.bravo_match, offers), t + 20),
    )
    assert (out.accepted, dict(out.rejected), out.anomalies["UNMAPPED"]) == (2, {}, 1), out
    assert await env.prices(env.mr) == ["2.40", "3.10", "2.80"]


# --- C3 ------------------------------------------------------------------------------------------------------


class FailingStatusOnce(RedisOddsCache):
    """The real Redis cache whose next ``write_status`` call fails like a Redis timeout."""

    fail = 0

    async def write_status(self, writes: Sequence[StatusWrite]) -> list[WriteResult]:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Timeout reading from redis")
        return await super().write_status(writes)


async def test_c3_store_error_mid_chunk_then_retry_applies_the_bet_stop(odds_env: OddsEnv) -> None:
    env = odds_env
    flaky = FailingStatusOnce(env.cache.client, env.cache.prefix)
    env.pipeline.cache = flaky
    env.control.cache = flaky
    t = now_ms() - 5_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    chunk = (
        ("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 110),
        ("alpha", env.alpha_ou(t + 200, "1.90", "1.90"), t + 210),
    )
    flaky.fail = 1
    with pytest.raises(ConnectionError):
        await env.ingest(*chunk)
    out = await env.ingest(*chunk)  # the connector re-sends the same messages
    assert "DUPLICATE" not in out.rejected and out.accepted == 2, out
    assert (await env.market(env.mr)).status_reason == "BET_STOP"
    assert (await env.market(env.ou)).status == MarketStatus.ACTIVE


async def test_c3_change_log_outage_rows_written_on_the_next_chunk(odds_env: OddsEnv) -> None:
    env = odds_env
    store = env.changes
    real_append = store.append
    down = [True]

    async def append(changes: Sequence[MarketChange]) -> None:
        if down[0]:
            raise ConnectionError("cassandra unavailable")
        await real_append(changes)

    store.append = append  # type: ignore[method-assign]
    try:
        t = now_ms() - 5_000
        with pytest.raises(ConnectionError):
            await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
        assert (await env.market(env.mr)).status == MarketStatus.ACTIVE
        down[0] = False
        await env.ingest(("alpha", wire.alpha_heartbeat(env.seq("alpha"), t + 50), t + 60))
    finally:
        store.append = real_append  # type: ignore[method-assign]
    rows, _ = await store.list(env.mr, 100, "")
    assert [(r.version, r.kind) for r in rows] == [(1, "STATUS"), (1, "PRICE"), (1, "PRICE"), (1, "PRICE")]


# --- H1 ------------------------------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy in front of the real Redis that can drop every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.AbstractServer | None = None
        self.listen_port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_w]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def outage(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.writers.clear()
        await self.server.wait_closed()

    async def restore(self) -> None:
        await self.start()  # same port


async def stream(g: grpc.aio.Channel, event_id: str, out: list[odds_pb2.StreamOddsResponse]) -> None:
    stub = odds_servicer.odds_pb2_grpc.OddsServiceStub(g)
    async for msg in stub.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[event_id]), metadata=BETTOR):
        out.append(msg)


async def wait_for(cond: Callable[[], bool], within: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def saw(msgs: list[odds_pb2.StreamOddsResponse], market_id: str, reason: str) -> bool:
    return any(m.market_id == market_id and m.status_reason == reason for r in msgs for m in r.markets)


@pytest.fixture
async def proxied_server(odds_env: OddsEnv, redis_url: str) -> AsyncIterator[tuple[grpc.aio.Channel, Proxy]]:
    url = redis_url.split("://", 1)[1].split("/", 1)[0]
    host, port = url.rsplit(":", 1)
    proxy = Proxy(host.split("@")[-1], int(port))
    await proxy.start()
    # redis-py reconnects (and resubscribes) on its own for a few seconds (10 retries, backoff capped at 1 s):
    # the hub only sees outages longer than that. A budget of one retry makes this 2 s outage such an outage.
    client: aioredis.Redis[bytes] = aioredis.Redis(
        host="127.0.0.1", port=proxy.listen_port, retry=Retry(NoBackoff(), 1)
    )
    cache = RedisOddsCache(client, odds_env.cache.prefix)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hub = odds_servicer.add_to_server(server, cache)
    hub._retry_s = 0.2  # the outage below lasts longer than several retries
    port_n = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port_n}")
    try:
        yield channel, proxy
    finally:
        await channel.close()
        await hub.close()
        await server.stop(0)
        await client.aclose()
        with contextlib.suppress(Exception):
            await proxy.outage()


async def test_h1_stream_recovers_after_a_redis_outage_longer_than_the_retry(
    odds_env: OddsEnv, proxied_server: tuple[grpc.aio.Channel, Proxy]
) -> None:
    env = odds_env
    channel, proxy = proxied_server
    t = now_ms() - 5_000
    await priced(env, t)
    first: list[odds_pb2.StreamOddsResponse] = []
    reader = asyncio.create_task(stream(channel, env.event_id, first))
    try:
        assert await wait_for(lambda: len(first) >= 1)
        await proxy.outage()
        await asyncio.sleep(2.0)  # Redis unreachable for 2 s (10 retry delays)
        await proxy.restore()
        await asyncio.sleep(1.0)
        await env.ingest(("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
        assert await wait_for(lambda: saw(first, env.mr, "BET_STOP")), first
        second: list[odds_pb2.StreamOddsResponse] = []
        reader2 = asyncio.create_task(stream(channel, env.event_id, second))
        try:
            assert await wait_for(lambda: len(second) >= 1)
            await env.ingest(("alpha", env.alpha_mr(t + 200, "2.05", "3.40", "3.80"), t + 210))
            assert await wait_for(lambda: any(r.kind == odds_pb2.UPDATE_KIND_DELTA for r in second[1:])), second
        finally:
            reader2.cancel()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


# --- H2 ------------------------------------------------------------------------------------------------------


async def test_h2_provider_sequence_restart_is_applied(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 10_000
    out = await env.ingest(
        *[("alpha", env.alpha_mr(t + i, "2.00", "3.40", "3.80", seq=i), t + i + 5) for i in range(1, 101)]
    )
    assert out.accepted == 100
    t2 = t + 2_000  # the provider reconnects with a new session: seq 1..10, fresh timestamps
    out = await env.ingest(
        *[("alpha", env.alpha_mr(t2 + i, "2.10", "3.40", "3.80", seq=i), t2 + i + 5) for i in range(1, 11)]
    )
    assert (out.accepted, dict(out.rejected)) == (10, {}), out
    m = await get(odds_grpc, env.mr)
    assert m.selections[0].odds.decimal == "2.10"


# --- H3 ------------------------------------------------------------------------------------------------------


async def test_h3_status_only_changes_reach_the_odds_topic(odds_grpc: OddsGrpc, kafka_bootstrap: str) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    await env.ingest(("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
    await odds_grpc.admin.SuspendMarket(admin_pb2.SuspendMarketRequest(market_id=env.mr), metadata=OPERATOR)
    await env.control.settle([env.mr])
    await env.bus.flush()
    got = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_ODDS, lambda k, v: k == env.mr, 4)
    assert [(v["version"], v["status"], v["status_reason"]) for _, v in got] == [
        (1, "ACTIVE", ""),
        (2, "SUSPENDED", "BET_STOP"),
        (3, "SUSPENDED", "OPERATOR"),
        (4, "SETTLED", "SETTLED"),
    ]


# --- H4 ------------------------------------------------------------------------------------------------------


async def test_h4_price_stamped_in_the_future_shows_its_real_age(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    received = now_ms() - 3_000
    out = await env.ingest(("alpha", env.alpha_mr(received + 4_000, "2.00", "3.40", "3.80"), received))
    assert out.accepted == 1 and out.anomalies["TIMESTAMP_AHEAD"] == 1
    m = await get(odds_grpc, env.mr)
    assert m.age_ms >= 2_900, m.age_ms  # received 3 s ago: not 0 because the provider's clock runs ahead


async def test_h4_failover_from_a_clock_ahead_primary_applies_the_secondary(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 10_000
    await env.ingest(
        ("alpha", env.alpha_mr(t + 3_000, "2.00", "3.40", "4.00"), t),  # alpha's clock is 3 s ahead
        ("bravo", wire.bravo_alive(env.seq("bravo"), t), t),
    )
    env.seq("alpha")  # a gap: alpha unhealthy, fail over to bravo
    out = await env.ingest(
        ("alpha", env.alpha_mr(t + 3_100, "2.00", "3.40", "4.00"), t + 100),
        ("bravo", env.bravo_prices(t + 150, [100, 240, 110]), t + 160),
    )
    assert out.rejected.get("STALE_VERSION", 0) == 0, out
    m = await get(odds_grpc, env.mr)
    assert [s.odds.decimal for s in m.selections] == ["2.00", "3.40", "2.10"] or m.status == SUSPENDED
    assert (await env.market(env.mr)).source == "bravo"


# --- H5 ------------------------------------------------------------------------------------------------------


async def test_h5_primary_whose_every_message_is_rejected_fails_over(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 20_000
    await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 5),
        ("bravo", wire.bravo_alive(env.seq("bravo"), t), t + 5),
    )
    for dt in range(100, 4_100, 100):
        now = t + dt
        await env.ingest(
            ("alpha", env.alpha_mr(now + 6_000, "2.00", "3.40", "3.80"), now),  # TIMESTAMP_FUTURE every time
            ("bravo", wire.bravo_alive(env.seq("bravo"), now), now),
        )
        await env.pipeline.tick(now)
    m = await get(odds_grpc, env.mr)
    assert (m.status, m.status_reason) == (SUSPENDED, "PROVIDER_DISCONNECT")
    assert env.pipeline.router.active_for(env.pipeline.mappings.table.events[env.event_id]) == "bravo"


# --- M3 / M4: change log within a chunk ------------------------------------------------------------------------


async def test_m3_failover_provider_rows_kept_beside_the_price_rows_of_the_same_version(
    odds_env: OddsEnv, kafka_bootstrap: str
) -> None:
    env = odds_env
    t = now_ms() - 10_000
    await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("bravo", wire.bravo_alive(env.seq("bravo"), t), t + 10),
    )
    # one chunk: a price (v2), then an alpha message lagging 1.4 s -> failover to bravo (PROVIDER rows at v2)
    await env.ingest(
        ("alpha", env.alpha_mr(t + 100, "2.02", "3.40", "3.80"), t + 110),
        ("bravo", wire.bravo_alive(env.seq("bravo"), t + 100), t + 110),
        ("alpha", env.alpha_mr(t + 120 - 1_400, "2.04", "3.40", "3.80"), t + 120),
    )
    rows, _ = await env.changes.list(env.mr, 100, "")
    assert [(r.version, r.kind, r.old_value, r.new_value) for r in rows if r.kind == "PROVIDER"] == [
        (2, "PROVIDER", "alpha", "bravo")
    ]
    assert [(r.version, r.kind) for r in rows if r.version == 2 and r.kind == "PRICE"] == [(2, "PRICE")]
    # the switch is no write of the market: its rows go to the market-changes topic, not into an odds record
    await env.bus.flush()
    got = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_MARKET_CHANGES, lambda k, v: k == env.mr, 1)
    assert [(c["kind"], c["old_value"], c["new_value"]) for c in got[0][1]["changes"]] == [
        ("PROVIDER", "alpha", "bravo")
    ]


async def test_m4_market_changes_on_kafka_in_version_order_within_a_chunk(
    odds_env: OddsEnv, kafka_bootstrap: str
) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("alpha", env.alpha_mr(t + 100, "2.02", "3.40", "3.80"), t + 110),
        ("alpha", wire.alpha_incident(env.seq("alpha"), t + 200, env.alpha_event, "goal"), t + 210),
    )
    await env.bus.flush()
    got = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_ODDS, lambda k, v: k == env.mr, 3, timeout_s=20)
    assert [v["version"] for _, v in got] == [1, 2, 3]
    assert [{c["version"] for c in v["changes"]} for _, v in got] == [{1}, {2}, {3}]  # the changes ride along


# --- M6: the standby's bet stops and incidents -----------------------------------------------------------------


async def test_m6_standby_incident_suspends_active_provider_prices_reopen(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await priced(env, t)
    out = await env.ingest(("bravo", wire.bravo_incident(env.seq("bravo"), t + 100, env.bravo_match, "GOAL"), t + 110))
    assert (out.accepted, dict(out.rejected)) == (1, {}), out
    for mid in (env.mr, env.ou):
        m = await get(odds_grpc, mid)
        assert (m.status, m.status_reason) == (SUSPENDED, "GOAL"), mid
    # the standby's prices still do not reopen anything; the active provider's fresh prices do
    out = await env.ingest(("bravo", env.bravo_prices(t + 300, [100, 240, 110]), t + 310))
    assert dict(out.rejected) == {"STANDBY": 1}
    await env.ingest(("alpha", env.alpha_mr(t + 400, "1.50", "4.00", "7.00"), t + 410))
    m = await get(odds_grpc, env.mr)
    assert (m.status, m.selections[0].odds.decimal) == (types_pb2.MARKET_STATUS_ACTIVE, "1.50")


async def test_m6_standby_bet_stop_suspends(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    stop = wire.bravo_stop(env.seq("bravo"), t + 100, env.bravo_match, [wire.bravo_offer("OU", {}, "2.5")])
    out = await env.ingest(("bravo", stop, t + 110))
    assert out.accepted == 1, out
    assert (await env.market(env.ou)).status_reason == "BET_STOP"
    assert (await env.market(env.mr)).status == MarketStatus.ACTIVE


# --- M5: a bet stop for a market not yet priced ----------------------------------------------------------------


async def test_m5_bet_stop_before_the_first_price_keeps_older_prices_out(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    stop = wire.alpha_bet_stop(env.seq("alpha"), t + 300, env.alpha_event, [f"{env.alpha_event}-OU"])
    await env.ingest(("alpha", stop, t + 310))  # OU never priced yet
    out = await env.ingest(("alpha", env.alpha_ou(t + 250, "1.90", "1.90"), t + 320))  # stamped before the stop
    assert dict(out.rejected) == {"STALE_VERSION": 1}, out
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get(odds_grpc, env.ou)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await env.ingest(("alpha", env.alpha_ou(t + 400, "1.90", "1.90"), t + 410))  # after the stop: opens
    assert (await get(odds_grpc, env.ou)).status == types_pb2.MARKET_STATUS_ACTIVE


# --- M2: a connector clock behind the server's ------------------------------------------------------------------


async def test_m2_connector_clock_behind_does_not_flap_provider_disconnect(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    statuses = []
    for _ in range(5):
        conn_now = now_ms() - 4_000  # the connector's clock runs 4 s behind the server's (so does its provider)
        items = [("alpha", env.alpha_mr(conn_now - 10, "2.00", "3.40", "3.80"), conn_now)]
        await odds_grpc.feed.IngestOdds(ingest_requests(items), metadata=FEEDER)
        await env.pipeline.tick()  # the watchdog, on the server clock
        m = await get(odds_grpc, env.mr)
        statuses.append((m.status, m.status_reason))
        await asyncio.sleep(0.1)
    assert set(statuses) == {(types_pb2.MARKET_STATUS_ACTIVE, "")}, statuses


# --- M1: failover flapping ---------------------------------------------------------------------------------------


async def test_m1_alternating_lag_spikes_fail_over_once_then_fail_back_after_the_delay(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 60_000
    await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("bravo", wire.bravo_alive(env.seq("bravo"), t), t + 10),
    )

    async def step(r: int, alpha_lag: int, bravo_lag: int) -> None:
        await env.ingest(
            ("alpha", wire.alpha_heartbeat(env.seq("alpha"), r - alpha_lag), r),
            ("bravo", wire.bravo_alive(env.seq("bravo"), r - bravo_lag), r),
        )
        await env.pipeline.tick(r)

    r = t + 100
    for k in range(10):  # one 1.5 s lag spike every 400 ms, alternating between the providers
        await step(r, 1_500 if k % 2 == 0 else 10, 10 if k % 2 == 0 else 1_500)
        r += 400
    rows, _ = await env.changes.list(env.mr, 200, "")
    switches = [(r_.old_value, r_.new_value, r_.reason) for r_ in rows if r_.kind == "PROVIDER"]
    assert switches == [("alpha", "bravo", "LAG")], switches
    for _ in range(10):  # both healthy again: fail-back once the primary has been healthy for 3 s
        await step(r, 10, 10)
        r += 400
    rows, _ = await env.changes.list(env.mr, 200, "")
    switches = [(r_.old_value, r_.new_value, r_.reason) for r_ in rows if r_.kind == "PROVIDER"]
    assert switches == [("alpha", "bravo", "LAG"), ("bravo", "alpha", "FAILBACK")], switches


# --- L3: a correction with the original timestamp ---------------------------------------------------------------


async def test_l3_correction_stamped_like_the_price_it_corrects_is_applied(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    out = await env.ingest(("alpha", env.alpha_mr(t, "2.10", "3.40", "3.80", correction=True), t + 20))
    assert (out.accepted, dict(out.rejected)) == (1, {}), out
    assert (await get(odds_grpc, env.mr)).selections[0].odds.decimal == "2.10"
    # a plain re-stamp at the same time is still not newer
    out = await env.ingest(("alpha", env.alpha_mr(t, "2.20", "3.40", "3.80"), t + 30))
    assert dict(out.rejected) == {"STALE_VERSION": 1}


# --- L2: errors after the first StreamOdds message ----------------------------------------------------------------


class FailingListOnce(RedisOddsCache):
    """The real Redis cache whose next ``list_event_markets`` (the resync snapshot) fails once armed."""

    armed = False

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        if self.armed:
            self.armed = False
            raise ConnectionError("Connection reset by peer")
        return await super().list_event_markets(event_id)


async def test_l2_stream_error_after_the_first_message_is_unavailable(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    cache = FailingListOnce(env.cache.client, env.cache.prefix)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    hub = odds_servicer.add_to_server(server, cache)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        call = odds_servicer.odds_pb2_grpc.OddsServiceStub(channel).StreamOdds(
            odds_pb2.StreamOddsRequest(event_ids=[env.event_id]), metadata=BETTOR
        )
        first = await call.read()
        assert first.kind == odds_pb2.UPDATE_KIND_SNAPSHOT
        cache.armed = True
        # a provider correction asks every client for a fresh SNAPSHOT, whose read fails
        await env.ingest(("alpha", env.alpha_mr(t + 100, "2.02", "3.40", "3.80", correction=True), t + 110))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                msg = await asyncio.wait_for(call.read(), 10)
                assert msg is not grpc.aio.EOF
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        await hub.close()
        await server.stop(0)


# --- H7: running processes pick up mapping changes ------------------------------------------------------------


async def test_h7_running_pipeline_reloads_the_mapping(
    odds_env: OddsEnv, monkeypatch: pytest.MonkeyPatch, unique_id: Callable[[str], str]
) -> None:
    env = odds_env
    monkeypatch.setenv("INPLAY_FEED_MAPPING_REFRESH_MS", "200")
    monkeypatch.setenv("INPLAY_FEED_WATCHDOG_INTERVAL_MS", "50")
    pipeline = FeedPipeline(
        env.cache, env.bus, env.mappings, env.control, FeedRules.from_env(), topic_prefix=env.topic_prefix
    )
    pipeline.start()
    try:
        # the mapping CLI, another process: a new event, pre-match
        other = FeedMappingService(RedisFeedMappings(env.cache.client, env.cache.prefix))
        new_event, alpha_ref = unique_id("ev"), f"A-{unique_id('x')}"
        await other.load(wire.two_provider_mapping(new_event, alpha_ref, 4_242, in_play=False))
        await asyncio.sleep(1.0)
        t = now_ms()
        prices = {f"{alpha_ref}-MR-H": "2.00", f"{alpha_ref}-MR-D": "3.40", f"{alpha_ref}-MR-A": "3.80"}
        out = await pipeline.ingest(
            [RawMessage("alpha", wire.alpha_odds(1, t - 2_000, alpha_ref, f"{alpha_ref}-MR", prices), t)]
        )
        assert (out.accepted, dict(out.rejected)) == (1, {}), out
        (st,) = await env.cache.get_markets([f"{new_event}:mr"])
        assert st is not None and st.status == MarketStatus.ACTIVE  # pre-match: 2 s of lag is fine
        # kick-off: the event turns in-play; the running pipeline applies the 500 ms lag rule
        await other.load(wire.two_provider_mapping(new_event, alpha_ref, 4_242, in_play=True))
        await asyncio.sleep(1.0)
        t = now_ms()
        out = await pipeline.ingest(
            [RawMessage("alpha", wire.alpha_odds(2, t - 2_000, alpha_ref, f"{alpha_ref}-MR", prices), t)]
        )
        (st,) = await env.cache.get_markets([f"{new_event}:mr"])
        assert st is not None and (st.status, st.status_reason, st.in_play) == (
            MarketStatus.SUSPENDED,
            "FEED_LAG",
            True,
        )
    finally:
        await pipeline.stop()


# --- L5: a sanity bound on every price, first prices included ------------------------------------------------


async def test_l5_absurd_first_price_is_never_offered(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    # a misplaced decimal point on the market's first price: no jump reference would catch it
    out = await env.ingest(("alpha", env.alpha_mr(t, "2000.00", "3.40", "3.80"), t + 5))
    assert (out.accepted, dict(out.rejected)) == (0, {"ODDS_INVALID": 1})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # at the bound (1000, the exchanges' maximum) the price is a real one
    assert (await env.ingest(("alpha", env.alpha_mr(t + 100, "1000.00", "3.40", "3.80"), t + 105))).accepted == 1
