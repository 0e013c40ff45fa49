"""The core's JSON encoders of the odds hot path are byte for byte the Python reference's:

- ``inplay.core.encode_price_items``: the price script's items (``_price_item``, ``encode_body``, ``_pack`` in
  ``inplay.adapters.redis_odds``), so pods on either path write the same bodies and the Lua script reads the
  same items;
- ``inplay.core.encode_odds_records``: the ``inplay.odds.v1`` records (``inplay.domain.markets.odds_json``),
  with ``ChangeRecorder.odds_messages`` keeping its grouping and order.

A number beyond 64 bits is left to the reference (the core answers None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from inplay.adapters.redis_odds import _body_of, _pack, _price_item
from inplay.core import Odds, encode_odds_records, encode_price_items
from inplay.domain.feed import fastjson
from inplay.domain.markets import _STATUS_NAME, ChangeRecorder, odds_json
from inplay.model import MarketChange, MarketState, MarketStatus, SelectionPrice
from inplay.ports import PriceWrite

I64 = st.integers(-(2**63), 2**63 - 1)
U64 = st.integers(0, 2**64 - 1)
# Any text Python can encode as UTF-8 (hypothesis leaves out lone surrogates), control characters included.
TEXT = st.text(max_size=12)
selections = st.lists(
    st.builds(lambda i, n, num, den: SelectionPrice(i, n, Odds(num, den)), TEXT, TEXT, U64, U64), max_size=4
).map(tuple)

# --- price items ------------------------------------------------------------------------------------------


@dataclass
class Held:
    version: int


def reference(writes: list[PriceWrite], held_versions: list[int]) -> str:
    held = [cast(Any, Held(v)) if v else None for v in held_versions]
    return _pack([_price_item(w, _body_of(w), h) for w, h in zip(writes, held, strict=True)])


price_writes = st.builds(
    PriceWrite,
    TEXT,  # market_id
    TEXT,  # event_id
    TEXT,  # sport
    TEXT,  # market_type
    TEXT,  # name
    st.booleans(),
    selections,
    I64,  # source_ts_ms
    I64,  # updated_at_ms
    TEXT,  # source
    TEXT,  # suspend_reason
    st.booleans(),  # correction
    I64,  # provider_ts_ms (0: source_ts_ms)
    TEXT,  # route_primary
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(price_writes, st.integers(0, 2**63 - 1)), max_size=5))
def test_the_core_writes_the_reference_text(batch: list[tuple[PriceWrite, int]]) -> None:
    writes = [w for w, _ in batch]
    versions = [v for _, v in batch]
    assert encode_price_items(writes, versions) == reference(writes, versions)


def test_a_usual_write_reads_back_as_the_reference_document() -> None:
    sels = (SelectionPrice("h", 'Home "A"\n', Odds(21, 10)), SelectionPrice("a", "Away é", Odds(7, 2)))
    w = PriceWrite("m1", "e1", "football", "1X2", "Match", True, sels, 5, 6, "alpha", "", False, 0, "")
    text = encode_price_items([w], [3])
    assert text == reference([w], [3])
    assert text is not None
    item = fastjson.loads(text)[0]
    assert item[3] == "5" and item[11] == "5" and item[14] == 3  # provider time 0 stands for the source time
    assert fastjson.loads(item[4])["s"] == [["h", 'Home "A"\n', 21, 10], ["a", "Away é", 7, 2]]


def test_an_item_number_beyond_64_bits_is_left_to_the_reference() -> None:
    w = PriceWrite("m1", "e1", "f", "t", "n", False, (SelectionPrice("h", "H", Odds(2**64, 3)),), 1, 1, "a")
    assert encode_price_items([w], [0]) is None
    assert "18446744073709551616" in reference([w], [0])


# --- odds records -----------------------------------------------------------------------------------------

changes = st.builds(MarketChange, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, I64, I64)
states = st.builds(
    MarketState,
    TEXT,  # market_id
    TEXT,  # event_id
    TEXT,  # sport
    TEXT,  # market_type
    TEXT,  # name
    st.booleans(),  # in_play
    st.sampled_from(list(MarketStatus)),
    TEXT,  # status_reason
    selections,
    I64,  # version
    I64,  # updated_at_ms
    TEXT,  # source
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(states, st.lists(changes, max_size=3)), max_size=4))
def test_the_core_writes_the_reference_bytes(batch: list[tuple[MarketState, list[MarketChange]]]) -> None:
    sts = [s for s, _ in batch]
    groups = [g for _, g in batch]
    want = [odds_json(s, g) for s, g in batch]
    assert encode_odds_records(sts, [_STATUS_NAME[s.status] for s in sts], groups) == want


class Bus:
    async def publish(self, messages: object) -> None:
        return None


def test_odds_messages_group_the_entries_by_write_in_state_order() -> None:
    def state(mid: str, version: int) -> MarketState:
        sel = (SelectionPrice("h", "Home", Odds(21, 10)),)
        return MarketState(mid, "e", "f", "t", "n", True, MarketStatus.ACTIVE, "", sel, version, 7, "alpha")

    def change(mid: str, version: int, kind: str = "PRICE") -> MarketChange:
        return MarketChange(mid, "h", kind, "", "2.10 (21/10)", "alpha", "FEED", version, 7)

    recorder = ChangeRecorder(log_store=None, bus=Bus(), topic_prefix="t.")  # type: ignore[arg-type]
    entries = [change("b", 2), change("a", 1), change("a", 1, "STATUS"), change("c", 5, "PROVIDER")]
    out = recorder.odds_messages([state("a", 1), state("b", 2)], entries)
    odds, apart = "t.inplay.odds.v1", "t.inplay.market-changes.v1"
    assert [(m.topic, m.key) for m in out] == [(odds, "a"), (odds, "b"), (apart, "c")]
    first = fastjson.loads(out[0].value)
    assert [c["kind"] for c in first["changes"]] == ["PRICE", "STATUS"]
    assert out[0].value == odds_json(state("a", 1), [change("a", 1), change("a", 1, "STATUS")])


def test_a_record_number_beyond_64_bits_is_left_to_the_reference() -> None:
    s = MarketState("m", "e", "f", "t", "n", True, MarketStatus.ACTIVE, "", (), 2**64, 7, "alpha")
    assert encode_odds_records([s], ["ACTIVE"], [[]]) is None
    recorder = ChangeRecorder(log_store=None, bus=Bus())  # type: ignore[arg-type]
    (message,) = recorder.odds_messages([s], [])
    assert message.value == odds_json(s, [])
