"""The ledger in Cassandra (:class:`inplay.ports.Ledger`): the append-only source of truth.

Tables (migration ``cql/0001_ledger.cql``; the file explains each one):

- ``bets`` (by id), ``bets_by_event`` (``((event_id, bucket), bet_id)``, 64 buckets so that one event is
  not one giant partition), ``bets_by_account`` (newest first), ``ledger_by_account`` (money, oldest
  first), ``bet_history`` (state changes by ``seq_key``), ``bets_by_idempotency``.
- A placed bet is ONE logged batch of all its rows: either every view of the bet exists or none does, and
  the STAKE entry can never exist without the bet (or the reverse). Batches of different bets run
  concurrently (a logged batch spanning partitions is the price of per-bet atomicity; group commit happens
  upstream in Redis, one Lua call per batch of slips).
- Legs are JSON text ``[[market_id, selection_id, odds_num, odds_den, event_id], ...]``: the bet is
  denormalized into three tables and always read whole, odds stay exact integers, and a compact array
  keeps a 20-leg accumulator's batch far from the batch size limits.
- Nothing is ever updated or deleted. Retryable writes carry deterministic primary keys (the caller fixes
  ``created_at_ms`` and ``entry_id``), so a retry rewrites the same row.

Driver use: prepared statements only; ``execute_async`` futures bridged to asyncio with
``loop.call_soon_threadsafe`` (completions coalesced per loop wake-up); at most ``max_in_flight`` requests
in flight per ledger (a window that bulk writers refill many slots at a time); the consistency level of
the default execution profile (``INPLAY_CASSANDRA_CONSISTENCY``: ``LOCAL_ONE`` by default, for the single
dev/test node; ``LOCAL_QUORUM`` with RF 3 in production, see k8s/base/config.yaml). Paging uses the
driver's paging state, handed to clients as an opaque urlsafe-base64 page token.
"""

from __future__ import annotations

