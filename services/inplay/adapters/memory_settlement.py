"""In-memory settlement store and lock service (embedded demo, unit tests of pure logic)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from inplay.domain.settlement.model import (
    BetSettlementRow,
    Checkpoint,
    RunMark,
    RunRecord,
    RunView,
    fold_run,
)
from inplay.ports import Ledger


class MemorySettlementStore:
    def __init__(self, ledger: Ledger | None = None) -> None:
        self._runs: dict[str, dict[str, RunRecord]] = {}
        self._marks: dict[str, dict[tuple[str, str, int], RunMark]] = {}
        self._checkpoints: dict[str, dict[tuple[str, str], Checkpoint]] = {}
        self._rows: dict[str, dict[str, BetSettlementRow]] = {}
        self._requests: dict[tuple[str, str], str] = {}
        self._ledger = ledger

    async def create_run(self, run: RunRecord) -> None:
        self._runs.setdefault(run.event_id, {})[run.run_id] = run

    async def mark_run(self, event_id: str, mark: RunMark) -> None:
        self._marks.setdefault(event_id, {})[(mark.run_id, mark.mark, mark.at_ms)] = mark

    async def event_runs(self, event_id: str) -> list[RunView]:
        records = sorted(self._runs.get(event_id, {}).values(), key=lambda r: (r.started_at_ms, r.run_id))
        marks = self._marks.get(event_id, {})
        return [fold_run(r, [m for m in marks.values() if m.run_id == r.run_id]) for r in records]

    async def append_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        for cp in checkpoints:
            self._checkpoints.setdefault(cp.run_id, {})[(cp.phase, cp.page_key)] = cp

    async def checkpoints(self, run_id: str, *, with_bet_ids: bool = False) -> list[Checkpoint]:
        rows = sorted(self._checkpoints.get(run_id, {}).values(), key=lambda c: (c.phase, c.page_key))
        return rows if with_bet_ids else [replace(c, bet_ids=()) for c in rows]

    async def append_bet_rows(self, rows: Sequence[BetSettlementRow]) -> None:
        for row in rows:
            self._rows.setdefault(row.run_id, {})[row.bet_id] = row

    async def bet_rows(self, run_id: str, bet_ids: Sequence[str]) -> dict[str, BetSettlementRow]:
        rows = self._rows.get(run_id, {})
        return {b: rows[b] for b in bet_ids if b in rows}

    async def run_bet_rows(self, run_id: str, page_size: int = 5000) -> AsyncIterator[list[BetSettlementRow]]:
        rows = sorted(self._rows.get(run_id, {}).values(), key=lambda r: r.bet_id)
        for start in range(0, len(rows), page_size):
            yield rows[start : start + page_size]

    async def put_request(self, event_id: str, request_id: str, payload: str) -> None:
        self._requests[(event_id, request_id)] = payload

    async def get_request(self, event_id: str, request_id: str) -> str | None:
        return self._requests.get((event_id, request_id))

    async def count_event_bets(self, event_id: str) -> int | None:
        if self._ledger is None:
            return None
        n = 0
        async for page in self._ledger.event_bets(event_id):
            n += len(page)
        return n


_fences = itertools.count(1)


@dataclass
class _Held:
    token: int
    expires_at: float


class MemoryLease:
    def __init__(self, locks: MemoryLocks, key: str, token: int, ttl_ms: int) -> None:
        self._locks = locks
        self._key = key
        self._token = token
        self._ttl = ttl_ms / 1000

    @property
    def fence(self) -> int:
        return self._token

    async def check(self) -> bool:
        held = self._locks.held.get(self._key)
        now = time.monotonic()
        if held is None or held.token != self._token or held.expires_at < now:
            return False
        held.expires_at = now + self._ttl
        return True

    async def release(self) -> None:
        held = self._locks.held.get(self._key)
        if held is not None and held.token == self._token:
            del self._locks.held[self._key]


class MemoryLocks:
    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}

    async def acquire(self, key: str, ttl_ms: int) -> MemoryLease | None:
        now = time.monotonic()
        held = self.held.get(key)
        if held is not None and held.expires_at >= now:
            return None
        token = next(_fences)
        self.held[key] = _Held(token, now + ttl_ms / 1000)
        return MemoryLease(self, key, token, ttl_ms)
