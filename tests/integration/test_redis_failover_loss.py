"""A Redis failover must not lose an acknowledged debit (docs/reliability.md, "A partial Redis loss after a
failover").

Redis replication is asynchronous: a write the primary acknowledged may not be on the replica yet when the
primary dies and the replica is promoted. For the bet path that is a bet in the journal whose debit the new
primary never saw (money created in the projection) and whose idempotency record is gone.

The fault, made deterministic on two private redis-server processes (primary + replica, the shared stack
untouched): the replica is stopped (SIGSTOP), 48 MB are written ahead of the bets so that every socket buffer
between the two is full and what follows stays in the primary's memory, bets are placed, the primary is
killed with -9 and the replica promoted (SIGCONT, REPLICAOF NO ONE), as Sentinel would. Then the promoted
replica's balance is compared with the journal alone (deposit - Σ stakes of the account's journal bets).

- With ``INPLAY_REDIS_WAIT_REPLICAS=0`` (WAIT off) the bets are acknowledged and their debits are lost: the
  test asserts the loss, so the scenario is known to produce it.
- With 1, every money script is followed by WAIT on its connection: the bet is answered UNAVAILABLE ("retry
  with the same key"), never committed, and recovery does not journal an intent a failover could still lose.
  After the failover the balance equals the journal, and the retry places the bet once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from inplay.adapters.cassandra_ledger import CassandraLedger
from inplay.adapters.deposit_keys import CassandraDepositKeys
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.adapters.redis_wallet import RedisWallet
from inplay.app import BetPath
from inplay.config import BetRules
from inplay.domain.bets import Reason
from inplay.domain.journal import decode_bet_row
from inplay.domain.wallet import Wallet
from inplay.model import BetRequest, MarketState
from inplay.ports import EventBus
from tests.support.api import market_state
from tests.support.bets import TEST_JOURNAL, bet_path, home_single

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server")
RULES = BetRules(max_price_age_inplay_ms=60_000, max_price_age_prematch_ms=60_000, max_stake_minor=100_000)
FAST = replace(TEST_JOURNAL, commit_timeout_s=1.0)
DEPOSIT, STAKE = 10_000, 300
FILLER = 48 * 1024 * 1024  # more than the socket buffers between primary and replica (a few MB on loopback)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pair:
    primary: subprocess.Popen[bytes]
    replica: subprocess.Popen[bytes]
    primary_url: str
    replica_url: str


def start_redis(port: int, workdir: Path, replica_of: int | None = None) -> subprocess.Popen[bytes]:
    assert REDIS_SERVER is not None
    workdir.mkdir(parents=True, exist_ok=True)
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--protected-mode", "no"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    log = (workdir / "redis.log").open("wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


async def until(check: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if await check():  # type: ignore[misc]
                return
        except (OSError, aioredis.ConnectionError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (./dev up installs it)")
    p_port, r_port = free_port(), free_port()
    primary = start_redis(p_port, tmp_path / "primary")
    replica = start_redis(r_port, tmp_path / "replica", replica_of=p_port)
    try:
        yield Pair(primary, replica, f"redis://127.0.0.1:{p_port}/0", f"redis://127.0.0.1:{r_port}/0")
    finally:
        for proc in (primary, replica):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)


async def linked(replica_url: str) -> bool:
    client = aioredis.from_url(replica_url)
    try:
        info = await client.info("replication")
        return info.get("master_link_status") == "up"
    finally:
        await client.aclose()


def slip(account: str, m: MarketState, key: str) -> BetRequest:
    return home_single(account, m, key, STAKE)


async def journal_stakes(ledger: CassandraLedger, account: str) -> dict[str, int]:
    """idempotency key -> stake of the account's bets in the journal (the truth, read from Cassandra)."""
    out: dict[str, int] = {}
    async for batch in ledger.scan_journal():
        for row in batch.rows:
            bet = decode_bet_row(row.body)[0]
            if bet.account_id == account:
                assert bet.idempotency_key not in out, "a key placed twice"
                out[bet.idempotency_key] = bet.stake_minor
    return out


async def fail_over(pair: Pair) -> None:
    """kill -9 of the primary, then the replica resumes and is promoted (what Sentinel does)."""
    pair.primary.kill()
    pair.primary.wait(timeout=10)
    os.kill(pair.replica.pid, signal.SIGCONT)
    client = aioredis.from_url(pair.replica_url)
    try:
        await until(lambda: client.ping(), 10, "the replica answering")
        await client.execute_command("REPLICAOF", "NO", "ONE")
    finally:
        await client.aclose()


