"""Bet acceptance: the path of a batch of bets from slip to ledger.

Order of checks (each rejection is final for that slip and writes nothing but its idempotency record):
  1. input validation (pure) -> INVALID_ARGUMENT with the field path, nothing written at all
  2. idempotency: a key already used by the account returns the stored result (accepted or rejected)
  3. market checks per leg, in the Rust core, one call per batch: suspended -> stale -> odds tolerance
  4. risk: stake limits, maximum payout (potential return from the Rust core, one call per batch)
  5. in-play delay: in-play slips wait, then are re-checked against the then-current prices and status
  6. commit (:mod:`inplay.domain.commit`): the slips join the journal writer's queue; the writer debits a
     whole batch in one atomic wallet call (idempotency reservation, market status re-check, self-exclusion,
     daily stake limit, book liability, balance, the batch's intent), writes it to the journal as ONE
     single-partition write (retried until known, never refunded on a guess), stores the final results and
     answers; views and BetPlaced are projected from the journal.

The commit runs in the writer's task and is awaited through ``asyncio.shield``: a cancelled RPC stops
waiting, never committing. One slip's failure never changes another slip's result.

Group commit: unary ``PlaceBet`` calls go through a :class:`GroupCommitter`: at most ``batch_max_in_flight``
groups run at once and calls arriving meanwhile form the next group (alone, a call waits at most
``batch_window_ms``): one market read and one core call per group; every caller's slips then
meet in the writer's queue, which forms batches as large as the load makes them (one in flight per shard).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from inplay import core, metrics
from inplay.batching import GroupCommitter, only_waiting
from inplay.config import BetRules
from inplay.core import Quote, QuoteResult
from inplay.domain import records
from inplay.domain.bets.rejections import (
    TRANSIENT_REASONS,
    WALLET_REASONS,
    OddsChangedInfo,
    PlacementResult,
    Reason,
    Rejection,
    debit_rejection,
    rejected,
    storable,
)
from inplay.domain.bets.validation import validate_request
from inplay.domain.commit import CommitOutcome, CommitSlip, ShardWriter, accepted_record
from inplay.domain.journal import slip_hash
from inplay.model import BetRequest, Leg, MarketState, MarketStatus, PlacedBet
from inplay.ports import OddsCache, WalletStore
from inplay.tracing import tracer


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Slot:
    """Working state of one slip inside a batch."""

    req: BetRequest
    result: PlacementResult | None = None
    markets: dict[str, MarketState] = field(default_factory=dict)
    accepted_legs: tuple[Leg, ...] = ()
    potential_return: int = 0
    in_play: bool = False
    slip_hash: str = ""


class BetReader(Protocol):
    async def get_bet(self, bet_id: str) -> PlacedBet | None: ...


class BetPlacement:
    """The bet acceptance use case over the ports; the commit itself is the journal writer's."""

    def __init__(
        self,
        odds: OddsCache,
        wallet: WalletStore,
        writer: ShardWriter,
        rules: BetRules,
        bets: BetReader,
        *,
        clock: Callable[[], int] = now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._odds = odds
        self._wallet = wallet
        self._writer = writer
        self._bets = bets
        self.rules = rules
        self._clock = clock
        self._sleep = sleep
        self._committer: GroupCommitter[BetRequest, PlacementResult] = GroupCommitter(
            self.place_batch,
            window_ms=rules.batch_window_ms,
            max_batch=rules.batch_max,
            max_in_flight=rules.batch_max_in_flight,
        )

    @property
    def writer(self) -> ShardWriter:
        return self._writer

    async def place(self, req: BetRequest) -> PlacementResult:
        """One bet, group-committed with concurrent callers."""
        return await self._committer.submit(req)

    async def place_batch(self, reqs: Sequence[BetRequest]) -> list[PlacementResult]:
        with tracer.start_as_current_span("bets.place_batch", attributes={"inplay.batch_size": len(reqs)}) as span:
            results = await self._place_batch(reqs)
            bet_ids = [r.bet.bet_id for r in results if r.bet is not None]
            if bet_ids:
                span.set_attribute("inplay.bet_ids", bet_ids)
            return results

    async def _place_batch(self, reqs: Sequence[BetRequest]) -> list[PlacementResult]:
        slots = [_Slot(req=r) for r in reqs]
        for slot in slots:
            rejection = validate_request(slot.req, self.rules)
            if rejection is not None:
                slot.result = PlacementResult(rejection=rejection)
            else:
                slot.slip_hash = slip_hash(slot.req)
        duplicates = self._in_batch_duplicates(slots)
        await self._replay_known_keys(self._pending(slots))
        await self._check_markets(self._pending(slots), first_pass=True)
        self._check_risk(self._pending(slots))
        await self._inplay_delay(self._pending(slots))
        await self._commit(self._pending(slots))
        await self._store_results(slots)
        for dup, first in duplicates:
            assert first.result is not None
            dup.result = _duplicate_result(dup, first)
        out: list[PlacementResult] = []
        for slot in slots:
            assert slot.result is not None
            out.append(slot.result)
        _observe(out)
        return out

    def _in_batch_duplicates(self, slots: list[_Slot]) -> list[tuple[_Slot, _Slot]]:
        """Two slips of one batch with the same key: the later one is answered from the first."""
        first_by_key: dict[tuple[str, str], _Slot] = {}
        duplicates: list[tuple[_Slot, _Slot]] = []
        for slot in self._pending(slots):
            ident = (slot.req.account_id, slot.req.idempotency_key)
            if ident in first_by_key:
                duplicates.append((slot, first_by_key[ident]))
                slot.result = PlacementResult(rejection=Rejection(Reason.IN_PROGRESS, "duplicate in batch"))
            else:
                first_by_key[ident] = slot
        return duplicates

    @staticmethod
    def _pending(slots: Sequence[_Slot]) -> list[_Slot]:
        return [s for s in slots if s.result is None]

    async def _replay_known_keys(self, slots: list[_Slot]) -> None:
        if not slots:
            return
        stored = await self._wallet.get_idempotent([(s.req.account_id, s.req.idempotency_key) for s in slots])
        replays: list[tuple[_Slot, str]] = []
        for slot, record in zip(slots, stored, strict=True):
            if record is not None:
                answer = _replay(record, slot.slip_hash)
                if isinstance(answer, str):
                    replays.append((slot, answer))
                else:
                    slot.result = answer
        await self._read_replayed_bets(replays)

    async def _read_replayed_bets(self, replays: list[tuple[_Slot, str]]) -> None:
        """Replays of accepted bets: the bets themselves, read from the journal by id (the rare path)."""
        if not replays:
            return
        found = await asyncio.gather(*(self._bets.get_bet(bet_id) for _, bet_id in replays), return_exceptions=True)
        for (slot, _), bet in zip(replays, found, strict=True):
            if isinstance(bet, PlacedBet):
                slot.result = PlacementResult(bet=bet, replayed=True)
            else:
                slot.result = PlacementResult(
                    rejection=Rejection(
                        Reason.UNAVAILABLE, "the earlier bet could not be read; retry with the same key"
                    )
                )

    async def _check_markets(self, slots: list[_Slot], *, first_pass: bool) -> None:
        """Market checks of every leg: found, not closed, selection known (here), then suspended -> stale
        -> odds tolerance in one core call for the batch; accepted legs take the current price."""
        if not slots:
            return
        by_id, prices, now = await self._load_markets(slots)
        quotes: list[Quote] = []
        owners: list[tuple[_Slot, int]] = []
        for slot in slots:
            slot.result = _structural_rejection(slot, by_id, prices)
            if slot.result is None:
                slot.in_play = any(m.in_play for m in slot.markets.values())
                for i, leg in enumerate(slot.req.legs):
                    quotes.append(self._quote(slot, leg, slot.markets[leg.market_id], prices, now))
                    owners.append((slot, i))
        verdicts = core.check_quotes(quotes) if quotes else []
        for (slot, i), quote, verdict in zip(owners, quotes, verdicts, strict=True):
            if slot.result is None and verdict != QuoteResult.ACCEPTED:
                slot.result = PlacementResult(rejection=self._quote_rejection(slot, i, quote, verdict))
        for slot in slots:
            if slot.result is None:  # accepted at the current price
                slot.accepted_legs = tuple(
                    Leg(
                        market_id=leg.market_id,
                        selection_id=leg.selection_id,
                        odds=prices[(leg.market_id, leg.selection_id)],
                        event_id=slot.markets[leg.market_id].event_id,
                    )
                    for leg in slot.req.legs
                )

    async def _load_markets(self, slots: list[_Slot]) -> tuple[dict[str, MarketState], _Prices, int]:
        """One cache read for every market of the batch; the odds-age metric once per market, not per leg."""
        market_ids = sorted({leg.market_id for s in slots for leg in s.req.legs})
        states = await self._odds.get_markets(market_ids)
        by_id = {m: st for m, st in zip(market_ids, states, strict=True) if st is not None}
        prices = {(m, sel.selection_id): sel.odds for m, st in by_id.items() for sel in st.selections}
        now = self._clock()
        for state in by_id.values():
            metrics.ODDS_AGE.observe(max(0, now - state.updated_at_ms) / 1000)
        return by_id, prices, now

    def _quote(self, slot: _Slot, leg: Leg, market: MarketState, prices: _Prices, now: int) -> Quote:
        rules = self.rules
        return Quote(
            suspended=market.status != MarketStatus.ACTIVE,
            age_ms=max(0, now - market.updated_at_ms),
            max_age_ms=rules.max_price_age_inplay_ms if market.in_play else rules.max_price_age_prematch_ms,
            seen=leg.odds,
            current=prices[(leg.market_id, leg.selection_id)],
            policy=slot.req.policy,
            tolerance_bp=rules.tolerance_bp,
        )

    def _quote_rejection(self, slot: _Slot, i: int, quote: Quote, verdict: QuoteResult) -> Rejection:
        leg = slot.req.legs[i]
        if verdict == QuoteResult.SUSPENDED:
            why = slot.markets[leg.market_id].status_reason or "suspended"
            return Rejection(
                Reason.MARKET_SUSPENDED, f"market {leg.market_id} is suspended ({why})", f"slip.legs[{i}].market_id"
            )
        if verdict == QuoteResult.STALE:
            return Rejection(
                Reason.ODDS_STALE,
                f"price of {leg.market_id} is {quote.age_ms} ms old (max {quote.max_age_ms} ms)",
                f"slip.legs[{i}].odds",
            )
        return Rejection(
            Reason.ODDS_CHANGED,
            f"odds of {leg.selection_id} moved from {quote.seen.decimal_str()} to {quote.current.decimal_str()}",
            f"slip.legs[{i}].odds",
            odds_changed=OddsChangedInfo(
                market_id=leg.market_id,
                selection_id=leg.selection_id,
                seen=quote.seen,
                current=quote.current,
                policy=slot.req.policy,
                tolerance_bp=self.rules.tolerance_bp,
            ),
        )

    def _check_risk(self, slots: list[_Slot]) -> None:
        if not slots:
            return
        for slot, potential in zip(slots, _potential_returns(slots), strict=True):
            if potential is None or potential > self.rules.max_payout_minor:
                shown = "beyond every limit" if potential is None else str(potential)
                slot.result = PlacementResult(
                    rejection=Rejection(
                        Reason.PAYOUT_TOO_HIGH,
                        f"potential return {shown} exceeds the maximum payout {self.rules.max_payout_minor}",
                        "slip.stake.amount_minor",
                    )
                )
            else:
                slot.potential_return = potential

    async def _inplay_delay(self, slots: list[_Slot]) -> None:
        delayed = [s for s in slots if s.in_play]
        if not delayed or self.rules.inplay_delay_ms <= 0:
            return
        # One wait for the whole batch, then the same checks against the then-current state.
        await self._sleep(self.rules.inplay_delay_ms / 1000)
        await self._check_markets(delayed, first_pass=False)
        self._check_risk(self._pending(delayed))

    async def _commit(self, slots: list[_Slot]) -> None:
        if not slots:
            return
        commit_slips = [
            CommitSlip(
                account_id=slot.req.account_id,
                idempotency_key=slot.req.idempotency_key,
                legs=slot.accepted_legs,
                stake_minor=slot.req.stake_minor,
                currency=slot.req.currency,
                potential_return_minor=slot.potential_return,
                policy=int(slot.req.policy),
                slip_hash=slot.slip_hash,
                liability_cap_minor=self.rules.liability_cap_minor,
            )
            for slot in slots
        ]
        with tracer.start_as_current_span("journal.commit", attributes={"inplay.batch_size": len(slots)}):
            futures = self._writer.submit(commit_slips, _final_record)
            # Queued at the writer, which forms its own batches: the next unary group may start its checks
            # now, so its slips join this journal batch's successor instead of waiting for this commit.
            only_waiting()
            # Shielded: a cancelled RPC stops waiting here; the writer still commits and answers the key.
            outcomes = await asyncio.shield(asyncio.gather(*futures))
        replays: list[tuple[_Slot, str]] = []
        for slot, outcome in zip(slots, outcomes, strict=True):
            answer = _commit_result(outcome, slot.slip_hash)
            if isinstance(answer, str):
                replays.append((slot, answer))
            else:
                slot.result = answer
        await self._read_replayed_bets(replays)

    async def _store_results(self, slots: Sequence[_Slot]) -> None:
        """Stores the final result of slips rejected before the commit (state-based rejections only, and
        only where no record exists, so they never replace a concurrent acceptance). The writer stores the
        results of the slips it handled together with their batch."""
        final = [
            (s.req.account_id, s.req.idempotency_key, records.result_to_json(s.result, s.slip_hash))
            for s in slots
            if s.result is not None
            and s.slip_hash
            and not s.result.replayed
            and s.result.rejection is not None
            and not s.result.committed_by_writer
            and storable(s.result.rejection)
        ]
        if final:
            await self._wallet.finish_idempotent(final)


_Prices = dict[tuple[str, str], core.Odds]


def _structural_rejection(slot: _Slot, by_id: dict[str, MarketState], prices: _Prices) -> PlacementResult | None:
    """Not found, closed or unknown selection: the first such leg refuses the slip. Fills ``slot.markets``."""
    slot.markets = {}
    for i, leg in enumerate(slot.req.legs):
        market = by_id.get(leg.market_id)
        if market is None:
            return rejected(Reason.MARKET_NOT_FOUND, f"market {leg.market_id} not found", f"slip.legs[{i}].market_id")
        if market.status == MarketStatus.SETTLED:
            return rejected(Reason.MARKET_CLOSED, f"market {leg.market_id} is closed", f"slip.legs[{i}].market_id")
        if (leg.market_id, leg.selection_id) not in prices:
            return rejected(
                Reason.SELECTION_NOT_FOUND,
                f"selection {leg.selection_id} not in market {leg.market_id}",
                f"slip.legs[{i}].selection_id",
            )
        slot.markets[leg.market_id] = market
    return None


def _potential_returns(slots: Sequence[_Slot]) -> list[int | None]:
    """One core call for the batch; if any slip overflows, each slip alone, so that the overflowing slip
    fails by itself (PAYOUT_TOO_HIGH) and never fails its neighbours."""
    items = [(s.req.stake_minor, [lg.odds for lg in s.accepted_legs]) for s in slots]
    try:
        return list(core.potential_returns(items))
    except core.CoreError:
        out: list[int | None] = []
        for item in items:
            try:
                out.append(core.potential_returns([item])[0])
            except core.CoreError:
                out.append(None)
        return out


def _replay(record: str, slip: str) -> PlacementResult | str:
    """The answer for a key that already has a record: the first call's result (or, for an accepted bet,
    its id: the caller reads the bet from the journal), unless the slip differs."""
    stored_hash = records.record_slip_hash(record)
    if stored_hash and slip and stored_hash != slip:
        return PlacementResult(
            rejection=Rejection(
                Reason.IDEMPOTENCY_KEY_REUSED,
                "this idempotency key was used for a different slip; use a new key for a new slip",
                "slip.idempotency_key",
            )
        )
    if record.startswith("PENDING:"):
        return PlacementResult(rejection=Rejection(Reason.IN_PROGRESS, "a call with this idempotency key is in flight"))
    if record.startswith("BET:"):
        return record.split(":")[1]
    return records.result_from_json(record)


def _duplicate_result(dup: _Slot, first: _Slot) -> PlacementResult:
    assert first.result is not None
    if dup.slip_hash != first.slip_hash:
        refused = _replay(f"PENDING:x:{first.slip_hash}", dup.slip_hash)
        assert isinstance(refused, PlacementResult)
        return refused
    if first.result.accepted or (
        first.result.rejection is not None and first.result.rejection.reason not in TRANSIENT_REASONS
    ):
        return PlacementResult(bet=first.result.bet, rejection=first.result.rejection, replayed=True)
    return PlacementResult(rejection=Rejection(Reason.IN_PROGRESS, "duplicate in batch"))


def _commit_result(outcome: CommitOutcome, slip: str) -> PlacementResult | str:
    if outcome.status == "DEBITED":
        assert outcome.bet is not None
        return PlacementResult(bet=outcome.bet, committed_by_writer=True)
    if outcome.status == "DUPLICATE":
        if not outcome.existing:
            return PlacementResult(
                rejection=Rejection(Reason.IN_PROGRESS, "a call with this idempotency key is in flight")
            )
        return _replay(outcome.existing, slip)
    if outcome.status in WALLET_REASONS:
        rejection = debit_rejection(WALLET_REASONS[outcome.status], outcome.balance_minor)
        return PlacementResult(rejection=rejection, committed_by_writer=True)
    if outcome.status == "OVERLOADED":
        return PlacementResult(rejection=Rejection(Reason.OVERLOADED, outcome.message or "overloaded"))
    messages = {
        "NOT_READY": "the wallet projection is being rebuilt; retry with the same key",
        "SHARD_LOST": "the journal writer lost its shard; retry with the same key",
    }
    message = outcome.message or messages.get(outcome.status, "unavailable; retry with the same key")
    return PlacementResult(rejection=Rejection(Reason.UNAVAILABLE, message))


def _final_record(slip: CommitSlip, outcome: CommitOutcome) -> str | None:
    """What the writer stores under the key with the batch: acceptances and state-based wallet refusals."""
    result = _commit_result(outcome, slip.slip_hash)
    if isinstance(result, str):  # a replay of an earlier bet: its record exists already
        return None
    if result.bet is not None:
        return accepted_record(result.bet, slip.slip_hash)
    if result.rejection is not None and outcome.status in WALLET_REASONS and storable(result.rejection):
        return records.result_to_json(result, slip.slip_hash)
    return None


def _observe(results: Sequence[PlacementResult]) -> None:
    """Counts per batch, not per bet (a Prometheus increment costs microseconds)."""
    metrics.BET_BATCH_SIZE.observe(len(results))
    replayed = accepted = 0
    rejected: dict[str, int] = {}
    for result in results:
        if result.replayed:
            replayed += 1
        elif result.accepted:
            accepted += 1
        elif result.rejection is not None:
            rejected[result.rejection.reason] = rejected.get(result.rejection.reason, 0) + 1
    if replayed:
        metrics.BETS_REPLAYED.inc(replayed)
    if accepted:
        metrics.BETS_ACCEPTED.inc(accepted)
    for reason, count in rejected.items():
        metrics.BETS_REJECTED.labels(reason).inc(count)
