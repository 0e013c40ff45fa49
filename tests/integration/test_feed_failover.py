"""Multi-provider routing against the real stack: only the active provider's prices are applied; failover
on sequence gaps, lag and missed heartbeats; fail-back once the primary is healthy again; every switch in
the change log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.domain.feed import wire
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketStatus
from inplay.ports import EventBus
from tests.integration.conftest_odds import OddsEnv, build_env, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

RULES = FeedRules(heartbeat_timeout_ms=1_000, failover_lag_ms=1_000, gap_window_ms=1_000, failback_after_ms=2_000)


@pytest.fixture
async def env(
    live_cache: RedisOddsCache,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    odds_topics: str,
    unique_id: Callable[[str], str],
) -> OddsEnv:
    return await build_env(live_cache, bus, change_log, odds_topics, unique_id, RULES)


async def both(env: OddsEnv, t: int, alpha_home: str, bravo_home: int, lag: int = 10) -> tuple[int, dict[str, int]]:
    """One price message from each provider at provider time ``t``; returns (accepted, rejected)."""
    out = await env.ingest(
        ("alpha", env.alpha_mr(t, alpha_home, "3.40", "3.80"), t + lag),
        ("bravo", env.bravo_prices(t, [bravo_home, 240, 280]), t + 10),
    )
    return out.accepted, dict(out.rejected)


async def source(env: OddsEnv) -> str:
    return (await env.market(env.mr)).source


async def test_only_active_provider_applied_failover_on_gap_and_failback(env: OddsEnv) -> None:
    t = now_ms() - 60_000
    assert await both(env, t, "2.00", 110) == (1, {"STANDBY": 1})
    assert await source(env) == "alpha"
    # alpha skips sequence numbers: bravo (healthy) takes over; alpha's message itself is now standby
    env._seq["alpha"] += 3
    assert await both(env, t + 100, "2.02", 115) == (1, {"STANDBY": 1})
    assert await source(env) == "bravo" and (await env.market(env.mr)).selections[0].odds.decimal_str() == "2.15"
    assert env.pipeline.router.active[env.event_id] == "bravo"
    # alpha healthy again, but fail-back waits until it has been healthy for failback_after_ms
    for i in range(2, 40):
        ts = t + i * 100
        accepted, _ = await both(env, ts, "2.04", 120)
        assert accepted == 1
        expected = "bravo" if ts - (t + 100) < RULES.gap_window_ms + RULES.failback_after_ms else "alpha"
        assert await source(env) == expected, i
    assert env.pipeline.router.active[env.event_id] == "alpha"
    changes, _ = await env.changes.list(env.mr, 100, "")
    switches = [(c.kind, c.old_value, c.new_value, c.reason, c.source) for c in changes if c.kind == "PROVIDER"]
    assert switches == [
        ("PROVIDER", "alpha", "bravo", "SEQUENCE_GAP", "feed-router"),
        ("PROVIDER", "bravo", "alpha", "FAILBACK", "feed-router"),
    ]


async def test_failover_when_primary_lags(env: OddsEnv) -> None:
    t = now_ms() - 60_000
    await both(env, t, "2.00", 110)
    w = t + 2_000  # wall clock: bravo is current, alpha's messages arrive 1.5 s after their timestamp
    await env.ingest(("bravo", wire.bravo_alive(env.seq("bravo"), w - 10), w))
    out = await env.ingest(("alpha", env.alpha_mr(w - 1_500, "2.50", "3.40", "3.80"), w))
    assert dict(out.rejected) == {"STANDBY": 1}  # failover decided on this message: it is not applied
    assert env.pipeline.router.active[env.event_id] == "bravo"
    out = await env.ingest(("bravo", env.bravo_prices(w - 5, [120, 240, 280]), w + 5))
    assert out.accepted == 1
    m = await env.market(env.mr)
    assert (m.status, m.source, m.selections[0].odds.decimal_str()) == (MarketStatus.ACTIVE, "bravo", "2.20")


async def test_failover_on_missed_heartbeats_suspends_until_new_provider_prices(env: OddsEnv) -> None:
    t = now_ms() - 60_000
    await both(env, t, "2.00", 110)
    # alpha goes silent; bravo keeps sending heartbeats
    for i in range(1, 13):
        await env.ingest(("bravo", wire.bravo_alive(env.seq("bravo"), t + i * 100), t + i * 100 + 5))
    await env.pipeline.tick(t + 1_250)
    assert env.pipeline.router.active[env.event_id] == "bravo"
    m = await env.market(env.mr)
    assert (m.status, m.status_reason, m.source) == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT", "alpha")
    out = await env.ingest(("bravo", env.bravo_prices(t + 1_300, [105, 240, 280]), t + 1_310))
    assert out.accepted == 1
    m = await env.market(env.mr)
    assert (m.status, m.source) == (MarketStatus.ACTIVE, "bravo")


async def test_no_failover_without_a_healthy_secondary(env: OddsEnv) -> None:
    t = now_ms() - 60_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10))
    env._seq["alpha"] += 5
    out = await env.ingest(("alpha", env.alpha_mr(t + 100, "2.01", "3.40", "3.80"), t + 110))
    assert out.accepted == 1 and out.anomalies["SEQUENCE_GAP"] == 1
    assert await source(env) == "alpha" and env.event_id not in env.pipeline.router.active


async def test_a_switch_in_one_chunk_holds_for_the_next_chunk_of_the_same_call(
    caplog: pytest.LogCaptureFixture,
    live_cache: RedisOddsCache,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    odds_topics: str,
    unique_id: Callable[[str], str],
) -> None:
    """The pipeline requests a chunk's shared view while the previous chunk is judged. A view requested
    before this pod failed back still names the secondary: applied, it would undo this pod's own fail-back
    for the next chunk, which then decides the fail-back again and fights itself in Redis (a switch "lost to
    another pod" with no other pod). After a switch the view is asked again."""
    env = await build_env(live_cache, bus, change_log, odds_topics, unique_id, replace(RULES, chunk_size=2))
    t = now_ms() - 60_000
    assert await both(env, t, "2.00", 110) == (1, {"STANDBY": 1})
    env._seq["alpha"] += 3  # a gap: bravo takes over
    assert await both(env, t + 100, "2.02", 115) == (1, {"STANDBY": 1})
    back = t + 100 + RULES.gap_window_ms + RULES.failback_after_ms
    ts = t + 200
    while ts < back - 100:
        assert (await both(env, ts, "2.04", 120))[0] == 1
        ts += 100
    assert env.pipeline.router.active[env.event_id] == "bravo"
    switch = env.pipeline.state.switch_provider

    async def slow_switch(*args: Any) -> tuple[bool, str]:
        await asyncio.sleep(0.1)  # the next chunk's view request reaches Redis first, whatever the pool does
        return await switch(*args)

    env.pipeline.state.switch_provider = slow_switch  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="inplay.feed")
    caplog.clear()
    out = await env.ingest(  # two chunks in one call: the fail-back is decided in the first
        ("alpha", env.alpha_mr(back, "2.06", "3.40", "3.80"), back + 10),
        ("bravo", env.bravo_prices(back, [125, 240, 280]), back + 10),
        ("alpha", env.alpha_mr(back + 100, "2.08", "3.40", "3.80"), back + 110),
        ("bravo", env.bravo_prices(back + 100, [130, 240, 280]), back + 110),
    )
    assert env.pipeline.router.active[env.event_id] == "alpha"
    assert (out.accepted, dict(out.rejected)) == (2, {"STANDBY": 2}), out
    market = await env.market(env.mr)
    assert (market.source, market.selections[0].odds.decimal_str()) == ("alpha", "2.08")
    assert [r.getMessage() for r in caplog.records if "switch" in r.getMessage()] == ["feed provider switch"]