@dataclass
class Stores:
    """The shared stack's Cassandra and Kafka, this test's namespaces, and its id source."""

    ledger: CassandraLedger
    bus: EventBus
    prefix: str
    topics: str
    unique_id: Callable[[str], str]


@pytest.fixture
def stores(
    ledger: CassandraLedger, bus: EventBus, redis_prefix: str, topic_prefix: str, unique_id: Callable[[str], str]
) -> Stores:
    return Stores(ledger, bus, redis_prefix, topic_prefix, unique_id)


async def run_scenario(
    pair: Pair, wait_replicas: int, stores: Stores, bets_while_lagging: int
) -> tuple[str, MarketState, list[str], CassandraLedger]:
    """Returns the account, the market, the reasons of the bets placed while the replica lagged, and the
    journal-bound ledger."""
    ledger, bus, prefix, topics, unique_id = stores.ledger, stores.bus, stores.prefix, stores.topics, stores.unique_id
    await until(lambda: linked(pair.replica_url), 20, "the replica's link to the primary")
    wallet = await RedisWallet.connect(pair.primary_url, prefix, wait_replicas=wait_replicas, wait_timeout_ms=200)
    odds = await RedisOddsCache.connect(pair.primary_url, prefix)
    path: BetPath = await bet_path(
        odds, wallet, ledger, bus, RULES, projection=prefix, topic_prefix=topics, journal=FAST
    )
    journal = ledger.with_journal(prefix)
    account = unique_id("acc")
    m = market_state(unique_id)
    await odds.put_markets([m])
    await Wallet(wallet, journal, CassandraDepositKeys(journal.session), "EUR").deposit(account, DEPOSIT, "EUR", "d1")
    first = await path.placement.place(slip(account, m, "k0"))
    assert first.bet is not None, first  # replicated: the replica is reading
    os.kill(pair.replica.pid, signal.SIGSTOP)
    filler = aioredis.from_url(pair.primary_url)
    await filler.set(f"{prefix}filler", b"x" * FILLER)
    await filler.aclose()
    reasons: list[str] = []
    for i in range(1, bets_while_lagging + 1):
        try:
            result = await asyncio.wait_for(path.placement.place(slip(account, m, f"k{i}")), 5)
        except TimeoutError:
            reasons.append("NO_ANSWER")
            continue
        reasons.append("OK" if result.bet is not None else str(result.rejection and result.rejection.reason))
    await fail_over(pair)
    await asyncio.wait_for(path.close(), 60)
    await wallet.close()
    await odds.close()
    return account, m, reasons, journal


async def test_without_wait_a_failover_loses_acknowledged_debits(pair: Pair, stores: Stores) -> None:
    account, _, reasons, journal = await run_scenario(pair, 0, stores, bets_while_lagging=3)
    assert reasons == ["OK", "OK", "OK"]
    promoted = RedisWallet(aioredis.from_url(pair.replica_url), stores.prefix)
    try:
        [balance] = await promoted.balances([account])
        committed = await journal_stakes(journal, account)
        assert sorted(committed) == ["k0", "k1", "k2", "k3"]
        # The hazard this file is about: three acknowledged bets whose debits the promoted replica never saw.
        assert balance - (DEPOSIT - sum(committed.values())) == 3 * STAKE
    finally:
        await promoted.close()


async def test_with_wait_a_failover_loses_no_acknowledged_debit(pair: Pair, stores: Stores) -> None:
    account, m, reasons, journal = await run_scenario(pair, 1, stores, bets_while_lagging=1)
    ledger, bus, redis_prefix, topic_prefix = stores.ledger, stores.bus, stores.prefix, stores.topics
    assert reasons == [Reason.UNAVAILABLE]  # not acknowledged: "retry with the same key"
    assert sorted(await journal_stakes(journal, account)) == ["k0"]  # and not committed either
    # The service carries on with the promoted replica (no replica of its own yet: WAIT off for the check).
    wallet = await RedisWallet.connect(pair.replica_url, redis_prefix)
    odds = await RedisOddsCache.connect(pair.replica_url, redis_prefix)
    await odds.put_markets([m])
    path = await bet_path(odds, wallet, ledger, bus, RULES, projection=redis_prefix, topic_prefix=topic_prefix)
    try:
        [balance] = await wallet.balances([account])
        assert balance == DEPOSIT - STAKE  # equals the journal: one bet, one stake
        retry = await path.placement.place(slip(account, m, "k1"))
        assert retry.bet is not None, retry
        committed = await journal_stakes(journal, account)
        assert sorted(committed) == ["k0", "k1"]
        [balance] = await wallet.balances([account])
        assert balance == DEPOSIT - sum(committed.values())
    finally:
        await path.close()
        await wallet.close()
        await odds.close()
