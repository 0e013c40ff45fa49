"""The journal commit under faults, on the real Redis, Cassandra and Kafka (faults injected by wrapping a
port, never by hooks in production code).

- H1: a journal write that lands but whose reply is lost is retried (same bytes), never refunded: one bet.
- H1 (long): an outcome unknown past the commit timeout answers UNAVAILABLE and keeps the key reserved
  (IN_PROGRESS, never a second bet); the writer resolves it before its next batch: the retry replays.
- A writer killed between debit and journal write: the restarted writer rolls the intent forward; no key
  stays IN_PROGRESS, the retry replays, money is debited once.
- H3: a failing view write never fails a placement; the views catch up.
- A write the store certainly refused returns the stake and frees the key.
- A market closed after the quote check is refused inside the atomic debit (MARKET_CLOSED).
- H11/H10: a flushed projection is detected at start and rebuilt from the ledger (idempotency records,
  once-markers, limits); a repair under live traffic creates no money.
- A repair is never failed by its own fence keeper (a TTL refresh between the write's WATCH and EXEC), and
  two repairs at once both end repaired (the overtaken one waits for the other's new epoch).
- The chain verifier finds a journal row changed in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from inplay.adapters.deposit_keys import CassandraDepositKeys
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.app import BetPath
from inplay.audit import verify_journal
from inplay.config import BetRules
from inplay.domain import wallet as wallet_domain
from inplay.domain.bets import PlacementResult, Reason
from inplay.domain.journal import JournalBatch, parse_journal_bet_id
from inplay.domain.wallet import Wallet, reconcile, repair_projection
from inplay.model import MarketState, MarketStatus
from inplay.ports import (
    AccountLimits,
    Credit,
    EventBus,
    JournalRejected,
    Ledger,
    LedgerError,
    StatusWrite,
    WalletRebuild,
    WalletStore,
)
from tests.support.api import market_state
from tests.support.bets import TEST_JOURNAL, bet_path, home_single

pytestmark = pytest.mark.integration

RULES = BetRules(max_price_age_inplay_ms=60_000, max_price_age_prematch_ms=60_000, max_stake_minor=100_000)
FAST = replace(TEST_JOURNAL, commit_timeout_s=1.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FaultyLedger:
    """The real ledger with injectable faults on the journal and the views."""

    def __init__(self, real: Ledger) -> None:
        self.real = real
        self.lose_replies = 0  # writes that land, then report an error (a reply lost after send)
        self.lose_replies_until = 0.0  # monotonic time until which every reply is lost
        self.down_until = 0.0  # monotonic time until which writes fail without landing
        self.refuse = False  # the coordinator refuses the write (certain)
        self.fail_views = 0
        self.journal_writes = 0

    async def write_journal(self, batch: JournalBatch, claimant: str = "") -> None:
        self.journal_writes += 1
        if self.refuse:
            raise JournalRejected("refused (test)")
        if time.monotonic() < self.down_until:
            raise LedgerError("no replica answered (test)")
        await self.real.write_journal(batch, claimant)
        if self.lose_replies > 0 or time.monotonic() < self.lose_replies_until:
            self.lose_replies -= 1
            raise LedgerError("OperationTimedOut after send (test)")

    async def project_bets(self, bets: Any) -> None:
        if self.fail_views > 0:
            self.fail_views -= 1
            raise LedgerError("views unavailable (test)")
        await self.real.project_bets(bets)

    def with_journal(self, name: str) -> FaultyLedger:
        self.real = self.real.with_journal(name)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
async def odds_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisOddsCache]:
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    yield cache
    await cache.close()


async def open_path(
    odds: RedisOddsCache, wallet: WalletStore, ledger: Any, bus: EventBus, prefix: str, topics: str, **kw: Any
) -> BetPath:
    return await bet_path(odds, wallet, ledger, bus, RULES, projection=prefix, topic_prefix=topics, **kw)


async def market(odds: RedisOddsCache, unique_id: Callable[[str], str]) -> MarketState:
    state = market_state(unique_id)
    await odds.put_markets([state])
    return state


slip = home_single


async def funded(wallet: WalletStore, unique_id: Callable[[str], str], amount: int = 1_000) -> str:
    account = unique_id("acc")
    await wallet.credit_batch([Credit(account, f"seed:{account}", amount)])
    return account


async def stakes_in_views(ledger: Ledger, account: str) -> list[str]:
    entries, _ = await ledger.account_entries(account, 1000, "")
    return [e.bet_id for e in entries if e.kind.name == "STAKE"]


def reason(result: PlacementResult) -> str:
    assert result.rejection is not None, result
    return result.rejection.reason


@pytest.fixture
def env(
    odds_cache: RedisOddsCache,
    wallet: WalletStore,
    ledger: Ledger,
    bus: EventBus,
    redis_prefix: str,
    topic_prefix: str,
    unique_id: Callable[[str], str],
) -> dict[str, Any]:
    return {
        "odds": odds_cache,
        "wallet": wallet,
        "ledger": ledger,
        "bus": bus,
        "prefix": redis_prefix,
        "topics": topic_prefix,
        "id": unique_id,
    }


async def test_lost_reply_is_written_again_never_refunded(env: dict[str, Any]) -> None:
    faulty = FaultyLedger(env["ledger"])
    faulty.lose_replies = 2
    path = await open_path(env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"])
        first = await path.placement.place(slip(account, m, "k1"))
        assert first.bet is not None, first
        assert faulty.journal_writes == 3  # two lost replies, then acknowledged: the same batch each time
        again = await path.placement.place(slip(account, m, "k1"))
        assert again.replayed and again.bet is not None and again.bet.bet_id == first.bet.bet_id
        [balance] = await env["wallet"].balances([account])
        assert balance == 700
        await path.caught_up()
        assert await stakes_in_views(path.ledger, account) == [first.bet.bet_id]
    finally:
        await path.close()


async def test_unknown_outcome_keeps_the_key_until_resolved(env: dict[str, Any]) -> None:
    faulty = FaultyLedger(env["ledger"])
    path = await open_path(env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"], journal=FAST)
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"])
        faulty.lose_replies_until = time.monotonic() + 1.5  # longer than the commit timeout (1 s)
        first = await path.placement.place(slip(account, m, "k1"))
        assert reason(first) == Reason.UNAVAILABLE
        # The outcome is unknown: the key stays reserved, so a retry can neither place a second bet...
        assert reason(await path.placement.place(slip(account, m, "k1"))) == Reason.IN_PROGRESS
        await asyncio.sleep(1.6)
        # ... and once the writer resolved it (before its next batch), the retry replays the one bet.
        other = await path.placement.place(slip(account, m, "k2"))
        assert other.bet is not None, other
        replay = await path.placement.place(slip(account, m, "k1"))
        assert replay.replayed and replay.bet is not None, replay
        [balance] = await env["wallet"].balances([account])
        assert balance == 400
        await path.caught_up()
        assert sorted(await stakes_in_views(path.ledger, account)) == sorted([replay.bet.bet_id, other.bet.bet_id])
    finally:
        await path.close()


async def test_killed_writer_intent_is_rolled_forward_on_restart(env: dict[str, Any]) -> None:
    faulty = FaultyLedger(env["ledger"])
    faulty.down_until = time.monotonic() + 60  # Cassandra unreachable: nothing lands
    owner = env["id"]("writer")
    path = await open_path(
        env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"], journal=FAST, owner=owner
    )
    m = await market(env["odds"], env["id"])
    account = await funded(env["wallet"], env["id"])
    first = await path.placement.place(slip(account, m, "k1"))
    assert reason(first) == Reason.UNAVAILABLE
    # kill -9: the writer's tasks die where they are; nothing is released or finished.
    for task in (path.writer._task, path.writer._lease_task, path.projector._task):
        assert task is not None
        task.cancel()
    [balance] = await env["wallet"].balances([account])
    assert balance == 700  # debited, with an intent, not in the journal
    # The process restarts (same writer id, Cassandra back): the intent is written before any new slip.
    restarted = await open_path(
        env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"], owner=owner
    )
    try:
        assert await env["wallet"].intents_pending(TEST_JOURNAL.shards) == [0] * TEST_JOURNAL.shards
        replay = await restarted.placement.place(slip(account, m, "k1"))
        assert replay.replayed and replay.bet is not None, replay
        stored = await restarted.ledger.get_bet(replay.bet.bet_id)
        assert stored == replay.bet
        [balance] = await env["wallet"].balances([account])
        assert balance == 700
        await restarted.caught_up()
        assert await stakes_in_views(restarted.ledger, account) == [replay.bet.bet_id]
    finally:
        await restarted.close()


async def test_a_dead_writers_shard_is_adopted_by_another_process(env: dict[str, Any]) -> None:
    """A writer dies for good with a debited, unwritten batch: another process (another writer id) takes
    the orphaned shard once its lease expires, rolls the intent forward and projects it; the bettor's retry
    through the other process replays the bet."""
    faulty = FaultyLedger(env["ledger"])
    faulty.down_until = time.monotonic() + 60
    dead = await open_path(
        env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"], journal=FAST, owner="w-dead"
    )
    m = await market(env["odds"], env["id"])
    account = await funded(env["wallet"], env["id"])
    assert reason(await dead.placement.place(slip(account, m, "k1"))) == Reason.UNAVAILABLE
    dead_shard = dead.writer.shard
    for task in (dead.writer._task, dead.writer._lease_task, dead.projector._task, dead.adopter._task):
        assert task is not None
        task.cancel()  # kill -9: the lease is not released, it expires (3 s in tests)
    other = await open_path(
        env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"], owner="w-other"
    )
    try:
        assert other.writer.shard != dead_shard  # the dead writer's lease still held it at start
        deadline = time.monotonic() + 15
        while other.adopter.adopted == 0:
            assert time.monotonic() < deadline, "the orphaned shard was never adopted"
            await asyncio.sleep(0.1)
        assert await env["wallet"].intents_pending(TEST_JOURNAL.shards) == [0] * TEST_JOURNAL.shards
        replay = await other.placement.place(slip(account, m, "k1"))
        assert replay.replayed and replay.bet is not None, replay
        assert parse_journal_bet_id(replay.bet.bet_id)[1] == dead_shard  # type: ignore[index]
        [balance] = await env["wallet"].balances([account])
        assert balance == 700
        assert await stakes_in_views(other.ledger, account) == [replay.bet.bet_id]
    finally:
        await other.close()


async def test_failing_views_never_fail_a_placement(env: dict[str, Any]) -> None:
    faulty = FaultyLedger(env["ledger"])
    faulty.fail_views = 2
    path = await open_path(env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"], 10_000)
        results = await path.placement.place_batch([slip(account, m, f"k{i}", 100) for i in range(20)])
        assert all(r.bet is not None for r in results), [r.rejection for r in results if r.bet is None]
        await path.caught_up(timeout_s=15)
        assert len(await stakes_in_views(path.ledger, account)) == 20
    finally:
        await path.close()


async def test_refused_write_returns_the_stake_and_frees_the_key(env: dict[str, Any]) -> None:
    faulty = FaultyLedger(env["ledger"])
    faulty.refuse = True
    path = await open_path(env["odds"], env["wallet"], faulty, env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"])
        assert reason(await path.placement.place(slip(account, m, "k1"))) == Reason.UNAVAILABLE
        [balance] = await env["wallet"].balances([account])
        assert balance == 1_000
        faulty.refuse = False
        retry = await path.placement.place(slip(account, m, "k1"))
        assert retry.bet is not None and not retry.replayed
    finally:
        await path.close()


async def test_market_closed_after_the_quote_is_refused_at_the_debit(env: dict[str, Any]) -> None:
    path = await open_path(env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"])
        real_debit = env["wallet"].debit_batch

        async def close_then_debit(*args: Any, **kw: Any) -> Any:
            # The settlement closes the market between the placement's checks and the atomic debit.
            await env["odds"].write_status([StatusWrite(m.market_id, MarketStatus.SETTLED, "RESULTED")])
            return await real_debit(*args, **kw)

        env["wallet"].debit_batch = close_then_debit
        assert reason(await path.placement.place(slip(account, m, "k1"))) == Reason.MARKET_CLOSED
        [balance] = await env["wallet"].balances([account])
        assert balance == 1_000
    finally:
        await path.close()


async def test_flushed_projection_is_rebuilt_before_use(
    env: dict[str, Any], redis_url: str, cassandra_keyspace: str
) -> None:
    ledger = env["ledger"].with_journal(env["prefix"])
    path = await open_path(env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"])
    deposits = Wallet(env["wallet"], ledger, CassandraDepositKeys(ledger.session), "EUR")
    account, excluded = env["id"]("acc"), env["id"]("acc")
    m = await market(env["odds"], env["id"])
    await deposits.deposit(account, 1_000, "EUR", "dep-1")
    await deposits.deposit(excluded, 1_000, "EUR", "dep-1")
    await ledger.record_limits(excluded, AccountLimits(self_excluded_until_ms=now_ms() + 3_600_000), now_ms())
    bet = await path.placement.place(slip(account, m, "k1"))
    assert bet.bet is not None
    await path.caught_up()
    await path.close()
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{env['prefix']}*", count=1000)]
    await client.delete(*keys)  # everything this deployment had in Redis is gone (FLUSHALL of its keys)
    await client.aclose()
    await env["odds"].put_markets([m])  # the odds feed repopulates its own cache
    # A restart detects the lost projection (epoch marker gone) and rebuilds it before taking a bet.
    restarted = await open_path(env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"])
    try:
        assert await env["wallet"].balances([account, excluded]) == [700, 1_000]
        again = await deposits.deposit(account, 1_000, "EUR", "dep-1")
        assert again.replayed and again.balance_minor == 700  # never credited twice
        replay = await restarted.placement.place(slip(account, m, "k1"))
        assert replay.replayed and replay.bet is not None and replay.bet.bet_id == bet.bet.bet_id
        assert reason(await restarted.placement.place(slip(excluded, m, "k1"))) == Reason.SELF_EXCLUDED
        report = await reconcile(env["wallet"], ledger, repair=False, accounts=[account, excluded], shards=4)
        assert not report.mismatched
    finally:
        await restarted.close()


async def test_repair_under_live_traffic_creates_no_money(env: dict[str, Any]) -> None:
    ledger = env["ledger"].with_journal(env["prefix"])
    path = await open_path(env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        deposits = Wallet(env["wallet"], ledger, CassandraDepositKeys(ledger.session), "EUR")
        accounts = [env["id"]("acc") for _ in range(5)]
        for a in accounts:
            await deposits.deposit(a, 10_000_000, "EUR", "seed")
        stop = asyncio.Event()
        outcomes: list[PlacementResult] = []

        async def bettor(a: str) -> None:
            i = 0
            while not stop.is_set():
                outcomes.append(await path.placement.place(slip(a, m, f"r{i}", 100)))
                i += 1

        tasks = [asyncio.create_task(bettor(a)) for a in accounts]
        await asyncio.sleep(0.5)
        await repair_projection(env["wallet"], ledger, env["prefix"], TEST_JOURNAL.shards)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        accepted = [o for o in outcomes if o.bet is not None]
        assert accepted and {reason(o) for o in outcomes if o.bet is None} <= {Reason.UNAVAILABLE}
        await path.caught_up()
        report = await reconcile(env["wallet"], ledger, repair=False, accounts=accounts, shards=4)
        assert not report.mismatched, report.mismatched
        balances = await env["wallet"].balances(accounts)
        assert sum(balances) == 5 * 10_000_000 - 100 * len(accepted)
        assert min(balances) >= 0
    finally:
        await path.close()


async def test_a_repair_is_not_overtaken_by_its_own_fence_keeper(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos run's `reconcile --repair` failed with "another repair took the fence meanwhile": its own
    keeper refreshed the fence's TTL (a write to the WATCHed key) while the rebuild was being written. A
    keeper ticking every millisecond and a rebuild of 30,000 records make that certain on the old code."""
    ledger = env["ledger"].with_journal(env["prefix"])
    accounts = [env["id"]("acc") for _ in range(3)]
    big = WalletRebuild(
        balances=dict.fromkeys(accounts, 500),
        applied_entry_ids=[],
        idempotency={(accounts[n % 3], f"k{n}"): "x" for n in range(30_000)},
        daily_stake={},
        liability={},
        limits={},
        journal={},
    )

    async def rebuilt_from_the_ledger(ledger: Ledger, now: int, shards: int = 0) -> WalletRebuild:
        await asyncio.sleep(0.02)  # the keeper ticks while the ledger is read, as it does in production
        return big

    monkeypatch.setattr(wallet_domain, "FENCE_REFRESH_S", 0.001)
    monkeypatch.setattr(wallet_domain, "rebuild_state", rebuilt_from_the_ledger)
    await repair_projection(env["wallet"], ledger, env["prefix"], TEST_JOURNAL.shards)
    assert await env["wallet"].balances(accounts) == [500, 500, 500]
    assert await env["wallet"].epoch() is not None
    assert await env["wallet"].get_idempotent([(accounts[2], "k29999")]) == ["x"]


