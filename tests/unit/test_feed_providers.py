"""Provider wire formats: parsing, exact odds, schema/timestamp/odds validation (pure logic)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inplay.core import Odds
from inplay.domain.feed import wire
from inplay.domain.feed.messages import (
    BET_STOP,
    END,
    HEARTBEAT,
    INCIDENT,
    ODDS_INVALID,
    PRICES,
    SCHEMA,
    TIMESTAMP_MISSING,
    Rejected,
)
from inplay.domain.feed.providers import AlphaAdapter, BravoAdapter, _utc_ms, utc_ms_canonical

TS = 1_740_841_445_123


def pair(o: Odds) -> tuple[int, int]:
    return (o.num, o.den)


def test_alpha_odds_message_exact_decimal_and_iso_timestamp() -> None:
    msg = AlphaAdapter().parse(wire.alpha_odds(7, TS, "A-1", "A-1-MR", {"H": "2.50", "D": "3.10", "A": "1.91"}))
    assert (msg.provider, msg.seq, msg.ts_ms, msg.kind, msg.event_ref) == ("alpha", 7, TS, PRICES, "A-1")
    (market,) = msg.markets
    assert market.ref == "A-1-MR"
    assert [(r, pair(o)) for r, o in market.prices] == [("H", (5, 2)), ("D", (31, 10)), ("A", (191, 100))]


def test_alpha_other_kinds() -> None:
    a = AlphaAdapter()
    assert a.parse(wire.alpha_heartbeat(1, TS)).kind == HEARTBEAT
    stop = a.parse(wire.alpha_bet_stop(2, TS, "A-1", ["A-1-MR"]))
    assert (stop.kind, stop.market_refs) == (BET_STOP, ("A-1-MR",))
    inc = a.parse(wire.alpha_incident(3, TS, "A-1", "red_card"))
    assert (inc.kind, inc.incident) == (INCIDENT, "RED_CARD")
    assert a.parse(wire.alpha_end(4, TS, "A-1")).kind == END


def test_bravo_american_and_fractional_odds_several_offers() -> None:
    payload = wire.bravo_price(
        9,
        TS,
        99123,
        [
            wire.bravo_offer("1X2", {"1": 150, "X": "11/5", "2": -110}),
            wire.bravo_offer("OU", {"O": -120, "U": 100}, "2.5"),
        ],
    )
    msg = BravoAdapter().parse(payload)
    assert (msg.provider, msg.seq, msg.ts_ms, msg.event_ref) == ("bravo", 9, TS, "99123")
    mr, ou = msg.markets
    assert mr.ref == "99123/1X2" and ou.ref == "99123/OU/2.5"
    assert [pair(o) for _, o in mr.prices] == [(5, 2), (16, 5), (21, 11)]
    assert [pair(o) for _, o in ou.prices] == [(11, 6), (2, 1)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", SCHEMA),
        (b"[1,2]", SCHEMA),
        (json.dumps({"type": "odds", "seq": "x", "ts": "2025-01-01T00:00:00Z"}).encode(), SCHEMA),
        (json.dumps({"type": "nope", "seq": 1, "ts": "2025-01-01T00:00:00Z"}).encode(), SCHEMA),
        (json.dumps({"type": "heartbeat", "seq": 1}).encode(), TIMESTAMP_MISSING),
        (json.dumps({"type": "heartbeat", "seq": 1, "ts": "2025-01-01T00:00:00"}).encode(), SCHEMA),
        (wire.alpha_odds(1, TS, "E", "M", {"H": "1.00"}), ODDS_INVALID),
        (wire.alpha_odds(1, TS, "E", "M", {"H": "0.50"}), ODDS_INVALID),
        (wire.alpha_odds(1, TS, "E", "M", {"H": "abc"}), ODDS_INVALID),
        (
            json.dumps(
                {
                    "type": "odds",
                    "seq": 1,
                    "ts": "2025-01-01T00:00:00Z",
                    "event": {"id": "E"},
                    "market": {"id": "M", "prices": [{"id": "H", "odds": 2.5}]},
                }
            ).encode(),
            SCHEMA,
        ),
    ],
)
def test_alpha_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as err:
        AlphaAdapter().parse(payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (json.dumps({"hdr": {"seq": 1, "type": "ALIVE"}}).encode(), TIMESTAMP_MISSING),
        (json.dumps({"hdr": {"seq": 1, "sent": "soon", "type": "ALIVE"}}).encode(), SCHEMA),
        (
            json.dumps({"hdr": {"seq": 1, "sent": TS, "type": "PRICE"}, "match": {"ref": "x"}}).encode(),
            SCHEMA,
        ),
        (wire.bravo_price(1, TS, 5, [wire.bravo_offer("1X2", {"1": 50})]), ODDS_INVALID),
        (wire.bravo_price(1, TS, 5, [wire.bravo_offer("1X2", {"1": "0/2"})]), ODDS_INVALID),
        (wire.bravo_price(1, TS, 5, []), SCHEMA),
    ],
)
def test_bravo_rejections(payload: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as err:
        BravoAdapter().parse(payload)
    assert err.value.reason == reason


# --- the canonical timestamp fast path reads what datetime reads ------------------------------------------------

_CANONICAL_CHARS = "0123456789-:.TZ+ \u0663\u00b2"


@settings(max_examples=2_000, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)))
def test_canonical_timestamps_read_as_datetime_reads_them(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert utc_ms_canonical(text) == _utc_ms(text)


@settings(max_examples=3_000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=_CANONICAL_CHARS, min_size=20, max_size=26),
        st.builds(
            lambda base, k, ch: base[:k] + ch + base[k + 1 :],
            st.just("2025-02-19T21:20:00.123Z"),
            st.integers(0, 23),
            st.sampled_from(list(_CANONICAL_CHARS)),
        ),
    )
)
def test_the_fast_path_never_reads_a_timestamp_differently(text: str) -> None:
    """Any string: the fast path declines (None) or gives what the full reader gives, never an error."""
    fast = utc_ms_canonical(text)
    if fast is None:
        return
    try:
        slow: int | None = _utc_ms(text)
    except Rejected:
        slow = None
    assert fast == slow, text
