"""The market change log in Cassandra: one partition per market, oldest first.

Written to ``market_change_rows`` (migration 0007): **one row per market write** (market, version, at), its
entries in order in one JSON column, instead of a row per entry: one write often changes several selections
and the status at once. Measured on the ingest bench (docs/odds-pipeline.md, fourth round): Cassandra CPU per
update 25 µs against 31 µs for the row-per-entry table (medians of 5 interleaved runs); most of Cassandra's
cost is per market write, not per entry. Rows pack into small unlogged batches sent concurrently.

``market_changes`` (migration 0003, a row per entry) is no longer written. Reads return its rows first: the
log moved to the new table on upgrade, so every row there is older than the new table's.

Guarantees: insert-only; a retried append writes the same rows (deterministic key and body), so the caller
retries a failed append whole. Entries of one (market, version, at) in one append keep their order. Two
appends that carry different entries under the same (market, version, at) (two chunks in one millisecond:
a failover's PROVIDER entries at the current version after a price write) are both kept, told apart by a
digest of the body (the per-entry table's (version, at, seq) key overwrote the first with the second)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from cassandra.query import BatchStatement, BatchType

from inplay import pagetoken
from inplay.adapters.cassandra_bridge import bridge
from inplay.domain.feed import fastjson
from inplay.model import MarketChange

# Rows per unlogged batch, and their body bytes (Cassandra warns above 5 KiB per multi-partition batch).
MAX_BATCH_ROWS = 30
MAX_BATCH_BYTES = 4_000
# Page-token phases: legacy rows (driver paging state follows), then rows of the new table.
_LEGACY = b"L"
_ROWS = b"R"
_MIN_PART = -(2**63)

_Group = tuple[str, int, int]  # (market_id, version, at_ms): one row
_Row = tuple[str, int, int, int, str]  # (market_id, version, at_ms, part, body)
# Where a page of the new table starts: [version, at_ms, part, entries of that row already returned]. (Module
# aliases: inside the class, ``list`` is the port's method.)
_Position = list[int]
_Changes = list[MarketChange]


def part_of(body: str) -> int:
    """The row's ``part``: a signed 64-bit digest of its body (the same body, the same row)."""
    return int.from_bytes(hashlib.blake2b(body.encode(), digest_size=8).digest(), "big", signed=True)


def group_rows(changes: Sequence[MarketChange]) -> list[_Row]:
    """One row per (market, version, at), in first-seen order, its entries' JSON in their order."""
    groups: dict[_Group, list[list[str]]] = {}
    for c in changes:
        groups.setdefault((c.market_id, c.version, c.at_ms), []).append(
            [c.kind, c.selection_id, c.old_value, c.new_value, c.source, c.reason]
        )
    out: list[_Row] = []
    for (mid, version, at), entries in groups.items():
        body = fastjson.dumps_str(entries)
        out.append((mid, version, at, part_of(body), body))
    return out


def entries_of(market_id: str, version: int, at_ms: int, body: str) -> list[MarketChange]:
    return [
        MarketChange(market_id, sel, kind, old, new, source, reason, version, at_ms)
        for kind, sel, old, new, source, reason in fastjson.loads(body)
    ]


