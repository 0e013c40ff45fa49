"""A settlement world over the memory adapters (fast unit tests): a ledger wrapped in :class:`Faulty`,
funded accounts, bets placed as the bet path records them (bet rows + STAKE entry, Redis debit). The
builders (results, bets, markets) are in tests/support/settlement.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.domain.settlement import SettlementConfig, SettlementService
from inplay.model import BetState, PlacedBet
from tests.support.faults import Faulty
from tests.support.ledger_checks import LedgerSummary, assert_money_invariants
from tests.support.settlement import clock, fund, placed_bet, record_bet, settled_state

_ids = itertools.count(1)


@dataclass
class MemoryWorld:
    inner_ledger: MemoryLedger
    ledger: Faulty
    wallet: Faulty
    bus: MemoryEventBus
    store: Faulty
    locks: MemoryLocks
    config: SettlementConfig
    service: SettlementService
    accounts: list[str] = field(default_factory=list)
    deposits: int = 0
    closed: list[str] = field(default_factory=list)

    async def account(self, deposit: int = 100_000) -> str:
        account = f"acc{next(_ids)}"
        await fund(self.inner_ledger, self.wallet, account, deposit, clock())
        self.accounts.append(account)
        self.deposits += deposit
        return account

    async def bet(self, account: str, legs: Sequence[tuple[str, str, str, str]], stake: int = 1000) -> PlacedBet:
        bet = placed_bet(account, legs, stake, bet_id=f"bet{next(_ids):06d}", key=f"k{next(_ids)}", at_ms=clock())
        await record_bet(self.inner_ledger, self.wallet, [bet])
        return bet

    async def settled(self, bet: PlacedBet) -> tuple[BetState, int]:
        return await settled_state(self.inner_ledger, bet)

    async def check(self) -> LedgerSummary:
        return await assert_money_invariants(self.inner_ledger, self.wallet, self.accounts, deposits=self.deposits)


def memory_world(**config: Any) -> MemoryWorld:
    inner = MemoryLedger()
    ledger = Faulty(inner)
    wallet = Faulty(MemoryWallet())
    bus = MemoryEventBus()
    store = Faulty(MemorySettlementStore(inner))
    locks = MemoryLocks()
    cfg = SettlementConfig(
        **{"page_size": 3, "multi_page_size": 2, "lock_ttl_ms": 5_000, "lock_wait_ms": 200, **config}
    )
    closed: list[str] = []

    async def mark(market_ids: Sequence[str]) -> None:
        closed.extend(market_ids)

    service = SettlementService(store, ledger, wallet, bus, locks, mark_settled=mark, config=cfg, clock=clock)  # type: ignore[arg-type]
    return MemoryWorld(inner, ledger, wallet, bus, store, locks, cfg, service, closed=closed)
