"""The change-log writer: the market change log derived from the odds topics, off the ingest hot path.

With ``INPLAY_FEED_CHANGE_LOG=kafka`` the feed pipeline no longer appends change rows itself: every entry it
decides is already in a Kafka record it publishes (an ``inplay.odds.v1`` record carries the entries of its
write; ``inplay.market-changes.v1`` carries the entries with no state of their own, a provider switch's
``PROVIDER`` rows). This writer (``python -m inplay.worker changelog``, its own pods) consumes both topics
and appends the entries to the change log.

Guarantees:

- **Nothing skipped.** A batch's offsets are committed only after its append succeeded; a failed append is
  retried (backoff up to ``RETRY_MAX_S``) until it succeeds, never passed over. A writer that dies
  mid-batch leaves the batch uncommitted: the next writer of the group reads it again.
- **Exactly once in effect.** Rows are deterministic ((market, version, at) and a digest of the body: the
  adapter's key), so a redelivered batch rewrites identical rows; and operator writes, which still append
  directly (read-your-writes for AdminService), rewrite the rows their records carry.
- **Order.** Both topics are keyed by market id, so one market's records arrive in publish order, which is
  the cache's write order; a batch keeps that order into the append.
- **Lag, not loss.** The log trails the cache by the consumer lag (seconds at most under load; measured in
  docs/odds-pipeline.md). Reading a market's changes right after a write may miss the newest entries.

An undecodable record is not a change: it is counted and skipped (only Inplay writes these topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from prometheus_client import Counter as PromCounter

from inplay.domain.feed import fastjson
from inplay.domain.markets import MarketChangeLog
from inplay.model import MarketChange

log = logging.getLogger("inplay.feed.changelog")

CHANGELOG_ENTRIES = PromCounter("inplay_changelog_entries_total", "Change entries appended by the change-log writer")
CHANGELOG_SKIPPED = PromCounter("inplay_changelog_skipped_total", "Records the change-log writer could not decode")
CHANGELOG_RETRIES = PromCounter("inplay_changelog_append_retries_total", "Failed change-log appends (retried)")

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

# Modes of INPLAY_FEED_CHANGE_LOG.
INLINE = "inline"
KAFKA = "kafka"
MODES = (INLINE, KAFKA)


class BatchSource(Protocol):
    """A consumer of the odds topics: batches in partition order, a batch committed when the next is asked
    for (``inplay.adapters.kafka_bus.KafkaConsumerLoop``)."""

    def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]: ...

    async def close(self) -> None: ...


def _entry(market_id: str, raw: Any) -> MarketChange:
    return MarketChange(
        market_id=str(raw.get("market_id") or market_id),
        selection_id=str(raw["selection_id"]),
        kind=str(raw["kind"]),
        old_value=str(raw["old_value"]),
        new_value=str(raw["new_value"]),
        source=str(raw["source"]),
        reason=str(raw["reason"]),
        version=int(raw["version"]),
        at_ms=int(raw["at_ms"]),
    )


def entries_of_record(value: bytes) -> list[MarketChange]:
    """The change entries of one odds or market-changes record (both carry ``market_id`` and ``changes``).
    Raises ``ValueError``/``KeyError``/``TypeError`` on a record that is not one."""
    doc = fastjson.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("changes"), list):
        raise ValueError("not an odds or market-changes record")
    market_id = str(doc["market_id"])
    return [_entry(market_id, raw) for raw in doc["changes"]]


class ChangeLogWriter:
    """Appends the entries of each consumed batch (one append per batch), retrying until it succeeds."""

    def __init__(self, store: MarketChangeLog) -> None:
        self.store = store
        self.entries = 0
        self.skipped = 0

    def decode(self, values: Sequence[bytes]) -> list[list[MarketChange]]:
        """The entries of each decodable record (one record: one market write's entries)."""
        out: list[list[MarketChange]] = []
        for value in values:
            try:
                entries = entries_of_record(value)
            except (ValueError, KeyError, TypeError):
                self.skipped += 1
                CHANGELOG_SKIPPED.inc()
                log.warning("change-log writer: undecodable record skipped", extra={"bytes": len(value)})
                continue
            if entries:
                out.append(entries)
        return out

    @staticmethod
    def appends(records: Sequence[list[MarketChange]]) -> list[list[MarketChange]]:
        """The records in as few appends as possible, each record its own row whatever the batch: the store
        makes one row of the entries of one (market, version, at) in one append, and two records can share
        that key (a write's entries on the odds topic, a provider switch's at the same version and
        millisecond on the market-changes topic). A record whose key is already in the current append
        starts the next, so a redelivered batch, cut elsewhere, rewrites the same rows."""
        out: list[list[MarketChange]] = [[]]
        keys: set[tuple[str, int, int]] = set()
        for entries in records:
            key = (entries[0].market_id, entries[0].version, entries[0].at_ms)
            if key in keys:
                out.append([])
                keys.clear()
            keys.add(key)
            out[-1] += entries
        return [group for group in out if group]

    async def write(self, values: Sequence[bytes]) -> int:
        """Appends the entries of ``values`` (one batch); returns how many. Retries a failed append with
        backoff until it succeeds (cancellation stops it: the batch stays uncommitted)."""
        appends = self.appends(self.decode(values))
        written = 0
        for changes in appends:
            await self._append(changes)
            written += len(changes)
        self.entries += written
        CHANGELOG_ENTRIES.inc(written)
        return written

    async def _append(self, changes: list[MarketChange]) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                await self.store.append(changes)
                return
            except Exception:
                CHANGELOG_RETRIES.inc()
                log.warning("change-log append failed: retried", exc_info=True, extra={"entries": len(changes)})
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    async def run(self, open_source: Callable[[], Awaitable[BatchSource]]) -> None:
        """Writes every consumed batch until cancelled. A consume or commit error (a rebalance, a broker
        restart) closes the consumer and opens a new one, which resumes from the committed offsets."""
        while True:
            try:
                source = await open_source()
            except Exception:
                log.exception("change-log writer: cannot open the consumer; retrying")
                await asyncio.sleep(RETRY_MAX_S)
                continue
            try:
                async for batch in source.batches():
                    await self.write([value for _, value in batch])
            except Exception:
                log.exception("change-log writer: consumer failed; restarting it (uncommitted batches are redelivered)")
                await asyncio.sleep(RETRY_FIRST_S)
            finally:
                with contextlib.suppress(Exception):
                    await source.close()


__all__ = ["INLINE", "KAFKA", "MODES", "BatchSource", "ChangeLogWriter", "entries_of_record"]
