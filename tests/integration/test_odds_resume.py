"""StreamOdds resume (StreamOddsRequest.resume with known_versions, the client's position like a Betfair clk)
and L4 (a per-market version reset) against the real Redis over real gRPC."""

from __future__ import annotations

import asyncio

import pytest

from inplay.domain.feed import wire
from inplay.odds.v1 import odds_pb2
from tests.integration.conftest_odds import BETTOR, OddsGrpc, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

SNAPSHOT, DELTA, RESUMED = odds_pb2.UPDATE_KIND_SNAPSHOT, odds_pb2.UPDATE_KIND_DELTA, odds_pb2.UPDATE_KIND_RESUMED


async def first(grpc_env: OddsGrpc, **kw: object) -> odds_pb2.StreamOddsResponse:
    call = grpc_env.odds.StreamOdds(
        odds_pb2.StreamOddsRequest(event_ids=[grpc_env.env.event_id], **kw), metadata=BETTOR
    )  # type: ignore[arg-type]
    msg = await asyncio.wait_for(call.read(), 10)
    call.cancel()
    assert isinstance(msg, odds_pb2.StreamOddsResponse)
    return msg


async def test_resume_sends_only_what_changed_since(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await env.ingest(
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 5), ("alpha", env.alpha_ou(t, "1.90", "1.90"), t + 5)
    )
    snap = await first(odds_grpc)
    assert snap.kind == SNAPSHOT and len(snap.markets) == 2
    held = {m.market_id: m.version for m in snap.markets}
    # while the client is away only the match result changes (twice)
    await env.ingest(("alpha", env.alpha_mr(t + 100, "2.05", "3.40", "3.80"), t + 105))
    await env.ingest(("alpha", env.alpha_mr(t + 200, "2.10", "3.40", "3.80"), t + 205))
    msg = await first(odds_grpc, known_versions=held, resume=True)
    assert msg.kind == RESUMED and [(m.market_id, m.version) for m in msg.markets] == [(env.mr, held[env.mr] + 2)]
    assert msg.markets[0].selections[0].odds.decimal == "2.10"
    # up to date: RESUMED with nothing
    held[env.mr] += 2
    msg = await first(odds_grpc, known_versions=held, resume=True)
    assert msg.kind == RESUMED and list(msg.markets) == []
    # without resume, the old contract holds: a stale version is a SNAPSHOT
    stale = {**held, env.mr: held[env.mr] - 1}
    assert (await first(odds_grpc, known_versions=stale)).kind == SNAPSHOT
    # a position that is no longer known (a version ahead of the cache, or a market gone): SNAPSHOT
    ahead = {**held, env.ou: held[env.ou] + 5}
    msg = await first(odds_grpc, known_versions=ahead, resume=True)
    assert msg.kind == SNAPSHOT and len(msg.markets) == 2
    assert (await first(odds_grpc, known_versions={**held, "gone": 3}, resume=True)).kind == SNAPSHOT


async def test_l4_version_reset_resyncs_live_stream_and_reads(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    for i in range(3):
        await env.ingest(("alpha", env.alpha_mr(t + i * 10, "2.00", "3.40", "3.80"), t + i * 10 + 5))
    call = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id]), metadata=BETTOR)
    snap = await asyncio.wait_for(call.read(), 10)
    assert snap.kind == SNAPSHOT and snap.markets[0].version == 3
    got = await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
    assert got.market.version == 3
    # the market's key is lost (eviction, a failover to an empty replica): versions restart at 1
    await env.cache.client.delete(f"{env.cache.prefix}mkt:{env.mr}")
    await env.ingest(("alpha", env.alpha_mr(t + 500, "2.50", "3.40", "3.80"), t + 505))
    msg = await asyncio.wait_for(call.read(), 10)
    assert msg.kind == SNAPSHOT and [(m.version, m.selections[0].odds.decimal) for m in msg.markets] == [(1, "2.50")]
    await env.ingest(("alpha", env.alpha_mr(t + 600, "2.55", "3.40", "3.80"), t + 605))
    msg = await asyncio.wait_for(call.read(), 10)
    assert msg.kind == DELTA and [m.version for m in msg.markets] == [2]
    call.cancel()
    got = await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
    assert (got.market.version, got.market.selections[0].odds.decimal) == (2, "2.55")


async def test_l1_a_slow_reader_still_sees_the_suspension(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await env.ingest(("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 5))
    call = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(market_ids=[env.mr]), metadata=BETTOR)
    assert (await asyncio.wait_for(call.read(), 10)).kind == SNAPSHOT
    # a bet stop and the reopening price in one chunk: both published before the stream's writer runs
    await env.ingest(
        ("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 100, env.alpha_event), t + 105),
        ("alpha", env.alpha_mr(t + 110, "2.40", "3.40", "3.80"), t + 115),
    )
    final = (await env.market(env.mr)).version
    seen: list[tuple[int, str]] = []
    while not seen or seen[-1][0] < final:
        msg = await asyncio.wait_for(call.read(), 10)
        seen += [(m.version, m.status_reason) for m in msg.markets]
    call.cancel()
    assert (final - 1, "BET_STOP") in seen and seen[-1] == (final, "")
