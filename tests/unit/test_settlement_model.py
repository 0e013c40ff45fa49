"""Pure logic of settlement: results, run state folding, effective runs and results, fingerprints."""

from __future__ import annotations

import pytest

from inplay.core import LegOutcome
from inplay.domain.settlement.effective import (
    effective_results,
    effective_rollback_of,
    effective_run_ids,
    incomplete_effective_runs,
    latest_effective_settle,
    root_settle_run,
)
from inplay.domain.settlement.ids import entry_id_for, fingerprint, rollback_run_id, settle_run_id
from inplay.domain.settlement.model import (
    MarketResult,
    Results,
    RunMark,
    RunRecord,
    RunStats,
    RunView,
    SelectionResult,
    fold_run,
    make_results,
)
from inplay.model import RunKind, RunState


def test_results_json_round_trip() -> None:
    results = make_results(
        [
            ("m1", "home", LegOutcome.WIN, (1, 1)),
            ("m2", "over", LegOutcome.HALF_WIN, (1, 1)),
            ("m3", "a", LegOutcome.DEAD_HEAT, (1, 3)),
            ("m3", "b", LegOutcome.DEAD_HEAT, (1, 3)),
            ("m4", "x", LegOutcome.PUSH, (5, 7)),  # factor ignored unless DEAD_HEAT
        ],
        ["m9"],
    )
    again = Results.from_json(results.to_json())
    assert again == results
    assert again.markets["m4"].selections["x"].dead_heat == (1, 1)
    assert again.markets["m3"].selections["a"] == SelectionResult(LegOutcome.DEAD_HEAT, (1, 3))
    assert again.markets["m9"].void
    assert Results.from_json("") == Results()


def test_unlisted_selection_of_a_resulted_market_loses_and_void_market_voids_all() -> None:
    results = make_results([("m1", "home", LegOutcome.WIN, (1, 1))], ["m2"])
    assert results.markets["m1"].outcome_of("home").outcome == LegOutcome.WIN
    assert results.markets["m1"].outcome_of("away").outcome == LegOutcome.LOSE
    assert results.markets["m2"].outcome_of("anything").outcome == LegOutcome.VOID


@pytest.mark.parametrize(
    ("outcomes", "voids", "message"),
    [
        ([("m1", "a", LegOutcome.WIN, (1, 1)), ("m1", "a", LegOutcome.LOSE, (1, 1))], [], "twice"),
        ([("m1", "a", LegOutcome.WIN, (1, 1))], ["m1"], "both voided and resulted"),
        ([("m1", "a", LegOutcome.DEAD_HEAT, (0, 2))], [], "dead heat"),
        ([("m1", "a", LegOutcome.DEAD_HEAT, (3, 2))], [], "dead heat"),
        ([("m1", "a", LegOutcome.OPEN, (1, 1))], [], "OPEN"),
        ([("", "a", LegOutcome.WIN, (1, 1))], [], "required"),
        ([], [""], "empty"),
    ],
)
def test_make_results_rejects_contradictions(
    outcomes: list[tuple[str, str, LegOutcome, tuple[int, int]]], voids: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_results(outcomes, voids)


def _run(run_id: str, kind: RunKind, at: int, target: str = "", markets: tuple[str, ...] = ()) -> RunRecord:
    results = Results({m: MarketResult(void=True) for m in markets})
    return RunRecord(run_id, "ev", kind, at, target_run_id=target, results=results)


def _view(record: RunRecord, state: RunState = RunState.COMPLETED) -> RunView:
    return RunView(record, state, RunStats())


def test_fold_run_states() -> None:
    rec = _run("r", RunKind.SETTLE, 1)
    assert fold_run(rec, []).state == RunState.RUNNING
    assert fold_run(rec, [RunMark("r", "ATTEMPT", 5)]).state == RunState.RUNNING
    failed = fold_run(rec, [RunMark("r", "ATTEMPT", 5), RunMark("r", "FAILED", 6, error="boom")])
    assert failed.state == RunState.FAILED and failed.error == "boom"
    # Retried after the failure: running again.
    again = [RunMark("r", "ATTEMPT", 5), RunMark("r", "FAILED", 6), RunMark("r", "ATTEMPT", 7)]
    assert fold_run(rec, again).state == RunState.RUNNING
    done = fold_run(rec, [*again, RunMark("r", "COMPLETED", 9, stats=RunStats(bets_processed=3))])
    assert done.state == RunState.COMPLETED and done.stats.bets_processed == 3 and done.finished_at_ms == 9


def test_effective_runs_through_rollback_chains() -> None:
    s1 = _view(_run("s1", RunKind.SETTLE, 1, markets=("m1",)))
    s2 = _view(_run("s2", RunKind.SETTLE, 2, markets=("m2",)))
    assert effective_run_ids([s1, s2]) == {"s1", "s2"}
    assert set(effective_results([s1, s2]).markets) == {"m1", "m2"}
    assert latest_effective_settle([s1, s2]) == s2

    r1 = _view(_run("s2.r1", RunKind.ROLLBACK, 3, target="s2"))
    runs = [s1, s2, r1]
    assert effective_run_ids(runs) == {"s1", "s2.r1"}
    assert set(effective_results(runs).markets) == {"m1"}
    assert effective_rollback_of(runs, "s2") == r1
    assert latest_effective_settle(runs) == s1

    # A rollback of the rollback puts s2 back in effect.
    r2 = _view(_run("s2.r1.r1", RunKind.ROLLBACK, 4, target="s2.r1"))
    runs = [s1, s2, r1, r2]
    assert effective_run_ids(runs) == {"s1", "s2", "s2.r1.r1"}
    assert set(effective_results(runs).markets) == {"m1", "m2"}
    assert effective_rollback_of(runs, "s2") is None
    assert root_settle_run(runs, "s2.r1.r1") == s2

    # s2 rolled back a second time.
    r3 = _view(_run("s2.r2", RunKind.ROLLBACK, 5, target="s2"), RunState.RUNNING)
    runs = [s1, s2, r1, r2, r3]
    assert effective_run_ids(runs) == {"s1", "s2.r1.r1", "s2.r2"}
    assert set(effective_results(runs).markets) == {"m1"}
    assert incomplete_effective_runs(runs) == [r3]


def test_ids_are_deterministic() -> None:
    assert settle_run_id("ev1", "req-1") == "ev1.s.req-1"
    assert rollback_run_id("ev1.s.req-1", 2) == "ev1.s.req-1.r2"
    assert entry_id_for(RunKind.SETTLE, "run", "bet") == "payout:run:bet"
    assert entry_id_for(RunKind.ROLLBACK, "run", "bet") == "reversal:run:bet"
    assert fingerprint(["b", "a"]) == fingerprint(["a", "b"])
    assert fingerprint(["a", "b"]) != fingerprint(["a", "b", "c"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])
