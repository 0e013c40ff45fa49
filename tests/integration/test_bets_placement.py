"""Bet acceptance against the real Redis (odds cache, wallet), Cassandra (ledger) and Kafka (BetPlaced)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.app import BetPath
from inplay.config import BetRules
from inplay.core import AcceptancePolicy, Odds
from inplay.domain.bets import BetPlacement, PlacementResult, Reason
from inplay.domain.journal import with_placed
from inplay.domain.wallet import reconcile
from inplay.model import BetRequest, Leg, MarketState, MarketStatus, SelectionPrice
from inplay.ports import TOPIC_BETS, AccountLimits, Credit, EventBus, Ledger, WalletStore
from tests.support.bets import bet_path

pytestmark = pytest.mark.integration

RULES = BetRules(
    tolerance_bp=500,
    min_stake_minor=10,
    max_stake_minor=100_000,
    max_payout_minor=1_000_000,
    max_price_age_inplay_ms=60_000,
    max_price_age_prematch_ms=60_000,
    batch_window_ms=1.0,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def odds_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisOddsCache]:
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    yield cache
    await cache.close()


class Book:
    """Test helper: one event with markets in the real odds cache, and funded accounts."""

    def __init__(self, cache: RedisOddsCache, wallet: WalletStore, unique_id: Callable[[str], str]) -> None:
        self.cache = cache
        self.wallet = wallet
        self.unique_id = unique_id
        self.event_id = unique_id("ev")
        self.version = 0

    async def market(
        self,
        prices: dict[str, str],
        *,
        in_play: bool = False,
        status: MarketStatus = MarketStatus.ACTIVE,
        market_id: str | None = None,
        updated_at_ms: int | None = None,
    ) -> MarketState:
        self.version += 1
        state = MarketState(
            market_id=market_id or self.unique_id("mkt"),
            event_id=self.event_id,
            sport="football",
            market_type="MATCH_RESULT",
            name="Match result",
            in_play=in_play,
            status=status,
            status_reason="" if status == MarketStatus.ACTIVE else "BET_STOP",
            selections=tuple(SelectionPrice(sid, sid, Odds.from_decimal(p)) for sid, p in prices.items()),
            version=self.version,
            updated_at_ms=now_ms() if updated_at_ms is None else updated_at_ms,
            source="test",
        )
        await self.cache.put_markets([state])
        cached = await self.cache.get_markets([state.market_id])
        assert cached[0] is not None
        return cached[0]

    async def reprice(self, market: MarketState, prices: dict[str, str], **changes: Any) -> MarketState:
        """A newer version of the market (the cache assigns versions; we only need newer)."""
        new = replace(
            market,
            selections=tuple(SelectionPrice(sid, sid, Odds.from_decimal(p)) for sid, p in prices.items()),
            version=market.version + 1,
            updated_at_ms=now_ms(),
            **changes,
        )
        await self.cache.put_markets([new])
        cached = await self.cache.get_markets([market.market_id])
        assert cached[0] is not None
        return cached[0]

    async def account(self, balance: int) -> str:
        account = self.unique_id("acc")
        if balance:
            await self.wallet.credit_batch([Credit(account, f"seed:{account}", balance)])
        return account


def slip(
    account: str,
    market: MarketState,
    selection: str,
    odds: str,
    stake: int = 100,
    policy: AcceptancePolicy = AcceptancePolicy.NONE,
    key: str | None = None,
    extra_legs: Sequence[Leg] = (),
) -> BetRequest:
    return BetRequest(
        account_id=account,
        legs=(Leg(market.market_id, selection, Odds.from_decimal(odds)), *extra_legs),
        stake_minor=stake,
        currency="EUR",
        policy=policy,
        idempotency_key=key or f"k-{time.time_ns()}-{id(market)}-{selection}-{stake}",
    )


@pytest.fixture
async def book(odds_cache: RedisOddsCache, wallet: WalletStore, unique_id: Callable[[str], str]) -> Book:
    return Book(odds_cache, wallet, unique_id)


@pytest.fixture
async def path(
    odds_cache: RedisOddsCache, wallet: WalletStore, ledger: Ledger, bus: EventBus, topic_prefix: str, redis_prefix: str
) -> AsyncIterator[BetPath]:
    opened = await bet_path(odds_cache, wallet, ledger, bus, RULES, projection=redis_prefix, topic_prefix=topic_prefix)
    yield opened
    await opened.close()


@pytest.fixture
def placement(path: BetPath) -> BetPlacement:
    return path.placement


async def balance(wallet: WalletStore, account: str) -> int:
    [value] = await wallet.balances([account])
    return value


def reason(result: PlacementResult) -> str:
    assert result.rejection is not None, f"expected a rejection, got {result}"
    return result.rejection.reason


async def test_accepted_bet_debits_records_and_publishes(
    book: Book,
    path: BetPath,
    placement: BetPlacement,
    wallet: WalletStore,
    ledger: Ledger,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    market = await book.market({"home": "2.50", "away": "1.60"})
    account = await book.account(10_000)
    result = await placement.place(slip(account, market, "home", "2.50", stake=1_000))
    assert result.bet is not None, result
    bet = result.bet
    assert bet.potential_return_minor == 2_500
    assert bet.legs[0].event_id == book.event_id
    assert await balance(wallet, account) == 9_000
    stored = await path.ledger.get_bet(bet.bet_id)  # the journal row: readable right after the commit
    assert stored == bet
    await path.caught_up()  # the views and the outbox are projections of the journal
    entries, _ = await ledger.account_entries(account, 100, "")
    assert [(e.kind.name, e.amount_minor, e.bet_id) for e in entries] == [("STAKE", -1_000, bet.bet_id)]
    history = with_placed(bet, await ledger.bet_history(bet.bet_id))  # PLACED is the journal row itself
    assert [h.kind for h in history] == ["PLACED"]
    # BetPlaced reached Kafka, keyed by the event.
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"t-{time.time_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic_prefix + TOPIC_BETS])
    found = None
    deadline = time.monotonic() + 20
    try:
        while found is None and time.monotonic() < deadline:
            msg = await asyncio.to_thread(consumer.poll, 0.5)
            if msg is None or msg.error():
                continue
            payload = json.loads(msg.value())
            if payload.get("bet", {}).get("id") == bet.bet_id:  # the topic may carry other tests' messages
                found = msg
    finally:
        consumer.close()
    assert found is not None, "BetPlaced not published"
    assert found.key().decode() == book.event_id


async def test_concurrent_bets_from_one_account_never_overdraw(
    book: Book, path: BetPath, placement: BetPlacement, wallet: WalletStore, ledger: Ledger
) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"})
    account = await book.account(1_000)
    reqs = [slip(account, market, "home", "2.00", stake=100, key=f"c{i}") for i in range(40)]
    results = await asyncio.gather(*(placement.place(r) for r in reqs))
    accepted = [r for r in results if r.accepted]
    assert len(accepted) == 10
    assert {reason(r) for r in results if not r.accepted} == {Reason.INSUFFICIENT_FUNDS}
    assert await balance(wallet, account) == 0
    await path.caught_up()
    entries, _ = await ledger.account_entries(account, 1000, "")
    assert sum(e.amount_minor for e in entries) == -1_000


async def test_duplicate_submits_place_one_bet(
    book: Book,
    path: BetPath,
    redis_prefix: str,
    placement: BetPlacement,
    wallet: WalletStore,
    ledger: Ledger,
    odds_cache: RedisOddsCache,
    bus: EventBus,
    topic_prefix: str,
) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"})
    account = await book.account(1_000)
    req = slip(account, market, "home", "2.00", stake=100, key="same-key")
    first = await placement.place(req)
    assert first.bet is not None and not first.replayed
    # Sequential retry.
    again = await placement.place(req)
    assert again.replayed and again.bet == first.bet
    # Concurrent duplicates of a new key (through both the unary path and one batch).
    req2 = slip(account, market, "home", "2.00", stake=100, key="other-key")
    results = await asyncio.gather(*(placement.place(req2) for _ in range(20)), placement.place_batch([req2, req2]))
    flat: list[PlacementResult] = [r for r in results if isinstance(r, PlacementResult)]
    flat += [r for batch in results if isinstance(batch, list) for r in batch]
    bet_ids = {r.bet.bet_id for r in flat if r.bet is not None}
    assert len(bet_ids) == 1
    assert {reason(r) for r in flat if r.bet is None} <= {Reason.IN_PROGRESS}
    # After a restart (the bet path closed and opened again on the same stores) the key still replays.
    await path.close()
    restarted = await bet_path(
        odds_cache, wallet, ledger, bus, RULES, projection=redis_prefix, topic_prefix=topic_prefix
    )
    try:
        replay = await restarted.placement.place(req2)
        assert replay.replayed and replay.bet is not None and replay.bet.bet_id in bet_ids
        await restarted.caught_up()
    finally:
        await restarted.close()
    assert await balance(wallet, account) == 800
    entries, _ = await ledger.account_entries(account, 1000, "")
    assert len([e for e in entries if e.kind.name == "STAKE"]) == 2


async def test_rejections_are_replayed_for_the_same_key(book: Book, placement: BetPlacement) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"})
    account = await book.account(1_000)
    req = slip(account, market, "home", "3.00", key="moved")  # 2.00 vs 3.00 seen: moved 33 %
    first = await placement.place(req)
    assert reason(first) == Reason.ODDS_CHANGED
    await book.reprice(market, {"home": "3.00", "away": "1.50"})
    second = await placement.place(req)
    assert second.replayed and reason(second) == Reason.ODDS_CHANGED


async def test_suspension_between_quote_and_placement_rejects(
    book: Book, placement: BetPlacement, wallet: WalletStore
) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"})
    account = await book.account(1_000)
    quoted = market.selection("home")
    assert quoted is not None
    await book.reprice(
        market, {"home": "2.00", "away": "2.00"}, status=MarketStatus.SUSPENDED, status_reason="BET_STOP"
    )
    result = await placement.place(slip(account, market, "home", "2.00"))
    assert reason(result) == Reason.MARKET_SUSPENDED
    assert await balance(wallet, account) == 1_000


@pytest.mark.parametrize(
    ("policy", "seen", "current", "accepted"),
    [
        (AcceptancePolicy.NONE, "2.00", "2.08", True),  # +4 %
        (AcceptancePolicy.NONE, "2.00", "2.10", True),  # +5 % exactly: within
        (AcceptancePolicy.NONE, "2.00", "2.12", False),  # +6 %
        (AcceptancePolicy.NONE, "2.00", "1.88", False),  # -6 %
        (AcceptancePolicy.HIGHER, "2.00", "3.00", True),  # any rise
        (AcceptancePolicy.HIGHER, "2.00", "1.92", True),  # -4 %
        (AcceptancePolicy.HIGHER, "2.00", "1.80", False),  # -10 %
        (AcceptancePolicy.ANY, "2.00", "1.20", True),
        (AcceptancePolicy.ANY, "2.00", "9.00", True),
    ],
)
async def test_tolerance_under_each_policy(
    book: Book, placement: BetPlacement, policy: AcceptancePolicy, seen: str, current: str, accepted: bool
) -> None:
    market = await book.market({"home": current, "away": "2.00"})
    account = await book.account(1_000)
    result = await placement.place(slip(account, market, "home", seen, policy=policy))
    if accepted:
        assert result.bet is not None, result
        # Always placed at the current price.
        assert result.bet.legs[0].odds == Odds.from_decimal(current)
    else:
        assert reason(result) == Reason.ODDS_CHANGED
        assert result.rejection is not None and result.rejection.odds_changed is not None
        assert result.rejection.odds_changed.current == Odds.from_decimal(current)


async def test_stale_price_is_rejected(book: Book, placement: BetPlacement) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"}, updated_at_ms=now_ms() - 120_000)
    account = await book.account(1_000)
    assert reason(await placement.place(slip(account, market, "home", "2.00"))) == Reason.ODDS_STALE


async def test_inplay_delay_rechecks_the_then_current_price(
    odds_cache: RedisOddsCache, wallet: WalletStore, path: BetPath, book: Book
) -> None:
    delayed = BetPlacement(odds_cache, wallet, path.writer, replace(RULES, inplay_delay_ms=300), path.ledger)
    market = await book.market({"home": "2.00", "away": "2.00"}, in_play=True)
    account = await book.account(1_000)
    started = time.monotonic()
    ok = await delayed.place(slip(account, market, "home", "2.00", key="d1"))
    assert ok.bet is not None and time.monotonic() - started >= 0.3

    async def move_during_delay() -> None:
        await asyncio.sleep(0.1)
        await book.reprice(market, {"home": "1.50", "away": "2.60"})

    mover = asyncio.create_task(move_during_delay())
    moved = await delayed.place(slip(account, market, "home", "2.00", key="d2"))
    await mover
    assert reason(moved) == Reason.ODDS_CHANGED

    async def suspend_during_delay() -> None:
        await asyncio.sleep(0.1)
        current = await odds_cache.get_markets([market.market_id])
        assert current[0] is not None
        await book.reprice(current[0], {"home": "1.50", "away": "2.60"}, status=MarketStatus.SUSPENDED)

    suspender = asyncio.create_task(suspend_during_delay())
    suspended = await delayed.place(slip(account, market, "home", "1.50", key="d3"))
    await suspender
    assert reason(suspended) == Reason.MARKET_SUSPENDED
    assert await balance(wallet, account) == 900


async def test_risk_limits(
    book: Book,
    placement: BetPlacement,
    wallet: WalletStore,
    odds_cache: RedisOddsCache,
    path: BetPath,
) -> None:
    market = await book.market({"home": "50.00", "away": "1.01"})
    account = await book.account(1_000_000)
    assert reason(await placement.place(slip(account, market, "home", "50.00", stake=5))) == Reason.STAKE_TOO_LOW
    assert reason(await placement.place(slip(account, market, "away", "1.01", stake=200_000))) == Reason.STAKE_TOO_HIGH
    # 50.00 x 30_000 = 1_500_000 > max payout 1_000_000
    assert reason(await placement.place(slip(account, market, "home", "50.00", stake=30_000))) == Reason.PAYOUT_TOO_HIGH
    # Daily stake limit and self-exclusion (responsible gambling).
    await wallet.set_limits(account, AccountLimits(daily_stake_limit_minor=250))
    assert (await placement.place(slip(account, market, "home", "50.00", stake=200))).accepted
    assert reason(await placement.place(slip(account, market, "home", "50.00", stake=100))) == Reason.DAILY_STAKE_LIMIT
    await wallet.set_limits(account, AccountLimits(self_excluded_until_ms=now_ms() + 86_400_000))
    assert reason(await placement.place(slip(account, market, "home", "50.00", stake=10))) == Reason.SELF_EXCLUDED
    # Liability cap per selection for the book: 2 bets of 100 at 50.00 = 4_900 each.
    capped = BetPlacement(odds_cache, wallet, path.writer, replace(RULES, liability_cap_minor=9_000), path.ledger)
    fresh = await book.market({"home": "50.00", "away": "1.01"})
    other = await book.account(10_000)
    assert (await capped.place(slip(other, fresh, "home", "50.00", stake=100))).accepted
    assert reason(await capped.place(slip(other, fresh, "home", "50.00", stake=100))) == Reason.LIABILITY_EXCEEDED
    # The other selection of the same market has its own liability.
    assert (await capped.place(slip(other, fresh, "away", "1.01", stake=100))).accepted


async def test_invalid_input_writes_nothing(book: Book, placement: BetPlacement, wallet: WalletStore) -> None:
    market = await book.market({"home": "2.00", "away": "2.00"})
    account = await book.account(1_000)
    bad = [
        replace(slip(account, market, "home", "2.00"), idempotency_key=""),
        replace(slip(account, market, "home", "2.00"), stake_minor=0),
        replace(slip(account, market, "home", "2.00"), legs=()),
        replace(slip(account, market, "home", "2.00"), currency="USD"),
        slip(account, market, "home", "2.00", extra_legs=[Leg(market.market_id, "away", Odds.from_decimal("2.00"))]),
        replace(slip(account, market, "home", "2.00"), policy=AcceptancePolicy.UNSPECIFIED),
    ]
    results = await placement.place_batch(bad)
    assert all(not r.accepted for r in results)
    assert [reason(r) for r in results] == [
        Reason.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        Reason.CURRENCY_MISMATCH,
        Reason.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
    ]
    assert results[4].rejection is not None and results[4].rejection.field == "slip.legs[1].market_id"
    assert await balance(wallet, account) == 1_000
    stored = await wallet.get_idempotent([(account, r.idempotency_key) for r in bad if r.idempotency_key])
    assert stored == [None] * len(stored)


async def test_reconciliation_rebuilds_balances_after_redis_is_flushed(
    book: Book,
    path: BetPath,
    placement: BetPlacement,
    wallet: WalletStore,
    ledger: Ledger,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> None:
    from inplay.adapters.deposit_keys import MemoryDepositKeys
    from inplay.domain.wallet import Wallet

    deposits = Wallet(wallet, ledger, MemoryDepositKeys(), "EUR")
    market = await book.market({"home": "2.00", "away": "2.00"})
    accounts = [unique_id("rec") for _ in range(3)]
    for i, account in enumerate(accounts):
        await deposits.deposit(account, 1_000 * (i + 1), "EUR", f"dep-{account}")
        assert (await placement.place(slip(account, market, "home", "2.00", stake=100 * (i + 1)))).accepted
    before = await wallet.balances(accounts)
    assert before == [900, 1_800, 2_700]
    await path.caught_up()
    await path.close()  # the writer of this process stops (its lease would be flushed with the rest)
    # Flush this test's part of Redis (the shared server holds other tests' keys).
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    assert await wallet.balances(accounts) == [0, 0, 0]
    journal = path.ledger
    report = await reconcile(wallet, journal, repair=False, accounts=accounts, projection=redis_prefix, shards=4)
    assert set(report.mismatched) == set(accounts) and not report.repaired
    report = await reconcile(wallet, journal, repair=True, accounts=accounts, projection=redis_prefix, shards=4)
    assert report.repaired
    assert await wallet.balances(accounts) == before
    assert not (await reconcile(wallet, journal, repair=False, accounts=accounts, shards=4)).mismatched
