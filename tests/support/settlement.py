"""Shared builders of the settlement tests (tests never import other test modules): outcomes and result
sets, bets as the bet path records them, markets and a market catalog, the world of one test on the real
stack (:class:`SettleEnv`: Cassandra, Redis, Kafka, a settlement service), Kafka and gRPC helpers.

Bets are placed by writing them to the ledger (``append_bets``: bet rows + STAKE entry) and debiting the
stake in the wallet (a credit of ``-stake`` deduplicated by ``stake:<bet_id>``): :func:`record_bet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from confluent_kafka import Consumer
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inplay.adapters.cassandra_settlement import CassandraSettlementStore
from inplay.adapters.kafka_results import KafkaResultsSource
from inplay.adapters.redis_lease import RedisLocks
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.settlement import Results, SettlementConfig, SettlementService, make_results
from inplay.model import BetState, EntryKind, LedgerEntry, Leg, PlacedBet
from inplay.ports import TOPIC_SETTLEMENTS, Credit
from inplay.settlement.v1 import settlement_pb2 as pb
from tests.support.ledger_checks import assert_money_invariants

# --------------------------------------------------------------------------------------------- builders


class SlowPages:
    """A SettlementStore that pauses after each page's checkpoint (a run stays RUNNING long enough to be
    observed or killed mid-run): the pace is set through the port, production code has no delay knob."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append_checkpoints(self, checkpoints: Sequence[Any]) -> None:
        await self._inner.append_checkpoints(checkpoints)
        if any(cp.phase in ("S", "M") for cp in checkpoints):
            await asyncio.sleep(self._delay_s)


def placed_bet(
    account: str, legs: Sequence[tuple[str, str, str, str]], stake: int, *, bet_id: str, key: str, at_ms: int
) -> PlacedBet:
    """A bet on ``legs`` = (event, market, selection, decimal odds) as the bet path records it."""
    return PlacedBet(
        bet_id=bet_id,
        account_id=account,
        legs=tuple(Leg(m, s, Odds.from_decimal(o), e) for e, m, s, o in legs),
        stake_minor=stake,
        currency="EUR",
        potential_return_minor=0,
        policy=AcceptancePolicy.NONE,
        idempotency_key=key,
        placed_at_ms=at_ms,
    )


async def fund(ledger: Any, wallet: Any, account: str, deposit: int, at_ms: int) -> None:
    """A DEPOSIT entry in the ledger and its credit in the wallet projection."""
    entry = LedgerEntry(f"deposit:{account}", account, EntryKind.DEPOSIT, deposit, "EUR", "", "seed", at_ms)
    await ledger.append_entries([entry])
    await wallet.credit_batch([Credit(account, entry.entry_id, deposit)])


async def record_bet(ledger: Any, wallet: Any, bets: Sequence[PlacedBet]) -> None:
    """The bets in the ledger (bet rows + STAKE entries) and their stakes debited in the wallet."""
    assert await ledger.append_bets(bets) == [None] * len(bets)
    await wallet.credit_batch([Credit(b.account_id, f"stake:{b.bet_id}", -b.stake_minor) for b in bets])


async def settled_state(ledger: Any, bet: PlacedBet) -> tuple[BetState, int]:
    """The bet's latest settlement status and what it has been paid, from the ledger's history."""
    history = [e for e in await ledger.bet_history(bet.bet_id) if e.run_id]
    return (history[-1].status if history else BetState.OPEN), sum(e.amount_minor for e in history)


# ------------------------------------------------------------------------------- outcomes and markets

W, L, V, P = LegOutcome.WIN, LegOutcome.LOSE, LegOutcome.VOID, LegOutcome.PUSH
HW, HL, DH = LegOutcome.HALF_WIN, LegOutcome.HALF_LOSE, LegOutcome.DEAD_HEAT
OPEN = LegOutcome.OPEN

_seq = itertools.count(1)
_clock = itertools.count(1_700_000_000_000, 10)


def clock() -> int:
    """A deterministic clock for the memory worlds (ms)."""
    return next(_clock)


def market(market_id: str, event_id: str, *selections: str, status: int = 1) -> Any:
    """A market as the odds cache holds it (for result validation)."""
    from inplay.model import MarketState, MarketStatus, SelectionPrice

    return MarketState(
        market_id=market_id,
        event_id=event_id,
        sport="football",
        market_type="1x2",
        name=market_id,
        in_play=True,
        status=MarketStatus(status),
        status_reason="",
        selections=tuple(SelectionPrice(s, s, Odds.from_decimal("2.00")) for s in selections),
        version=1,
        updated_at_ms=clock(),
    )


