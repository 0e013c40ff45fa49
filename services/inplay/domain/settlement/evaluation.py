"""Pure evaluation of a settlement page: the bets' outcomes under the results in effect (ONE Rust call per
page, ``core.settle_bets``) and the rows a run writes for the bets that change (history, per-run row,
PAYOUT / PAYOUT_REVERSAL entry, credit, BetsSettled item). No I/O: ``engine.RunExecutor`` writes them.

Every row is a function of (run, bet, evaluation): ids from ``ids.py``, times from the run's start, so a
redone page plans identical rows.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from inplay import core
from inplay.core import LegOutcome, SettleLeg
from inplay.domain.settlement.ids import entry_id_for, seq_key_for
from inplay.domain.settlement.model import (
    KIND_REINSTATED,
    KIND_ROLLED_BACK,
    KIND_SETTLED,
    SETTLEMENT_KINDS,
    BetSettlementRow,
    PriorState,
    Results,
    RunStats,
    RunView,
    SelectionResult,
    outcome_name,
)
from inplay.ids import bet_liability
from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, Leg, PlacedBet, RunKind
from inplay.ports import BusMessage, Credit, LiabilityChange

log = logging.getLogger("inplay.settlement")

# Bets per BetsSettled message (~250 bytes each: far below the producer's 1 MB message limit).
MESSAGE_BETS = 500
# One prebuilt compact encoder (json.dumps with keyword arguments builds one per call).
_JSON = json.JSONEncoder(separators=(",", ":"))


_STATUS_BY_NAME = {s.name: s for s in BetState}


def _bet_state(status: object) -> BetState:
    name = getattr(status, "name", None) or str(status).rsplit(".", 1)[-1]
    return _STATUS_BY_NAME[str(name)]


@dataclass(frozen=True, slots=True)
class Evaluation:
    status: BetState
    return_minor: int
    legs: tuple[LegOutcome, ...]
    # Dead-heat factors by leg (for the BetSettled message).
    error: str = ""

    @property
    def target_minor(self) -> int:
        """What the bet should have been paid in total: its return once settled, else nothing."""
        return self.return_minor if self.status not in (BetState.OPEN, BetState.LOST) else 0


def evaluate(bets: Sequence[PlacedBet], results_by_event: dict[str, Results]) -> list[Evaluation]:
    """All bets in ONE Rust call (``core.settle_bets``). A leg whose market has no effective result is
    OPEN. If the batch call fails (a bet the core rejects), bets are evaluated one by one and the bad ones
    stay OPEN with the error recorded, so one bad bet cannot block a whole event."""
    empty = Results()
    open_result = SelectionResult(LegOutcome.OPEN)
    batch: list[tuple[int, Sequence[SettleLeg]]] = []
    outcomes: list[tuple[LegOutcome, ...]] = []
    # Bets of one event share few (leg -> result) pairs: each is looked up and built once per page.
    cache: dict[Leg, tuple[SettleLeg, LegOutcome]] = {}
    for bet in bets:
        legs: list[SettleLeg] = []
        names: list[LegOutcome] = []
        for leg in bet.legs:
            hit = cache.get(leg)
            if hit is None:
                market = results_by_event.get(leg.event_id, empty).markets.get(leg.market_id)
                sel = open_result if market is None else market.outcome_of(leg.selection_id)
                hit = cache[leg] = (SettleLeg(leg.odds, sel.outcome, sel.dead_heat), sel.outcome)
            legs.append(hit[0])
            names.append(hit[1])
        batch.append((bet.stake_minor, legs))
        outcomes.append(tuple(names))
    try:
        raw = core.settle_bets(batch)
        return [
            Evaluation(_bet_state(status), int(ret), outs) for (status, ret), outs in zip(raw, outcomes, strict=True)
        ]
    except core.CoreError:
        log.exception("settle_bets failed for a batch of %d; evaluating one by one", len(batch))
    out: list[Evaluation] = []
    for item, outs in zip(batch, outcomes, strict=True):
        try:
            [(status, ret)] = core.settle_bets([item])
            out.append(Evaluation(_bet_state(status), int(ret), outs))
        except core.CoreError as exc:
            out.append(Evaluation(BetState.OPEN, 0, outs, error=str(exc)))
    return out


@dataclass
class PlannedPage:
    rows: list[BetSettlementRow]
    events: list[BetEvent]
    entries: list[LedgerEntry]
    credits: list[Credit]
    # One item per bet (BetsSettled messages carry up to MESSAGE_BETS of them).
    messages: list[dict[str, object]]
    stats: RunStats
    # The liability state of every changed bet (released once settled, counted again if reopened).
    liability: list[LiabilityChange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every page of one execution of a run shares."""

    run: RunView
    row_kind: str  # SETTLED | ROLLED_BACK | REINSTATED

    @property
    def run_id(self) -> str:
        return self.run.record.run_id

    @property
    def kind(self) -> RunKind:
        return self.run.record.kind


