"""Feed ingestion against the real stack: both provider formats into Redis and Kafka, every validation
rule (counted by reason, dropped, nothing cached), out-of-order and duplicate messages, sequence gaps."""

from __future__ import annotations

import json

import pytest

from inplay.domain.feed import wire
from inplay.model import MarketStatus
from inplay.ports import TOPIC_FEED_RAW, TOPIC_ODDS
from tests.integration.conftest_odds import OddsEnv, consume, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration


async def test_alpha_prices_cached_exactly_and_published(odds_env: OddsEnv, kafka_bootstrap: str) -> None:
    env = odds_env
    t = now_ms()
    out = await env.ingest(
        ("alpha", env.alpha_mr(t - 20, "2.50", "3.25", "2.875"), t),
        ("alpha", env.alpha_ou(t - 20, "1.91", "1.95"), t),
    )
    assert (out.received, out.accepted, dict(out.rejected)) == (2, 2, {})
    mr = await env.market(env.mr)
    assert mr.status == MarketStatus.ACTIVE and mr.version == 1 and mr.source == "alpha"
    assert [(s.selection_id, s.name, s.odds.num, s.odds.den) for s in mr.selections] == [
        (f"{env.event_id}:mr:home", "Home", 5, 2),
        (f"{env.event_id}:mr:draw", "Draw", 13, 4),
        (f"{env.event_id}:mr:away", "Away", 23, 8),
    ]
    assert mr.updated_at_ms == t - 20 and mr.market_type == "MATCH_RESULT" and mr.sport == "football"
    # the raw hash holds [num, den] ints, never floats
    raw = await env.cache.client.hget(f"{env.cache.prefix}mkt:{env.mr}", "b")
    assert json.loads(raw)["s"][0][2:] == [5, 2]
    await env.bus.flush()
    odds = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_ODDS, lambda k, v: k == env.mr, 1)
    assert odds[0][1]["version"] == 1 and odds[0][1]["selections"][0] == [f"{env.event_id}:mr:home", 5, 2]
    # the reception log: one record per provider per chunk, its messages in arrival order
    raws = await consume(
        kafka_bootstrap,
        env.topic_prefix + TOPIC_FEED_RAW,
        lambda k, v: k == "alpha" and any(env.alpha_event in m.get("payload", "") for m in v["messages"]),
        1,
    )
    assert raws[0][1]["source"] == "alpha"
    assert [m["sequence"] for m in raws[0][1]["messages"]] == [1, 2]
    assert all(m["received_at_ms"] == t for m in raws[0][1]["messages"])


