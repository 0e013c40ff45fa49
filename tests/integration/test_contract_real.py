"""The port contracts (tests/support/contracts) over the real adapters, on the shared stack with the
isolation of tests/conftest.py (a Redis prefix per test; the session's keyspace and topic prefix). The same
scenarios run over the memory twins in tests/unit/test_contract_memory.py."""

from __future__ import annotations

import pytest

from inplay.adapters.redis_wallet import RedisWallet
from tests.support.contracts.wallet import WalletContract

pytestmark = pytest.mark.integration


class TestRedisWallet(WalletContract):
    @pytest.fixture
    def wallet_store(self, wallet: RedisWallet) -> RedisWallet:
        return wallet