async def test_two_repairs_at_once_both_end_repaired(env: dict[str, Any]) -> None:
    """An operator's `reconcile --repair` and a starting process's rebuild of a lost projection run at once:
    the later fence wins, and the overtaken repair waits for the winner's new epoch instead of failing."""
    ledger = env["ledger"].with_journal(env["prefix"])
    account = env["id"]("acc")
    deposits = Wallet(env["wallet"], ledger, CassandraDepositKeys(ledger.session), "EUR")
    await deposits.deposit(account, 2_500, "EUR", "seed")
    assert await env["wallet"].epoch() is None  # nothing has put a marker up: the projection counts as lost
    reports = await asyncio.gather(
        *(reconcile(env["wallet"], ledger, repair=True, projection=env["prefix"], shards=4) for _ in range(2))
    )
    assert [(r.lost, r.repaired) for r in reports] == [(True, True), (True, True)]
    assert await env["wallet"].epoch() is not None
    assert await env["wallet"].balances([account]) == [2_500]
    assert (await ledger.account_balances())[account] == 2_500  # the ledger alone says the same


async def test_chain_verifier_finds_a_row_changed_in_place(env: dict[str, Any]) -> None:
    path = await open_path(env["odds"], env["wallet"], env["ledger"], env["bus"], env["prefix"], env["topics"])
    try:
        m = await market(env["odds"], env["id"])
        account = await funded(env["wallet"], env["id"], 100_000)
        placed = []
        for n in range(4):  # four batches
            results = await path.placement.place_batch([slip(account, m, f"c{n}-{i}", 100) for i in range(5)])
            placed += [r.bet for r in results if r.bet is not None]
        assert len(placed) == 20
        report = await verify_journal(path.ledger)
        assert report.batches >= 4 and report.rows >= 20 and not report.breaks
        victim = placed[7]
        position = parse_journal_bet_id(victim.bet_id)
        assert position is not None
        _, shard, slot, pos = position
        session = path.ledger.session  # type: ignore[attr-defined]
        await asyncio.to_thread(
            session.execute,
            "UPDATE bet_journal SET body = %s WHERE journal = %s AND shard = %s AND slot = %s AND pos = %s",
            ('{"tampered":true}', env["prefix"], shard, slot, pos),
        )
        report = await verify_journal(path.ledger)
        assert [(b.shard, b.slot) for b in report.breaks] == [(shard, slot)]
        assert "changed in place" in report.breaks[0].problem
    finally:
        await path.close()