class Catalog:
    """A MarketCatalog over a dict (market id -> MarketState)."""

    def __init__(self, *markets: Any) -> None:
        self.markets = {m.market_id: m for m in markets}

    async def get_markets(self, market_ids: Sequence[str]) -> list[Any]:
        return [self.markets.get(m) for m in market_ids]


# ----------------------------------------------------------------------------- the real stack (SettleEnv)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def res(*outcomes: tuple[Any, ...], void: Sequence[str] = ()) -> Results:
    """Results from (market, selection, outcome[, (dead heat num, den)]) and voided markets."""
    return make_results([(o[0], o[1], o[2], o[3] if len(o) > 3 else (1, 1)) for o in outcomes], void)


@dataclass
class SettleEnv:
    """One test's world on the real stack: stores, a settlement service, funded accounts, bets."""

    ledger: Any
    wallet: Any
    bus: Any
    store: CassandraSettlementStore
    locks: RedisLocks
    service: SettlementService
    unique_id: Callable[[str], str]
    topic_prefix: str
    kafka_bootstrap: str
    settled_markets: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    deposits: int = 0
    redis_url: str = ""
    redis_prefix: str = ""

    async def seed_markets(self, *markets: tuple[str, str, Sequence[str]]) -> None:
        """Puts (event, market, selections) in this test's odds cache: results are validated against it
        by the worker (``open_settlement`` wires the odds cache as the market catalog)."""
        from inplay.adapters.redis_odds import RedisOddsCache

        cache = await RedisOddsCache.connect(self.redis_url, self.redis_prefix)
        try:
            await cache.put_markets([market(m, e, *sels) for e, m, sels in markets])
        finally:
            await cache.close()

    def new_service(self, *, page_delay_ms: int = 0, **config: Any) -> SettlementService:
        async def mark(market_ids: Sequence[str]) -> None:
            self.settled_markets.extend(market_ids)

        return SettlementService(
            SlowPages(self.store, page_delay_ms / 1000) if page_delay_ms else self.store,
            self.ledger,
            self.wallet,
            self.bus,
            self.locks,
            mark_settled=mark,
            config=SettlementConfig(**{**DEFAULT_CONFIG, "topic_prefix": self.topic_prefix, **config}),
        )

    async def account(self, deposit: int = 100_000) -> str:
        account = self.unique_id("acc")
        await fund(self.ledger, self.wallet, account, deposit, now_ms())
        self.accounts.append(account)
        self.deposits += deposit
        return account

    def make_bet(self, account: str, legs: Sequence[tuple[str, str, str, str]], stake: int = 1000) -> PlacedBet:
        at = now_ms()
        bet_id = f"{at:013x}{next(_seq):08d}{self.unique_id('b')[-6:]}"
        return placed_bet(account, legs, stake, bet_id=bet_id, key=self.unique_id("k"), at_ms=at)

    async def place(self, bets: Sequence[PlacedBet]) -> None:
        await record_bet(self.ledger, self.wallet, bets)

    async def bet(self, account: str, legs: Sequence[tuple[str, str, str, str]], stake: int = 1000) -> PlacedBet:
        bet = self.make_bet(account, legs, stake)
        await self.place([bet])
        return bet

    async def settled(self, bet: PlacedBet) -> tuple[BetState, int]:
        """The bet's latest settlement status and what it has been paid, from the ledger's history."""
        return await settled_state(self.ledger, bet)

    async def entries_of(self, bet: PlacedBet) -> list[LedgerEntry]:
        out: list[LedgerEntry] = []
        token = ""
        while True:
            page, token = await self.ledger.account_entries(bet.account_id, 500, token)
            out.extend(e for e in page if e.bet_id == bet.bet_id)
            if not token:
                return out

    async def check_conservation(self) -> dict[str, int]:
        """From the ledger alone: Σ balances = deposits - stakes + payouts (incl. refunds) - reversals;
        the Redis projection equals the ledger for every account. Returns the sums by entry kind. Also the
        shared invariants (tests/support/ledger_checks.py: each entry id once, money = history deltas)."""
        await assert_money_invariants(self.ledger, self.wallet, self.accounts, deposits=self.deposits)
        by_kind: dict[str, int] = {}
        ledger_balance: dict[str, int] = {}
        for account in self.accounts:
            token = ""
            while True:
                page, token = await self.ledger.account_entries(account, 1000, token)
                for e in page:
                    by_kind[e.kind.name] = by_kind.get(e.kind.name, 0) + e.amount_minor
                    ledger_balance[account] = ledger_balance.get(account, 0) + e.amount_minor
                if not token:
                    break
        total = sum(ledger_balance.values())
        assert by_kind.get("DEPOSIT", 0) == self.deposits
        assert total == (
            by_kind.get("DEPOSIT", 0)
            + by_kind.get("STAKE", 0)
            + by_kind.get("PAYOUT", 0)
            + by_kind.get("PAYOUT_REVERSAL", 0)
            + by_kind.get("WITHDRAWAL", 0)
        )
        scan = await self.ledger.account_balances()
        assert {a: scan.get(a, 0) for a in self.accounts} == {a: ledger_balance.get(a, 0) for a in self.accounts}
        projected = await self.wallet.balances(self.accounts)
        assert dict(zip(self.accounts, projected, strict=True)) == {a: ledger_balance.get(a, 0) for a in self.accounts}
        return by_kind

    def settlement_messages(self, event_id: str, expect: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The settled bets of the event's BetsSettled messages (each carries many bets), one dict per bet
        with the message's run fields merged in; reads until ``expect`` bets arrived."""
        messages = read_topic(
            self.kafka_bootstrap,
            self.topic_prefix + TOPIC_SETTLEMENTS,
            lambda key, value: key == event_id,
            expect,
            timeout_s,
            weight=lambda value: len(value["bets"]),
        )
        assert all(m["type"] == "BetsSettled" and m["event_id"] == event_id for m in messages)
        return [{**{k: v for k, v in m.items() if k != "bets"}, **bet} for m in messages for bet in m["bets"]]


DEFAULT_CONFIG: dict[str, Any] = {
    "page_size": 7,
    "multi_page_size": 3,
    "lock_ttl_ms": 3000,
    "lock_wait_ms": 3000,
    "multi_lock_wait_ms": 30_000,
}


def read_topic(
    bootstrap: str,
    topic: str,
    accept: Callable[[str, dict[str, Any]], bool],
    expect: int,
    timeout_s: float,
    weight: Callable[[dict[str, Any]], int] = lambda _value: 1,
) -> list[dict[str, Any]]:
    """Reads a topic from the beginning until accepted messages of total ``weight`` ``expect`` arrived (or
    the timeout)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and seen < expect:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            value = json.loads(msg.value())
            if accept((msg.key() or b"").decode(), value):
                out.append(value)
                seen += weight(value)
        # A little longer, to catch unexpected extra messages.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                value = json.loads(msg.value())
                if accept((msg.key() or b"").decode(), value):
                    out.append(value)
    finally:
        consumer.close()
    return out


def source_factory(bootstrap: str, group: str, topic: str) -> Callable[[], KafkaResultsSource]:
    return lambda: KafkaResultsSource(bootstrap, group, topic)


@contextlib.asynccontextmanager
async def open_senv(
    ledger: Any,
    wallet: Any,
    bus: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[SettleEnv]:
    store = CassandraSettlementStore.for_ledger(ledger)
    locks = RedisLocks.connect(redis_url, redis_prefix)
    env = SettleEnv(ledger, wallet, bus, store, locks, None, unique_id, topic_prefix, kafka_bootstrap)  # type: ignore[arg-type]
    env.redis_url, env.redis_prefix = redis_url, redis_prefix
    env.service = env.new_service()
    try:
        yield env
    finally:
        await env.service.drain()
        await locks.close()


# ----------------------------------------------------------------------------------------------- gRPC

OPERATOR = (("x-inplay-subject", "ops-1"), ("x-inplay-roles", "operator"))


def details(exc: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest field paths) from the google.rpc.Status in the trailers."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason = info.reason
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


def outcome(market: str, selection: str, result: int, dh: tuple[int, int] = (0, 0)) -> pb.SelectionOutcome:
    return pb.SelectionOutcome(
        market_id=market,
        selection_id=selection,
        result=result,  # type: ignore[arg-type]
        dead_heat_numerator=dh[0],
        dead_heat_denominator=dh[1],
    )