@functools.lru_cache(maxsize=4096)
def message_legs(legs: tuple[Leg, ...], outcomes: tuple[LegOutcome, ...]) -> list[dict[str, str]]:
    """The legs of a BetsSettled item (shared by the bets with the same legs and outcomes; only read by
    the JSON encoder)."""
    return [
        {"market_id": lg.market_id, "selection_id": lg.selection_id, "outcome": outcome_name(o)}
        for lg, o in zip(legs, outcomes, strict=True)
    ]


def row_kind_for(run: RunView, runs: Sequence[RunView]) -> str:
    if run.record.kind == RunKind.SETTLE:
        return KIND_SETTLED
    target = next((r for r in runs if r.run_id == run.record.target_run_id), None)
    return KIND_REINSTATED if target is not None and target.record.kind == RunKind.ROLLBACK else KIND_ROLLED_BACK


def plan_page(
    ctx: RunContext,
    bets: Sequence[PlacedBet],
    priors: Sequence[PriorState],
    evals: Sequence[Evaluation],
    at_ms: int,
) -> PlannedPage:
    """The rows, entries, credits and message items of a page's bets that change (pure)."""
    planned = PlannedPage([], [], [], [], [], RunStats())
    still_open = changed = payouts = 0
    for bet, prior, ev in zip(bets, priors, evals, strict=True):
        if ev.status == BetState.OPEN:
            still_open += 1
        if ev.error:
            log.error("bet %s left open: %s", bet.bet_id, ev.error)
        delta = ev.target_minor - prior.paid_minor
        prior_legs = prior.leg_outcomes or (LegOutcome.OPEN,) * len(ev.legs)
        if delta == 0 and ev.status == prior.status and ev.legs == prior_legs:
            continue
        changed += 1
        payouts += delta
        add_bet(planned, ctx, bet, ev.status, ev.legs, delta, ev.target_minor, at_ms, write_event=True)
    planned.stats = RunStats(
        bets_processed=len(bets), bets_still_open=still_open, payouts_minor=payouts, bets_changed=changed
    )
    return planned


def add_bet(
    planned: PlannedPage,
    ctx: RunContext,
    bet: PlacedBet,
    status: BetState,
    legs: tuple[LegOutcome, ...],
    delta: int,
    return_minor: int,
    at_ms: int,
    *,
    write_event: bool,
    write_row: bool = True,
) -> None:
    """Plans one changed bet: its per-run row, history row (the intent), money, liability state, message."""
    run_id = ctx.run_id
    row = BetSettlementRow(
        run_id=run_id,
        bet_id=bet.bet_id,
        account_id=bet.account_id,
        status=status,
        return_minor=return_minor,
        delta_minor=delta,
        kind=ctx.row_kind,
        leg_outcomes=legs,
        event_ids=(bet.legs[0].event_id,) if len(bet.legs) == 1 else bet.event_ids,
    )
    if write_row:
        planned.rows.append(row)
    if write_event:
        planned.events.append(
            BetEvent(
                bet_id=bet.bet_id,
                seq_key=seq_key_for(at_ms, run_id),
                kind=ctx.row_kind,
                status=status,
                amount_minor=delta,
                run_id=run_id,
                at_ms=at_ms,
                leg_outcomes=legs,
            )
        )
    if delta != 0:
        _add_money(planned, ctx, bet, delta, at_ms)
    keys, amount = bet_liability(bet)
    if amount:
        planned.liability.append(LiabilityChange(bet.bet_id, keys, amount, released=status != BetState.OPEN))
    planned.messages.append(
        {
            "bet_id": bet.bet_id,
            "account_id": bet.account_id,
            "status": status.name,
            "return_minor": return_minor,
            "amount_minor": delta,
            "currency": bet.currency,
            "legs": message_legs(bet.legs, legs),
            "at_ms": at_ms,
        }
    )


