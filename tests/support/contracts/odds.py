"""The odds cache contract (inplay.ports.LiveOddsCache): versioned compare-and-set, feed writes with
provider watermarks, suspension (sticky, MATCH_END, kill switches), settlement and the live fan-out, the
same over ``MemoryOddsCache`` and ``RedisOddsCache``."""

from __future__ import annotations

import asyncio

from inplay.core import Odds
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.ports import CacheWrite, LiveOddsCache, PriceWrite, ProviderLiveness, StatusWrite
from tests.support.contracts import uid

T0 = 1_772_323_200_000


def market(event: str, market_id: str, version: int, odds: str = "2.00") -> MarketState:
    sel = (SelectionPrice("home", "Home", Odds.from_decimal(odds)),)
    return MarketState(market_id, event, "football", "1x2", "Match", True, MarketStatus.ACTIVE, "", sel, version, T0)


def prices(event: str, market_id: str, ts: int, odds: str = "2.00", **kw: object) -> PriceWrite:
    sel = (SelectionPrice("home", "Home", Odds.from_decimal(odds)),)
    return PriceWrite(market_id, event, "football", "1x2", "Match", True, sel, ts, ts, "prov-a", **kw)  # type: ignore[arg-type]


def status(w: MarketState | None) -> tuple[MarketStatus, str] | None:
    return None if w is None else (w.status, w.status_reason)


