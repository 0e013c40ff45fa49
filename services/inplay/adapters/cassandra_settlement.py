"""The settlement store in Cassandra (tables of migration 0002_settlement.cql).

Append-only, no LWT. Bet rows of a run are grouped by partition ((run_id, bucket)) into unlogged batches
(one single-partition mutation each), sent concurrently with a cap on in-flight requests; reads page with
the driver's paging state.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra.query import BatchStatement, BatchType

from inplay.adapters.cassandra_bridge import bridge, idempotent_preparer
from inplay.core import LegOutcome
from inplay.domain.settlement.model import (
    BetSettlementRow,
    Checkpoint,
    Results,
    RunMark,
    RunRecord,
    RunStats,
    RunView,
    fold_run,
    outcome_from_name,
    outcome_name,
)
from inplay.model import BetState, RunKind

BUCKETS = 64
MAX_BATCH_ROWS = 100
MAX_IN_FLIGHT = 128
WRITE_ATTEMPTS = 3
# Bucket reads in flight when a run's rows are read back (priors of the next run).
READ_WINDOW = 8
WRITE_BACKOFF_S = 0.2


def bucket_of(bet_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(bet_id.encode(), digest_size=2).digest(), "big") % BUCKETS


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d")


class CassandraSettlementStore:
    @classmethod
    def for_ledger(cls, ledger: Any) -> CassandraSettlementStore:
        """Over the ledger's session, counting an event's bets in the ledger's by-event table."""
        table = getattr(ledger, "BETS_BY_EVENT_TABLE", "bets_by_event")
        return cls(
            ledger.session,
            count_query=f"SELECT COUNT(*) FROM {table} WHERE event_id = ? AND bucket = ?",
            count_buckets=int(getattr(ledger, "EVENT_BUCKETS", 64)),
        )

    def __init__(self, session: Any, *, count_query: str | None = None, count_buckets: int = 0) -> None:
        """``count_query``/``count_buckets``: how to count an event's bets in the ledger's by-event table
        (a ``SELECT COUNT(*) ... WHERE event_id = ? AND bucket = ?`` per bucket); None = do not count."""
        self._session = session
        p = idempotent_preparer(session)
        self._insert_run = p(
            "INSERT INTO settlement_runs (event_id, run_id, kind, started_at_ms, request_id, target_run_id, "
            "results, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_day = p("INSERT INTO settlement_runs_by_day (day, run_id, event_id) VALUES (?, ?, ?)")
        self._select_runs = p(
            "SELECT run_id, kind, started_at_ms, request_id, target_run_id, results, reason "
            "FROM settlement_runs WHERE event_id = ?"
        )
        self._insert_mark = p(
            "INSERT INTO settlement_run_marks (event_id, run_id, mark, at_ms, fence, bets_total, "
            "bets_processed, bets_still_open, bets_changed, payouts_minor, negative_balance_accounts, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._select_marks = p(
            "SELECT run_id, mark, at_ms, fence, bets_total, bets_processed, bets_still_open, bets_changed, "
            "payouts_minor, negative_balance_accounts, error FROM settlement_run_marks WHERE event_id = ?"
        )
        self._insert_cp = p(
            "INSERT INTO settlement_checkpoints (run_id, phase, page_key, at_ms, bet_ids, bets_total, "
            "bets_processed, bets_still_open, bets_changed, payouts_minor, negative_balance_accounts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        cp_columns = (
            "phase, page_key, at_ms, bets_total, bets_processed, bets_still_open, bets_changed, payouts_minor, "
            "negative_balance_accounts"
        )
        self._select_cp = p(f"SELECT {cp_columns} FROM settlement_checkpoints WHERE run_id = ?")
        self._select_cp_ids = p(f"SELECT {cp_columns}, bet_ids FROM settlement_checkpoints WHERE run_id = ?")
        self._insert_bet = p(
            "INSERT INTO settlement_bets (run_id, bucket, bet_id, account_id, status, return_minor, "
            "delta_minor, kind, leg_outcomes, event_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._select_bets = p(
            "SELECT bet_id, account_id, status, return_minor, delta_minor, kind, leg_outcomes, event_ids "
            "FROM settlement_bets WHERE run_id = ? AND bucket = ?"
        )
        self._select_some_bets = p(
            "SELECT bet_id, account_id, status, return_minor, delta_minor, kind, leg_outcomes, event_ids "
            "FROM settlement_bets WHERE run_id = ? AND bucket = ? AND bet_id IN ?"
        )
        self._insert_request = p(
            "INSERT INTO settlement_requests (event_id, request_id, at_ms, payload) VALUES (?, ?, ?, ?)"
        )
        self._select_request = p(
            "SELECT payload FROM settlement_requests WHERE event_id = ? AND request_id = ? LIMIT 1"
        )
        self._select_day = p("SELECT run_id, event_id FROM settlement_runs_by_day WHERE day = ?")
        self._count = p(count_query) if count_query else None
        self._count_buckets = count_buckets

    async def _exec(self, stmt: Any, params: Any = None) -> list[Any]:
        future = await bridge(self._session.execute_async(stmt, params))
        return list(future.result())

    async def _exec_all(self, statements: Sequence[Any]) -> None:
        """Every statement, MAX_IN_FLIGHT at a time; one that failed (a timeout, the driver's push-back
        of an overloaded node) is written again up to WRITE_ATTEMPTS times: every row here is
        deterministic, so a second write of a landed row rewrites the same cells."""
        sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        for stmt in statements:
            # Deterministic rows: eligible for the driver's speculative execution (a stalled coordinator
            # holds a page no longer than the speculation delay; docs/reliability.md).
            stmt.is_idempotent = True

        async def one(stmt: Any) -> None:
            async with sem:
                for attempt in range(WRITE_ATTEMPTS):
                    try:
                        await bridge(self._session.execute_async(stmt))
                        return
                    except Exception:
                        if attempt + 1 == WRITE_ATTEMPTS:
                            raise
                        await asyncio.sleep(WRITE_BACKOFF_S * 2**attempt)

        await asyncio.gather(*(one(s) for s in statements))

    # --- runs ------------------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        await asyncio.gather(
            self._exec(
                self._insert_run,
                (
                    run.event_id,
                    run.run_id,
                    int(run.kind),
                    run.started_at_ms,
                    run.request_id,
                    run.target_run_id,
                    run.results.to_json(),
                    run.reason,
                ),
            ),
            self._exec(self._insert_day, (day_of(run.started_at_ms), run.run_id, run.event_id)),
        )

    async def mark_run(self, event_id: str, mark: RunMark) -> None:
        s = mark.stats
        await self._exec(
            self._insert_mark,
            (
                event_id,
                mark.run_id,
                mark.mark,
                mark.at_ms,
                mark.fence,
                s.bets_total,
                s.bets_processed,
                s.bets_still_open,
                s.bets_changed,
                s.payouts_minor,
                list(s.negative_balance_accounts),
                mark.error,
            ),
        )

    async def event_runs(self, event_id: str) -> list[RunView]:
        runs_rows, mark_rows = await asyncio.gather(
            self._exec(self._select_runs, (event_id,)), self._exec(self._select_marks, (event_id,))
        )
        marks: dict[str, list[RunMark]] = {}
        for m in mark_rows:
            marks.setdefault(m.run_id, []).append(
                RunMark(
                    run_id=m.run_id,
                    mark=m.mark,
                    at_ms=m.at_ms,
                    fence=m.fence or 0,
                    stats=_stats(m),
                    error=m.error or "",
                )
            )
        records = [
            RunRecord(
                run_id=r.run_id,
                event_id=event_id,
                kind=RunKind(r.kind),
                started_at_ms=r.started_at_ms,
                request_id=r.request_id or "",
                target_run_id=r.target_run_id or "",
                results=Results.from_json(r.results or ""),
                reason=r.reason or "",
            )
            for r in runs_rows
        ]
        records.sort(key=lambda r: (r.started_at_ms, r.run_id))
        return [fold_run(r, marks.get(r.run_id, [])) for r in records]

    async def runs_of_day(self, day: str) -> list[tuple[str, str]]:
        """(event_id, run_id) of the runs started on a UTC day (yyyymmdd)."""
        return [(r.event_id, r.run_id) for r in await self._exec(self._select_day, (day,))]

    # --- checkpoints -----------------------------------------------------------------------------------

    async def append_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        await self._exec_all(
            [
                self._insert_cp.bind(
                    (
                        cp.run_id,
                        cp.phase,
                        cp.page_key,
                        cp.at_ms,
                        zlib.compress("\n".join(cp.bet_ids).encode(), 6),
                        cp.stats.bets_total,
                        cp.stats.bets_processed,
                        cp.stats.bets_still_open,
                        cp.stats.bets_changed,
                        cp.stats.payouts_minor,
                        list(cp.stats.negative_balance_accounts),
                    )
                )
                for cp in checkpoints
            ]
        )

    async def checkpoints(self, run_id: str, *, with_bet_ids: bool = False) -> list[Checkpoint]:
        rows = await self._exec(self._select_cp_ids if with_bet_ids else self._select_cp, (run_id,))
        out = []
        for r in rows:
            ids: tuple[str, ...] = ()
            if with_bet_ids and r.bet_ids:
                text = zlib.decompress(r.bet_ids).decode()
                ids = tuple(text.split("\n")) if text else ()
            out.append(Checkpoint(run_id, r.phase, r.page_key, _stats(r), r.at_ms, ids))
        return out

    # --- bet rows --------------------------------------------------------------------------------------

    async def append_bet_rows(self, rows: Sequence[BetSettlementRow]) -> None:
        by_partition: dict[tuple[str, int], list[BetSettlementRow]] = {}
        for row in rows:
            by_partition.setdefault((row.run_id, bucket_of(row.bet_id)), []).append(row)
        statements: list[Any] = []
        for (_, bucket), part in by_partition.items():
            for start in range(0, len(part), MAX_BATCH_ROWS):
                chunk = part[start : start + MAX_BATCH_ROWS]
                if len(chunk) == 1:
                    statements.append(self._insert_bet.bind(self._bet_params(chunk[0], bucket)))
                    continue
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for row in chunk:
                    batch.add(self._insert_bet, self._bet_params(row, bucket))
                statements.append(batch)
        await self._exec_all(statements)

    @staticmethod
    def _bet_params(row: BetSettlementRow, bucket: int) -> tuple[Any, ...]:
        return (
            row.run_id,
            bucket,
            row.bet_id,
            row.account_id,
            int(row.status),
            row.return_minor,
            row.delta_minor,
            row.kind,
            _outcome_names(row.leg_outcomes),
            list(row.event_ids),
        )

    async def bet_rows(self, run_id: str, bet_ids: Sequence[str]) -> dict[str, BetSettlementRow]:
        by_bucket: dict[int, list[str]] = {}
        for bet_id in bet_ids:
            by_bucket.setdefault(bucket_of(bet_id), []).append(bet_id)
        found = await asyncio.gather(
            *(self._exec(self._select_some_bets, (run_id, b, ids)) for b, ids in sorted(by_bucket.items()))
        )
        return {r.bet_id: _bet_row(run_id, r) for rows in found for r in rows}

    async def run_bet_rows(self, run_id: str, page_size: int = 5000) -> AsyncIterator[list[BetSettlementRow]]:
        """Every row of a run, in pages (in no particular order), READ_WINDOW bucket reads in flight: the
        next run of a 500 000-bet event reads its predecessors' rows before its first page."""
        pending = list(range(BUCKETS))
        in_flight: set[asyncio.Task[tuple[int, list[BetSettlementRow], Any]]] = set()

        async def read(bucket: int, paging_state: Any) -> tuple[int, list[BetSettlementRow], Any]:
            stmt = self._select_bets.bind((run_id, bucket))
            stmt.fetch_size = page_size
            result = (await bridge(self._session.execute_async(stmt, paging_state=paging_state))).result()
            return bucket, [_bet_row(run_id, r) for r in result.current_rows], result.paging_state

        try:
            while pending or in_flight:
                while pending and len(in_flight) < READ_WINDOW:
                    in_flight.add(asyncio.get_running_loop().create_task(read(pending.pop(0), None)))
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    in_flight.discard(task)
                    bucket, rows, paging_state = task.result()
                    if paging_state:
                        in_flight.add(asyncio.get_running_loop().create_task(read(bucket, paging_state)))
                    if rows:
                        yield rows
        finally:
            for task in in_flight:
                task.cancel()

    # --- requests --------------------------------------------------------------------------------------

    async def put_request(self, event_id: str, request_id: str, payload: str) -> None:
        await self._exec(self._insert_request, (event_id, request_id, time.time_ns() // 1_000_000, payload))

    async def get_request(self, event_id: str, request_id: str) -> str | None:
        rows = await self._exec(self._select_request, (event_id, request_id))
        return str(rows[0].payload) if rows else None

    async def count_event_bets(self, event_id: str) -> int | None:
        if self._count is None:
            return None
        counts = await asyncio.gather(*(self._exec(self._count, (event_id, b)) for b in range(self._count_buckets)))
        return sum(int(rows[0][0]) for rows in counts if rows)


@functools.lru_cache(maxsize=4096)
def _outcome_names(outcomes: tuple[LegOutcome, ...]) -> list[str]:
    """Leg outcome names of a row (a run's rows share few combinations; the list is only read by the
    driver)."""
    return [outcome_name(o) for o in outcomes]


def _bet_row(run_id: str, r: Any) -> BetSettlementRow:
    return BetSettlementRow(
        run_id=run_id,
        bet_id=r.bet_id,
        account_id=r.account_id,
        status=BetState(r.status),
        return_minor=r.return_minor,
        delta_minor=r.delta_minor,
        kind=r.kind,
        leg_outcomes=tuple(outcome_from_name(o) for o in (r.leg_outcomes or ())),
        event_ids=tuple(r.event_ids or ()),
    )


def _stats(row: Any) -> RunStats:
    return RunStats(
        bets_total=row.bets_total or 0,
        bets_processed=row.bets_processed or 0,
        bets_still_open=row.bets_still_open or 0,
        bets_changed=row.bets_changed or 0,
        payouts_minor=row.payouts_minor or 0,
        negative_balance_accounts=tuple(row.negative_balance_accounts or ()),
    )


def request_payload(data: dict[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