def _add_money(planned: PlannedPage, ctx: RunContext, bet: PlacedBet, delta: int, at_ms: int) -> None:
    """The bet's PAYOUT (or PAYOUT_REVERSAL) entry of this run and its credit, both keyed by the run."""
    positive_payout = ctx.kind == RunKind.SETTLE and delta > 0
    entry_id = entry_id_for(ctx.kind, ctx.run_id, bet.bet_id)
    planned.entries.append(
        LedgerEntry(
            entry_id=entry_id,
            account_id=bet.account_id,
            kind=EntryKind.PAYOUT if positive_payout else EntryKind.PAYOUT_REVERSAL,
            amount_minor=delta,
            currency=bet.currency,
            bet_id=bet.bet_id,
            reference=ctx.run_id,
            created_at_ms=at_ms,
        )
    )
    planned.credits.append(Credit(bet.account_id, entry_id, delta))


def bus_messages(ctx: RunContext, topic: str, items: Sequence[dict[str, object]]) -> list[BusMessage]:
    """BetsSettled messages of up to MESSAGE_BETS bets each (key: the event). One message per bet cost
    ~25 us of client CPU in the producer path (a future, a delivery report and a loop wake-up each):
    12 s of a 500 000-bet run; per batch it is nothing. Consumers dedupe by (run_id, bet_id)."""
    head = {
        "type": "BetsSettled",
        "event_id": ctx.run.record.event_id,
        "run_id": ctx.run_id,
        "run_kind": ctx.kind.name,
        "kind": ctx.row_kind,
    }
    out = []
    for start in range(0, len(items), MESSAGE_BETS):
        value = _JSON.encode({**head, "bets": items[start : start + MESSAGE_BETS]}).encode()
        out.append(BusMessage(topic=topic, key=ctx.run.record.event_id, value=value))
    return out


def split_by_own_row(
    run_id: str, bets: Sequence[PlacedBet], histories: Sequence[Sequence[BetEvent]]
) -> tuple[list[PlacedBet], list[PriorState], list[tuple[PlacedBet, BetEvent, PriorState]]]:
    """Accumulator phase: each bet's paid-so-far and last state from its own history (other runs' rows),
    split into the bets to evaluate afresh and those this run already wrote a history row for (reused,
    never recomputed: the other events' results may have changed since)."""
    fresh: list[PlacedBet] = []
    fresh_priors: list[PriorState] = []
    own_rows: list[tuple[PlacedBet, BetEvent, PriorState]] = []
    for bet, hist in zip(bets, histories, strict=True):
        paid, status = 0, BetState.OPEN
        legs: tuple[LegOutcome, ...] = ()
        own: BetEvent | None = None
        for ev in hist:
            if ev.kind not in SETTLEMENT_KINDS:
                continue
            if ev.run_id == run_id:
                own = ev
                continue
            paid, status, legs = paid + ev.amount_minor, ev.status, ev.leg_outcomes
        prior = PriorState(paid, status, legs)
        if own is not None:
            own_rows.append((bet, own, prior))
        else:
            fresh.append(bet)
            fresh_priors.append(prior)
    return fresh, fresh_priors, own_rows


def replan_own_rows(
    planned: PlannedPage,
    ctx: RunContext,
    own_rows: Sequence[tuple[PlacedBet, BetEvent, PriorState]],
    written: dict[str, BetSettlementRow],
) -> None:
    """Re-sends what this run's own history row of a bet says (its entry, credit and message); the per-run
    row already written (if any) is kept as it is: its return was computed with the other runs' rows of
    that moment."""
    extra = RunStats()
    for bet, own, prior in own_rows:
        row = written.get(bet.bet_id)
        total_paid = row.return_minor if row is not None else prior.paid_minor + own.amount_minor
        add_bet(
            planned,
            ctx,
            bet,
            own.status,
            own.leg_outcomes,
            own.amount_minor,
            total_paid,
            own.at_ms,
            write_event=False,
            write_row=row is None,
        )
        opened = int(own.status == BetState.OPEN)
        stats = RunStats(bets_processed=1, bets_still_open=opened, payouts_minor=own.amount_minor, bets_changed=1)
        extra = extra.plus(stats)
    planned.stats = planned.stats.plus(extra)
