"""Embedded in-memory stores with the same semantics as the real adapters (for the demo without servers and
for unit tests of pure logic). Every batch call is atomic under one asyncio lock, like one Lua script or one
logged batch. Nothing here is durable: the real adapters are what the integration tests prove.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, PlacedBet
from inplay.ports import AccountLimits, BusMessage, Credit, Debit, DebitResult

PENDING = "PENDING:"


class MemoryWallet:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.balance: dict[str, int] = defaultdict(int)
        self._idem: dict[tuple[str, str], str] = {}
        self._daily: dict[tuple[str, str], int] = defaultdict(int)
        self._liability: dict[str, int] = defaultdict(int)
        self._applied: set[str] = set()
        self._compensated: set[str] = set()
        self._limits: dict[str, AccountLimits] = {}

    async def debit_batch(self, debits: Sequence[Debit]) -> list[DebitResult]:
        async with self._lock:
            out: list[DebitResult] = []
            for d in debits:
                key = (d.account_id, d.idempotency_key)
                balance = self.balance[d.account_id]
                if key in self._idem:
                    out.append(DebitResult("DUPLICATE", balance, self._idem[key]))
                    continue
                limits = self._limits.get(d.account_id, AccountLimits())
                if limits.self_excluded_until_ms > d.now_ms:
                    out.append(DebitResult("SELF_EXCLUDED", balance))
                    continue
                daily_key = (d.account_id, d.day)
                if limits.daily_stake_limit_minor > 0 and (
                    self._daily[daily_key] + d.amount_minor > limits.daily_stake_limit_minor
                ):
                    out.append(DebitResult("DAILY_STAKE_LIMIT", balance))
                    continue
                if balance < d.amount_minor:
                    out.append(DebitResult("INSUFFICIENT_FUNDS", balance))
                    continue
                if d.liability_cap_minor > 0 and any(
                    self._liability[k] + d.liability_minor > d.liability_cap_minor for k in d.liability_keys
                ):
                    out.append(DebitResult("LIABILITY_EXCEEDED", balance))
                    continue
                self.balance[d.account_id] = balance - d.amount_minor
                self._daily[daily_key] += d.amount_minor
                for k in d.liability_keys:
                    self._liability[k] += d.liability_minor
                self._idem[key] = PENDING + d.bet_id
                out.append(DebitResult("DEBITED", self.balance[d.account_id]))
            return out

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        async with self._lock:
            applied: list[bool] = []
            for c in credits:
                if c.entry_id in self._applied:
                    applied.append(False)
                    continue
                self._applied.add(c.entry_id)
                self.balance[c.account_id] += c.amount_minor
                applied.append(True)
            return applied

    async def compensate(self, debits: Sequence[Debit]) -> None:
        async with self._lock:
            for d in debits:
                if d.bet_id in self._compensated:
                    continue
                self._compensated.add(d.bet_id)
                self.balance[d.account_id] += d.amount_minor
                self._daily[(d.account_id, d.day)] -= d.amount_minor
                for k in d.liability_keys:
                    self._liability[k] -= d.liability_minor
                self._idem.pop((d.account_id, d.idempotency_key), None)

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        async with self._lock:
            for account, key, result in records:
                if result.startswith('{"bet"') or (account, key) not in self._idem:
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
        self._limits[account_id] = limits


class MemoryLedger:
    EVENT_BUCKETS = 64

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.bets: dict[str, PlacedBet] = {}
        self._by_event: dict[str, dict[str, PlacedBet]] = defaultdict(dict)
        self._by_account: dict[str, list[PlacedBet]] = defaultdict(list)
        # Primary key (account_id, created_at_ms, entry_id) -> entry, as in Cassandra.
        self._entries: dict[tuple[str, int, str], LedgerEntry] = {}
        self._history: dict[str, dict[str, BetEvent]] = defaultdict(dict)
        self._idem: dict[tuple[str, str], str] = {}

    async def append_bets(self, bets: Sequence[PlacedBet]) -> list[BaseException | None]:
        async with self._lock:
            for bet in bets:
                if bet.bet_id not in self.bets:
                    self._by_account[bet.account_id].append(bet)
                self.bets[bet.bet_id] = bet
                for event_id in bet.event_ids:
                    self._by_event[event_id][bet.bet_id] = bet
                stake = stake_entry(bet)
                self._entries[(stake.account_id, stake.created_at_ms, stake.entry_id)] = stake
                placed = placed_event(bet)
                self._history[bet.bet_id][placed.seq_key] = placed
                self._idem[(bet.account_id, bet.idempotency_key)] = bet.bet_id
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
        return self.bets.get(bet_id)

    async def bet_history(self, bet_id: str) -> list[BetEvent]:
        return [ev for _, ev in sorted(self._history.get(bet_id, {}).items())]

    async def list_account_bets(self, account_id: str, page_size: int, page_token: str) -> tuple[list[PlacedBet], str]:
        bets = sorted(self._by_account.get(account_id, []), key=lambda b: (b.placed_at_ms, b.bet_id), reverse=True)
        start = int(page_token) if page_token else 0
        page = bets[start : start + page_size]
        return page, str(start + page_size) if start + page_size < len(bets) else ""

    async def event_bets(self, event_id: str, page_size: int = 5000) -> AsyncIterator[list[PlacedBet]]:
        bets = sorted(self._by_event.get(event_id, {}).values(), key=lambda b: b.bet_id)
        for start in range(0, len(bets), page_size):
            yield bets[start : start + page_size]

    async def account_entries(self, account_id: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        entries = [e for (acc, _, _), e in sorted(self._entries.items()) if acc == account_id]
        start = int(page_token) if page_token else 0
        page = entries[start : start + page_size]
        return page, str(start + page_size) if start + page_size < len(entries) else ""

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for (account, created, _), e in self._entries.items():
            if as_of_ms is None or created <= as_of_ms:
                totals[account] += e.amount_minor
        return dict(totals)

    async def get_bet_by_idempotency(self, account_id: str, key: str) -> str | None:
        return self._idem.get((account_id, key))


def stake_entry(bet: PlacedBet) -> LedgerEntry:
    """The ledger row of a bet's stake debit (deterministic id, so a rewrite is the same row)."""
    return LedgerEntry(
        entry_id=f"stake:{bet.bet_id}",
        account_id=bet.account_id,
        kind=EntryKind.STAKE,
        amount_minor=-bet.stake_minor,
        currency=bet.currency,
        bet_id=bet.bet_id,
        reference=bet.idempotency_key,
        created_at_ms=bet.placed_at_ms,
    )


PLACED_SEQ_KEY = "0000000000000-placed"


def placed_event(bet: PlacedBet) -> BetEvent:
    return BetEvent(
        bet_id=bet.bet_id,
        seq_key=PLACED_SEQ_KEY,
        kind="PLACED",
        status=BetState.OPEN,
        amount_minor=bet.stake_minor,
        run_id="",
        at_ms=bet.placed_at_ms,
    )


class MemoryEventBus:
    def __init__(self) -> None:
        self.messages: dict[str, list[BusMessage]] = defaultdict(list)

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        for m in messages:
            self.messages[m.topic].append(m)

    async def flush(self, timeout_s: float = 10.0) -> None:
        return None

    async def close(self) -> None:
        return None

    def decoded(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(m.value) for m in self.messages.get(topic, [])]
