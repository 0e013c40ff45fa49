"""The Rust core's fast reader of alpha price messages (``inplay_core::feed``, ``AlphaAdapter.parse_many``)
declines or agrees: for any payload it either declines (the Python adapter then reads it) or gives exactly
the message the Python adapter gives, and it never accepts what the adapter rejects. And it does not decline
the canonical price message (else the fast path would silently never run)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inplay.core import read_alpha_prices
from inplay.domain.feed import wire
from inplay.domain.feed.messages import ProviderMessage
from inplay.domain.feed.providers import AlphaAdapter, BravoAdapter, parse_or_rejection

ADAPTER = AlphaAdapter()
many = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Epoch ms from year 1 to 9999 (the canonical form's range), most of them recent.
ts_ms = st.one_of(
    st.integers(1_700_000_000_000, 1_900_000_000_000), st.integers(-62_135_596_800_000, 253_402_300_799_999)
)
YEAR_1000 = -30_610_224_000_000  # wire.iso_ms writes earlier years with fewer than 4 digits (not canonical)
ids = st.one_of(st.sampled_from(["h", "d", "a", "TAG-1-MR-H"]), st.text(max_size=6))
decimal = st.one_of(
    st.sampled_from(["2.50", "1.01", "1.00", "0.99", "10000", "10000.01", "2.", ".5", "1.1234567", "+2.5", "2e1"]),
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,7})?", fullmatch=True),
)
correction = st.one_of(st.none(), st.booleans(), st.integers(0, 1), st.just("no"))
seqs = st.one_of(st.integers(0, 2**40), st.integers(-3, 3), st.integers(2**62, 2**64), st.floats(0, 10), st.booleans())


def agrees(payload: bytes) -> bool:
    """Declined, or the same message as the Python adapter's. Returns whether it was read fast."""
    fast = ADAPTER.parse_many([payload])[0]
    declined = read_alpha_prices([payload])[0] is None
    slow = parse_or_rejection(ADAPTER, payload)
    if declined:
        assert type(fast) is type(slow) and str(fast) == str(slow)
        return False
    assert isinstance(slow, ProviderMessage), (payload, slow)
    assert fast == slow, payload
    return True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=3), x, max_size=3),
    max_leaves=6,
)
HOSTILE = ["seq", "type", "ts", "event", "market", "prices", "odds", "selection", "correction", "drop", "extra"]


@st.composite
def price_docs(draw: Any) -> dict[str, Any]:
    """A valid price message, or (mostly) one with a single field made hostile."""
    hostile = draw(st.one_of(st.none(), st.sampled_from(HOSTILE)))

    def pick(field: str, valid: Any, bad: Any) -> Any:
        return draw(bad if hostile == field else valid)

    valid_ids = st.one_of(
        st.sampled_from(["h", "TAG-1-MR-H", "ev-1:mr"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), min_size=1, max_size=6),
    )
    prices = [
        {
            "id": pick("selection", valid_ids, ids),
            "odds": pick("odds", st.sampled_from(["2.50", "1.01", "1000"]), decimal),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    if hostile == "prices":
        prices = draw(st.one_of(st.just([]), json_values))
    doc: dict[str, Any] = {
        "type": pick("type", st.just("odds"), st.sampled_from(["bet_stop", "ODDS", "", "odds "])),
        "seq": pick("seq", st.integers(0, 2**40), seqs),
        "ts": wire.iso_ms(draw(st.integers(YEAR_1000, 253_402_300_799_999)))
        if hostile != "ts"
        else draw(
            st.one_of(
                st.text(max_size=30),
                json_values,
                st.sampled_from(
                    [
                        "2026-02-29T00:00:00.000Z",
                        "2026-03-01T24:00:00.000Z",
                        "2026-03-01T00:00:60.000Z",
                        "2026-03-01 00:00:00.000Z",
                        "2026-03-01T00:00:00.000+00:00",
                    ]
                ),
            )
        ),
        "event": {"id": pick("event", valid_ids, ids)},
        "market": {"id": pick("market", valid_ids, ids), "prices": prices},
    }
    if hostile == "correction":
        doc["correction"] = draw(st.one_of(correction, json_values))
    elif draw(st.booleans()):
        doc["correction"] = draw(st.booleans())
    if hostile == "extra":
        doc[draw(st.sampled_from(["extra", "Seq", "markets"]))] = draw(json_values)
    if hostile == "drop":
        del doc[draw(st.sampled_from(sorted(doc)))]
    keys = draw(st.permutations(sorted(doc)))
    return {k: doc[k] for k in keys}


@many
@given(doc=price_docs(), ascii_only=st.booleans(), spaced=st.booleans())
def test_generated_price_messages_are_declined_or_read_alike(
    doc: dict[str, Any], ascii_only: bool, spaced: bool
) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":"))
    agrees(text.encode())


@many
@given(doc=price_docs(), cuts=st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)), min_size=1, max_size=3))
def test_damaged_payloads_are_declined_or_read_alike(doc: dict[str, Any], cuts: list[tuple[int, bytes]]) -> None:
    payload = json.dumps(doc, separators=(",", ":")).encode()
    for at, insert in cuts:
        at %= len(payload) + 1
        payload = payload[:at] + insert + payload[at + 1 :]
    agrees(payload)


@many
@given(
    seq=st.integers(0, 2**53),
    ts=st.integers(YEAR_1000, 253_402_300_799_999),
    prices=st.dictionaries(
        st.sampled_from(["h", "d", "a", "o", "u"]),
        st.sampled_from(["1.01", "2.50", "3.10", "1000"]),
        min_size=1,
        max_size=3,
    ),
    fix=st.booleans(),
)
def test_the_canonical_price_message_is_read_fast(seq: int, ts: int, prices: dict[str, str], fix: bool) -> None:
    assert agrees(wire.alpha_odds(seq, ts, "ev-1", "ev-1:mr", prices, correction=fix))


def test_every_other_message_is_left_to_the_adapter() -> None:
    t = 1_772_323_200_000
    for payload in (
        wire.alpha_bet_stop(1, t, "ev", ["m"]),
        wire.alpha_heartbeat(2, t),
        wire.alpha_end(3, t, "ev"),
        wire.alpha_incident(4, t, "ev", "goal"),
        wire.alpha_snapshot_complete(5, t, "r1"),
    ):
        assert read_alpha_prices([payload]) == [None]
        assert not agrees(payload)


def test_a_chunk_keeps_its_order_and_the_other_provider_reads_alike() -> None:
    t = 1_772_323_200_000
    payloads = [wire.alpha_odds(1, t, "e", "m", {"h": "2.00"}), b"{", wire.alpha_heartbeat(2, t)]
    got = ADAPTER.parse_many(payloads)
    assert [type(g).__name__ for g in got] == ["ProviderMessage", "Rejected", "ProviderMessage"]
    assert [getattr(g, "kind", "") for g in got] == ["PRICES", "", "HEARTBEAT"]
    bravo = BravoAdapter()
    assert [str(x) for x in bravo.parse_many([b"{}", b"x"])] == [
        str(parse_or_rejection(bravo, b"{}")),
        str(parse_or_rejection(bravo, b"x")),
    ]
