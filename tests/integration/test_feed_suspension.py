"""Suspension triggers and resume against the real stack: bet stop, feed lag, price jump, provider
disconnect, incidents (goal, red card, VAR), match end, kill switch (event and sport), settlement; every
change in the change log (Cassandra) and on Kafka."""

from __future__ import annotations

import pytest

from inplay.domain.feed import wire
from inplay.model import MarketStatus
from inplay.ports import TOPIC_ODDS
from tests.integration.conftest_odds import OddsEnv, consume, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration


async def status(env: OddsEnv, market_id: str) -> tuple[MarketStatus, str]:
    m = await env.market(market_id)
    return m.status, m.status_reason


async def priced(env: OddsEnv, t: int) -> None:
    out = await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 10),
        ("alpha", env.alpha_ou(t, "1.90", "1.90"), t + 10),
    )
    assert out.accepted == 2, out


async def test_bet_stop_suspends_until_fresh_prices(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    await env.ingest(("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "BET_STOP")
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, "BET_STOP")
    # prices stamped before the bet stop (late) do not reopen the market
    out = await env.ingest(("alpha", env.alpha_mr(t + 90, "2.05", "3.40", "3.80"), t + 120))
    assert dict(out.rejected) == {"STALE_VERSION": 1}
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "BET_STOP")
    # fresh prices after the stop: active again (a bet stop of one market only leaves the other alone)
    await env.ingest(("alpha", env.alpha_mr(t + 200, "2.60", "3.10", "3.00"), t + 210))
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, "BET_STOP")
    await env.ingest(
        (
            "alpha",
            wire.alpha_bet_stop(env.seq("alpha"), t + 300, env.alpha_event, [f"{env.alpha_event}-MR"]),
            t + 310,
        )
    )
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "BET_STOP")


async def test_feed_lag_suspends_and_fresh_feed_resumes(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    out = await env.ingest(("alpha", env.alpha_mr(t + 100, "2.02", "3.40", "3.80"), t + 100 + 800))  # 800 ms lag
    assert out.accepted == 1
    m = await env.market(env.mr)
    assert (m.status, m.status_reason) == (MarketStatus.SUSPENDED, "FEED_LAG")
    assert m.selections[0].odds.decimal_str() == "2.02"  # stored, not offered
    await env.ingest(("alpha", env.alpha_mr(t + 1000, "2.03", "3.40", "3.80"), t + 1100))  # 100 ms lag
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")


async def test_price_jump_beyond_band_suspends_until_confirmed(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 10_000
    await priced(env, t)
    await env.ingest(("alpha", env.alpha_mr(t + 500, "2.10", "3.40", "3.80"), t + 510))  # +5 %: fine
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")
    await env.ingest(("alpha", env.alpha_mr(t + 1500, "2.45", "3.40", "3.80"), t + 1510))  # +22.5 % vs 2.00
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "PRICE_JUMP")
    await env.ingest(("alpha", env.alpha_mr(t + 1800, "2.47", "3.40", "3.80"), t + 1810))  # confirms new level
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")
    # the same move spread over more than the window is not a jump
    await env.ingest(("alpha", env.alpha_mr(t + 5000, "2.80", "3.40", "3.80"), t + 5010))
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")


@pytest.mark.parametrize(("incident", "reason"), [("goal", "GOAL"), ("red_card", "RED_CARD"), ("var", "VAR")])
async def test_incidents_suspend_every_market_of_the_event(odds_env: OddsEnv, incident: str, reason: str) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    await env.ingest(("alpha", wire.alpha_incident(env.seq("alpha"), t + 100, env.alpha_event, incident), t + 110))
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, reason)
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, reason)
    # after a goal prices move a lot: the first fresh prices reopen the market (no PRICE_JUMP)
    await env.ingest(("alpha", env.alpha_mr(t + 2000, "1.30", "5.00", "9.00"), t + 2010))
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, reason)


