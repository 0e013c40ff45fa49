"""Regression tests of the odds-pipeline review (../shared/reviews/odds-5b1550c.md) over the memory twins.
The same scenarios run on the real Redis/Kafka/Cassandra in tests/integration/test_feed_defects.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from inplay.adapters.memory_odds import MemoryOddsCache
from inplay.domain.feed import wire
from inplay.domain.feed.hub import ClientFeed, OddsHub
from inplay.domain.feed.pipeline import RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketState, MarketStatus
from inplay.ports import OddsNotice, StatusWrite, WriteResult
from tests.support.feed import make_pipeline, state

MR = {"A-EV-MR-H": "2.00", "A-EV-MR-D": "3.40", "A-EV-MR-A": "3.80"}
OU = {"A-EV-OU-O": "1.90", "A-EV-OU-U": "1.90"}


def mr(seq: int, ts: int, home: str = "2.00") -> bytes:
    return wire.alpha_odds(seq, ts, "A-EV", "A-EV-MR", {**MR, "A-EV-MR-H": home})


async def status(cache: MemoryOddsCache, market_id: str) -> tuple[MarketStatus, str] | None:
    (st,) = await cache.get_markets([market_id])
    return None if st is None else (st.status, st.status_reason)


# --- C1: MATCH_END holds until settlement -----------------------------------------------------------------


async def test_c1_price_after_match_end_does_not_reopen() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    await pipe.ingest([RawMessage("alpha", wire.alpha_end(2, t + 1000, "A-EV"), t + 1001)])
    await pipe.ingest([RawMessage("alpha", mr(3, t + 1500, "2.10"), t + 1501)])
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "MATCH_END")


@pytest.mark.parametrize("reason", ["PROVIDER_DISCONNECT", "KILL_SWITCH", "GOAL", "BET_STOP"])
async def test_c1_other_suspensions_do_not_replace_match_end(reason: str) -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    await pipe.ingest([RawMessage("alpha", wire.alpha_end(2, t + 1000, "A-EV"), t + 1001)])
    await pipe.control.suspend(["ev:mr"], reason, "watchdog")
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "MATCH_END")
    await pipe.ingest([RawMessage("alpha", mr(3, t + 1500, "2.10"), t + 1501)])
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "MATCH_END")


async def test_c1_kill_switch_release_after_match_end_keeps_it_ended() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    await pipe.ingest([RawMessage("alpha", wire.alpha_end(2, t + 1000, "A-EV"), t + 1001)])
    await pipe.control.set_kill_switch("event", "ev", True, "operator:x", "")
    await pipe.control.set_kill_switch("event", "ev", False, "operator:x", "")
    await pipe.ingest([RawMessage("alpha", mr(3, t + 1500, "2.10"), t + 1501)])
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "MATCH_END")
    assert await pipe.control.settle(["ev:mr"]) == 1  # settlement still closes it


# --- C2: partial mapping ---------------------------------------------------------------------------------


async def test_c2_bet_stop_with_one_unmapped_market_suspends_the_mapped_ones() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    out = await pipe.ingest(
        [RawMessage("alpha", wire.alpha_bet_stop(2, t + 100, "A-EV", ["A-EV-MR", "A-EV-CORNERS"]), t + 101)]
    )
    assert (out.accepted, dict(out.rejected)) == (1, {})
    assert out.anomalies["UNMAPPED"] == 1
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "BET_STOP")


async def test_c2_bet_stop_naming_only_unmapped_markets_is_rejected() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    out = await pipe.ingest([RawMessage("alpha", wire.alpha_bet_stop(2, t + 100, "A-EV", ["A-EV-X"]), t + 101)])
    assert dict(out.rejected) == {"UNMAPPED": 1}
    assert await status(cache, "ev:mr") == (MarketStatus.ACTIVE, "")


async def test_c2_one_unmapped_offer_keeps_the_good_prices_of_the_message() -> None:
    rules = FeedRules()
    pipe, cache, clock = await make_pipeline(rules)
    t = clock[0]
    # bravo becomes active: alpha silent past the heartbeat timeout
    await pipe.ingest([RawMessage("bravo", wire.bravo_alive(1, t), t)])
    payload = wire.bravo_price(
        2,
        t + 10,
        77,
        [
            wire.bravo_offer("1X2", {"1": 140, "X": 210, "2": 180}),
            wire.bravo_offer("OU", {"O": -110, "U": -110}, "3.5"),  # no such line in the mapping
        ],
    )
    pipe.router.active["ev"] = "bravo"
    out = await pipe.ingest([RawMessage("bravo", payload, t + 20)])
    assert (out.accepted, dict(out.rejected), out.anomalies["UNMAPPED"]) == (1, {}, 1)
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.status == MarketStatus.ACTIVE
    assert [s.odds.decimal_str() for s in st.selections] == ["2.40", "3.10", "2.80"]


# --- C3: a store error does not mark the chunk's sequence numbers seen -------------------------------------


class FlakyStatus(MemoryOddsCache):
    def __init__(self) -> None:
        super().__init__()
        self.fail = 0

    async def write_status(self, writes: Sequence[StatusWrite]) -> list[WriteResult]:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis timeout")
        return await super().write_status(writes)


async def test_c3_retry_after_store_error_is_applied_not_duplicate() -> None:
    pipe, _, clock = await make_pipeline()
    flaky = FlakyStatus()
    pipe.cache = flaky
    pipe.control.cache = flaky
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    chunk = [
        RawMessage("alpha", wire.alpha_bet_stop(2, t + 100, "A-EV"), t + 101),
        RawMessage("alpha", wire.alpha_odds(3, t + 200, "A-EV", "A-EV-OU", OU), t + 201),
    ]
    flaky.fail = 1
    with pytest.raises(ConnectionError):
        await pipe.ingest(chunk)
    out = await pipe.ingest(chunk)  # the connector's retry
    assert "DUPLICATE" not in out.rejected, out
    assert await status(flaky, "ev:mr") == (MarketStatus.SUSPENDED, "BET_STOP")
    assert await status(flaky, "ev:ou") == (MarketStatus.ACTIVE, "")


async def test_c3_change_log_failure_is_retried_not_lost() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    store = pipe.control.recorder.store
    real_append = store.append
    down = [True]

    # Down for the whole first ingest: the background shipping and the drain's retry both fail (a single
    # failure is now absorbed by the drain's own retry, which is the point of the outbox).
    async def failing_while_down(changes: Sequence[object]) -> None:
        if down[0]:
            raise ConnectionError("cassandra down")
        await real_append(changes)  # type: ignore[arg-type]

    store.append = failing_while_down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    assert await status(cache, "ev:mr") == (MarketStatus.ACTIVE, "")  # the cache has it
    down[0] = False
    await pipe.ingest([RawMessage("alpha", wire.alpha_heartbeat(2, t + 50), t + 51)])  # next chunk flushes
    rows, _ = await store.list("ev:mr", 100, "")
    assert [(r.version, r.kind) for r in rows][:2] == [(1, "STATUS"), (1, "PRICE")]


# --- H2: a provider restarting its sequence numbers --------------------------------------------------------


async def test_h2_sequence_restart_is_not_silenced() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(s, t + s * 10), t + s * 10 + 5) for s in range(1, 51)])
    t2 = t + 1000
    out = await pipe.ingest([RawMessage("alpha", mr(s, t2 + s * 10, "2.20"), t2 + s * 10 + 5) for s in range(1, 11)])
    assert (out.accepted, dict(out.rejected)) == (10, {}), out
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.selections[0].odds.decimal_str() == "2.20"
    # gap detection works again on the new session
    out = await pipe.ingest([RawMessage("alpha", mr(15, t2 + 500, "2.20"), t2 + 505)])
    assert out.anomalies["SEQUENCE_GAP"] == 1
    # a true re-send of the new session is still a duplicate
    out = await pipe.ingest([RawMessage("alpha", mr(15, t2 + 500, "2.20"), t2 + 600)])
    assert dict(out.rejected) == {"DUPLICATE": 1}


# --- H4: provider clock ahead ------------------------------------------------------------------------------


async def test_h4_future_timestamp_clamped_to_receive_time_for_age() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    # stamped 4 s in the future, received now
    out = await pipe.ingest([RawMessage("alpha", mr(1, t + 4000), t)])
    assert out.accepted == 1 and out.anomalies["TIMESTAMP_AHEAD"] == 1
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.updated_at_ms == t  # age seen 3 s later: 3 000 ms, not 0


async def test_h4_after_failover_the_fresh_provider_is_not_stale() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest(
        [
            RawMessage("alpha", mr(1, t + 3000), t),
            RawMessage("bravo", wire.bravo_alive(1, t), t),
        ]
    )
    pipe.router.active["ev"] = "bravo"  # the failover decision itself is tested elsewhere
    offers = [wire.bravo_offer("1X2", {"1": 110, "X": 210, "2": 180})]
    out = await pipe.ingest([RawMessage("bravo", wire.bravo_price(2, t + 400, 77, offers), t + 400)])
    assert (out.accepted, dict(out.rejected)) == (1, {}), out
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.source == "bravo" and st.selections[0].odds.decimal_str() == "2.10"


async def test_h4_late_price_of_a_clock_ahead_provider_stays_stale_after_its_bet_stop() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t + 2000), t)])
    await pipe.ingest([RawMessage("alpha", wire.alpha_bet_stop(2, t + 3000, "A-EV"), t + 1000)])
    # stamped before the stop by the provider's own clock, received after it
    out = await pipe.ingest([RawMessage("alpha", mr(3, t + 2900, "2.10"), t + 1100)])
    assert dict(out.rejected) == {"STALE_VERSION": 1}
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "BET_STOP")


# --- H5: rejected messages are not liveness ----------------------------------------------------------------


async def test_h5_provider_whose_every_message_is_rejected_fails_over() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t), t + 5), RawMessage("bravo", wire.bravo_alive(1, t), t + 5)])
    seq_a, seq_b = 1, 1
    for dt in range(100, 4000, 100):
        seq_a, seq_b = seq_a + 1, seq_b + 1
        now = t + dt
        clock[0] = now
        await pipe.ingest(
            [
                RawMessage("alpha", mr(seq_a, now + 6000), now),  # TIMESTAMP_FUTURE, every time
                RawMessage("bravo", wire.bravo_alive(seq_b, now), now),
            ]
        )
        await pipe.tick(now)
    assert pipe.router.active_for(pipe.mappings.table.events["ev"]) == "bravo"
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT")


async def test_h5_schema_rejected_messages_do_not_keep_a_provider_alive() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t), t + 5)])
    bad = b'{"type":"odds","seq":%d,"ts":"garbage"}'
    for i, dt in enumerate(range(500, 4000, 500)):
        await pipe.ingest([RawMessage("alpha", bad % (i + 2), t + dt)])
    await pipe.tick(t + 4000)
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "PROVIDER_DISCONNECT")


# --- H1: the StreamOdds hub retries its resubscription -----------------------------------------------------


class FakeSub:
    def __init__(self, owner: FakeCache) -> None:
        self.owner = owner
        self.events: set[str] = set()
        self.queue: asyncio.Queue[OddsNotice | BaseException] = asyncio.Queue()
        owner.subs.append(self)

    async def add(self, event_ids: Sequence[str]) -> None:
        if self.owner.down:
            raise ConnectionError("redis down")
        self.events.update(event_ids)

    async def remove(self, event_ids: Sequence[str]) -> None:
        self.events.difference_update(event_ids)

    def __aiter__(self) -> AsyncIterator[OddsNotice]:
        return self._it()

    async def _it(self) -> AsyncIterator[OddsNotice]:
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        return None


class FakeCache:
    def __init__(self) -> None:
        self.subs: list[FakeSub] = []
        self.down = False

    def open_subscription(self) -> FakeSub:
        return FakeSub(self)

    def publish(self, st: MarketState) -> None:
        for s in self.subs:
            if st.event_id in s.events:
                s.queue.put_nowait(OddsNotice(st))


async def test_h1_hub_resubscribes_after_an_outage_longer_than_the_retry_delay() -> None:
    cache = FakeCache()
    hub = OddsHub(cache, retry_s=0.05)  # type: ignore[arg-type]
    c1 = ClientFeed(["ev"], [], [])
    await hub.attach(c1)
    cache.down = True
    cache.subs[-1].queue.put_nowait(ConnectionError("lost"))
    await asyncio.sleep(0.4)  # several retry delays while Redis is down
    cache.down = False
    for _ in range(100):
        await asyncio.sleep(0.05)
        if cache.subs[-1].events:
            break
    c1.take()
    cache.publish(state("ev:mr", 2))
    await asyncio.sleep(0.05)
    pending, _, _ = c1.take()
    assert [s.version for s in pending] == [2]
    c2 = ClientFeed(["ev"], [], [])
    await hub.attach(c2)
    cache.publish(state("ev:mr", 3))
    await asyncio.sleep(0.05)
    assert [s.version for s in c2.take()[0]] == [3]
    await hub.close()


# --- M6: a standby's incident suspends -------------------------------------------------------------------------


async def test_m6_standby_incident_suspends() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    out = await pipe.ingest([RawMessage("bravo", wire.bravo_incident(1, t + 100, 77, "GOAL"), t + 110)])
    assert out.accepted == 1, out
    assert await status(cache, "ev:mr") == (MarketStatus.SUSPENDED, "GOAL")


# --- M5: a bet stop for a market not yet priced ----------------------------------------------------------------


async def test_m5_bet_stop_before_first_price_raises_the_watermark() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    await pipe.ingest([RawMessage("alpha", wire.alpha_bet_stop(2, t + 300, "A-EV", ["A-EV-OU"]), t + 310)])
    out = await pipe.ingest([RawMessage("alpha", wire.alpha_odds(3, t + 250, "A-EV", "A-EV-OU", OU), t + 320)])
    assert dict(out.rejected) == {"STALE_VERSION": 1}
    assert await status(cache, "ev:ou") is None


# --- M1: no flapping back to the primary before the fail-back delay -------------------------------------------


def test_m1_switch_back_to_the_primary_waits_for_the_failback_delay() -> None:
    from inplay.domain.feed.health import FeedRouter
    from inplay.domain.feed.mapping import MappingTable

    rules = FeedRules()
    router = FeedRouter(rules)
    event = MappingTable(wire.two_provider_mapping("ev", "A", 1)).events["ev"]
    alpha, bravo = router.provider("alpha"), router.provider("bravo")
    t = 1_000_000
    alpha.observe(1, t, 1_500, rules)  # lag spike on the primary
    bravo.observe(1, t, 10, rules)
    sw = router.evaluate(event, t)
    assert sw is not None and sw.new == "bravo"
    alpha.observe(2, t + 400, 10, rules)
    bravo.observe(2, t + 400, 1_500, rules)  # now the secondary spikes: the primary was healthy for 400 ms only
    assert router.evaluate(event, t + 400) is None and router.active_for(event) == "bravo"
    for k in range(1, 9):
        alpha.observe(2 + k, t + 400 + 400 * k, 10, rules)
        bravo.observe(2 + k, t + 400 + 400 * k, 10, rules)
    sw = router.evaluate(event, t + 3_600)
    assert sw is not None and sw.new == "alpha"


# --- L3: a correction stamped like the price it corrects --------------------------------------------------------


async def test_l3_correction_with_the_original_timestamp_is_applied() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    await pipe.ingest([RawMessage("alpha", mr(1, t - 10), t)])
    corrected = wire.alpha_odds(2, t - 10, "A-EV", "A-EV-MR", {**MR, "A-EV-MR-H": "2.10"}, correction=True)
    out = await pipe.ingest([RawMessage("alpha", corrected, t + 5)])
    assert out.accepted == 1, out
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.selections[0].odds.decimal_str() == "2.10"
