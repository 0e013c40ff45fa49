"""Embedded in-memory stores with the same semantics as the real adapters, for the demo without servers and
for unit tests of pure logic. Every batch call is atomic under one asyncio lock, as one Lua script call
(Redis) or one logged batch per bet (Cassandra) is. Nothing here is durable: the integration tests prove the
real adapters (``redis_wallet``, ``cassandra_ledger``, ``kafka_bus``).

``inplay.domain.journal`` (``stake_entry`` / ``placed_event``) defines the rows a placed bet adds to the ledger; the
Cassandra ledger uses the same functions, so both stores record a bet identically.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from inplay import pagetoken
from inplay.domain.journal import (
    JournalBatch,
    decode_bet_row,
    parse_journal_bet_id,
    placed_event,
    stake_entry,
)
from inplay.model import BetEvent, EntryKind, LedgerEntry, MarketStatus, PlacedBet
from inplay.ports import (
    AccountLimits,
    BalanceScan,
    BatchIntent,
    BusMessage,
    Credit,
    Debit,
    DebitResult,
    JournalRejected,
    LiabilityChange,
    PendingIntent,
    RepairOvertaken,
    ShardClaim,
    WalletRebuild,
    WalletUnavailable,
)

_T = TypeVar("_T")

PENDING = "PENDING:"


def is_acceptance(result: str) -> bool:
    """A final idempotency record of an accepted bet (``inplay.domain.commit.accepted_record``)."""
    return result.startswith(("BET:", '{"bet"'))


class MemoryWallet:
    """:class:`inplay.ports.WalletStore` in memory; mirrors ``RedisWallet``'s Lua scripts step by step.
    ``market_status`` gives the status of a market as the odds cache holds it (the Redis script reads the
    same Redis hash), for the atomic re-check of closed/suspended markets at debit time."""

    def __init__(self, market_status: Callable[[str], MarketStatus | None] | None = None) -> None:
        self._lock = asyncio.Lock()
        self._market_status = market_status or (lambda _m: None)
        self.balance: dict[str, int] = defaultdict(int)
        self._idem: dict[tuple[str, str], str] = {}
        self._daily: dict[tuple[str, str], int] = defaultdict(int)
        self._liability: dict[str, int] = defaultdict(int)
        self._applied: set[str] = set()
        self._compensated: set[str] = set()
        self._liability_released: set[str] = set()
        self._limits: dict[str, AccountLimits] = {}
        self._shards: dict[int, str] = {}
        self._heads: dict[int, int] = defaultdict(int)
        self._last: dict[int, tuple[int, str]] = {}
        self._intents: dict[tuple[int, int], PendingIntent] = {}
        self._epoch: str | None = None
        self._fence_token: str | None = None
        self._fence_until = 0.0

    async def debit_batch(self, debits: Sequence[Debit], intent: BatchIntent | None = None) -> list[DebitResult]:
        async with self._lock:
            gate = None
            if intent is not None:
                if self._shards.get(intent.shard) != intent.owner:
                    gate = "SHARD_LOST"
                elif self._epoch is None or self._fenced():
                    gate = "NOT_READY"
            if gate is not None:
                return [DebitResult(gate, self.balance[d.account_id]) for d in debits]
            results = [self._debit(d) for d in debits]
            if intent is not None:
                self._heads[intent.shard] = max(self._heads[intent.shard], intent.slot)
                rows = {d.pos: d.row for d, r in zip(debits, results, strict=True) if r.status == "DEBITED"}
                if rows:
                    self._intents[(intent.shard, intent.slot)] = PendingIntent(
                        intent.shard,
                        intent.slot,
                        intent.prev_slot,
                        intent.prev_checksum,
                        intent.at_ms,
                        rows,
                        intent.claimant,
                    )
            return results

    def _debit(self, d: Debit) -> DebitResult:
        key = (d.account_id, d.idempotency_key)
        balance = self.balance[d.account_id]
        existing = self._idem.get(key)
        if existing is not None:
            # Our own reservation: a retried call whose first attempt was applied.
            if existing == f"{PENDING}{d.bet_id}:{d.slip_hash}":
                return DebitResult("DEBITED", balance)
            return DebitResult("DUPLICATE", balance, existing)
        for market_id in d.market_ids:
            status = self._market_status(market_id)
            if status == MarketStatus.SETTLED:
                return DebitResult("MARKET_CLOSED", balance)
            if status == MarketStatus.SUSPENDED:
                return DebitResult("MARKET_SUSPENDED", balance)
        limits = self._limits.get(d.account_id, AccountLimits())
        if limits.self_excluded_until_ms > d.now_ms:
            return DebitResult("SELF_EXCLUDED", balance)
        daily_key = (d.account_id, d.day)
        limit = limits.daily_stake_limit_minor
        if limit > 0 and self._daily[daily_key] + d.amount_minor > limit:
            return DebitResult("DAILY_STAKE_LIMIT", balance)
        if balance < d.amount_minor:
            return DebitResult("INSUFFICIENT_FUNDS", balance)
        cap = d.liability_cap_minor
        if cap > 0 and any(self._liability[k] + d.liability_minor > cap for k in d.liability_keys):
            return DebitResult("LIABILITY_EXCEEDED", balance)
        self.balance[d.account_id] = balance - d.amount_minor
        self._daily[daily_key] += d.amount_minor
        for k in d.liability_keys:
            self._liability[k] += d.liability_minor
        self._idem[key] = f"{PENDING}{d.bet_id}:{d.slip_hash}"
        return DebitResult("DEBITED", self.balance[d.account_id])

    async def finish_batch(self, shard: int, slot: int, checksum: str, records: Sequence[tuple[str, str, str]]) -> None:
        async with self._lock:
            self._store_records(records)
            if checksum and self._last.get(shard, (0, ""))[0] < slot:
                self._last[shard] = (slot, checksum)
            self._intents.pop((shard, slot), None)

    async def replication_barrier(self) -> None:
        return None  # one process, no replicas: everything applied is everything there is

    async def pending_intents(self, shard: int) -> list[PendingIntent]:
        return [i for (n, _), i in sorted(self._intents.items()) if n == shard]

    async def claim_shard(self, owner: str, ttl_ms: int, shards: int, preferred: int = -1) -> ShardClaim | None:
        async with self._lock:
            mine = [n for n, holder in self._shards.items() if holder == owner]
            order = mine + ([preferred] if 0 <= preferred < shards else []) + list(range(shards))
            for n in order:
                if self._shards.get(n) in (None, owner):
                    self._shards[n] = owner
                    last_slot, last_checksum = self._last.get(n, (0, ""))
                    return ShardClaim(n, self._heads[n], last_slot, last_checksum)
            return None

    async def renew_shard(self, shard: int, owner: str, ttl_ms: int) -> bool:
        async with self._lock:
            if self._shards.get(shard) != owner:
                return False
            if ttl_ms == 0:
                del self._shards[shard]
            return True

    async def journal_heads(self, shards: int) -> list[int]:
        return [self._heads[n] for n in range(shards)]

    async def intents_pending(self, shards: int) -> list[int]:
        return [sum(1 for (s, _) in self._intents if s == n) for n in range(shards)]

    async def shard_holders(self, shards: int) -> list[str | None]:
        return [self._shards.get(n) for n in range(shards)]

    async def epoch(self) -> str | None:
        return self._epoch

    async def set_epoch(self, epoch: str) -> None:
        self._epoch = epoch

    def _fenced(self) -> bool:
        if self._fence_token is not None and asyncio.get_running_loop().time() >= self._fence_until:
            self._fence_token = None  # expired: a repair that died does not fence the wallet forever
        return self._fence_token is not None

    async def set_fence(self, up: bool, token: str = "1", ttl_ms: int = 60_000) -> None:
        if up or (self._fenced() and self._fence_token == token):
            self._fence_token = token if up else None
            self._fence_until = asyncio.get_running_loop().time() + ttl_ms / 1000

    async def refresh_fence(self, token: str, ttl_ms: int = 60_000) -> bool:
        if self._fenced() and self._fence_token == token:
            self._fence_until = asyncio.get_running_loop().time() + ttl_ms / 1000
            return True
        return False

    async def rebuild(self, state: WalletRebuild, fence: str = "1") -> None:
        async with self._lock:
            if not self._fenced() or self._fence_token != fence:
                raise RepairOvertaken("the repair fence is held by another repair; nothing rebuilt")
            self.balance.update(state.balances)
            self._applied.update(state.applied_entry_ids)
            self._idem.update(state.idempotency)
            self._daily.update(state.daily_stake)
            self._liability.update(state.liability)
            self._liability_released.update(state.liability_released)
            self._liability_released.difference_update(state.liability_open)
            self._limits.update(state.limits)
            for shard, (head, last_slot, last_checksum) in state.journal.items():
                self._heads[shard] = head
                if last_slot:
                    self._last[shard] = (last_slot, last_checksum)

    def forget_everything(self) -> None:
        """Test helper: the projection lost all its data (a flushed Redis)."""
        self.__init__(self._market_status)  # type: ignore[misc]

    async def settle_liability(self, changes: Sequence[LiabilityChange]) -> list[bool]:
        async with self._lock:
            if self._fenced():
                raise WalletUnavailable("the wallet projection is being repaired; retry shortly")
            out: list[bool] = []
            for c in changes:
                changed = c.released != (c.bet_id in self._liability_released)
                if changed:
                    sign = -1 if c.released else 1
                    for key in c.keys:
                        self._liability[key] += sign * c.amount_minor
                    (self._liability_released.add if c.released else self._liability_released.discard)(c.bet_id)
                out.append(changed)
            return out

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        async with self._lock:
            if self._fenced():
                raise WalletUnavailable("the wallet projection is being repaired; retry shortly")
            applied: list[bool] = []
            for c in credits:
                if c.entry_id in self._applied:
                    applied.append(False)
                    continue
                self._applied.add(c.entry_id)
                self.balance[c.account_id] += c.amount_minor
                applied.append(True)
            return applied

    async def abandon_batch(self, shard: int, slot: int, debits: Sequence[Debit]) -> None:
        async with self._lock:
            self._compensate(debits)
            self._intents.pop((shard, slot), None)

    async def compensate(self, debits: Sequence[Debit]) -> None:
        async with self._lock:
            self._compensate(debits)

    def _compensate(self, debits: Sequence[Debit]) -> None:
        for d in debits:
            key = (d.account_id, d.idempotency_key)
            # Once per bet, and only for a debit that happened (its reservation is still held).
            held = self._idem.get(key, "")
            if d.bet_id in self._compensated or not held.startswith(f"{PENDING}{d.bet_id}:"):
                continue
            self._compensated.add(d.bet_id)
            self.balance[d.account_id] += d.amount_minor
            daily_key = (d.account_id, d.day)
            if daily_key in self._daily:
                self._daily[daily_key] -= d.amount_minor
            for k in d.liability_keys:
                self._liability[k] -= d.liability_minor
            del self._idem[key]

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        async with self._lock:
            self._store_records(records)

    def _store_records(self, records: Sequence[tuple[str, str, str]]) -> None:
        for account, key, result in records:
            # An acceptance replaces its own PENDING reservation; a rejection is stored only where
            # nothing is, so it can never replace a concurrent call's reservation or acceptance.
            if is_acceptance(result) or (account, key) not in self._idem:
                self._idem[(account, key)] = result

    async def get_idempotent(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        return [self._idem.get(k) for k in keys]

    async def balances(self, account_ids: Sequence[str]) -> list[int]:
        return [self.balance.get(a, 0) for a in account_ids]

    async def set_balances(self, balances: dict[str, int]) -> None:
        async with self._lock:
            self.balance.update(balances)

    async def get_limits(self, account_id: str) -> AccountLimits:
        return self._limits.get(account_id, AccountLimits())

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None:
        async with self._lock:
            self._limits[account_id] = limits


class MemoryLedger:
    """:class:`inplay.ports.Ledger` in memory. Rows are keyed by their Cassandra primary keys, so a rewrite
    of the same row replaces it with itself, as an idempotent INSERT does. Page tokens are offsets."""

    EVENT_BUCKETS = 64

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.bets: dict[str, PlacedBet] = {}
        self._by_event: dict[str, dict[str, PlacedBet]] = defaultdict(dict)
        self._by_account: dict[str, dict[str, PlacedBet]] = defaultdict(dict)
        # (account_id, created_at_ms, entry_id) -> entry, as in ledger_by_account.
        self._entries: dict[tuple[str, int, str], LedgerEntry] = {}
        self._history: dict[str, dict[str, BetEvent]] = defaultdict(dict)
        self._idem: dict[tuple[str, str], str] = {}
        # The journal this object reads and writes (``with_journal``): keys carry it, as the Cassandra
        # partition key does, so two deployments (or test sessions) on one store never share a shard.
        self.journal_name = "inplay"
        self.journal: dict[tuple[str, int, int], JournalBatch] = {}
        self.slot_claims: dict[tuple[str, int, int], str] = {}  # (journal, shard, slot) -> claimant
        self._progress: dict[tuple[str, int, str], int] = {}
        self._limits: dict[str, tuple[int, AccountLimits]] = {}
        self._epochs: dict[str, list[str]] = defaultdict(list)

    async def append_bets(self, bets: Sequence[PlacedBet]) -> list[BaseException | None]:
        async with self._lock:
            for bet in bets:
                self.bets[bet.bet_id] = bet
                self._by_account[bet.account_id][bet.bet_id] = bet
                for event_id in bet.event_ids:
                    self._by_event[event_id][bet.bet_id] = bet
                stake = stake_entry(bet)
                self._entries[(stake.account_id, stake.created_at_ms, stake.entry_id)] = stake
                placed = placed_event(bet)
                self._history[bet.bet_id][placed.seq_key] = placed
                self._idem.setdefault((bet.account_id, bet.idempotency_key), bet.bet_id)
            return [None] * len(bets)

    async def append_entries(self, entries: Sequence[LedgerEntry]) -> None:
        async with self._lock:
            for e in entries:
                self._entries[(e.account_id, e.created_at_ms, e.entry_id)] = e

    async def append_bet_events(self, events: Sequence[BetEvent]) -> None:
        async with self._lock:
            for ev in events:
                self._history[ev.bet_id][ev.seq_key] = ev

    async def get_bet(self, bet_id: str) -> PlacedBet | None:
        position = parse_journal_bet_id(bet_id)
        if position is None:
            return self.bets.get(bet_id)
        _, shard, slot, pos = position
        batch = self.journal.get((self.journal_name, shard, slot))
        for row in batch.rows if batch is not None else ():
            if row.pos == pos:
                return decode_bet_row(row.body)[0]
        return None

    # --- the journal -------------------------------------------------------------------------------------

    def with_journal(self, name: str) -> MemoryLedger:
        """The same store (rows, lock) bound to the journal ``name``."""
        view = copy.copy(self)
        view.journal_name = name
        return view

    async def claim_slot(self, shard: int, slot: int, claimant: str) -> bool:
        async with self._lock:
            return self.slot_claims.setdefault((self.journal_name, shard, slot), claimant) == claimant

    async def write_journal(self, batch: JournalBatch, claimant: str = "") -> None:
        async with self._lock:
            key = (self.journal_name, batch.shard, batch.slot)
            holder = self.slot_claims.setdefault(key, claimant or batch.checksum)
            if holder != (claimant or batch.checksum):
                raise JournalRejected(f"journal slot {key} is claimed by another batch ({holder})")
            stored = self.journal.get(key)
            if stored is not None and (stored.rows, stored.checksum) != (batch.rows, batch.checksum):
                raise JournalRejected(f"journal batch {key} exists with other content")
            self.journal[key] = JournalBatch(
                batch.shard,
                batch.slot,
                batch.prev_slot,
                batch.prev_checksum,
                batch.committed_at_ms,
                batch.rows,
                stored_checksum=batch.checksum,
                stored_row_count=len(batch.rows),
            )

    async def read_journal(self, shard: int, slot: int) -> JournalBatch | None:
        return self.journal.get((self.journal_name, shard, slot))

    async def scan_journal(self) -> AsyncIterator[JournalBatch]:
        for (name, _, _), batch in sorted(self.journal.items()):
            if name == self.journal_name:
                yield batch

    async def save_progress(self, shard: int, consumer: str, slot: int, at_ms: int) -> None:
        key = (self.journal_name, shard, consumer)
        self._progress[key] = max(self._progress.get(key, 0), slot)

    async def load_progress(self, shard: int, consumer: str) -> int:
        return self._progress.get((self.journal_name, shard, consumer), 0)

    async def project_bets(self, bets: Sequence[PlacedBet]) -> None:
        async with self._lock:
            for bet in bets:
                self._by_account[bet.account_id][bet.bet_id] = bet
                for event_id in bet.event_ids:
                    self._by_event[event_id][bet.bet_id] = bet
                stake = stake_entry(bet)
                self._entries[(stake.account_id, stake.created_at_ms, stake.entry_id)] = stake

    async def record_limits(self, account_id: str, limits: AccountLimits, at_ms: int) -> None:
        current = self._limits.get(account_id)
        if current is None or current[0] <= at_ms:
            self._limits[account_id] = (at_ms, limits)

    async def all_limits(self) -> dict[str, AccountLimits]:
        return {account: limits for account, (_, limits) in self._limits.items()}

    async def scan_balances(self) -> BalanceScan:
        totals: dict[str, int] = defaultdict(int)
        credits: list[tuple[str, str]] = []
        for (account, _, entry_id), e in self._entries.items():
            totals[account] += e.amount_minor
            if e.kind != EntryKind.STAKE:
                credits.append((account, entry_id))
        return BalanceScan(dict(totals), credits)

    async def record_epoch(self, projection: str, epoch: str, at_ms: int) -> None:
        if epoch not in self._epochs[projection]:
            self._epochs[projection].append(epoch)

    async def epochs(self, projection: str) -> list[str]:
        return list(self._epochs.get(projection, ()))

    async def get_bet_by_idempotency(self, account_id: str, key: str) -> str | None:
        return self._idem.get((account_id, key))

    async def bet_history(self, bet_id: str) -> list[BetEvent]:
        return [ev for _, ev in sorted(self._history.get(bet_id, {}).items())]

    async def scan_bet_history(self) -> AsyncIterator[BetEvent]:
        for bet_id in list(self._history):
            for ev in await self.bet_history(bet_id):
                yield ev

    async def list_account_bets(self, account_id: str, page_size: int, page_token: str) -> tuple[list[PlacedBet], str]:
        bets = sorted(
            self._by_account.get(account_id, {}).values(), key=lambda b: (b.placed_at_ms, b.bet_id), reverse=True
        )
        return _page(bets, page_size, page_token, f"bets|{account_id}")

    async def event_bets(self, event_id: str, page_size: int = 5000) -> AsyncIterator[list[PlacedBet]]:
        bets = sorted(self._by_event.get(event_id, {}).values(), key=lambda b: b.bet_id)
        for start in range(0, len(bets), page_size):
            yield bets[start : start + page_size]

    async def account_entries(self, account_id: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        entries = [e for (acc, _, _), e in sorted(self._entries.items()) if acc == account_id]
        return _page(entries, page_size, page_token, f"entries|{account_id}")

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for (account, created, _), e in self._entries.items():
            if as_of_ms is None or created <= as_of_ms:
                totals[account] += e.amount_minor
        return dict(totals)


def _page(items: list[_T], page_size: int, page_token: str, scope: str) -> tuple[list[_T], str]:
    """Offsets as signed page tokens (the same contract as the Cassandra adapter's paging states)."""
    state = pagetoken.decode(scope, page_token)
    start = int(state.decode()) if state else 0
    end = start + max(1, page_size)
    return items[start:end], pagetoken.encode(scope, str(end).encode()) if end < len(items) else ""


class MemoryEventBus:
    """:class:`inplay.ports.EventBus` in memory: keeps the last ``max_per_topic`` messages of each topic
    (bounded, for a long embedded demo) in publish order."""

    def __init__(self, max_per_topic: int = 100_000) -> None:
        self._max = max_per_topic
        self.messages: dict[str, deque[BusMessage]] = defaultdict(lambda: deque(maxlen=self._max))
        self.closed = False

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        if self.closed:
            raise RuntimeError("the event bus is closed")
        for m in messages:
            self.messages[m.topic].append(m)

    async def flush(self, timeout_s: float = 10.0) -> None:
        return None  # delivered on publish

    async def deliver(self, messages: Sequence[BusMessage], timeout_s: float = 10.0) -> None:
        await self.publish(messages)

    async def close(self) -> None:
        self.closed = True

    def decoded(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(m.value) for m in self.messages.get(topic, ())]