class OddsContract:
    async def test_versioned_compare_and_set(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        assert await odds_cache.get_markets([m]) == [None]
        assert await odds_cache.put_markets([market(ev, m, 5, "2.00")]) == [CacheWrite(True, 5)]
        # An older or an equal version never overwrites the newer one; the cached version is reported.
        older, equal = market(ev, m, 4, "9.00"), market(ev, m, 5, "9.00")
        assert await odds_cache.put_markets([older, equal]) == [CacheWrite(False, 5), CacheWrite(False, 5)]
        assert await odds_cache.get_markets([m]) == [market(ev, m, 5, "2.00")]
        assert await odds_cache.put_markets([market(ev, m, 7, "3.00")]) == [CacheWrite(True, 7)]
        [state] = await odds_cache.get_markets([m])
        assert state is not None and state.version == 7 and state.selections[0].odds == Odds.from_decimal("3.00")

    async def test_reads_by_id_and_by_event(self, odds_cache: LiveOddsCache) -> None:
        ev, other = uid("ev"), uid("ev")
        states = [market(ev, f"{ev}:m{i}", 1) for i in (3, 1, 2)] + [market(other, f"{other}:m1", 1)]
        assert [w.applied for w in await odds_cache.put_markets(states)] == [True] * 4
        assert await odds_cache.get_markets([f"{ev}:m2", uid("nope"), f"{other}:m1"]) == [states[2], None, states[3]]
        assert [s.market_id for s in await odds_cache.list_event_markets(ev)] == [f"{ev}:m1", f"{ev}:m2", f"{ev}:m3"]
        assert await odds_cache.list_event_markets(uid("ev")) == []

    async def test_feed_writes_take_the_next_version_and_drop_stale_prices(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        [first] = await odds_cache.write_prices([prices(ev, m, T0 + 100, "2.00")])
        assert first.outcome == "APPLIED" and first.before is None
        assert first.after is not None and (first.after.version, first.after.status) == (1, MarketStatus.ACTIVE)
        [newer] = await odds_cache.write_prices([prices(ev, m, T0 + 200, "2.50")])
        assert newer.outcome == "APPLIED" and newer.after is not None and newer.after.version == 2
        # Older than (or as old as) the provider's newest price: STALE, nothing changes.
        stale = await odds_cache.write_prices([prices(ev, m, T0 + 150, "9.00"), prices(ev, m, T0 + 200, "9.00")])
        assert [r.outcome for r in stale] == ["STALE", "STALE"]
        # A correction may reuse the corrected price's time.
        [fix] = await odds_cache.write_prices([prices(ev, m, T0 + 200, "2.40", correction=True)])
        assert fix.outcome == "APPLIED"
        [state] = await odds_cache.get_markets([m])
        assert state is not None and state.version == 3 and state.selections[0].odds == Odds.from_decimal("2.40")

    async def test_suspension_and_resume(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        await odds_cache.write_prices([prices(ev, m, T0 + 100)])
        [sus] = await odds_cache.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "FEED_LAG")])
        assert sus.outcome == "APPLIED" and status(sus.after) == (MarketStatus.SUSPENDED, "FEED_LAG")
        assert sus.after is not None and sus.after.version == 2
        [again] = await odds_cache.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "FEED_LAG")])
        assert again.outcome == "UNCHANGED"
        # A resume limited to other reasons changes nothing; a plain resume reopens.
        only = StatusWrite(m, MarketStatus.ACTIVE, "", only_reasons=("PRICE_JUMP",))
        assert [r.outcome for r in await odds_cache.write_status([only])] == ["UNCHANGED"]
        [resumed] = await odds_cache.write_status([StatusWrite(m, MarketStatus.ACTIVE, "")])
        assert resumed.outcome == "APPLIED" and status(resumed.after) == (MarketStatus.ACTIVE, "")
        assert [r.outcome for r in await odds_cache.write_status([StatusWrite(uid("m"), MarketStatus.ACTIVE, "")])] == [
            "NOT_FOUND"
        ]
        # Fresh prices with a suspend reason are stored but keep the market suspended.
        [held] = await odds_cache.write_prices([prices(ev, m, T0 + 200, "3.00", suspend_reason="PRICE_JUMP")])
        assert held.outcome == "APPLIED" and status(held.after) == (MarketStatus.SUSPENDED, "PRICE_JUMP")

    async def test_operator_suspension_is_sticky_and_match_end_holds(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        op, end = f"{ev}:op", f"{ev}:end"
        await odds_cache.write_prices([prices(ev, op, T0 + 100), prices(ev, end, T0 + 100)])
        await odds_cache.write_status(
            [StatusWrite(op, MarketStatus.SUSPENDED, "OPERATOR"), StatusWrite(end, MarketStatus.SUSPENDED, "MATCH_END")]
        )
        # Fresh feed prices never reopen them; a feed suspension does not replace the reason.
        fresh = await odds_cache.write_prices([prices(ev, op, T0 + 200), prices(ev, end, T0 + 200)])
        assert [status(r.after) for r in fresh] == [
            (MarketStatus.SUSPENDED, "OPERATOR"),
            (MarketStatus.SUSPENDED, "MATCH_END"),
        ]
        lag = await odds_cache.write_status([StatusWrite(op, MarketStatus.SUSPENDED, "FEED_LAG")])
        assert [r.outcome for r in lag] == ["UNCHANGED"]
        [resumed] = await odds_cache.write_status([StatusWrite(op, MarketStatus.ACTIVE, "")])  # the operator
        assert status(resumed.after) == (MarketStatus.ACTIVE, "")

    async def test_kill_switch_suspends_and_refuses_resume(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        await odds_cache.write_prices([prices(ev, m, T0 + 100)])
        assert not await odds_cache.kill_switch_engaged(ev, "football")
        assert await odds_cache.set_kill_switch("event", ev, True) == [m]
        assert await odds_cache.kill_switch_engaged(ev, "football")
        await odds_cache.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "KILL_SWITCH")])
        [priced] = await odds_cache.write_prices([prices(ev, m, T0 + 200)])
        assert status(priced.after) == (MarketStatus.SUSPENDED, "KILL_SWITCH")
        assert [r.outcome for r in await odds_cache.write_status([StatusWrite(m, MarketStatus.ACTIVE, "")])] == [
            "KILL_SWITCH"
        ]
        await odds_cache.set_kill_switch("event", ev, False)
        [reopened] = await odds_cache.write_prices([prices(ev, m, T0 + 300)])
        assert status(reopened.after) == (MarketStatus.ACTIVE, "")  # released: fresh prices reopen it

    async def test_a_settled_market_takes_no_prices(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        await odds_cache.write_prices([prices(ev, m, T0 + 100)])
        [settled] = await odds_cache.write_status([StatusWrite(m, MarketStatus.SETTLED, "RESULT")])
        assert settled.outcome == "APPLIED" and settled.after is not None
        assert settled.after.status == MarketStatus.SETTLED
        assert [r.outcome for r in await odds_cache.write_prices([prices(ev, m, T0 + 200)])] == ["SETTLED"]
        later = [StatusWrite(m, MarketStatus.ACTIVE, ""), StatusWrite(m, MarketStatus.SETTLED, "RESULT")]
        assert [r.outcome for r in await odds_cache.write_status(later)] == ["SETTLED", "UNCHANGED"]
        [state] = await odds_cache.get_markets([m])
        assert state == settled.after

    async def test_a_bet_stop_makes_older_prices_stale(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        await odds_cache.write_prices([prices(ev, m, T0 + 100)])
        stop = StatusWrite(m, MarketStatus.SUSPENDED, "BET_STOP", source_ts_ms=T0 + 500)
        assert [r.outcome for r in await odds_cache.write_status([stop])] == ["APPLIED"]
        assert [r.outcome for r in await odds_cache.write_prices([prices(ev, m, T0 + 400)])] == ["STALE"]

    async def test_applied_writes_reach_subscribers_in_order(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        m = f"{ev}:mr"
        sub = odds_cache.open_subscription()
        try:
            await sub.add([ev])
            await odds_cache.write_prices([prices(ev, m, T0 + 100 + i, f"2.{i}0") for i in range(1, 4)])
            await odds_cache.write_status([StatusWrite(m, MarketStatus.SUSPENDED, "FEED_LAG")])
            await odds_cache.put_markets([market(ev, m, 2)])  # older: not applied, not published
            await odds_cache.write_prices([prices(uid("ev"), uid("m"), T0)])  # another event
            got: list[int] = []
            notices = aiter(sub)
            while len(got) < 4:
                notice = await asyncio.wait_for(anext(notices), 5)
                got.append(notice.state.version)
            assert got == [1, 2, 3, 4]
            assert notice.state.status == MarketStatus.SUSPENDED
        finally:
            await sub.close()

    # --- the shared feed state (FeedStateStore, part of the live cache) -----------------------------

    async def test_provider_switch_is_a_compare_and_set(self, odds_cache: LiveOddsCache) -> None:
        ev = uid("ev")
        assert (await odds_cache.load_feed_state([], {}, [ev])).active == {ev: ""}  # never switched
        assert await odds_cache.switch_provider(ev, "prov-b", "prov-c", "prov-a") == (False, "prov-a")
        assert await odds_cache.switch_provider(ev, "prov-a", "prov-b", "prov-a") == (True, "prov-b")
        # A second pod that saw the old route loses and learns the active provider.
        assert await odds_cache.switch_provider(ev, "prov-a", "prov-c", "prov-a") == (False, "prov-b")
        assert (await odds_cache.load_feed_state([], {}, [ev])).active == {ev: "prov-b"}
        # Routed feed prices: only the active provider's are applied.
        m = f"{ev}:mr"
        standby = prices(ev, m, T0 + 100, route_primary="prov-a")  # from prov-a, now standby
        assert [r.outcome for r in await odds_cache.write_prices([standby])] == ["STANDBY"]

    async def test_feed_state_merges_field_by_field(self, odds_cache: LiveOddsCache) -> None:
        name = uid("prov")
        first = ProviderLiveness(name, last_seen_ms=T0 + 10, lag_ms=50, lag_at_ms=T0 + 10, last_seq=7, max_ts_ms=T0)
        older = ProviderLiveness(name, last_seen_ms=T0 + 5, lag_ms=900, lag_at_ms=T0 + 1, last_seq=3, max_ts_ms=T0 - 9)
        await odds_cache.save_feed_state([first], {name: [(7, T0), (6, T0 - 1)]})
        await odds_cache.save_feed_state([older], {name: [(3, T0 - 9)]})  # another pod, behind
        view = await odds_cache.load_feed_state([name], {name: [(7, T0), (3, T0 - 9), (8, T0 + 1)]}, [])
        merged = view.providers[name]
        assert (merged.last_seen_ms, merged.lag_ms, merged.last_seq, merged.max_ts_ms) == (T0 + 10, 50, 7, T0)
        assert view.seen == {name: {(7, T0), (3, T0 - 9)}}  # probes already in the duplicate window
        await odds_cache.save_feed_state([ProviderLiveness(name)], {name: [(1, T0 + 99)]}, reset=[name])
        reset = await odds_cache.load_feed_state([name], {name: [(7, T0), (1, T0 + 99)]}, [])
        assert reset.seen == {name: {(1, T0 + 99)}}  # a new provider session restarts the window
        assert [p.name for p in await odds_cache.list_producers() if p.name == name] == [name]
