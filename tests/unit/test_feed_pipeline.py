"""Feed pipeline logic on the memory adapters (the same scenarios run against Redis/Kafka/Cassandra in
tests/integration/test_feed_*.py): routing, jump band math, failover state machine, hub coalescing."""

from __future__ import annotations

import json
from dataclasses import replace

from inplay.core import Odds
from inplay.domain.feed import wire
from inplay.domain.feed.health import FAILBACK, GAPS, HEARTBEAT_TIMEOUT, FeedRouter
from inplay.domain.feed.hub import ClientFeed
from inplay.domain.feed.mapping import MappingTable
from inplay.domain.feed.pipeline import RawMessage
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketStatus
from inplay.ports import OddsNotice
from tests.reference.jump_band import moved_beyond
from tests.support.feed import T0, make_pipeline, state


def test_band_math_is_exact() -> None:
    def d(text: str) -> tuple[int, int]:
        o = Odds.from_decimal(text)
        return o.num, o.den

    assert not moved_beyond(d("2.00"), d("2.30"), 1500)  # exactly 15 %
    assert moved_beyond(d("2.00"), d("2.31"), 1500)
    assert moved_beyond(d("2.00"), d("1.69"), 1500)
    assert not moved_beyond(d("2.00"), d("1.70"), 1500)


def test_router_failover_and_failback() -> None:
    rules = FeedRules(heartbeat_timeout_ms=1000, gap_window_ms=2000, failback_after_ms=1500)
    router = FeedRouter(rules)
    event = MappingTable(wire.two_provider_mapping("ev", "A", 1)).events["ev"]
    alpha, bravo = router.provider("alpha"), router.provider("bravo")
    alpha.observe(1, T0, 0, rules)
    bravo.observe(1, T0, 0, rules)
    assert router.evaluate(event, T0) is None and router.active_for(event) == "alpha"
    assert alpha.observe(5, T0 + 100, 0, rules)  # gap: 2..4 missing
    sw = router.evaluate(event, T0 + 100)
    assert sw is not None and (sw.old, sw.new, sw.cause) == ("alpha", "bravo", GAPS)
    seq_a, seq_b = 5, 1
    for t in range(200, 3800, 100):
        seq_a, seq_b = seq_a + 1, seq_b + 1
        alpha.observe(seq_a, T0 + t, 0, rules)
        bravo.observe(seq_b, T0 + t, 0, rules)
        if t == 3000:  # gap window over at +2100, healthy for 900 ms < 1500: no fail-back yet
            assert router.evaluate(event, T0 + t) is None
    sw = router.evaluate(event, T0 + 3700)
    assert sw is not None and (sw.new, sw.cause) == ("alpha", FAILBACK)
    # the active provider goes silent, the secondary keeps sending: failover on heartbeat timeout
    for t in range(3800, 5000, 100):
        seq_b += 1
        bravo.observe(seq_b, T0 + t, 0, rules)
    sw = router.evaluate(event, T0 + 4900)
    assert sw is not None and (sw.new, sw.cause) == ("bravo", HEARTBEAT_TIMEOUT)


def test_client_feed_coalesces_per_market() -> None:
    feed = ClientFeed(["ev"], [], [])
    for v in range(1, 6):
        feed.offer(OddsNotice(state("m1", v)))
    feed.offer(OddsNotice(state("m2", 1)))
    feed.offer(OddsNotice(state("m1", 3)))  # out of date: ignored, but counted as coalesced
    pending, coalesced, resync = feed.take()
    assert {(s.market_id, s.version) for s in pending} == {("m1", 5), ("m2", 1)}
    assert coalesced == 5 and not resync
    feed.offer(OddsNotice(state("m3", 1)))
    feed.offer(OddsNotice(state("m1", 6), correction=True))
    _, _, resync = feed.take()
    assert resync


def test_l1_client_feed_keeps_a_suspension_replaced_while_pending() -> None:
    feed = ClientFeed(["ev"], [], [])
    feed.offer(OddsNotice(state("m1", 1)))
    feed.take()
    suspended = replace(state("m1", 2), status=MarketStatus.SUSPENDED, status_reason="BET_STOP")
    feed.offer(OddsNotice(suspended))
    feed.offer(OddsNotice(state("m1", 3, "2.10")))  # the slow reader has not taken the suspension yet
    assert feed.take_edges() == [suspended]
    pending, coalesced, _ = feed.take()
    assert [s.version for s in pending] == [3] and coalesced == 0
    assert feed.take_edges() == []


async def test_memory_pipeline_applies_active_provider_only() -> None:
    pipe, cache, clock = await make_pipeline()
    t = clock[0]
    out = await pipe.ingest(
        [
            RawMessage(
                "alpha",
                wire.alpha_odds(
                    1,
                    t - 10,
                    "A-EV",
                    "A-EV-MR",
                    {"A-EV-MR-H": "2.50", "A-EV-MR-D": "3.20", "A-EV-MR-A": "2.90"},
                ),
                t,
            ),
            RawMessage(
                "bravo",
                wire.bravo_price(1, t - 10, 77, [wire.bravo_offer("1X2", {"1": 140, "X": 210, "2": 180})]),
                t,
            ),
        ]
    )
    assert (out.received, out.accepted, dict(out.rejected)) == (2, 1, {"STANDBY": 1})
    (st,) = await cache.get_markets(["ev:mr"])
    assert st is not None and st.status == MarketStatus.ACTIVE and st.version == 1
    assert [(s.selection_id, s.odds.decimal_str()) for s in st.selections] == [
        ("ev:mr:home", "2.50"),
        ("ev:mr:draw", "3.20"),
        ("ev:mr:away", "2.90"),
    ]


def test_reception_log_is_one_record_per_provider_per_chunk_split_when_large() -> None:
    from inplay.domain.feed.pipeline import RAW_RECORD_BYTES, raw_records

    small = [(RawMessage("alpha", f'{{"seq":{i}}}'.encode(), T0 + i), i) for i in range(3)]
    other = [(RawMessage("bravo", b"\xff\xfe", T0), -1)]  # not UTF-8: base64
    records = raw_records("raw", [small[0], other[0], small[1], small[2]])
    assert [r.key for r in records] == ["alpha", "bravo"]
    alpha = json.loads(records[0].value)
    assert alpha["source"] == "alpha" and [m["sequence"] for m in alpha["messages"]] == [0, 1, 2]
    assert json.loads(records[1].value)["messages"][0]["payload_b64"] == "//4="
    big = [(RawMessage("alpha", b"x" * 100_000, T0 + i), i) for i in range(12)]  # ~1.2 MB in all
    parts = raw_records("raw", big)
    assert len(parts) > 1 and all(len(p.value) <= RAW_RECORD_BYTES for p in parts)
    assert [m["sequence"] for p in parts for m in json.loads(p.value)["messages"]] == list(range(12))