async def test_match_end_suspends(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    await env.ingest(("alpha", wire.alpha_end(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "MATCH_END")


async def test_provider_disconnect_suspends_via_watchdog(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 20_000
    await priced(env, t)
    timeout = env.pipeline.rules.heartbeat_timeout_ms
    await env.pipeline.tick(t + 10 + timeout - 1)
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")
    await env.pipeline.tick(t + 10 + timeout + 1)
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT")
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT")
    await env.pipeline.tick(t + 10 + timeout + 100)  # once per episode: no new version
    v = (await env.market(env.mr)).version
    # the provider is back with fresh prices
    t2 = t + 10 + timeout + 500
    await env.ingest(("alpha", env.alpha_mr(t2, "2.00", "3.40", "3.80"), t2 + 5))
    m = await env.market(env.mr)
    assert (m.status, m.version) == (MarketStatus.ACTIVE, v + 1)


async def test_kill_switch_event_holds_markets_suspended(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    n = await env.control.set_kill_switch("event", env.event_id, True, "operator:test", "trader alarm")
    assert n == 2
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "KILL_SWITCH")
    # prices still arrive and are stored, but the market stays suspended
    await env.ingest(("alpha", env.alpha_mr(t + 100, "2.01", "3.40", "3.80"), t + 110))
    m = await env.market(env.mr)
    assert (m.status, m.status_reason, m.selections[0].odds.decimal_str()) == (
        MarketStatus.SUSPENDED,
        "KILL_SWITCH",
        "2.01",
    )
    (res,) = await env.control.resume([env.mr], "operator:test")
    assert res.outcome == "KILL_SWITCH"
    await env.control.set_kill_switch("event", env.event_id, False, "operator:test", "all clear")
    assert await status(env, env.mr) == (MarketStatus.SUSPENDED, "KILL_SWITCH")  # until fresh prices
    await env.ingest(("alpha", env.alpha_mr(t + 200, "2.02", "3.40", "3.80"), t + 210))
    assert await status(env, env.mr) == (MarketStatus.ACTIVE, "")


async def test_kill_switch_sport(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    assert await env.control.set_kill_switch("sport", "football", True, "operator:test", "") == 2
    await env.ingest(("alpha", env.alpha_ou(t + 100, "1.95", "1.85"), t + 110))
    assert await status(env, env.ou) == (MarketStatus.SUSPENDED, "KILL_SWITCH")
    await env.control.set_kill_switch("sport", "football", False, "operator:test", "")
    await env.ingest(("alpha", env.alpha_ou(t + 200, "1.95", "1.85"), t + 210))
    assert await status(env, env.ou) == (MarketStatus.ACTIVE, "")


async def test_every_change_logged_with_source_and_reason(odds_env: OddsEnv, kafka_bootstrap: str) -> None:
    env = odds_env
    t = now_ms() - 5_000
    await priced(env, t)
    await env.ingest(("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 110))
    await env.ingest(("alpha", env.alpha_mr(t + 200, "2.10", "3.40", "3.80"), t + 210))
    await env.control.settle([env.mr], source="settlement", note="result 1-0")
    changes, token = await env.changes.list(env.mr, 100, "")
    assert token == ""
    summary = [(c.version, c.kind, c.selection_id.rsplit(":", 1)[-1], c.new_value, c.source, c.reason) for c in changes]
    assert summary == [
        (1, "STATUS", "", "ACTIVE", "alpha", "FEED"),
        (1, "PRICE", "home", "2.00 (2/1)", "alpha", "FEED"),
        (1, "PRICE", "draw", "3.40 (17/5)", "alpha", "FEED"),
        (1, "PRICE", "away", "3.80 (19/5)", "alpha", "FEED"),
        (2, "STATUS", "", "SUSPENDED:BET_STOP", "alpha", "BET_STOP"),
        (3, "STATUS", "", "ACTIVE", "alpha", "FEED"),
        (3, "PRICE", "home", "2.10 (21/10)", "alpha", "FEED"),
        (4, "STATUS", "", "SETTLED", "settlement", "result 1-0"),
    ]
    assert changes[5].old_value == "SUSPENDED:BET_STOP" and changes[6].old_value == "2.00 (2/1)"
    # paging
    page1, tok = await env.changes.list(env.mr, 3, "")
    page2, tok2 = await env.changes.list(env.mr, 3, tok)
    page3, tok3 = await env.changes.list(env.mr, 3, tok2)
    assert page1 + page2 + page3 == changes and tok3 == ""
    await env.bus.flush()
    # one record per update: each odds record carries the change entries of its write
    published = await consume(kafka_bootstrap, env.topic_prefix + TOPIC_ODDS, lambda k, v: k == env.mr, 4)
    assert [(v["version"], len(v["changes"])) for _, v in published] == [(1, 4), (2, 1), (3, 2), (4, 1)]
    flat = [(c["version"], c["kind"], c["new_value"]) for _, v in published for c in v["changes"]]
    assert flat == [(c.version, c.kind, c.new_value) for c in changes]
