"""OddsService, FeedService and AdminService over real gRPC against the real stack: GetMarket/ListMarkets
(paging, version, age), StreamOdds (snapshot, deltas, reconnect with known versions, correction, slow
client coalescing vs fast client), IngestOdds summaries, operator controls and the change log."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import timestamp_pb2

from inplay.admin.v1 import admin_pb2
from inplay.core import Odds
from inplay.domain.feed import wire
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.odds.v1 import odds_pb2
from inplay.ports import WalletStore
from inplay.type.v1 import types_pb2
from tests.integration.conftest_odds import BETTOR, FEEDER, OPERATOR, OddsEnv, OddsGrpc, now_ms
from tests.support.feed import ingest_requests

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

SNAPSHOT = odds_pb2.UPDATE_KIND_SNAPSHOT
DELTA = odds_pb2.UPDATE_KIND_DELTA


async def price(env: OddsEnv, t: int, home: str = "2.00") -> None:
    out = await env.ingest(
        ("alpha", env.alpha_mr(t, home, "3.40", "3.80"), t + 5), ("alpha", env.alpha_ou(t, "1.90", "1.90"), t + 5)
    )
    assert out.accepted == 2, out


def code_of(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()


async def test_get_market_with_version_and_age(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 1_000
    await price(env, t)
    resp = await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=env.mr), metadata=BETTOR)
    m = resp.market
    assert (m.market_id, m.event_id, m.market_type, m.sport, m.in_play) == (
        env.mr,
        env.event_id,
        "MATCH_RESULT",
        "football",
        True,
    )
    assert m.status == types_pb2.MARKET_STATUS_ACTIVE and m.version == 1
    assert m.updated_at.ToMilliseconds() == t and 1_000 <= m.age_ms < 10_000
    home = m.selections[0]
    assert (home.odds.numerator, home.odds.denominator, home.odds.decimal, home.odds.american) == (2, 1, "2.00", 100)
    assert home.odds.fractional == "1/1"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id="nope"))
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.odds.GetMarket(odds_pb2.GetMarketRequest(market_id=""))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_markets_paged(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms()
    markets = [
        MarketState(
            f"{env.event_id}:m{i:02d}",
            env.event_id,
            "football",
            "CORRECT_SCORE",
            f"Market {i}",
            False,
            MarketStatus.ACTIVE,
            "",
            (SelectionPrice("s", "S", Odds.from_decimal("3.00")),),
            1,
            t,
        )
        for i in range(7)
    ]
    await env.cache.put_markets(markets)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = await odds_grpc.odds.ListMarkets(
            odds_pb2.ListMarketsRequest(event_id=env.event_id, page_size=3, page_token=token)
        )
        pages += 1
        seen += [m.market_id for m in resp.markets]
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3 and seen == [m.market_id for m in markets]
    all_default = await odds_grpc.odds.ListMarkets(odds_pb2.ListMarketsRequest(event_id=env.event_id))
    assert len(all_default.markets) == 7 and all_default.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.odds.ListMarkets(odds_pb2.ListMarketsRequest(event_id=env.event_id, page_token="garbage!"))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


async def test_stream_snapshot_then_deltas_reconnect_and_correction(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 5_000
    await price(env, t)
    call = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id]))
    first = await call.read()
    assert first.kind == SNAPSHOT and [m.market_id for m in first.markets] == sorted([env.mr, env.ou])
    await env.ingest(("alpha", env.alpha_mr(t + 100, "2.05", "3.40", "3.80"), t + 105))
    delta = await asyncio.wait_for(call.read(), 5)
    assert delta.kind == DELTA and [(m.market_id, m.version) for m in delta.markets] == [(env.mr, 2)]
    assert delta.markets[0].selections[0].odds.decimal == "2.05"
    # a status change is a delta too
    await env.ingest(("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 200, env.alpha_event), t + 205))
    got: dict[str, int] = {}
    while len(got) < 2:
        msg = await asyncio.wait_for(call.read(), 5)
        got.update({m.market_id: m.status for m in msg.markets})
    assert set(got.values()) == {types_pb2.MARKET_STATUS_SUSPENDED}
    # a provider correction: the subscribers get a full SNAPSHOT
    await env.ingest(("alpha", env.alpha_mr(t + 300, "2.10", "3.40", "3.80", correction=True), t + 305))
    msg = await asyncio.wait_for(call.read(), 5)
    assert msg.kind == SNAPSHOT and len(msg.markets) == 2
    call.cancel()

    versions = {m.market_id: m.version for m in (await env.cache.list_event_markets(env.event_id))}
    # reconnect, up to date: an empty DELTA, then live deltas
    again = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id], known_versions=versions))
    msg = await asyncio.wait_for(again.read(), 5)
    assert msg.kind == DELTA and len(msg.markets) == 0
    again.cancel()
    # reconnect with a stale version: SNAPSHOT
    stale = dict(versions)
    stale[env.mr] -= 1
    third = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id], known_versions=stale))
    msg = await asyncio.wait_for(third.read(), 5)
    assert msg.kind == SNAPSHOT and {m.market_id: m.version for m in msg.markets} == versions
    third.cancel()
    # a single-market subscription only gets that market
    single = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(market_ids=[env.ou]))
    msg = await asyncio.wait_for(single.read(), 5)
    assert msg.kind == SNAPSHOT and [m.market_id for m in msg.markets] == [env.ou]
    await env.ingest(
        ("alpha", env.alpha_mr(t + 400, "2.12", "3.40", "3.80"), t + 405),
        ("alpha", env.alpha_ou(t + 400, "1.80", "2.00"), t + 405),
    )
    msg = await asyncio.wait_for(single.read(), 5)
    assert [m.market_id for m in msg.markets] == [env.ou]
    single.cancel()
    # one Redis subscription per event for the whole process
    assert odds_grpc.hub.events in ([], [env.event_id])


async def test_slow_client_gets_coalesced_latest_fast_client_gets_every_update(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 60_000
    await price(env, t)
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4096)]
    slow_channel = grpc.aio.insecure_channel(odds_grpc.target, options=options)
    fast = odds_grpc.odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id]))
    from inplay.odds.v1 import odds_pb2_grpc

    slow = odds_pb2_grpc.OddsServiceStub(slow_channel).StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[env.event_id]))
    assert (await fast.read()).kind == SNAPSHOT
    assert (await slow.read()).kind == SNAPSHOT
    start_version = (await env.market(env.mr)).version
    fast_versions: list[int] = []
    fast_coalesced = 0
    latest = asyncio.Event()
    progress = asyncio.Event()
    n_updates = 400
    final_version = start_version + n_updates

    async def read_fast() -> None:
        nonlocal fast_coalesced
        while (msg := await fast.read()) is not grpc.aio.EOF:
            assert isinstance(msg, odds_pb2.StreamOddsResponse)
            fast_coalesced += msg.coalesced_updates
            for m in msg.markets:
                if m.market_id == env.mr:
                    fast_versions.append(m.version)
                    progress.set()
                    if m.version == final_version:
                        latest.set()
                        return

    slow_msgs: list[odds_pb2.StreamOddsResponse] = []

    async def read_slow() -> None:
        while (msg := await slow.read()) is not grpc.aio.EOF:
            assert isinstance(msg, odds_pb2.StreamOddsResponse)
            slow_msgs.append(msg)
            if any(m.market_id == env.mr and m.version == final_version for m in msg.markets):
                return
            await asyncio.sleep(0.25)

    fast_task = asyncio.create_task(read_fast())
    slow_task = asyncio.create_task(read_slow())
    for i in range(1, n_updates + 1):
        home = "2.00" if i % 2 else "2.02"
        ts = t + 10 * i
        await env.ingest(("alpha", env.alpha_mr(ts, home, "3.40", f"{3.80 + i / 1000:.3f}"), ts + 5))
        # pace the feed so that a reader that keeps up sees every version
        while True:
            progress.clear()
            if fast_versions and fast_versions[-1] >= start_version + i:
                break
            await asyncio.wait_for(progress.wait(), 5)
    await asyncio.wait_for(latest.wait(), 10)
    await asyncio.wait_for(slow_task, 60)
    await fast_task
    slow.cancel()
    await slow_channel.close()
    fast.cancel()
    assert fast_versions == list(range(start_version + 1, final_version + 1)) and fast_coalesced == 0
    slow_versions = [m.version for msg in slow_msgs for m in msg.markets if m.market_id == env.mr]
    assert slow_versions == sorted(set(slow_versions)) and slow_versions[-1] == final_version
    assert len(slow_msgs) < n_updates / 2
    assert sum(msg.coalesced_updates for msg in slow_msgs) > n_updates / 2
    last = slow_msgs[-1].markets[-1]
    assert last.selections[2].odds.decimal == f"{3.80 + n_updates / 1000:.2f}"


async def test_stream_rejects_badingest_requests(odds_grpc: OddsGrpc) -> None:
    for req in (odds_pb2.StreamOddsRequest(), odds_pb2.StreamOddsRequest(market_ids=["unknown-market"])):
        call = odds_grpc.odds.StreamOdds(req)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_ingest_odds_over_grpc_counts_by_reason(odds_grpc: OddsGrpc) -> None:
    env = odds_grpc.env
    t = now_ms() - 1_000
    items = [
        ("alpha", env.alpha_mr(t, "2.00", "3.40", "3.80"), t + 5),
        ("bravo", env.bravo_prices(t, [110, 240, 280]), t + 5),
        ("alpha", env.alpha_ou(t, "1.00", "1.90"), t + 5),
        ("alpha", b"garbage", t + 5),
        ("alpha", wire.alpha_heartbeat(env.seq("alpha"), t + 1), t + 5),
    ]
    resp = await odds_grpc.feed.IngestOdds(ingest_requests(items), metadata=FEEDER)
    assert (resp.received, resp.accepted, resp.rejected) == (5, 2, 3)
    assert dict(resp.rejected_by_reason) == {"STANDBY": 1, "ODDS_INVALID": 1, "SCHEMA": 1}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await odds_grpc.feed.IngestOdds(ingest_requests(items[:1]), metadata=BETTOR)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_admin_operator_controls_and_change_log(odds_grpc: OddsGrpc, wallet: WalletStore) -> None:
    env = odds_grpc.env
    admin = odds_grpc.admin
    t = now_ms() - 5_000
    await price(env, t)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SuspendMarket(admin_pb2.SuspendMarketRequest(market_id=env.mr), metadata=BETTOR)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SuspendMarket(admin_pb2.SuspendMarketRequest(market_id=env.mr))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await admin.SuspendMarket(admin_pb2.SuspendMarketRequest(market_id=env.mr, reason="suspicious"), metadata=OPERATOR)
    # operator suspension is sticky: fresh feed prices do not reopen the market
    await price(env, t + 100, "2.02")
    m = await env.market(env.mr)
    assert (m.status, m.status_reason, m.selections[0].odds.decimal_str()) == (
        MarketStatus.SUSPENDED,
        "OPERATOR",
        "2.02",
    )
    await admin.ResumeMarket(admin_pb2.ResumeMarketRequest(market_id=env.mr, reason="checked"), metadata=OPERATOR)
    assert (await env.market(env.mr)).status == MarketStatus.ACTIVE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.ResumeMarket(admin_pb2.ResumeMarketRequest(market_id="missing"), metadata=OPERATOR)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # kill switch on the event
    resp = await admin.SetKillSwitch(
        admin_pb2.SetKillSwitchRequest(
            scope=admin_pb2.KILL_SWITCH_SCOPE_EVENT, target=env.event_id, engaged=True, reason="integrity"
        ),
        metadata=OPERATOR,
    )
    assert resp.markets_affected == 2
    await price(env, t + 200, "2.04")
    assert (await env.market(env.ou)).status_reason == "KILL_SWITCH"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.ResumeMarket(admin_pb2.ResumeMarketRequest(market_id=env.mr), metadata=OPERATOR)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await admin.SetKillSwitch(
        admin_pb2.SetKillSwitchRequest(scope=admin_pb2.KILL_SWITCH_SCOPE_EVENT, target=env.event_id, engaged=False),
        metadata=OPERATOR,
    )
    await price(env, t + 300, "2.04")
    assert (await env.market(env.mr)).status == MarketStatus.ACTIVE
    # account limits
    until = timestamp_pb2.Timestamp()
    until.FromMilliseconds(now_ms() + 86_400_000)
    await admin.SetAccountLimits(
        admin_pb2.SetAccountLimitsRequest(
            account_id=f"acc-{env.event_id}", daily_stake_limit_minor=5_000, self_excluded_until=until
        ),
        metadata=OPERATOR,
    )
    limits = await wallet.get_limits(f"acc-{env.event_id}")
    assert (limits.daily_stake_limit_minor, limits.self_excluded_until_ms) == (5_000, until.ToMilliseconds())
    # the change log, paged, oldest first, with operator sources
    changes: list[admin_pb2.MarketChange] = []
    token = ""
    while True:
        page = await admin.ListMarketChanges(
            admin_pb2.ListMarketChangesRequest(market_id=env.mr, page_size=4, page_token=token), metadata=OPERATOR
        )
        changes += page.changes
        token = page.next_page_token
        if not token:
            break
    statuses = [(c.new_value, c.source, c.reason) for c in changes if c.kind == "STATUS"]
    assert statuses == [
        ("ACTIVE", "alpha", "FEED"),
        ("SUSPENDED:OPERATOR", "operator:op-alice", "suspicious"),
        ("ACTIVE", "operator:op-alice", "checked"),
        ("SUSPENDED:KILL_SWITCH", "operator:op-alice", "integrity"),
        ("ACTIVE", "alpha", "FEED"),
    ]
    versions = [c.version for c in changes]
    assert versions == sorted(versions)
