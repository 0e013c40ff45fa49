"""Settlement records: results, runs, checkpoints and per-bet settlement rows (all append-only).

Results of a run are stored with the run (JSON) so that any process can rebuild an event's *effective*
results from the run history alone: the union of the results of its settle runs that are not (effectively)
rolled back. A market listed in a run's outcomes is resulted as a whole: its selections not listed LOSE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from inplay.core import LegOutcome
from inplay.model import BetEvent, BetState, RunKind, RunState

# Bet history kinds written by settlement runs.
KIND_SETTLED = "SETTLED"  # a settle run changed the bet (settled it, or recorded a settled leg)
KIND_ROLLED_BACK = "ROLLED_BACK"  # a rollback run took a settlement back
KIND_REINSTATED = "REINSTATED"  # a rollback of a rollback re-applied the original settlement
SETTLEMENT_KINDS = frozenset({KIND_SETTLED, KIND_ROLLED_BACK, KIND_REINSTATED})

_OUTCOMES_BY_NAME: dict[str, LegOutcome] = {
    "OPEN": LegOutcome.OPEN,
    "WIN": LegOutcome.WIN,
    "LOSE": LegOutcome.LOSE,
    "VOID": LegOutcome.VOID,
    "PUSH": LegOutcome.PUSH,
    "HALF_WIN": LegOutcome.HALF_WIN,
    "HALF_LOSE": LegOutcome.HALF_LOSE,
    "DEAD_HEAT": LegOutcome.DEAD_HEAT,
}
_NAMES_BY_OUTCOME: dict[LegOutcome, str] = {v: k for k, v in _OUTCOMES_BY_NAME.items()}


def outcome_name(outcome: LegOutcome) -> str:
    return _NAMES_BY_OUTCOME[outcome]


def apply_void_factor(outcome: LegOutcome, void_factor: Fraction) -> LegOutcome:
    """A result with a void factor as Sportradar defines it: the share of the stake refunded (1 = full
    refund, 0.5 = half refund, the other half settled as WIN or LOSE, 0 = none)."""
    if void_factor == 0:
        return outcome
    if void_factor == 1:
        return LegOutcome.VOID
    if void_factor == Fraction(1, 2) and outcome in (LegOutcome.WIN, LegOutcome.LOSE):
        return LegOutcome.HALF_WIN if outcome == LegOutcome.WIN else LegOutcome.HALF_LOSE
    raise ValueError(f"void factor {void_factor} with {outcome_name(outcome)}: expected 0, 0.5 (WIN/LOSE) or 1")


def outcome_from_name(name: str) -> LegOutcome:
    try:
        return _OUTCOMES_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown leg outcome {name!r}") from None


@dataclass(frozen=True, slots=True)
class SelectionResult:
    outcome: LegOutcome
    # Dead-heat factor (numerator, denominator) in (0, 1]; (1, 1) for every other outcome.
    dead_heat: tuple[int, int] = (1, 1)


@dataclass(frozen=True, slots=True)
class MarketResult:
    """The result of one market: void as a whole, or per selection (selections not listed lose)."""

    void: bool = False
    selections: Mapping[str, SelectionResult] = field(default_factory=dict)

    def outcome_of(self, selection_id: str) -> SelectionResult:
        if self.void:
            return SelectionResult(LegOutcome.VOID)
        return self.selections.get(selection_id, SelectionResult(LegOutcome.LOSE))


@dataclass(frozen=True, slots=True)
class Results:
    """Results of some markets (of one event, or merged over several)."""

    markets: Mapping[str, MarketResult] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            mid: {
                "void": m.void,
                "sel": {
                    sid: [outcome_name(s.outcome), s.dead_heat[0], s.dead_heat[1]]
                    for sid, s in sorted(m.selections.items())
                },
            }
            for mid, m in sorted(self.markets.items())
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Results:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            {
                mid: MarketResult(
                    void=bool(m.get("void", False)),
                    selections={
                        sid: SelectionResult(outcome_from_name(v[0]), (int(v[1]), int(v[2])))
                        for sid, v in m.get("sel", {}).items()
                    },
                )
                for mid, m in data.items()
            }
        )

    def merged(self, other: Results) -> Results:
        return Results({**self.markets, **other.markets})


def make_results(
    outcomes: Iterable[tuple[str, str, LegOutcome, tuple[int, int]]], void_market_ids: Iterable[str]
) -> Results:
    """Builds results from (market_id, selection_id, outcome, dead_heat) rows and voided markets.

    Raises ValueError on contradictions (a market both voided and resulted, a selection resulted twice,
    an invalid dead-heat factor, an OPEN outcome)."""
    markets: dict[str, dict[str, SelectionResult]] = {}
    for market_id, selection_id, outcome, dead_heat in outcomes:
        if not market_id or not selection_id:
            raise ValueError("market_id and selection_id are required")
        if outcome == LegOutcome.OPEN:
            raise ValueError(f"{market_id}/{selection_id}: a result cannot be OPEN")
        num, den = dead_heat
        if outcome == LegOutcome.DEAD_HEAT:
            if not (0 < num <= den):
                raise ValueError(f"{market_id}/{selection_id}: dead heat factor must be in (0, 1]")
        else:
            num, den = 1, 1
        sels = markets.setdefault(market_id, {})
        if selection_id in sels:
            raise ValueError(f"{market_id}/{selection_id} resulted twice")
        sels[selection_id] = SelectionResult(outcome, (num, den))
    result: dict[str, MarketResult] = {m: MarketResult(False, s) for m, s in markets.items()}
    for market_id in void_market_ids:
        if not market_id:
            raise ValueError("void market id is empty")
        if market_id in markets:
            raise ValueError(f"market {market_id} is both voided and resulted")
        result[market_id] = MarketResult(void=True)
    return Results(result)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The header of a run (written once, before any of its effects; a retry rewrites the same row)."""

    run_id: str
    event_id: str
    kind: RunKind
    started_at_ms: int
    request_id: str = ""
    target_run_id: str = ""  # ROLLBACK: the run it takes back
    results: Results = field(default_factory=Results)  # SETTLE: the results it applies
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunStats:
    bets_total: int = 0
    bets_processed: int = 0
    bets_still_open: int = 0
    payouts_minor: int = 0
    bets_changed: int = 0
    negative_balance_accounts: tuple[str, ...] = ()

    def plus(self, other: RunStats) -> RunStats:
        return RunStats(
            bets_total=max(self.bets_total, other.bets_total),
            bets_processed=self.bets_processed + other.bets_processed,
            bets_still_open=self.bets_still_open + other.bets_still_open,
            payouts_minor=self.payouts_minor + other.payouts_minor,
            bets_changed=self.bets_changed + other.bets_changed,
            negative_balance_accounts=tuple(
                sorted(set(self.negative_balance_accounts) | set(other.negative_balance_accounts))
            ),
        )


