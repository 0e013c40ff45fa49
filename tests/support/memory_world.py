"""A settlement world over the memory adapters (fast unit tests): a ledger wrapped in :class:`Faulty`,
funded accounts, bets placed as the bet path records them (bet rows + STAKE entry, Redis debit)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inplay.adapters.memory import MemoryEventBus, MemoryLedger, MemoryWallet
from inplay.adapters.memory_settlement import MemoryLocks, MemorySettlementStore
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.settlement import Results, SettlementConfig, SettlementService, make_results
from inplay.model import BetState, EntryKind, LedgerEntry, Leg, PlacedBet
from inplay.ports import Credit
from tests.support.faults import Faulty
from tests.support.ledger_checks import LedgerSummary, assert_money_invariants

_ids = itertools.count(1)
_clock = itertools.count(1_700_000_000_000, 10)


def clock() -> int:
    return next(_clock)


def res(*outcomes: tuple[Any, ...], void: Sequence[str] = ()) -> Results:
    return make_results([(o[0], o[1], o[2], o[3] if len(o) > 3 else (1, 1)) for o in outcomes], void)


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
        entry = LedgerEntry(f"deposit:{account}", account, EntryKind.DEPOSIT, deposit, "EUR", "", "seed", clock())
        await self.inner_ledger.append_entries([entry])
        await self.wallet.credit_batch([Credit(account, entry.entry_id, deposit)])
        self.accounts.append(account)
        self.deposits += deposit
        return account

    async def bet(self, account: str, legs: Sequence[tuple[str, str, str, str]], stake: int = 1000) -> PlacedBet:
        bet = PlacedBet(
            bet_id=f"bet{next(_ids):06d}",
            account_id=account,
            legs=tuple(Leg(m, s, Odds.from_decimal(o), e) for e, m, s, o in legs),
            stake_minor=stake,
            currency="EUR",
            potential_return_minor=0,
            policy=AcceptancePolicy.NONE,
            idempotency_key=f"k{next(_ids)}",
            placed_at_ms=clock(),
        )
        assert await self.inner_ledger.append_bets([bet]) == [None]
        await self.wallet.credit_batch([Credit(account, f"stake:{bet.bet_id}", -stake)])
        return bet

    async def settled(self, bet: PlacedBet) -> tuple[BetState, int]:
        history = [e for e in await self.inner_ledger.bet_history(bet.bet_id) if e.run_id]
        return (history[-1].status if history else BetState.OPEN), sum(e.amount_minor for e in history)

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


W, L, OPEN = LegOutcome.WIN, LegOutcome.LOSE, LegOutcome.OPEN


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
