"""The port contracts (tests/support/contracts) over the memory twins: fast, no servers. The same scenarios
run over the real adapters in tests/integration/test_contract_real.py."""

from __future__ import annotations

import pytest

from inplay.adapters.memory import MemoryWallet
from tests.support.contracts.wallet import WalletContract


class TestMemoryWallet(WalletContract):
    @pytest.fixture
    def wallet_store(self) -> MemoryWallet:
        return MemoryWallet()
