"""Issue 12: the book's liability counters are released when a bet is settled (any final status, void
included), exactly once across re-runs, crashes and corrections, and the repair rebuilds them from the bets
still open. Real Redis + Cassandra + Kafka, the whole composition root (``open_runtime``): bets are placed
through the Lua debit that enforces the liability cap, settled by the settlement service it wires."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import pytest

from inplay.app import Runtime, SettlementPorts, open_runtime, open_settlement
from inplay.config import Settings
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.settlement.model import make_results
from inplay.domain.wallet import repair_projection
from inplay.ids import bet_liability, liability_key
from inplay.model import BetRequest, EntryKind, LedgerEntry, Leg, MarketState, MarketStatus, PlacedBet, SelectionPrice
from inplay.ports import Credit
from tests.support.ledger_checks import assert_money_invariants

pytestmark = pytest.mark.integration

W, L, V = LegOutcome.WIN, LegOutcome.LOSE, LegOutcome.VOID
# An accumulator HT:home @2.00 x FT:home @2.00, stake 1000: return 4000, liability 3000 on both selections.
CAP = 6_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def runtime(redis_prefix: str, cassandra_keyspace: str, topic_prefix: str) -> AsyncIterator[Runtime]:
    base = Settings.from_env()
    settings = replace(
        base,
        stack=replace(base.stack, redis_prefix=redis_prefix, keyspace=cassandra_keyspace, topic_prefix=topic_prefix),
        bets=replace(
            base.bets, liability_cap_minor=CAP, max_price_age_inplay_ms=60_000, max_price_age_prematch_ms=60_000
        ),
    )
    opened = await open_runtime(settings)
    yield opened
    await opened.close()


class Book:
    def __init__(self, runtime: Runtime, unique_id: Any) -> None:
        self.rt = runtime
        self.event = unique_id("ev")
        self.ht, self.ft = unique_id("ht"), unique_id("ft")
        self.unique_id = unique_id
        self.accounts: list[str] = []
        self.deposits = 0

    async def open_markets(self) -> None:
        await self.rt.odds.put_markets([self._market(self.ht), self._market(self.ft)])

    def _market(self, market_id: str) -> MarketState:
        prices = tuple(SelectionPrice(s, s, Odds.from_decimal("2.00")) for s in ("home", "away"))
        return MarketState(
            market_id, self.event, "football", "MATCH_RESULT", market_id, False, MarketStatus.ACTIVE, "", prices, 1,
            now_ms(), "test",
        )  # fmt: skip

    async def account(self, deposit: int = 100_000) -> str:
        account = self.unique_id("acc")
        entry = LedgerEntry(f"deposit:{account}", account, EntryKind.DEPOSIT, deposit, "EUR", "", "seed", now_ms())
        await self.rt.ledger.append_entries([entry])
        await self.rt.wallet_store.credit_batch([Credit(account, entry.entry_id, deposit)])
        self.accounts.append(account)
        self.deposits += deposit
        return account

    async def place(self, account: str, *legs: tuple[str, str], stake: int = 1000) -> PlacedBet | str:
        """The bet, or its rejection reason."""
        req = BetRequest(
            account_id=account,
            legs=tuple(Leg(m, s, Odds.from_decimal("2.00")) for m, s in legs),
            stake_minor=stake,
            currency="EUR",
            policy=AcceptancePolicy.NONE,
            idempotency_key=self.unique_id("k"),
        )
        result = await self.rt.placement.place(req)
        if result.bet is not None:
            return result.bet
        assert result.rejection is not None
        return str(result.rejection.reason)

    async def liability(self, market_id: str, selection: str) -> int:
        client = self.rt.wallet_store.client  # type: ignore[attr-defined]
        raw = await client.get(f"{self.rt.settings.stack.redis_prefix}liab:{liability_key(market_id, selection)}")
        return int(raw or 0)


def counted(bets: Sequence[PlacedBet], market_id: str, selection: str) -> int:
    """Σ liability of the given (open) bets on one selection: what the counter must say."""
    key = liability_key(market_id, selection)
    return sum(amount for keys, amount in map(bet_liability, bets) if key in keys)


def res(*outcomes: tuple[str, str, LegOutcome], void: Sequence[str] = ()) -> Any:
    return make_results([(m, s, o, (1, 1)) for m, s, o in outcomes], void)


@pytest.fixture
async def book(runtime: Runtime, unique_id: Any) -> Book:
    b = Book(runtime, unique_id)
    await b.open_markets()
    return b


async def fill_ft_home(book: Book) -> tuple[str, list[PlacedBet]]:
    """Two accumulators fill the cap on FT:home; a single on FT:home is refused."""
    account = await book.account()
    accas = [await book.place(account, (book.ht, "home"), (book.ft, "home")) for _ in range(2)]
    assert all(isinstance(a, PlacedBet) for a in accas), accas
    assert await book.liability(book.ft, "home") == CAP
    assert await book.place(account, (book.ft, "home"), stake=100) == "LIABILITY_EXCEEDED"
    return account, accas  # type: ignore[return-value]


async def test_settling_a_market_releases_the_liability_of_the_bets_it_settles(book: Book) -> None:
    """Before the fix: the lost accumulators kept their 6000 on FT:home and the single was refused."""
    account, _ = await fill_ft_home(book)
    service = book.rt.components["settlement"].service
    run = await service.settle_event(book.event, res((book.ht, "away", W)), "ht")
    assert run.stats.bets_processed == 2 and run.stats.bets_still_open == 0  # both accumulators lost
    assert await book.liability(book.ft, "home") == 0
    assert await book.liability(book.ht, "home") == 0
    single = await book.place(account, (book.ft, "home"), stake=100)
    assert isinstance(single, PlacedBet), single  # accepted again
    assert await book.liability(book.ft, "home") == counted([single], book.ft, "home") == 100
    # A voided market releases too (VOID is a final status).
    await service.settle_event(book.event, res(void=[book.ft]), "ft")
    assert await book.liability(book.ft, "home") == 0
    await assert_money_invariants(book.rt.ledger, book.rt.wallet_store, book.accounts, deposits=book.deposits)


async def test_a_redone_page_and_a_correction_release_once(book: Book, unique_id: Any) -> None:
    """A page whose checkpoint write fails after its release is redone by the retry (same run): the
    counters move once. A correction reopens the accumulators (counted again), their final settlement
    releases them once more: at every step each counter = Σ liability of the bets still open."""
    _, accas = await fill_ft_home(book)
    failures = {"checkpoint": 1}

    class FailingStore:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        async def append_checkpoints(self, checkpoints: Sequence[Any]) -> None:
            if any(cp.phase in ("S", "M") for cp in checkpoints) and failures["checkpoint"]:
                failures["checkpoint"] -= 1
                raise ConnectionError("injected: checkpoint lost after the page's writes")
            await self._inner.append_checkpoints(checkpoints)

    def wrap(ports: SettlementPorts) -> SettlementPorts:
        return replace(ports, store=FailingStore(ports.store))  # type: ignore[arg-type]

    components = await open_settlement(book.rt, wrap=wrap)
    service = components.service
    try:
        with pytest.raises(ConnectionError):
            await service.settle_event(book.event, res((book.ht, "away", W)), "ht")
        assert await book.liability(book.ft, "home") == 0  # released before the checkpoint failed
        run = await service.settle_event(book.event, res((book.ht, "away", W)), "ht")  # the retry redoes the page
        assert run.state.name == "COMPLETED" and run.stats.bets_processed == 2
        assert await book.liability(book.ft, "home") == 0  # not -6000
        assert await book.liability(book.ht, "home") == 0
        # Correction: HT home won after all, the accumulators are open again (FT still to play).
        _, corrected = await service.resettle(book.event, res((book.ht, "home", W)), "ht-fix")
        assert corrected.stats.bets_still_open == 2
        assert await book.liability(book.ft, "home") == counted(accas, book.ft, "home") == CAP
        assert await book.liability(book.ht, "home") == CAP
        await service.settle_event(book.event, res((book.ft, "home", L)), "ft")
        assert await book.liability(book.ft, "home") == 0
        assert await book.liability(book.ht, "home") == 0
    finally:
        await components.close()
    await assert_money_invariants(book.rt.ledger, book.rt.wallet_store, book.accounts, deposits=book.deposits)


async def test_repair_counts_only_open_bets_and_keeps_releases_once(book: Book) -> None:
    """``reconcile --repair`` (and the start-up rebuild) computes liability from the journal's bets that
    are still open; the release markers of settled bets are restored, so a release re-sent after the
    repair (a page redone) does not move a counter again."""
    account, accas = await fill_ft_home(book)
    service = book.rt.components["settlement"].service
    await service.settle_event(book.event, res((book.ht, "away", W)), "ht")
    single = await book.place(account, (book.ft, "home"), stake=100)
    assert isinstance(single, PlacedBet)
    # The counters and markers are wrong or lost (a flushed projection): only this test's prefix.
    client = book.rt.wallet_store.client  # type: ignore[attr-defined]
    prefix = book.rt.settings.stack.redis_prefix
    stale = [k async for k in client.scan_iter(match=f"{prefix}liab*")]
    await client.delete(*stale)
    await client.set(f"{prefix}liab:{liability_key(book.ft, 'home')}", 999_999)
    journal = book.rt.settings.journal
    await repair_projection(book.rt.wallet_store, book.rt.ledger, prefix, journal.shards)
    assert await book.liability(book.ft, "home") == counted([single], book.ft, "home") == 100
    assert await book.liability(book.ht, "home") == 0
    # The settled accumulators' releases, re-sent as a redone page would: nothing moves.
    from inplay.ports import LiabilityChange

    again = [LiabilityChange(a.bet_id, *bet_liability(a), released=True) for a in accas]
    assert await book.rt.wallet_store.settle_liability(again) == [False, False]
    assert await book.liability(book.ft, "home") == 100
    await service.settle_event(book.event, res((book.ft, "home", W)), "ft")
    assert await book.liability(book.ft, "home") == 0
    await assert_money_invariants(book.rt.ledger, book.rt.wallet_store, book.accounts, deposits=book.deposits)
