"""H6: two ingest pods (two pipelines in one process, each with its own Redis connection) on the same Redis.
Routing, provider health and sequence state are shared, so the pods agree on the active provider of an
event: only one provider's prices are ever applied to a market, whichever pod a connector lands on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache
from inplay.domain.feed.mapping import FeedMappingService
from inplay.domain.feed.pipeline import FeedPipeline, IngestSummary, RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.domain.markets import ChangeRecorder, MarketControl
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


@pytest.fixture
async def pod2(
    env: OddsEnv, redis_url: str, redis_prefix: str, bus: EventBus, change_log: CassandraMarketChangeLog
) -> AsyncIterator[FeedPipeline]:
    """A second ingest process: its own Redis connection, mapping service and pipeline state."""
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    mappings = FeedMappingService(RedisFeedMappings(cache.client, redis_prefix))
    await mappings.refresh()
    control = MarketControl(cache, ChangeRecorder(change_log, bus, env.topic_prefix))
    yield FeedPipeline(cache, bus, mappings, control, RULES, topic_prefix=env.topic_prefix)
    await cache.close()


async def on(pod: FeedPipeline, provider: str, payload: bytes, received: int) -> IngestSummary:
    return await pod.ingest([RawMessage(provider, payload, received)])


async def test_second_pod_never_applies_the_standby_provider(env: OddsEnv, pod2: FeedPipeline) -> None:
    t = now_ms() - 60_000
    pod1 = env.pipeline
    assert (await on(pod1, "alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10)).accepted == 1
    # bravo's connector lands on pod 2, which has never seen alpha itself: alpha is healthy (shared state)
    out = await on(pod2, "bravo", env.bravo_prices(t + 50, [150, 240, 280]), t + 60)
    assert (out.accepted, dict(out.rejected)) == (0, {"STANDBY": 1})
    m = await env.market(env.mr)
    assert (m.source, m.status, m.version) == ("alpha", MarketStatus.ACTIVE, 1)
    for i in range(1, 6):  # interleaved: every alpha price applied, every bravo price standby
        ts = t + i * 100
        assert (await on(pod1, "alpha", env.alpha_mr(ts, "2.02", "3.40", "3.80"), ts + 10)).accepted == 1
        assert dict((await on(pod2, "bravo", env.bravo_prices(ts, [155, 240, 280]), ts + 10)).rejected) == {
            "STANDBY": 1
        }
    m = await env.market(env.mr)
    assert (m.source, m.status, m.version) == ("alpha", MarketStatus.ACTIVE, 6)
    changes, _ = await env.changes.list(env.mr, 200, "")
    assert [c for c in changes if c.kind == "PROVIDER" or c.new_value.startswith("SUSPENDED")] == []


async def test_failover_decided_on_one_pod_holds_on_the_other(env: OddsEnv, pod2: FeedPipeline) -> None:
    t = now_ms() - 60_000
    pod1 = env.pipeline
    await on(pod1, "alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10)
    await on(pod2, "bravo", env.bravo_prices(t, [150, 240, 280]), t + 10)
    env._seq["alpha"] += 3  # alpha skips sequence numbers on pod 1: failover to bravo
    out = await on(pod1, "alpha", env.alpha_mr(t + 100, "2.10", "3.40", "3.80"), t + 110)
    assert dict(out.rejected) == {"STANDBY": 1}
    # pod 2 learns the switch from the shared route: bravo's prices are applied there
    assert (await on(pod2, "bravo", env.bravo_prices(t + 150, [160, 240, 280]), t + 160)).accepted == 1
    assert (await env.market(env.mr)).source == "bravo"
    # and alpha, which pod 2 has never seen, stays standby there too (a connector moving to pod 2)
    out = await on(pod2, "alpha", env.alpha_mr(t + 200, "2.20", "3.40", "3.80"), t + 210)
    assert dict(out.rejected) == {"STANDBY": 1}
    changes, _ = await env.changes.list(env.mr, 200, "")
    assert [(c.old_value, c.new_value, c.reason) for c in changes if c.kind == "PROVIDER"] == [
        ("alpha", "bravo", "SEQUENCE_GAP")
    ]


async def test_resend_on_another_pod_is_a_duplicate(env: OddsEnv, pod2: FeedPipeline) -> None:
    t = now_ms() - 60_000
    first = env.alpha_mr(t, "2.00", "3.40", "3.80")
    assert (await on(env.pipeline, "alpha", first, t + 10)).accepted == 1
    # the connector reconnects to pod 2 and re-sends its last message, then carries on: no false gap
    assert dict((await on(pod2, "alpha", first, t + 20)).rejected) == {"DUPLICATE": 1}
    out = await on(pod2, "alpha", env.alpha_mr(t + 100, "2.05", "3.40", "3.80"), t + 110)
    assert out.accepted == 1 and "SEQUENCE_GAP" not in out.anomalies


async def test_watchdog_on_both_pods_switches_once(env: OddsEnv, pod2: FeedPipeline) -> None:
    t = now_ms() - 60_000
    await on(env.pipeline, "alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10)
    await on(pod2, "bravo", env.bravo_prices(t, [100, 240, 280]), t + 10)
    await on(pod2, "bravo", env.bravo_prices(t + 900, [100, 240, 280]), t + 910)
    await on(env.pipeline, "bravo", env.bravo_prices(t + 950, [100, 240, 280]), t + 960)  # both pods hear bravo
    later = t + 1_500  # alpha silent past the heartbeat timeout; bravo still alive
    await pod2.tick(later)
    await env.pipeline.tick(later)
    m = await env.market(env.mr)
    assert (m.status, m.status_reason) == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT")
    changes, _ = await env.changes.list(env.mr, 200, "")
    assert [(c.old_value, c.new_value) for c in changes if c.kind == "PROVIDER"] == [("alpha", "bravo")]
    # bravo's next price on either pod reopens the market
    out = await on(env.pipeline, "bravo", env.bravo_prices(later, [100, 240, 280]), later + 10)
    m = await env.market(env.mr)
    assert (out.accepted, m.status, m.status_reason, m.source) == (1, MarketStatus.ACTIVE, "", "bravo")
