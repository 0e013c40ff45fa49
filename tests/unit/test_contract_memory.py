"""The port contracts (tests/support/contracts) over the memory twins: fast, no servers. The same scenarios
run over the real adapters in tests/integration/test_contract_real.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from inplay.adapters.deposit_keys import MemoryDepositKeys
from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_odds import MemoryMarketChangeLog, MemoryOddsCache
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.ports import EventBus
from tests.support.contracts.bus import BusContract
from tests.support.contracts.changes import ChangeLogContract
from tests.support.contracts.deposits import DepositKeysContract
from tests.support.contracts.ledger import LedgerContract
from tests.support.contracts.locks import LocksContract
from tests.support.contracts.odds import OddsContract
from tests.support.contracts.settlement import SettlementContract
from tests.support.contracts.wallet import WalletContract


class TestMemoryWallet(WalletContract):
    @pytest.fixture
    def wallet_store(self) -> MemoryWallet:
        return MemoryWallet()


class TestMemoryLedger(LedgerContract):
    @pytest.fixture
    def ledger_store(self) -> MemoryLedger:
        return MemoryLedger()


class TestMemoryOdds(OddsContract):
    @pytest.fixture
    def odds_cache(self) -> MemoryOddsCache:
        return MemoryOddsCache()


class TestMemorySettlement(SettlementContract):
    @pytest.fixture
    def settlement_store(self) -> MemorySettlementStore:
        return MemorySettlementStore()


class TestMemoryChangeLog(ChangeLogContract):
    @pytest.fixture
    def change_log(self) -> MemoryMarketChangeLog:
        return MemoryMarketChangeLog()


class MemoryBusHarness:
    """Reads a topic as the embedded consumers do: the memory bus's messages, in publish order."""

    def __init__(self) -> None:
        self.memory = MemoryEventBus()
        self.bus: EventBus = self.memory

    def topic(self, name: str) -> str:
        return name

    async def read(
        self, topic: str, want: Callable[[dict[str, object]], bool], n: int
    ) -> list[tuple[str, dict[str, object]]]:
        found = [(m.key, json.loads(m.value)) for m in self.memory.messages.get(topic, ())]
        return [(k, p) for k, p in found if want(p)][:n]


class TestMemoryBus(BusContract):
    @pytest.fixture
    def bus_harness(self) -> MemoryBusHarness:
        return MemoryBusHarness()


class TestMemoryDepositKeys(DepositKeysContract):
    @pytest.fixture
    def deposit_keys(self) -> MemoryDepositKeys:
        return MemoryDepositKeys()


class TestMemoryLocks(LocksContract):
    @pytest.fixture
    def lock_service(self) -> MemoryLocks:
        return MemoryLocks()