async def test_bravo_american_and_fractional_prices(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms()
    env.pipeline.router.active[env.event_id] = "bravo"  # bravo is the active provider for this test
    out = await env.ingest(("bravo", env.bravo_prices(t - 10, [150, "11/5", -110], [-120, 100]), t))
    assert (out.accepted, dict(out.rejected)) == (1, {})
    mr, ou = await env.market(env.mr), await env.market(env.ou)
    assert [(s.odds.num, s.odds.den) for s in mr.selections] == [(5, 2), (16, 5), (21, 11)]
    assert [(s.odds.num, s.odds.den) for s in ou.selections] == [(11, 6), (2, 1)]
    assert mr.source == ou.source == "bravo"


async def test_every_validation_rule_counted_dropped_nothing_cached(odds_env: OddsEnv, kafka_bootstrap: str) -> None:
    env = odds_env
    t = now_ms()
    e = env.alpha_event
    bad = [
        ("alpha", b"{not json", t),  # SCHEMA
        ("alpha", json.dumps({"type": "odds", "seq": 900, "ts": 5}).encode(), t),  # SCHEMA (types)
        ("carrier-pigeon", b"{}", t),  # UNKNOWN_PROVIDER
        ("alpha", json.dumps({"type": "heartbeat", "seq": 901}).encode(), t),  # TIMESTAMP_MISSING
        ("alpha", env.alpha_mr(t + 60_000, "2.0", "3.0", "4.0", seq=902), t),  # TIMESTAMP_FUTURE
        ("alpha", env.alpha_mr(t, "1.00", "3.0", "4.0", seq=903), t),  # ODDS_INVALID (<= 1.0)
        ("alpha", env.alpha_mr(t, "0.80", "3.0", "4.0", seq=904), t),  # ODDS_INVALID
        ("alpha", wire.alpha_odds(905, t, "A-UNKNOWN", f"{e}-MR", {f"{e}-MR-H": "2.0"}), t),  # UNMAPPED event
        ("alpha", wire.alpha_odds(906, t, e, "A-NOPE", {"x": "2.0"}), t),  # UNMAPPED market
        (
            "alpha",
            wire.alpha_odds(907, t, e, f"{e}-MR", {f"{e}-MR-H": "2.0", "zzz": "3.0"}),
            t,
        ),  # UNMAPPED sel
    ]
    out = await env.ingest(*bad)
    assert out.received == len(bad) and out.accepted == 0
    assert dict(out.rejected) == {
        "SCHEMA": 2,
        "UNKNOWN_PROVIDER": 1,
        "TIMESTAMP_MISSING": 1,
        "TIMESTAMP_FUTURE": 1,
        "ODDS_INVALID": 2,
        "UNMAPPED": 3,
    }
    assert await env.cache.get_markets([env.mr, env.ou]) == [None, None]
    assert await env.cache.list_event_markets(env.event_id) == []
    # rejected messages are still recorded raw (append-only, as received)
    await env.bus.flush()
    raws = await consume(
        kafka_bootstrap,
        env.topic_prefix + TOPIC_FEED_RAW,
        lambda k, v: any("not json" in m.get("payload", "") for m in v["messages"]),
        1,
    )
    assert raws and raws[0][1]["messages"][0]["sequence"] == -1
    pigeon = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_FEED_RAW, lambda k, v: k == "carrier-pigeon", 1)
    assert pigeon and pigeon[0][1]["messages"][0]["payload"] == "{}"

    # a settled market rejects prices; an older provider version is dropped; standby provider not applied
    await env.ingest(("alpha", env.alpha_mr(t - 100, "2.0", "3.0", "4.0", seq=908), t))
    before = await env.market(env.mr)
    out = await env.ingest(
        ("alpha", env.alpha_mr(t - 200, "2.2", "3.0", "4.0", seq=909), t),  # older than cached
        ("bravo", env.bravo_prices(t - 50, [120, 200, 300]), t),  # STANDBY
    )
    assert dict(out.rejected) == {"STALE_VERSION": 1, "STANDBY": 1}
    assert await env.market(env.mr) == before
    assert await env.control.settle([env.mr]) == 1
    out = await env.ingest(("alpha", env.alpha_mr(t - 10, "2.4", "3.0", "4.0", seq=910), t))
    assert dict(out.rejected) == {"MARKET_SETTLED": 1}
    after = await env.market(env.mr)
    assert after.status == MarketStatus.SETTLED and after.selections == before.selections


async def test_duplicates_and_out_of_order(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms()
    m1 = env.alpha_mr(t - 300, "2.00", "3.00", "4.00", seq=1)
    m2 = env.alpha_mr(t - 200, "2.10", "3.00", "4.00", seq=2)
    m3 = env.alpha_mr(t - 100, "2.20", "3.00", "4.00", seq=3)
    # m3 arrives before m2 (out of order): m2's prices are older than the cached ones -> dropped
    out = await env.ingest(("alpha", m1, t), ("alpha", m3, t), ("alpha", m2, t), ("alpha", m3, t), ("alpha", m1, t))
    assert out.accepted == 2
    assert dict(out.rejected) == {"STALE_VERSION": 1, "DUPLICATE": 2}
    state = await env.market(env.mr)
    assert state.version == 2 and state.selections[0].odds.decimal_str() == "2.20"
    # the same message in a later call is still a duplicate
    out = await env.ingest(("alpha", m3, t + 5))
    assert dict(out.rejected) == {"DUPLICATE": 1}


async def test_sequence_gap_is_counted_and_message_applied(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms()
    out = await env.ingest(
        ("alpha", env.alpha_mr(t - 30, "2.00", "3.00", "4.00", seq=10), t),
        ("alpha", env.alpha_mr(t - 20, "2.05", "3.00", "4.00", seq=14), t),  # 11..13 missing
    )
    assert out.accepted == 2 and out.anomalies["SEQUENCE_GAP"] == 1
    assert env.pipeline.router.provider("alpha").gaps == 1
    assert (await env.prices(env.mr))[0] == "2.05"