import asyncio
import copy
import json
import struct
import zlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from cassandra import (
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
    WriteType,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, ResponseFuture
from cassandra.policies import ConstantSpeculativeExecutionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType

from inplay import pagetoken
from inplay.adapters.cassandra_bridge import bridge, idempotent_preparer
from inplay.adapters.migrations import check_keyspace_name, migrate
from inplay.config import setting_int, setting_str
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.journal import (
    PLACED_SEQ_KEY,
    JournalBatch,
    JournalRow,
    decode_bet_row,
    journal_tag,
    parse_journal_bet_id,
    placed_event,
    stake_entry,
)
from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, Leg, PlacedBet
from inplay.ports import AccountLimits, BalanceScan, JournalRejected, LedgerError

EVENT_BUCKETS = 64
MAX_IN_FLIGHT = 256
# Rows per single-partition unlogged batch (entries of one account, history rows of one bet).
MAX_PARTITION_BATCH = 100
# Attempts of a settlement write batch that failed (timeout, overload push-back) and the first backoff.
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_S = 0.2
# Attempts of one page read (every read is idempotent; the paging state stays valid) and the first backoff:
# 0.2 + 0.4 + 0.8 + 1.6 s of waiting in all. A repair's scan reads thousands of pages while traffic (or a
# settlement run) loads the same replicas: one replica answering late must not fail the whole repair.
READ_ATTEMPTS = 5
READ_BACKOFF_S = 0.2
# What a read is tried again on: the replicas answered late or too few were up (a node just killed, not yet
# marked down), or no coordinator could be reached. Anything else (a bad query, a schema error) is final.
_RETRIED_READ_ERRORS = (ReadTimeout, Unavailable, OperationTimedOut, NoHostAvailable)
# Concurrent bucket reads of event_bets, and token ranges scanned at once by account_balances.
EVENT_READ_WINDOW = 4
SCAN_SPLITS = 8
SCAN_PAGE = 5000
HISTORY_PAGE = 1000

_BET_COLUMNS = (
    "bet_id, account_id, legs, stake_minor, currency, potential_return_minor, policy, idempotency_key, placed_at_ms"
)
# What settlement reads of a bet (event_bets_in(lean=True)): fewer cells for Cassandra to serialize and the
# driver to decode, per bet of a 500 000-bet event.
_LEAN_BET_COLUMNS = "bet_id, account_id, legs, stake_minor, currency, potential_return_minor"
_ENTRY_COLUMNS = "account_id, created_at_ms, entry_id, kind, amount_minor, currency, bet_id, reference"
_HISTORY_COLUMNS = "bet_id, seq_key, kind, status, amount_minor, run_id, at_ms, leg_outcomes"
_JOURNAL_COLUMNS = (
    "journal, shard, slot, pos, kind, body, prev_slot, prev_checksum, checksum, committed_at_ms, row_count"
)
# Rows per multi-partition UNLOGGED batch of the projection (idempotent rows: atomicity is not needed, the
# batch only saves driver requests, which cost ~0.3 ms of client CPU each). On a multi-node cluster these
# should be grouped by token range so that the coordinator owns its rows (docs/ledger.md).
PROJECTION_CHUNK = 100


def event_bucket(bet_id: str) -> int:
    """The ``bets_by_event`` bucket of a bet (stable across processes and languages: CRC-32)."""
    return zlib.crc32(bet_id.encode()) % EVENT_BUCKETS


def legs_to_json(legs: Sequence[Leg]) -> str:
    """``[[market_id, selection_id, odds_num, odds_den, event_id], ...]`` (the order of the API's result
    records, ``inplay.domain.bets``)."""
    return json.dumps(
        [[leg.market_id, leg.selection_id, leg.odds.num, leg.odds.den, leg.event_id] for leg in legs],
        separators=(",", ":"),
    )


def legs_from_json(text: str) -> tuple[Leg, ...]:
    # Stored odds were already reduced by inplay.core when the bet was accepted: rebuild them as is.
    legs = []
    for m, s, a, b, c in json.loads(text):
        if isinstance(a, str):  # rows written before the order was fixed: [m, s, event, num, den]
            a, b, c = b, c, a
        legs.append(Leg(market_id=m, selection_id=s, odds=Odds(int(a), int(b)), event_id=c))
    return tuple(legs)


class _Window:
    """The ledger-wide bound on requests in flight.

    Unlike a semaphore (one wake-up, one task switch per freed slot), a waiter takes every free slot it can
    use when it wakes: completions are settled in bursts (adapters/cassandra_bridge.py), so a bulk writer
    refills many slots per wake-up, close to what the driver's own ``execute_concurrent`` does on its I/O
    thread.
    Waiters are served in arrival order.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, wanted: int) -> int:
        """Waits for at least one free slot; takes up to ``wanted`` (>= 1) and returns how many."""
        self._prune()
        if self.used >= self.size or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # it was our turn: hand it on
                raise
        granted = min(wanted, self.size - self.used)
        self.used += granted
        if self.used < self.size:
            self._wake()  # slots left over: the next waiter may use them
        return granted

    def release(self, n: int = 1) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used < self.size:
            waiter = self._waiters.popleft()
            if waiter.done() or waiter.get_loop().is_closed():
                continue  # gone: its task will never take the slot, the next waiter may
            waiter.set_result(None)
            return

    def _prune(self) -> None:
        """Drops waiters whose event loop is gone. One ledger serves tasks of several loops in the tests
        (a session-wide ledger, one loop per test): a waiter left behind by a closed loop would otherwise
        stay first in line for good, and every later caller would queue behind it (a hang seen in the
        suite once the journal writer claimed slots in the background)."""
        if self._waiters and any(w.done() or w.get_loop().is_closed() for w in self._waiters):
            self._waiters = deque(w for w in self._waiters if not w.done() and not w.get_loop().is_closed())


def _cluster(
    hosts: Sequence[str], port: int, consistency: str, connect_timeout_s: float, request_timeout_s: float
) -> Cluster:
    level = ConsistencyLevel.name_to_value.get(consistency.upper())
    if level is None:
        raise ValueError(f"unknown consistency level {consistency!r}")
    profile = ExecutionProfile(
        # Token aware: each request goes to a replica of its partition (no extra coordinator hop).
        load_balancing_policy=TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=setting_str("INPLAY_CASSANDRA_DC") or None)
        ),
        consistency_level=level,
        request_timeout=request_timeout_s,
        speculative_execution_policy=_speculation(),
    )
    return Cluster(
        list(hosts),
        port=port,
        # Cassandra 4+/5 speak v5: fixing it skips the driver's version negotiation (and its warnings).
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=connect_timeout_s,
    )


def _speculation() -> ConstantSpeculativeExecutionPolicy | None:
    """Speculative execution, which the driver applies ONLY to statements marked ``is_idempotent`` (the
    journal batch: same key, same bytes, so a second copy is harmless). A coordinator that went silent (cut
    off, stalled, or dead but not yet marked down) would otherwise hold the journal write, and with it the
    shard's writer, for the whole request timeout; after the delay the next replica of the token-aware plan
    coordinates a copy and the first answer wins (docs/reliability.md: the partition fault)."""
    delay_ms = setting_int("INPLAY_CASSANDRA_SPECULATIVE_DELAY_MS")
    attempts = setting_int("INPLAY_CASSANDRA_SPECULATIVE_ATTEMPTS")
    if delay_ms <= 0 or attempts <= 0:
        return None
    return ConstantSpeculativeExecutionPolicy(delay_ms / 1000, attempts)


class CassandraLedger:
    # Read by the settlement worker to count an event's bets (SELECT COUNT(*) per bucket).
    BETS_BY_EVENT_TABLE = "bets_by_event"
    EVENT_BUCKETS = EVENT_BUCKETS

    def __init__(self, cluster: Cluster, session: Any, keyspace: str, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        """Use :meth:`connect`. Prepares the statements (blocking)."""
        self.cluster = cluster
        # Shared with the other Cassandra stores of the keyspace (settlement, change log, deposit keys).
        self.session = session
        self.keyspace = keyspace
        self._window = _Window(max_in_flight)
        # The journal this ledger object writes and reads (``with_journal``): one per deployment.
        self.journal = "inplay"
        prepare = idempotent_preparer(session)
        self._prepare_views(prepare)
        self._prepare_journal(prepare)
        self._prepare_scans(prepare)

    def _prepare_views(self, p: Callable[[str], Any]) -> None:
        """Statements of the bet views, entries, history and idempotency rows."""
        self._ins_bet = p(f"INSERT INTO bets ({_BET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self._ins_by_event = p(
            f"INSERT INTO bets_by_event (event_id, bucket, {_BET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._ins_by_account = p(f"INSERT INTO bets_by_account ({_BET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self._ins_entry = p(f"INSERT INTO ledger_by_account ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self._ins_history = p(f"INSERT INTO bet_history ({_HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self._ins_idem = p(
            "INSERT INTO bets_by_idempotency (account_id, idempotency_key, placed_at_ms, bet_id) VALUES (?, ?, ?, ?)"
        )
        self._sel_bet = p(f"SELECT {_BET_COLUMNS} FROM bets WHERE bet_id = ?")
        self._sel_history = p(f"SELECT {_HISTORY_COLUMNS} FROM bet_history WHERE bet_id = ?")
        self._sel_account_bets = p(f"SELECT {_BET_COLUMNS} FROM bets_by_account WHERE account_id = ?")
        self._sel_event_bets = p(f"SELECT {_BET_COLUMNS} FROM bets_by_event WHERE event_id = ? AND bucket = ?")
        self._sel_event_bets_lean = p(
            f"SELECT {_LEAN_BET_COLUMNS} FROM bets_by_event WHERE event_id = ? AND bucket = ?"
        )
        self._sel_entries = p(f"SELECT {_ENTRY_COLUMNS} FROM ledger_by_account WHERE account_id = ?")
        self._sel_idem = p(
            "SELECT bet_id FROM bets_by_idempotency WHERE account_id = ? AND idempotency_key = ? LIMIT 1"
        )

    def _prepare_journal(self, p: Callable[[str], Any]) -> None:
        """Statements of the journal and its consumers' checkpoints."""
        self._ins_journal_row = p(
            "INSERT INTO bet_journal (journal, shard, slot, pos, kind, body) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._ins_journal_header = p(
            "INSERT INTO bet_journal (journal, shard, slot, prev_slot, prev_checksum, checksum, committed_at_ms, "
            "row_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        # The slot's claim: a compare-and-set on a small row before the rows are written (see write_journal).
        self._claim_journal_slot = p(
            "INSERT INTO journal_slots (journal, shard, slot, claimant) VALUES (?, ?, ?, ?) IF NOT EXISTS"
        )
        self._sel_journal = p(
            f"SELECT {_JOURNAL_COLUMNS} FROM bet_journal WHERE journal = ? AND shard = ? AND slot = ?"
        )
        self._sel_journal_row = p(
            f"SELECT {_JOURNAL_COLUMNS} FROM bet_journal WHERE journal = ? AND shard = ? AND slot = ? AND pos = ?"
        )
        self._scan_journal = p(
            f"SELECT {_JOURNAL_COLUMNS} FROM bet_journal "
            "WHERE token(journal, shard, slot) > ? AND token(journal, shard, slot) <= ?"
        )
        self._ins_progress = p(
            "INSERT INTO journal_progress (journal, shard, consumer, slot, at_ms) VALUES (?, ?, ?, ?, ?)"
        )
        self._sel_progress = p(
            "SELECT slot FROM journal_progress WHERE journal = ? AND shard = ? AND consumer = ? LIMIT 1"
        )

    def _prepare_scans(self, p: Callable[[str], Any]) -> None:
        """Durable limits, wallet epochs and the token-range scans of rebuild and reconcile."""
        self._ins_limits = p(
            "INSERT INTO account_limits (account_id, set_at_ms, daily_stake_limit_minor, self_excluded_until_ms) "
            "VALUES (?, ?, ?, ?)"
        )
        self._scan_limits = p(
            "SELECT account_id, set_at_ms, daily_stake_limit_minor, self_excluded_until_ms FROM account_limits "
            "WHERE token(account_id) > ? AND token(account_id) <= ?"
        )
        self._ins_epoch = p("INSERT INTO wallet_epochs (projection, epoch, created_at_ms) VALUES (?, ?, ?)")
        self._sel_epochs = p("SELECT epoch FROM wallet_epochs WHERE projection = ?")
        self._scan_entries = p(
            "SELECT account_id, entry_id, kind, amount_minor FROM ledger_by_account "
            "WHERE token(account_id) > ? AND token(account_id) <= ?"
        )
        self._scan_history = p(
            f"SELECT {_HISTORY_COLUMNS} FROM bet_history WHERE token(bet_id) > ? AND token(bet_id) <= ?"
        )
        # Full scans for reconciliation, split by token range so that a few ranges are read at once.
        self._scan = p(
            "SELECT account_id, amount_minor FROM ledger_by_account "
            "WHERE token(account_id) > ? AND token(account_id) <= ?"
        )
        self._scan_as_of = p(
            "SELECT account_id, amount_minor FROM ledger_by_account "
            "WHERE token(account_id) > ? AND token(account_id) <= ? AND created_at_ms <= ? ALLOW FILTERING"
        )

    # --- lifecycle -------------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        hosts: Sequence[str] | str,
        port: int = 9042,
        keyspace: str = "inplay",
        create_schema: bool = True,
        *,
        consistency: str | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 15.0,
    ) -> CassandraLedger:
        """Connects, applies pending migrations (``create_schema``) and prepares the statements.
        ``consistency`` defaults to ``INPLAY_CASSANDRA_CONSISTENCY`` or LOCAL_ONE. Raises LedgerError when no
        node can be reached."""
        host_list = [h for h in (hosts.split(",") if isinstance(hosts, str) else hosts) if h]
        check_keyspace_name(keyspace)
        level = consistency or setting_str("INPLAY_CASSANDRA_CONSISTENCY")

        def build() -> CassandraLedger:
            cluster = _cluster(host_list, port, level, connect_timeout_s, request_timeout_s)
            try:
                session = cluster.connect()
                if create_schema:
                    migrate(session, keyspace)
                else:
                    session.set_keyspace(keyspace)
                return cls(cluster, session, keyspace, max_in_flight=max_in_flight)
            except BaseException:
                cluster.shutdown()
                raise

        try:
            # The driver's connect/prepare/DDL calls block: keep them off the event loop.
            return await asyncio.to_thread(build)
        except (NoHostAvailable, OperationTimedOut) as exc:
            raise LedgerError(f"cannot reach Cassandra at {','.join(host_list)}:{port}: {exc}") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.cluster.shutdown)

    def with_journal(self, name: str) -> CassandraLedger:
        """The same ledger (session, statements, request window) bound to the journal ``name``."""
        view = copy.copy(self)
        view.journal = name
        return view

    # --- plumbing --------------------------------------------------------------------------------------

    async def _execute(self, statement: Any, params: Any = None, paging_state: bytes | None = None) -> ResponseFuture:
        await self._window.acquire(1)
        try:
            return await bridge(self.session.execute_async(statement, params, paging_state=paging_state))
        finally:
            self._window.release()

    async def _read(self, statement: Any, paging_state: bytes | None) -> ResponseFuture:
        for attempt in range(READ_ATTEMPTS - 1):
            try:
                return await self._execute(statement, paging_state=paging_state)
            except _RETRIED_READ_ERRORS:
                await asyncio.sleep(READ_BACKOFF_S * 2**attempt)
        return await self._execute(statement, paging_state=paging_state)

    async def _submit_all(self, statements: Sequence[Any]) -> list[BaseException | None]:
        """Sends every statement, at most the window's size in flight (ledger-wide), and waits for all.
        Per statement: None, or the exception it failed with. No task per request: futures only."""
        sent: list[asyncio.Future[ResponseFuture] | BaseException] = []
        release = self._window.release
        i = 0
        while i < len(statements):
            granted = await self._window.acquire(len(statements) - i)
            for statement in statements[i : i + granted]:
                try:
                    future = bridge(self.session.execute_async(statement))
                except Exception as exc:  # e.g. the session is shut down: this statement failed
                    release()
                    sent.append(exc)
                    continue
                future.add_done_callback(lambda _: release())
                sent.append(future)
            i += granted
        results: list[BaseException | None] = []
        for item in sent:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            try:
                await item
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    async def _page(
        self, prepared: Any, params: Sequence[Any], page_size: int, paging_state: bytes | None
    ) -> tuple[list[Any], bytes | None]:
        """One page of a query: (rows, paging state of the next page or None). A read that timed out or found
        too few replicas is read again (same statement, same paging state) up to READ_ATTEMPTS times."""
        stmt = prepared.bind(params)
        stmt.fetch_size = page_size
        while True:
            response = await self._read(stmt, paging_state)
            result = response.result()
            rows = list(result.current_rows)
            paging_state = result.paging_state
            # Cassandra may return an empty page that still has a continuation: skip it.
            if rows or not paging_state:
                return rows, paging_state

    # --- bets ------------------------------------------------------------------------------------------

    async def append_bets(self, bets: Sequence[PlacedBet]) -> list[BaseException | None]:
        statements: list[Any] = []
        for bet in bets:
            try:
                statements.append(self.bet_batch(bet))
            except Exception as exc:  # a bet the driver cannot encode fails alone
                statements.append(exc)
        errors = await self._submit_all([s for s in statements if not isinstance(s, BaseException)])
        it = iter(errors)
        return [s if isinstance(s, BaseException) else _recorded(next(it)) for s in statements]

    def bet_batch(self, bet: PlacedBet) -> BatchStatement:
        """The logged batch that records ``bet`` (public for benchmarks that drive the driver directly)."""
        legs = legs_to_json(bet.legs)
        common = (
            bet.stake_minor,
            bet.currency,
            bet.potential_return_minor,
            int(bet.policy),
            bet.idempotency_key,
            bet.placed_at_ms,
        )
        row = (bet.bet_id, bet.account_id, legs, *common)
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._ins_bet, row)
        bucket = event_bucket(bet.bet_id)
        for event_id in bet.event_ids:
            if event_id:  # an empty partition key is invalid in CQL; placement always sets the event
                batch.add(self._ins_by_event, (event_id, bucket, *row))
        batch.add(self._ins_by_account, row)
        batch.add(self._ins_entry, _entry_params(stake_entry(bet)))
        batch.add(self._ins_history, _event_params(placed_event(bet)))
        batch.add(self._ins_idem, (bet.account_id, bet.idempotency_key, bet.placed_at_ms, bet.bet_id))
        return batch

    async def get_bet(self, bet_id: str) -> PlacedBet | None:
        position = parse_journal_bet_id(bet_id)
        if position is not None:  # a journal bet: one row of one partition, readable right after the commit
            tag, shard, slot, pos = position
            if tag != journal_tag(self.journal):
                return None
            params = (self.journal, shard, slot, pos)
            rows = list((await self._execute(self._sel_journal_row, params)).result().current_rows)
            return decode_bet_row(rows[0].body)[0] if rows and rows[0].body else None
        rows = list((await self._execute(self._sel_bet, (bet_id,))).result().current_rows)
        return _bet(rows[0]) if rows else None

    # --- the journal (the commit point: inplay.domain.journal) -----------------------------------------

    async def claim_slot(self, shard: int, slot: int, claimant: str) -> bool:
        """``journal_slots`` ``INSERT ... IF NOT EXISTS`` (SERIAL): a small row, so the Paxos round is
        cheap, and it is taken before anything is debited (the journal writer claims its next slot while
        the current batch commits, so the round trip is off the commit path). Not applied: Cassandra returns
        the holder; the same claimant is an earlier attempt of this claim (an unknown outcome retried)."""
        claim = self._claim_journal_slot.bind((self.journal, shard, slot, claimant))
        claim.serial_consistency_level = ConsistencyLevel.SERIAL
        claim.is_idempotent = True  # a repeated claim by the same claimant is read as ours
        try:
            result = (await self._execute(claim)).result()
        except InvalidRequest as exc:
            raise JournalRejected(f"claim of journal slot {shard}/{slot} refused: {exc}") from exc
        except Exception as exc:
            raise LedgerError(f"claim of journal slot {shard}/{slot}: outcome unknown: {exc!r}") from exc
        return _cas_holder(result, claimant) is None

    async def write_journal(self, batch: JournalBatch, claimant: str = "") -> None:
        """Writes the batch into its slot, once.

        1. The slot's claim (``claim_slot``), unless the caller made it already for ``claimant`` (the
           journal writer does, ahead of the batch). Without a claimant the batch's checksum claims it. A
           slot claimed by another claimant (a second writer of the shard, e.g. a paused one whose lease
           expired): JournalRejected, the other batch's rows are never touched.
        2. The rows and the header: ONE single-partition UNLOGGED batch, applied as one mutation (all or
           nothing), identical bytes on every attempt.

        JournalRejected also when the coordinator refused a request (certainly not applied). LedgerError
        for any other failure, whose outcome is unknown: the caller calls again with the same batch."""
        where = f"journal batch {batch.shard}/{batch.slot}"
        if not claimant and not await self.claim_slot(batch.shard, batch.slot, batch.checksum):
            raise JournalRejected(f"journal slot {batch.shard}/{batch.slot} is claimed by another batch")
        statement = BatchStatement(batch_type=BatchType.UNLOGGED)
        statement.add(
            self._ins_journal_header,
            (
                self.journal,
                batch.shard,
                batch.slot,
                batch.prev_slot,
                batch.prev_checksum,
                batch.checksum,
                batch.committed_at_ms,
                len(batch.rows),
            ),
        )
        journal, shard, slot = self.journal, batch.shard, batch.slot
        add_rows(statement, self._ins_journal_row, [(journal, shard, slot, r.pos, r.kind, r.body) for r in batch.rows])
        statement.is_idempotent = True  # identical bytes: eligible for speculative execution (_speculation)
        try:
            await self._execute(statement)
        except InvalidRequest as exc:
            raise JournalRejected(f"{where} refused: {exc}") from exc
        except Exception as exc:
            raise LedgerError(f"{where}: outcome unknown: {exc!r}") from exc

    async def read_journal(self, shard: int, slot: int) -> JournalBatch | None:
        rows = list((await self._execute(self._sel_journal, (self.journal, shard, slot))).result().current_rows)
        return _journal_batch(rows) if rows else None

    async def scan_journal(self) -> AsyncIterator[JournalBatch]:
        """Every journal batch (no order across token ranges, not slot order): for rebuilding projections
        and for audits. The ranges are read concurrently (:meth:`_scan_pages`); a batch's rows are
        contiguous within its range, so each range groups its own."""
        partitions: dict[int, list[Any]] = {}
        async for split, rows in self._scan_pages(self._scan_journal):
            partition = partitions.setdefault(split, [])
            if rows is None:  # the range is done
                if partition:
                    yield _journal_batch(partition)
                del partitions[split]
                continue
            for row in rows:
                if row.journal != self.journal:
                    continue
                if partition and (partition[0].shard, partition[0].slot) != (row.shard, row.slot):
                    yield _journal_batch(partition)
                    partition = partitions[split] = []
                partition.append(row)

    async def save_progress(self, shard: int, consumer: str, slot: int, at_ms: int) -> None:
        await self._execute(self._ins_progress, (self.journal, shard, consumer, slot, at_ms))

    async def load_progress(self, shard: int, consumer: str) -> int:
        rows = list((await self._execute(self._sel_progress, (self.journal, shard, consumer))).result().current_rows)
        return int(rows[0].slot) if rows else 0

    async def project_bets(self, bets: Sequence[PlacedBet]) -> None:
        """The views of journal bets: bets_by_event, bets_by_account and the STAKE entry of
        ledger_by_account (the PLACED history row is the journal row itself: readers synthesize it,
        ``journal.with_placed``). Idempotent (deterministic keys); raises LedgerError if any write failed
        (the projector then writes the same rows again)."""
        by_event: list[tuple[Any, ...]] = []
        by_account: list[tuple[Any, ...]] = []
        entries: list[tuple[Any, ...]] = []
        for bet in bets:
            row = (bet.bet_id, bet.account_id, legs_to_json(bet.legs), *_bet_common(bet))
            bucket = event_bucket(bet.bet_id)
            by_event.extend((event_id, bucket, *row) for event_id in bet.event_ids if event_id)
            by_account.append(row)
            entries.append(_entry_params(stake_entry(bet)))
        statements = [
            *_chunked(self._ins_by_event, by_event),
            *_chunked(self._ins_by_account, by_account),
            *_chunked(self._ins_entry, entries),
        ]
        errors = [e for e in await self._submit_all(statements) if e is not None]
        if errors:
            raise LedgerError(f"{len(errors)} of {len(statements)} projection writes failed: {errors[0]!r}")

    # --- durable account limits and projection epochs --------------------------------------------------

    async def record_limits(self, account_id: str, limits: AccountLimits, at_ms: int) -> None:
        await self._execute(
            self._ins_limits,
            (account_id, at_ms, limits.daily_stake_limit_minor, limits.self_excluded_until_ms),
        )

    async def all_limits(self) -> dict[str, AccountLimits]:
        """The newest limits row of every account."""
        newest: dict[str, tuple[int, AccountLimits]] = {}
        async for row in self._scan_all(self._scan_limits):
            at = int(row.set_at_ms)
            if row.account_id not in newest or newest[row.account_id][0] < at:
                newest[row.account_id] = (
                    at,
                    AccountLimits(int(row.daily_stake_limit_minor or 0), int(row.self_excluded_until_ms or 0)),
                )
        return {account: limits for account, (_, limits) in newest.items()}

    async def scan_bet_history(self) -> AsyncIterator[BetEvent]:
        async for row in self._scan_all(self._scan_history):
            yield _event(row)

    async def scan_balances(self) -> BalanceScan:
        """One pass over ``ledger_by_account`` (ports.BalanceScan): each row read is counted and, if a
        credit, marked; a row written behind the pass is in neither."""
        totals: dict[str, int] = defaultdict(int)
        credits: list[tuple[str, str]] = []
        async for row in self._scan_all(self._scan_entries):
            totals[row.account_id] += int(row.amount_minor)
            if row.kind != int(EntryKind.STAKE):
                credits.append((row.account_id, row.entry_id))
        return BalanceScan(dict(totals), credits)

    async def record_epoch(self, projection: str, epoch: str, at_ms: int) -> None:
        await self._execute(self._ins_epoch, (projection, epoch, at_ms))

    async def epochs(self, projection: str) -> list[str]:
        rows = (await self._execute(self._sel_epochs, (projection,))).result().current_rows
        return [str(r.epoch) for r in rows]

    async def _scan_all(self, prepared: Any, params: tuple[Any, ...] = ()) -> AsyncIterator[Any]:
        """Every row of a token-range scan (no order across ranges)."""
        async for _, rows in self._scan_pages(prepared, params):
            for row in rows or ():
                yield row

    async def _scan_pages(
        self, prepared: Any, params: tuple[Any, ...] = ()
    ) -> AsyncIterator[tuple[int, list[Any] | None]]:
        """(range, page) for the SCAN_SPLITS token ranges of ``prepared`` (bound to the range's bounds, then
        ``params``), read concurrently, each page by
        page in order; (range, None) when a range is done. At most SCAN_SPLITS pages wait for the consumer
        (memory stays bounded); a failed read is raised here, and the other reads are cancelled when the
        consumer stops early or fails. The ranges used to be read one after another: a repair's scans took
        up to SCAN_SPLITS times as long on a cluster (one replica at a time)."""
        lo, hi = -(2**63), 2**63 - 1
        step = (hi - lo) // SCAN_SPLITS
        bounds = [lo + i * step for i in range(SCAN_SPLITS)] + [hi]
        queue: asyncio.Queue[tuple[int, list[Any] | None] | BaseException] = asyncio.Queue(maxsize=SCAN_SPLITS)

        async def read(split: int) -> None:
            try:
                state: bytes | None = None
                while True:
                    # Murmur3 never yields the minimum token, so (lo, hi] ranges cover the ring.
                    bound = (bounds[split], bounds[split + 1], *params)
                    rows, state = await self._page(prepared, bound, SCAN_PAGE, state)
                    await queue.put((split, rows))
                    if not state:
                        await queue.put((split, None))
                        return
            except Exception as exc:
                await queue.put(exc)

        tasks = [asyncio.create_task(read(i), name=f"scan-{i}") for i in range(SCAN_SPLITS)]
        try:
            done = 0
            while done < SCAN_SPLITS:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item[1] is None:
                    done += 1
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def get_bet_by_idempotency(self, account_id: str, idempotency_key: str) -> str | None:
        rows = list((await self._execute(self._sel_idem, (account_id, idempotency_key))).result().current_rows)
        return str(rows[0].bet_id) if rows else None

    async def list_account_bets(self, account_id: str, page_size: int, page_token: str) -> tuple[list[PlacedBet], str]:
        scope = f"bets|{account_id}"
        rows, state = await self._page(
            self._sel_account_bets, (account_id,), page_size, pagetoken.decode(scope, page_token)
        )
        return [_bet(r, account_id) for r in rows], pagetoken.encode(scope, state)

    async def event_bets(self, event_id: str, page_size: int = 5000) -> AsyncIterator[list[PlacedBet]]:
        """Pages of at most ``page_size`` bets over the 64 buckets (:meth:`event_bets_in`)."""
        async for page in self.event_bets_in(event_id, range(EVENT_BUCKETS), page_size):
            yield page

    async def event_bets_in(
        self, event_id: str, buckets: Sequence[int], page_size: int = 5000, *, lean: bool = False
    ) -> AsyncIterator[list[PlacedBet]]:
        """Pages of at most ``page_size`` bets of the given buckets (settlement workers each read a range);
        up to EVENT_READ_WINDOW page reads in flight (a bucket's next page is requested as soon as its
        previous one arrives). Memory stays bounded by the window: nothing is read ahead of it. Legs are
        decoded once per distinct legs text (bets on one selection at one price share it). ``lean``: only
        what settlement reads (id, account, legs, stake, currency); the other fields are zero / empty /
        UNSPECIFIED."""
        select = self._sel_event_bets_lean if lean else self._sel_event_bets
        in_flight: set[asyncio.Task[tuple[int, list[Any], bytes | None]]] = set()
        pending = list(buckets)
        legs_cache: dict[str, tuple[Leg, ...]] = {}

        async def read(bucket: int, state: bytes | None) -> tuple[int, list[Any], bytes | None]:
            rows, nxt = await self._page(select, (event_id, bucket), page_size, state)
            return bucket, rows, nxt

        buffer: list[PlacedBet] = []
        try:
            while in_flight or pending:
                while len(in_flight) < EVENT_READ_WINDOW and pending:
                    in_flight.add(asyncio.create_task(read(pending.pop(0), None)))
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    in_flight.discard(task)
                    bucket, rows, state = task.result()
                    if state:
                        in_flight.add(asyncio.create_task(read(bucket, state)))
                    if len(legs_cache) > 10_000:
                        legs_cache.clear()
                    buffer.extend(_bet_cached(r, legs_cache) for r in rows)
                while len(buffer) >= page_size:
                    yield buffer[:page_size]
                    buffer = buffer[page_size:]
            if buffer:
                yield buffer
        finally:
            # The consumer stopped early (or a read failed): do not leave reads running.
            for task in in_flight:
                task.cancel()

    # --- money -----------------------------------------------------------------------------------------

    async def append_entries(self, entries: Sequence[LedgerEntry]) -> None:
        by_account: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for e in entries:
            by_account[e.account_id].append(_entry_params(e))
        await self._write_partitions(self._ins_entry, by_account, "ledger entries")

    async def append_bet_events(self, events: Sequence[BetEvent]) -> None:
        by_bet: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        # Settlement writes a page of rows sharing few leg-outcome combinations: each list built once.
        outcomes: dict[tuple[LegOutcome, ...], list[int]] = {}
        for ev in events:
            ints = outcomes.get(ev.leg_outcomes)
            if ints is None:
                ints = outcomes[ev.leg_outcomes] = [int(o) for o in ev.leg_outcomes]
            by_bet[ev.bet_id].append(
                (ev.bet_id, ev.seq_key, ev.kind, int(ev.status), ev.amount_minor, ev.run_id, ev.at_ms, ints)
            )
        await self._write_partitions(self._ins_history, by_bet, "bet history rows")

    async def _write_partitions(self, prepared: Any, rows: dict[str, list[tuple[Any, ...]]], what: str) -> None:
        """Rows grouped by partition, then whole partition groups packed into UNLOGGED batches of up to
        MAX_PARTITION_BATCH rows (a group larger than that is split). Cassandra applies the rows of one
        partition within a batch as one mutation (atomic and isolated within the partition), so each
        group keeps the guarantee a single-partition batch gave, while one request carries many groups:
        the cost is per driver request (~0.3 ms of client CPU), and most settlement groups hold one row
        (one history row per bet, one entry per account and page). The batches are sent concurrently.
        Raises LedgerError if any failed; the others are stored, which is safe because the caller
        retries with the same deterministic keys. (On a multi-node cluster the packing should follow
        token ranges so that the coordinator owns its rows, as for the projection.)"""
        statements: list[Any] = []
        chunk: list[tuple[Any, ...]] = []

        def flush() -> None:
            if len(chunk) == 1:
                statements.append(prepared.bind(chunk[0]))
            elif chunk:
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for params in chunk:
                    batch.add(prepared, params)
                statements.append(batch)
            chunk.clear()

        for group in rows.values():
            if len(chunk) + len(group) > MAX_PARTITION_BATCH:
                flush()
            for start in range(0, len(group), MAX_PARTITION_BATCH):
                part = group[start : start + MAX_PARTITION_BATCH]
                if len(part) == MAX_PARTITION_BATCH:
                    chunk.extend(part)
                    flush()
                else:
                    chunk.extend(part)
        flush()
        for statement in statements:
            statement.is_idempotent = True  # deterministic rows: speculative execution may send a copy
        await self._submit_retrying(statements, what)

    async def _submit_retrying(self, statements: Sequence[Any], what: str) -> None:
        """Sends the statements; the failed ones (a timeout, the driver's push-back when the node is
        overloaded) are sent again, up to WRITE_ATTEMPTS times with backoff: the rows are deterministic,
        so a second write of a row that did land rewrites the same cells. Raises LedgerError if some still
        failed (the caller's retry then writes the same rows again)."""
        pending = list(statements)
        for attempt in range(WRITE_ATTEMPTS):
            errors = await self._submit_all(pending)
            failed = [(stmt, e) for stmt, e in zip(pending, errors, strict=True) if e is not None]
            if not failed:
                return
            if attempt + 1 < WRITE_ATTEMPTS:
                await asyncio.sleep(WRITE_BACKOFF_S * 2**attempt)
            pending = [stmt for stmt, _ in failed]
        first = failed[0][1]
        raise LedgerError(f"{len(failed)} of {len(statements)} writes of {what} failed: {first!r}") from first

    async def account_entries(self, account_id: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        scope = f"entries|{account_id}"
        rows, state = await self._page(self._sel_entries, (account_id,), page_size, pagetoken.decode(scope, page_token))
        return [_entry(r) for r in rows], pagetoken.encode(scope, state)

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        """Σ amount per account over the whole ledger (entries created <= ``as_of_ms`` if given): one
        token-range scan (:meth:`_scan_pages`)."""
        totals: dict[str, int] = defaultdict(int)
        scan = self._scan_all(self._scan) if as_of_ms is None else self._scan_all(self._scan_as_of, (as_of_ms,))
        async for r in scan:
            totals[r.account_id] += int(r.amount_minor)
        return dict(totals)

    # --- history ---------------------------------------------------------------------------------------

    async def bet_history(self, bet_id: str) -> list[BetEvent]:
        # Page by page through the loop (iterating a ResultSet would fetch further pages blocking it).
        events: list[BetEvent] = []
        state: bytes | None = None
        while True:
            rows, state = await self._page(self._sel_history, (bet_id,), HISTORY_PAGE, state)
            events.extend(_event(r) for r in rows)
            if not state:
                return events


def _recorded(error: BaseException | None) -> BaseException | None:
    """A bet's batch outcome: None = recorded. A WriteTimeout of type BATCH means the batchlog was written,
    so the coordinator (or the batchlog replay) applies every mutation: recorded. Any other failure (e.g.
    BATCH_LOG: the log write itself timed out) is uncertain and reported; the caller compensates."""
    if isinstance(error, WriteTimeout) and error.write_type == WriteType.BATCH:
        return None
    return error


def _bet_common(bet: PlacedBet) -> tuple[Any, ...]:
    return (
        bet.stake_minor,
        bet.currency,
        bet.potential_return_minor,
        int(bet.policy),
        bet.idempotency_key,
        bet.placed_at_ms,
    )


def _chunked(prepared: Any, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(rows), PROJECTION_CHUNK):
        chunk = rows[start : start + PROJECTION_CHUNK]
        if len(chunk) == 1:
            out.append(prepared.bind(chunk[0]))
            continue
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        add_rows(batch, prepared, chunk)
        out.append(batch)
    return out


# --- row encoding: the bet path's rows serialized without the driver's per-value dispatch ----------------
# Measured on this box: ``BatchStatement.add(prepared, row)`` costs 5.5-8 us per 9-column row (the driver
# binds through generic type objects); encoding the same values with precompiled struct packers and
# ``str.encode`` costs ~1.1 us. The bet path adds ~4 rows per bet (journal row + 3 view rows), and the
# profile of PlaceBets showed the binding as the largest single cost of the projector (docs/ledger.md).

_INT64 = struct.Struct(">q").pack
_INT32 = struct.Struct(">i").pack


def _utf8(value: str) -> bytes:
    return value.encode("utf-8")


# The CQL types of the bet path's columns and their wire encodings (what the driver's serializers produce).
_ENCODERS: dict[str, Callable[[Any], bytes]] = {"varchar": _utf8, "text": _utf8, "bigint": _INT64, "int": _INT32}
_ROW_ENCODERS: dict[int, tuple[Any, tuple[Callable[[Any], bytes], ...] | None]] = {}


def _row_encoders(prepared: Any) -> tuple[Callable[[Any], bytes], ...] | None:
    """One encoder per bound column of ``prepared``, or None if a column has a type not listed above."""
    cached = _ROW_ENCODERS.get(id(prepared))
    if cached is not None and cached[0] is prepared:
        return cached[1]
    found = [_ENCODERS.get(col.type.typename) for col in prepared.column_metadata]
    encoders = None if any(e is None for e in found) else tuple(e for e in found if e is not None)
    _ROW_ENCODERS[id(prepared)] = (prepared, encoders)
    return encoders


def encode_row(encoders: tuple[Callable[[Any], bytes], ...], row: Sequence[Any]) -> list[bytes | None]:
    """The values of one row as the driver's ``bind`` serializes them (None is a null)."""
    return [None if value is None else enc(value) for enc, value in zip(encoders, row, strict=True)]


def add_rows(batch: BatchStatement, prepared: Any, rows: Sequence[Sequence[Any]]) -> None:
    """``batch.add(prepared, row)`` for every row, the first one through the driver (it sets the batch's
    routing key and keyspace, as ``add`` does), the others pre-encoded."""
    encoders = _row_encoders(prepared)
    if encoders is None or not rows:
        for row in rows:
            batch.add(prepared, row)
        return
    batch.add(prepared, rows[0])
    query_id = prepared.query_id
    append = batch._add_statement_and_params  # the driver's own append of (prepared?, id, values)
    for row in rows[1:]:
        append(True, query_id, encode_row(encoders, row))


def _cas_holder(result: Any, claimant: str) -> str | None:
    """The holder of a slot whose claim was not applied because another claimant holds it, else None
    (claimed now, or earlier by the same claimant)."""
    rows = list(result.current_rows or ())
    if not rows:
        return None
    first = rows[0]
    if first[0]:  # [applied]
        return None
    holder = str(getattr(first, "claimant", "") or "")
    return None if holder == claimant else holder or "unknown"


def _journal_batch(rows: Sequence[Any]) -> JournalBatch:
    head = rows[0]
    return JournalBatch(
        shard=int(head.shard),
        slot=int(head.slot),
        prev_slot=int(head.prev_slot or 0),
        prev_checksum=head.prev_checksum or "",
        committed_at_ms=int(head.committed_at_ms or 0),
        rows=tuple(JournalRow(int(r.pos), r.kind, r.body) for r in rows if r.pos is not None),
        stored_checksum=head.checksum or "",
        stored_row_count=int(head.row_count or 0),
    )


def _entry_params(e: LedgerEntry) -> tuple[Any, ...]:
    return (e.account_id, e.created_at_ms, e.entry_id, int(e.kind), e.amount_minor, e.currency, e.bet_id, e.reference)


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


def _bet(row: Any, account_id: str | None = None) -> PlacedBet:
    return PlacedBet(
        bet_id=row.bet_id,
        account_id=account_id if account_id is not None else row.account_id,
        legs=legs_from_json(row.legs),
        stake_minor=int(row.stake_minor),
        currency=row.currency,
        potential_return_minor=int(row.potential_return_minor),
        policy=AcceptancePolicy(row.policy),
        idempotency_key=row.idempotency_key or "",
        placed_at_ms=int(row.placed_at_ms),
    )


def _bet_cached(row: Any, legs_cache: dict[str, tuple[Leg, ...]]) -> PlacedBet:
    """:func:`_bet` with the legs decoded once per distinct text (Leg and Odds are immutable: sharing them
    is safe)."""
    legs = legs_cache.get(row.legs)
    if legs is None:
        legs = legs_cache[row.legs] = legs_from_json(row.legs)
    lean = not hasattr(row, "policy")
    return PlacedBet(
        bet_id=row.bet_id,
        account_id=row.account_id,
        legs=legs,
        stake_minor=int(row.stake_minor),
        currency=row.currency,
        potential_return_minor=int(row.potential_return_minor),
        policy=AcceptancePolicy.UNSPECIFIED if lean else AcceptancePolicy(row.policy),
        idempotency_key="" if lean else row.idempotency_key or "",
        placed_at_ms=0 if lean else int(row.placed_at_ms),
    )


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row.entry_id,
        account_id=row.account_id,
        kind=EntryKind(row.kind),
        amount_minor=int(row.amount_minor),
        currency=row.currency or "",
        bet_id=row.bet_id or "",
        reference=row.reference or "",
        created_at_ms=int(row.created_at_ms),
    )


def _event(row: Any) -> BetEvent:
    return BetEvent(
        bet_id=row.bet_id,
        seq_key=row.seq_key,
        kind=row.kind,
        status=BetState(row.status),
        amount_minor=int(row.amount_minor),
        run_id=row.run_id or "",
        at_ms=int(row.at_ms),
        leg_outcomes=tuple(LegOutcome(o) for o in (row.leg_outcomes or ())),
    )


__all__ = ["EVENT_BUCKETS", "PLACED_SEQ_KEY", "CassandraLedger", "event_bucket", "legs_from_json", "legs_to_json"]