@dataclass(frozen=True, slots=True)
class RunMark:
    """A state row of a run: ``ATTEMPT`` (execution (re)started), ``FAILED`` or ``COMPLETED``."""

    run_id: str
    mark: str
    at_ms: int
    stats: RunStats = field(default_factory=RunStats)
    error: str = ""
    fence: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Progress row of a run: one per processed page (phase ``S``: bets on this event only, ``M``: bets
    with legs on other events) with the ids of the bets it covered, or the bet count (phase ``C``). A
    resumed run skips every bet a checkpoint covers (checkpoints are written after the page's effects)."""

    run_id: str
    phase: str
    page_key: str
    stats: RunStats
    at_ms: int
    bet_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as read back: header + its state rows folded."""

    record: RunRecord
    state: RunState
    stats: RunStats
    finished_at_ms: int = 0
    error: str = ""

    @property
    def run_id(self) -> str:
        return self.record.run_id


def fold_run(record: RunRecord, marks: Iterable[RunMark]) -> RunView:
    """State of a run from its marks: COMPLETED if completed; else FAILED if the latest attempt failed;
    else RUNNING (started, possibly crashed: a retry resumes it)."""
    completed: RunMark | None = None
    last_attempt = 0
    last_failed: RunMark | None = None
    for m in marks:
        if m.mark == "COMPLETED":
            completed = m
        elif m.mark == "ATTEMPT":
            last_attempt = max(last_attempt, m.at_ms)
        elif m.mark == "FAILED" and (last_failed is None or m.at_ms >= last_failed.at_ms):
            last_failed = m
    if completed is not None:
        return RunView(record, RunState.COMPLETED, completed.stats, completed.at_ms)
    if last_failed is not None and last_failed.at_ms >= last_attempt:
        return RunView(record, RunState.FAILED, last_failed.stats, last_failed.at_ms, last_failed.error)
    return RunView(record, RunState.RUNNING, RunStats())


@dataclass(frozen=True, slots=True)
class BetSettlementRow:
    """What a run did to one bet (per run, per bet; the per-run index used for corrections)."""

    run_id: str
    bet_id: str
    account_id: str
    status: BetState
    return_minor: int  # what the bet returns under the results effective after this run
    delta_minor: int  # what this run credited (negative: debited)
    kind: str  # SETTLED | ROLLED_BACK | REINSTATED
    leg_outcomes: tuple[LegOutcome, ...]
    event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PriorState:
    """A bet's settlement state before a run: net amount paid so far and the last recorded status/legs."""

    paid_minor: int = 0
    status: BetState = BetState.OPEN
    leg_outcomes: tuple[LegOutcome, ...] = ()


def settlement_state(history: Iterable[BetEvent]) -> tuple[BetState, int]:
    """A bet's status and settled return from its history (for GetBet / ListBets).

    Status: that of the latest settlement row (OPEN when none). Settled return: the TOTAL paid, i.e. the
    sum of the settlement rows' deltas (each row stores what its run credited, not the total), so a bet
    moved between two non-zero returns (a correction, a reinstatement) reports what it has been paid."""
    status, paid = BetState.OPEN, 0
    for event in history:
        if event.kind not in SETTLEMENT_KINDS:
            continue
        paid += event.amount_minor
        status = event.status if event.status != BetState.UNSPECIFIED else BetState.OPEN
    return status, paid
