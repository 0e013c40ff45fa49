"""The append-only ledger in Cassandra (or ScyllaDB: same driver, same CQL).

Tables (``cql/0001_ledger.cql``): ``bets`` (by id), ``bets_by_event`` ((event_id, bucket) partitions for
settlement), ``bets_by_account`` (newest first), ``ledger_by_account`` (money, time ordered),
``bet_history`` (every state change of a bet), ``bets_by_idempotency``. No statement here is an UPDATE or a
DELETE.

A placed bet is one LOGGED batch (its rows in every table plus its stake entry): the batch log makes the
rows all-or-nothing, so the ledger never holds a stake without its bet or the reverse. Batches of different
bets run concurrently (bounded), which is how a group commit of N bets costs about one round trip of
latency instead of N. Hot-path writes use ``execute_async`` callbacks bridged to asyncio; reads that page
through many rows run in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cassandra import ConsistencyLevel, WriteTimeout, WriteType
from cassandra.cluster import Cluster, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from inplay.adapters.memory import PLACED_SEQ_KEY, placed_event, stake_entry
from inplay.adapters.migrations import migrate
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.model import BetEvent, BetState, EntryKind, Leg, LedgerEntry, PlacedBet
from inplay.ports import LedgerError

EVENT_BUCKETS = 64
MAX_IN_FLIGHT = 256
BET_COLUMNS = (
    "bet_id, account_id, legs, stake_minor, currency, potential_return_minor, policy, idempotency_key, placed_at_ms"
)

__all__ = ["EVENT_BUCKETS", "PLACED_SEQ_KEY", "CassandraLedger", "event_bucket"]


def event_bucket(bet_id: str) -> int:
    return zlib.crc32(bet_id.encode()) % EVENT_BUCKETS


def _legs_json(bet: PlacedBet) -> str:
    return json.dumps(
        [[lg.market_id, lg.selection_id, lg.odds.num, lg.odds.den, lg.event_id] for lg in bet.legs],
        separators=(",", ":"),
    )


def _bet_from_row(row: Any) -> PlacedBet:
    return PlacedBet(
        bet_id=row.bet_id,
        account_id=row.account_id,
        legs=tuple(Leg(m, s, Odds(n, d), e) for m, s, n, d, e in json.loads(row.legs)),
        stake_minor=row.stake_minor,
        currency=row.currency,
        potential_return_minor=row.potential_return_minor,
        policy=AcceptancePolicy(row.policy),
        idempotency_key=row.idempotency_key,
        placed_at_ms=row.placed_at_ms,
    )


def _token(paging_state: bytes | None) -> str:
    return base64.urlsafe_b64encode(paging_state).decode() if paging_state else ""


def _paging_state(token: str) -> bytes | None:
    return base64.urlsafe_b64decode(token.encode()) if token else None


class CassandraLedger:
    BETS_BY_EVENT_TABLE = "bets_by_event"
    EVENT_BUCKETS = EVENT_BUCKETS

    def __init__(self, cluster: Cluster, session: Session, keyspace: str) -> None:
        self.cluster = cluster
        self.session = session
        self.keyspace = keyspace
        self._limit = asyncio.Semaphore(MAX_IN_FLIGHT)
        level = os.environ.get("INPLAY_CASSANDRA_CONSISTENCY", "LOCAL_ONE")
        self.consistency = getattr(ConsistencyLevel, level)
        p = session.prepare
        self._insert_bet = p(f"INSERT INTO bets ({BET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self._insert_by_event = p(
            f"INSERT INTO bets_by_event (event_id, bucket, {BET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_by_account = p("INSERT INTO bets_by_account (account_id, placed_at_ms, bet_id) VALUES (?, ?, ?)")
        self._insert_entry = p(
            "INSERT INTO ledger_by_account (account_id, created_at_ms, entry_id, kind, amount_minor, currency, "
            "bet_id, reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_history = p(
            "INSERT INTO bet_history (bet_id, seq_key, kind, status, amount_minor, run_id, at_ms, leg_outcomes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_idem = p(
            "INSERT INTO bets_by_idempotency (account_id, idempotency_key, bet_id) VALUES (?, ?, ?)"
        )
        self._select_bet = p(f"SELECT {BET_COLUMNS} FROM bets WHERE bet_id = ?")
        self._select_history = p(
            "SELECT bet_id, seq_key, kind, status, amount_minor, run_id, at_ms, leg_outcomes FROM bet_history "
            "WHERE bet_id = ?"
        )
        self._select_account_bets = p("SELECT bet_id FROM bets_by_account WHERE account_id = ?")
        self._select_event_bucket = p(f"SELECT {BET_COLUMNS} FROM bets_by_event WHERE event_id = ? AND bucket = ?")
        self._select_entries = p(
            "SELECT account_id, created_at_ms, entry_id, kind, amount_minor, currency, bet_id, reference "
            "FROM ledger_by_account WHERE account_id = ?"
        )
        self._select_idem = p(
            "SELECT bet_id FROM bets_by_idempotency WHERE account_id = ? AND idempotency_key = ?"
        )
        for statement in (self._insert_bet, self._insert_by_event, self._insert_entry, self._insert_history):
            statement.consistency_level = self.consistency

    @classmethod
    async def connect(
        cls, hosts: Sequence[str], port: int, keyspace: str, create_schema: bool = True
    ) -> CassandraLedger:
        def build() -> CassandraLedger:
            cluster = Cluster(
                list(hosts),
                port=port,
                protocol_version=5,
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                connect_timeout=5,
            )
            session = cluster.connect()
            session.default_timeout = 20
            if create_schema:
                migrate(session, keyspace)
            else:
                session.set_keyspace(keyspace)
            return cls(cluster, session, keyspace)

        return await asyncio.to_thread(build)

    async def close(self) -> None:
        await asyncio.to_thread(self.cluster.shutdown)

    # --- async bridge --------------------------------------------------------------------------------------

    async def _execute(self, statement: Any, params: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        async with self._limit:
            future: asyncio.Future[Any] = loop.create_future()

            def ok(rows: Any) -> None:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(rows))

            def err(exc: BaseException) -> None:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))

            response: ResponseFuture = self.session.execute_async(statement, params)
            response.add_callbacks(ok, err)
            return await future

    # --- writes --------------------------------------------------------------------------------------------

    def _bet_batch(self, bet: PlacedBet) -> BatchStatement:
        batch = BatchStatement(batch_type=BatchType.LOGGED, consistency_level=self.consistency)
        legs = _legs_json(bet)
        common = (
            bet.bet_id,
            bet.account_id,
            legs,
            bet.stake_minor,
            bet.currency,
            bet.potential_return_minor,
            int(bet.policy),
            bet.idempotency_key,
            bet.placed_at_ms,
        )
        batch.add(self._insert_bet, common)
        bucket = event_bucket(bet.bet_id)
        for event_id in bet.event_ids:
            batch.add(self._insert_by_event, (event_id, bucket, *common))
        batch.add(self._insert_by_account, (bet.account_id, bet.placed_at_ms, bet.bet_id))
        stake = stake_entry(bet)
        batch.add(self._insert_entry, self._entry_params(stake))
        placed = placed_event(bet)
        batch.add(self._insert_history, self._event_params(placed))
        batch.add(self._insert_idem, (bet.account_id, bet.idempotency_key, bet.bet_id))
        return batch

    @staticmethod
    def _entry_params(e: LedgerEntry) -> tuple[Any, ...]:
        return (e.account_id, e.created_at_ms, e.entry_id, int(e.kind), e.amount_minor, e.currency, e.bet_id, e.reference)

    @staticmethod
    def _event_params(ev: BetEvent) -> tuple[Any, ...]:
        return (
            ev.bet_id,
            ev.seq_key,
            ev.kind,
            int(ev.status),
            ev.amount_minor,
            ev.run_id,
            ev.at_ms,
            [int(o) for o in ev.leg_outcomes],
        )

    async def append_bets(self, bets: Sequence[PlacedBet]) -> list[BaseException | None]:
        async def one(bet: PlacedBet) -> BaseException | None:
            try:
                await self._execute(self._bet_batch(bet))
                return None
            except WriteTimeout as exc:
                # The batch log was written: the coordinator will apply the batch. Anything else is unknown
                # or failed, and the caller compensates.
                if getattr(exc, "write_type", None) == WriteType.BATCH:
                    return None
                return exc
            except Exception as exc:
                return exc

        return list(await asyncio.gather(*(one(b) for b in bets)))

    async def append_entries(self, entries: Sequence[LedgerEntry]) -> None:
        try:
            await asyncio.gather(*(self._execute(self._insert_entry, self._entry_params(e)) for e in entries))
        except Exception as exc:
            raise LedgerError(f"ledger entries not (certainly) written: {exc!r}") from exc

    async def append_bet_events(self, events: Sequence[BetEvent]) -> None:
        try:
            await asyncio.gather(*(self._execute(self._insert_history, self._event_params(ev)) for ev in events))
        except Exception as exc:
            raise LedgerError(f"bet history not (certainly) written: {exc!r}") from exc

    # --- reads ---------------------------------------------------------------------------------------------

    async def get_bet(self, bet_id: str) -> PlacedBet | None:
        rows = await self._execute(self._select_bet, (bet_id,))
        return _bet_from_row(rows[0]) if rows else None

    async def bet_history(self, bet_id: str) -> list[BetEvent]:
        rows = await self._execute(self._select_history, (bet_id,))
        return [
            BetEvent(
                bet_id=r.bet_id,
                seq_key=r.seq_key,
                kind=r.kind,
                status=BetState(r.status),
                amount_minor=r.amount_minor,
                run_id=r.run_id or "",
                at_ms=r.at_ms,
                leg_outcomes=tuple(LegOutcome(o) for o in (r.leg_outcomes or [])),
            )
            for r in rows
        ]

    def _page(self, statement: PreparedStatement, params: tuple[Any, ...], size: int, token: str) -> tuple[list[Any], str]:
        bound = statement.bind(params)
        bound.fetch_size = size
        result = self.session.execute(bound, paging_state=_paging_state(token))
        return list(result.current_rows), _token(result.paging_state)

    async def list_account_bets(self, account_id: str, page_size: int, page_token: str) -> tuple[list[PlacedBet], str]:
        rows, token = await asyncio.to_thread(
            self._page, self._select_account_bets, (account_id,), page_size, page_token
        )
        bets = await asyncio.gather(*(self.get_bet(r.bet_id) for r in rows))
        return [b for b in bets if b is not None], token

    async def account_entries(
        self, account_id: str, page_size: int, page_token: str
    ) -> tuple[list[LedgerEntry], str]:
        rows, token = await asyncio.to_thread(self._page, self._select_entries, (account_id,), page_size, page_token)
        return [
            LedgerEntry(
                entry_id=r.entry_id,
                account_id=r.account_id,
                kind=EntryKind(r.kind),
                amount_minor=r.amount_minor,
                currency=r.currency,
                bet_id=r.bet_id or "",
                reference=r.reference or "",
                created_at_ms=r.created_at_ms,
            )
            for r in rows
        ], token

    def _bucket_rows(self, event_id: str, bucket: int, page_size: int) -> list[list[PlacedBet]]:
        bound = self._select_event_bucket.bind((event_id, bucket))
        bound.fetch_size = page_size
        result = self.session.execute(bound)
        pages = [[_bet_from_row(r) for r in result.current_rows]]
        while result.has_more_pages:
            result.fetch_next_page()
            pages.append([_bet_from_row(r) for r in result.current_rows])
        return [p for p in pages if p]

    async def event_bets(self, event_id: str, page_size: int = 5000) -> AsyncIterator[list[PlacedBet]]:
        """Every bet with a leg on the event, in pages; a few buckets are read concurrently."""
        parallel = 8
        for start in range(0, EVENT_BUCKETS, parallel):
            groups = await asyncio.gather(
                *(
                    asyncio.to_thread(self._bucket_rows, event_id, bucket, page_size)
                    for bucket in range(start, min(start + parallel, EVENT_BUCKETS))
                )
            )
            for pages in groups:
                for page in pages:
                    yield page

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        def scan() -> dict[str, int]:
            totals: dict[str, int] = defaultdict(int)
            statement = self.session.prepare(
                "SELECT account_id, created_at_ms, amount_minor FROM ledger_by_account"
            ).bind(())
            statement.fetch_size = 5000
            for row in self.session.execute(statement, timeout=120):
                if as_of_ms is None or row.created_at_ms <= as_of_ms:
                    totals[row.account_id] += row.amount_minor
            return dict(totals)

        return await asyncio.to_thread(scan)

    async def get_bet_by_idempotency(self, account_id: str, key: str) -> str | None:
        rows = await self._execute(self._select_idem, (account_id, key))
        return str(rows[0].bet_id) if rows else None
