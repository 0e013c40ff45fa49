"""The port contracts (tests/support/contracts) over the real adapters, on the shared stack with the
isolation of tests/conftest.py (a Redis prefix per test; the session's keyspace and topic prefix). The same
scenarios run over the memory twins in tests/unit/test_contract_memory.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.cassandra_ledger import CassandraLedger
from inplay.adapters.cassandra_settlement import CassandraSettlementStore
from inplay.adapters.deposit_keys import CassandraDepositKeys
from inplay.adapters.kafka_bus import KafkaConsumerLoop, KafkaEventBus
from inplay.adapters.redis_lease import RedisLocks
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.adapters.redis_wallet import RedisWallet
from inplay.ports import EventBus
from tests.support.contracts import uid
from tests.support.contracts.bus import BusContract
from tests.support.contracts.changes import T0, ChangeLogContract, change, read_all
from tests.support.contracts.deposits import DepositKeysContract
from tests.support.contracts.ledger import LedgerContract
from tests.support.contracts.locks import LocksContract
from tests.support.contracts.odds import OddsContract
from tests.support.contracts.settlement import SettlementContract
from tests.support.contracts.wallet import WalletContract

pytestmark = pytest.mark.integration


class TestRedisWallet(WalletContract):
    @pytest.fixture
    def wallet_store(self, wallet: RedisWallet) -> RedisWallet:
        return wallet


class TestCassandraLedger(LedgerContract):
    # The journal write is a conditional batch (header IF NOT EXISTS): a different batch for a written slot
    # is refused, the first one stays whole (was a strict xfail: the plain batch overwrote its cells).
    @pytest.fixture
    def ledger_store(self, ledger: CassandraLedger) -> CassandraLedger:
        return ledger


class TestRedisOdds(OddsContract):
    @pytest.fixture
    async def odds_cache(self, redis_url: str, redis_prefix: str) -> AsyncIterator[RedisOddsCache]:
        cache = await RedisOddsCache.connect(redis_url, redis_prefix)
        yield cache
        await cache.close()


class TestCassandraSettlement(SettlementContract):
    @pytest.fixture
    def settlement_store(self, ledger: CassandraLedger) -> CassandraSettlementStore:
        return CassandraSettlementStore(ledger.session)


class TestCassandraChangeLog(ChangeLogContract):
    @pytest.fixture
    def change_log(self, ledger: CassandraLedger) -> CassandraMarketChangeLog:
        return CassandraMarketChangeLog(ledger.session)

    async def test_one_row_per_market_write(
        self, ledger: CassandraLedger, change_log: CassandraMarketChangeLog
    ) -> None:
        # A write's entries (status + selections) are one row, not a row each.
        m = uid("m")
        write = [change(m, 1, T0, "STATUS", new="ACTIVE"), change(m, 1, T0, sel="home"), change(m, 1, T0, sel="away")]
        await change_log.append([*write, change(m, 2, T0 + 5, sel="home", new="2.1")])
        rows = ledger.session.execute("SELECT version FROM market_change_rows WHERE market_id = %s", (m,))
        assert [r.version for r in rows] == [1, 2]

    async def test_legacy_rows_are_read_first_then_the_new_table(
        self, ledger: CassandraLedger, change_log: CassandraMarketChangeLog
    ) -> None:
        # market_changes (migration 0003, a row per entry) is no longer written; its rows stay readable.
        m = uid("m")
        legacy = [change(m, v, T0 + v, new=f"{v}.0") for v in range(1, 4)]
        for seq, c in enumerate(legacy):
            ledger.session.execute(
                "INSERT INTO market_changes (market_id, version, at_ms, seq, kind, selection_id, old_value, "
                "new_value, source, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (m, c.version, c.at_ms, seq, c.kind, c.selection_id, c.old_value, c.new_value, c.source, c.reason),
            )
        new = [change(m, v, T0 + v, new=f"{v}.0") for v in range(4, 7)]
        await change_log.append(new)
        for size in (2, 3, 10):
            pages = await read_all(change_log, m, size)
            assert [c for p in pages for c in p] == [*legacy, *new], size
            assert all(0 < len(p) <= size for p in pages[:-1]), size


class KafkaBusHarness:
    """Reads a topic as the services' consumers do: a KafkaConsumerLoop of a fresh group (from the start)."""

    def __init__(self, bus: KafkaEventBus, bootstrap: str) -> None:
        self.kafka = bus
        self.bus: EventBus = bus
        self._bootstrap = bootstrap

    def topic(self, name: str) -> str:
        return self.kafka.topic(name)

    async def read(
        self, topic: str, want: Callable[[dict[str, object]], bool], n: int, timeout_s: float = 30
    ) -> list[tuple[str, dict[str, object]]]:
        found: list[tuple[str, dict[str, object]]] = []
        loop = KafkaConsumerLoop(self._bootstrap, f"g-{uuid.uuid4().hex}", [topic])
        deadline = time.monotonic() + timeout_s
        try:
            async for key, value in loop:
                payload = json.loads(value)
                if want(payload):
                    found.append((key, payload))
                if len(found) >= n or time.monotonic() > deadline:
                    break
        finally:
            await loop.close()
        return found


class TestKafkaBus(BusContract):
    @pytest.fixture
    def bus_harness(self, bus: KafkaEventBus, kafka_bootstrap: str) -> KafkaBusHarness:
        return KafkaBusHarness(bus, kafka_bootstrap)


class TestCassandraDepositKeys(DepositKeysContract):
    @pytest.fixture
    def deposit_keys(self, ledger: CassandraLedger) -> CassandraDepositKeys:
        return CassandraDepositKeys(ledger.session)


class TestRedisLocks(LocksContract):
    @pytest.fixture
    async def lock_service(self, redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLocks]:
        locks = RedisLocks.connect(redis_url, redis_prefix)
        yield locks
        await locks.close()
