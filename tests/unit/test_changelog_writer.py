"""The change-log writer (inplay.domain.feed.changelog) on the memory stores: the log it derives from the
pipeline's Kafka records equals the log the pipeline writes inline; a failed append is retried, never
skipped; an undecodable record is counted and skipped. The same against Kafka and Cassandra:
tests/integration/test_feed_changelog_writer.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from inplay.adapters.memory_odds import MemoryMarketChangeLog
from inplay.domain.feed import changelog, wire
from inplay.domain.feed.changelog import ChangeLogWriter, entries_of_record
from inplay.domain.feed.pipeline import FeedPipeline, RawMessage
from inplay.domain.markets import changes_to_json, odds_json
from inplay.model import MarketChange
from inplay.ports import TOPIC_MARKET_CHANGES, TOPIC_ODDS
from tests.support.feed import T0, ListBus, make_pipeline, state


def _change(version: int, sel: str = "h", kind: str = "PRICE") -> MarketChange:
    return MarketChange("m1", sel, kind, "2.00", "2.10", "alpha", "FEED", version, T0 + version)


def test_records_carry_every_field_of_their_entries() -> None:
    entries = [_change(7), _change(7, "a"), _change(7, "", "STATUS")]
    assert entries_of_record(odds_json(state("m1", 7), entries)) == entries
    assert entries_of_record(changes_to_json(entries)) == entries
    assert entries_of_record(odds_json(state("m1", 8))) == []


ENTRY_FIELDS = ["market_id", "selection_id", "kind", "old_value", "new_value", "source", "reason", "version", "at_ms"]


@pytest.mark.parametrize("encode", ["orjson", "stdlib"])
def test_entries_are_written_with_the_documented_fields_in_order(encode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries are dataclasses written by the JSON encoder (orjson natively; the stdlib fallback by its
    ``default``): a field added to MarketChange would change the record's wire format, and fails here."""
    from inplay.domain import markets
    from inplay.domain.feed import fastjson

    if encode == "stdlib":
        monkeypatch.setattr(markets, "_compact", lambda obj: fastjson._std(obj).encode())
    for record in (odds_json(state("m1", 7), [_change(7)]), changes_to_json([_change(7)])):
        [entry] = fastjson.loads(record)["changes"]
        assert list(entry) == ENTRY_FIELDS
        assert entry["version"] == 7 and entry["old_value"] == "2.00"


def _mr(seq: int, ts: int, h: str, d: str, a: str) -> RawMessage:
    prices = {"A-EV-MR-H": h, "A-EV-MR-D": d, "A-EV-MR-A": a}
    return RawMessage("alpha", wire.alpha_odds(seq, ts, "A-EV", "A-EV-MR", prices), ts)


def _messages() -> list[RawMessage]:
    """Prices, moves, a bet stop, prices again (a jump), the match end: every kind of entry."""
    return [
        _mr(1, T0, "2.00", "3.40", "3.80"),
        _mr(2, T0 + 100, "2.10", "3.40", "3.60"),
        _mr(3, T0 + 200, "2.20", "3.30", "3.50"),
        RawMessage("alpha", wire.alpha_bet_stop(4, T0 + 300, "A-EV"), T0 + 300),
        _mr(5, T0 + 400, "4.00", "3.30", "3.50"),
        RawMessage("alpha", wire.alpha_end(6, T0 + 500, "A-EV"), T0 + 500),
    ]


async def _log(pipe: FeedPipeline, market_id: str) -> list[MarketChange]:
    changes, _ = await pipe.control.recorder.store.list(market_id, 1000, "")
    return changes


async def test_writer_log_equals_the_inline_log() -> None:
    inline, _, _ = await make_pipeline()
    derived, _, _ = await make_pipeline(log_from_bus=True)
    for pipe in (inline, derived):
        summary = await pipe.ingest(_messages())
        assert summary.accepted == 6, summary
    expected = await _log(inline, "ev:mr")
    assert {c.kind for c in expected} == {"PRICE", "STATUS"} and len(expected) >= 8
    assert await _log(derived, "ev:mr") == []  # left to the writer: nothing appended inline
    bus = derived.bus
    assert isinstance(bus, ListBus)
    records = [m.value for m in bus.messages if m.topic in (TOPIC_ODDS, TOPIC_MARKET_CHANGES)]
    writer = ChangeLogWriter(derived.control.recorder.store)
    half = len(records) // 2
    await writer.write(records[:half])  # two batches, as the consumer fetches them
    await writer.write(records[half:])
    assert await _log(derived, "ev:mr") == expected
    assert writer.skipped == 0 and writer.entries == sum(len(entries_of_record(r)) for r in records)
    # a redelivered batch (a writer that died before its commit) rewrites the same rows
    await writer.write(records[:half])
    assert await _log(derived, "ev:mr") == expected


class FlakyLog(MemoryMarketChangeLog):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def append(self, changes: Sequence[MarketChange]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("cassandra unavailable")
        await super().append(changes)


async def test_failed_append_is_retried_not_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "RETRY_FIRST_S", 0.001)
    store = FlakyLog(failures=3)
    writer = ChangeLogWriter(store)
    assert await writer.write([changes_to_json([_change(1), _change(1, "a")])]) == 2
    assert store.calls == 4
    page, _ = await store.list("m1", 10, "")
    assert [c.selection_id for c in page] == ["h", "a"]


async def test_append_that_never_succeeds_keeps_the_batch_uncommitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "RETRY_FIRST_S", 0.001)
    monkeypatch.setattr(changelog, "RETRY_MAX_S", 0.001)
    writer = ChangeLogWriter(FlakyLog(failures=10**9))
    with pytest.raises(TimeoutError):  # still retrying: the consumer never asks for the next batch
        await asyncio.wait_for(writer.write([changes_to_json([_change(1)])]), 0.2)
    assert writer.entries == 0


async def test_undecodable_records_are_counted_and_skipped() -> None:
    store = MemoryMarketChangeLog()
    writer = ChangeLogWriter(store)
    good = changes_to_json([_change(2)])
    assert await writer.write([b"not json", b'{"market_id": "m1"}', b"[1]", good]) == 1
    assert writer.skipped == 3
    page, _ = await store.list("m1", 10, "")
    assert page == [_change(2)]


async def test_records_sharing_a_row_key_stay_separate_rows_whatever_the_batch() -> None:
    """A write's entries and a provider switch's, same (market, version, at), in two records: the same two
    rows whether the records arrive in one batch or in two (a redelivery cut elsewhere adds nothing)."""
    write = odds_json(state("m1", 3), [_change(3), _change(3, "a")])
    switch = changes_to_json([MarketChange("m1", "", "PROVIDER", "alpha", "bravo", "feed-router", "GAPS", 3, T0 + 3)])
    together, apart = MemoryMarketChangeLog(), MemoryMarketChangeLog()
    await ChangeLogWriter(together).write([write, switch])
    for value in (write, switch):
        await ChangeLogWriter(apart).write([value])
    await ChangeLogWriter(apart).write([write, switch])  # the redelivery, as one batch
    expected, _ = await apart.list("m1", 10, "")
    got, _ = await together.list("m1", 10, "")
    assert len(got) == 3 and sorted(got, key=repr) == sorted(expected, key=repr)
    assert len(ChangeLogWriter.appends([entries_of_record(write), entries_of_record(switch)])) == 2
