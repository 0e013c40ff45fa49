"""The market change log in Cassandra (table ``market_changes``, migration 0003): one partition per market,
clustered oldest first. Appends pack rows into small unlogged batches sent concurrently; reads page with the
driver's paging state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cassandra.query import BatchStatement, BatchType

from inplay import pagetoken
from inplay.adapters.cassandra_bridge import bridge
from inplay.model import MarketChange

MAX_BATCH_ROWS = 30


def with_seq(changes: Sequence[MarketChange]) -> list[tuple[int, MarketChange]]:
    """Numbers the changes of each (market, version, at) group in order: the rows' clustering position."""
    counters: dict[tuple[str, int, int], int] = {}
    out = []
    for c in changes:
        key = (c.market_id, c.version, c.at_ms)
        n = counters.get(key, 0)
        counters[key] = n + 1
        out.append((n, c))
    return out


class CassandraMarketChangeLog:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._insert = session.prepare(
            "INSERT INTO market_changes (market_id, version, at_ms, seq, kind, selection_id, old_value, "
            "new_value, source, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._select = session.prepare(
            "SELECT market_id, version, at_ms, kind, selection_id, old_value, new_value, source, reason "
            "FROM market_changes WHERE market_id = ?"
        )

    async def append(self, changes: Sequence[MarketChange]) -> None:
        """Rows of one market stay together; markets are packed into unlogged batches of up to
        ``MAX_BATCH_ROWS`` rows (~4 KB, under Cassandra's batch warning threshold), sent concurrently: one
        request per ~30 rows instead of one per market write. Unlogged: a partial failure raises and the
        caller retries the whole append, which rewrites identical rows (deterministic keys)."""
        by_market: dict[str, list[tuple[int, MarketChange]]] = {}
        for seq, c in with_seq(changes):
            by_market.setdefault(c.market_id, []).append((seq, c))
        batches: list[list[tuple[int, MarketChange]]] = [[]]
        for rows in by_market.values():
            if batches[-1] and len(batches[-1]) + len(rows) > MAX_BATCH_ROWS:
                batches.append([])
            batches[-1].extend(rows)
        futures = []
        for part in batches:
            if not part:
                continue
            if len(part) == 1:
                stmt: Any = self._insert.bind(self._row(*part[0]))
            else:
                stmt = BatchStatement(batch_type=BatchType.UNLOGGED)
                for seq, c in part:
                    stmt.add(self._insert, self._row(seq, c))
            futures.append(bridge(self._session.execute_async(stmt)))
        if futures:
            await asyncio.gather(*futures)

    @staticmethod
    def _row(seq: int, c: MarketChange) -> tuple[Any, ...]:
        return (
            c.market_id,
            c.version,
            c.at_ms,
            seq,
            c.kind,
            c.selection_id,
            c.old_value,
            c.new_value,
            c.source,
            c.reason,
        )

    async def list(self, market_id: str, page_size: int, page_token: str) -> tuple[list[MarketChange], str]:
        stmt = self._select.bind((market_id,))
        stmt.fetch_size = page_size
        # Signed, query-bound tokens: a forged one never reaches the driver (inplay.pagetoken).
        paging_state = pagetoken.decode(f"changes|{market_id}", page_token)
        future = self._session.execute_async(stmt, paging_state=paging_state)
        await bridge(future)
        result = future.result()
        rows = list(result.current_rows)
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
            for r in rows
        ]
        token = pagetoken.encode(f"changes|{market_id}", result.paging_state)
        return changes, token


__all__ = ["CassandraMarketChangeLog"]