class CassandraMarketChangeLog:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._insert = session.prepare(
            "INSERT INTO market_change_rows (market_id, version, at_ms, part, body) VALUES (?, ?, ?, ?, ?)"
        )
        self._rows_from = session.prepare(
            "SELECT version, at_ms, part, body FROM market_change_rows "
            "WHERE market_id = ? AND (version, at_ms, part) >= (?, ?, ?) LIMIT ?"
        )
        self._legacy = session.prepare(
            "SELECT market_id, version, at_ms, kind, selection_id, old_value, new_value, source, reason "
            "FROM market_changes WHERE market_id = ?"
        )

    async def append(self, changes: Sequence[MarketChange]) -> None:
        """Rows of one market stay together; markets are packed into unlogged batches of up to
        ``MAX_BATCH_ROWS`` rows and ``MAX_BATCH_BYTES`` of bodies, sent concurrently. Unlogged: a partial
        failure raises and the caller retries the whole append, which rewrites identical rows."""
        by_market: dict[str, list[_Row]] = {}
        for row in group_rows(changes):
            by_market.setdefault(row[0], []).append(row)
        batches: list[list[_Row]] = [[]]
        size = 0
        for rows in by_market.values():
            row_bytes = sum(len(row[4]) for row in rows)
            if batches[-1] and (len(batches[-1]) + len(rows) > MAX_BATCH_ROWS or size + row_bytes > MAX_BATCH_BYTES):
                batches.append([])
                size = 0
            batches[-1].extend(rows)
            size += row_bytes
        futures = []
        for part in batches:
            if not part:
                continue
            if len(part) == 1:
                stmt: Any = self._insert.bind(part[0])
            else:
                stmt = BatchStatement(batch_type=BatchType.UNLOGGED)
                for row in part:
                    stmt.add(self._insert, row)
            futures.append(bridge(self._session.execute_async(stmt)))
        if futures:
            await asyncio.gather(*futures)

    async def list(self, market_id: str, page_size: int, page_token: str) -> tuple[list[MarketChange], str]:
        """A page of at most ``page_size`` entries, oldest first: the legacy rows, then the new table's.
        The token (signed, bound to the market: :mod:`inplay.pagetoken`) says where the next page starts:
        ``L`` + the driver's paging state in the legacy table, or ``R`` + [version, at, part, entries
        already returned of that row]. Empty on the last page."""
        scope = f"changes|{market_id}"
        state = pagetoken.decode(scope, page_token)
        page: list[MarketChange] = []
        start: list[int] = [0, 0, _MIN_PART, 0]
        if state is None or state[:1] == _LEGACY:
            paging = state[1:] if state else None
            page, paging = await self._legacy_page(market_id, page_size, paging or None)
            if paging:
                return page, pagetoken.encode(scope, _LEGACY + paging)
        elif state[:1] == _ROWS:
            start = [int(x) for x in fastjson.loads(state[1:])]
        more, nxt = await self._rows_page(market_id, page_size - len(page), start, page)
        return page, (pagetoken.encode(scope, _ROWS + fastjson.dumps(nxt)) if more else "")

    async def _legacy_page(self, market_id: str, page_size: int, paging: bytes | None) -> tuple[_Changes, bytes | None]:
        stmt = self._legacy.bind((market_id,))
        stmt.fetch_size = page_size
        future = self._session.execute_async(stmt, paging_state=paging)
        await bridge(future)
        result = future.result()
        changes = [
            MarketChange(
                market_id=r.market_id,
                selection_id=r.selection_id,
                kind=r.kind,
                old_value=r.old_value or "",
                new_value=r.new_value or "",
                source=r.source or "",
                reason=r.reason or "",
                version=int(r.version),
                at_ms=int(r.at_ms),
            )
            for r in result.current_rows
        ]
        return changes, result.paging_state

    async def _rows_page(self, market_id: str, room: int, start: _Position, page: _Changes) -> tuple[bool, _Position]:
        """Appends up to ``room`` entries from the row (version, at, part) = ``start[:3]`` on, skipping the
        first ``start[3]`` entries of that row; returns whether entries remain and where they start. Every
        row holds at least one entry, so ``room + 1`` rows always reach past the page."""
        version, at, part, skip = start
        bound = self._rows_from.bind((market_id, version, at, part, room + 1))
        response = await bridge(self._session.execute_async(bound))
        for r in response.result().current_rows:
            key = [int(r.version), int(r.at_ms), int(r.part)]
            done = skip if key == [version, at, part] else 0
            entries = entries_of(market_id, key[0], key[1], r.body)[done:]
            if not entries:
                continue
            if room <= 0:
                return True, [*key, done]
            taken = entries[:room]
            page.extend(taken)
            room -= len(taken)
            if len(taken) < len(entries):
                return True, [*key, done + len(taken)]
        return False, []


__all__ = ["CassandraMarketChangeLog", "entries_of", "group_rows", "part_of"]
