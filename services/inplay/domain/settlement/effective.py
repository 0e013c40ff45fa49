"""Which runs are in effect, and the results they put in effect (pure functions over a run history).

A run is in effect from the moment its header is written until a rollback of it is in effect; a rollback
of a rollback puts the original back in effect. An event's effective results are the union of the
results of its settle runs in effect, in start order.
"""

from __future__ import annotations

from collections.abc import Sequence

from inplay.domain.settlement.model import Results, RunRecord, RunStats, RunView
from inplay.model import RunKind, RunState


def rollbacks_by_target(runs: Sequence[RunView]) -> dict[str, list[RunView]]:
    out: dict[str, list[RunView]] = {}
    for run in runs:
        if run.record.kind == RunKind.ROLLBACK:
            out.setdefault(run.record.target_run_id, []).append(run)
    return out


def effective_run_ids(runs: Sequence[RunView]) -> set[str]:
    by_target = rollbacks_by_target(runs)
    memo: dict[str, bool] = {}

    def effective(run_id: str, depth: int = 0) -> bool:
        if run_id in memo:
            return memo[run_id]
        if depth > 10_000:
            raise ValueError("rollback chain too deep")
        value = not any(effective(rb.run_id, depth + 1) for rb in by_target.get(run_id, ()))
        memo[run_id] = value
        return value

    return {run.run_id for run in runs if effective(run.run_id)}


def effective_results(runs: Sequence[RunView]) -> Results:
    eff = effective_run_ids(runs)
    merged = Results()
    for run in runs:
        if run.record.kind == RunKind.SETTLE and run.run_id in eff:
            merged = merged.merged(run.record.results)
    return merged


def root_settle_run(runs: Sequence[RunView], run_id: str) -> RunView | None:
    """The settle run at the bottom of a rollback chain (a rollback of a rollback of ... of it)."""
    by_id = {r.run_id: r for r in runs}
    run = by_id.get(run_id)
    seen = set()
    while run is not None and run.record.kind == RunKind.ROLLBACK:
        if run.run_id in seen:
            return None
        seen.add(run.run_id)
        run = by_id.get(run.record.target_run_id)
    return run


def changed_markets(runs: Sequence[RunView], run: RunView) -> frozenset[str]:
    """The markets whose effective result a run changes (its own, or its root settle run's)."""
    root = root_settle_run(runs, run.run_id)
    return frozenset(root.record.results.markets) if root is not None else frozenset()


def effective_rollback_of(runs: Sequence[RunView], run_id: str) -> RunView | None:
    """The rollback currently in effect against ``run_id`` (None if the run is in effect)."""
    eff = effective_run_ids(runs)
    for rb in rollbacks_by_target(runs).get(run_id, ()):
        if rb.run_id in eff:
            return rb
    return None


def incomplete_effective_runs(runs: Sequence[RunView]) -> list[RunView]:
    """Runs that started but did not complete and are still in effect (to resume before anything else)."""
    eff = effective_run_ids(runs)
    return [r for r in runs if r.state != RunState.COMPLETED and r.run_id in eff]


def latest_effective_settle(runs: Sequence[RunView]) -> RunView | None:
    eff = effective_run_ids(runs)
    latest = None
    for run in runs:
        if run.record.kind == RunKind.SETTLE and run.run_id in eff:
            latest = run
    return latest


PENDING_ROLLBACK_ID = "\0pending-rollback"


def with_rollback_of(runs: Sequence[RunView], target: RunView) -> list[RunView]:
    """The history as it would be once a rollback of ``target`` is in effect (to check a correction's
    preconditions before it changes anything)."""
    record = RunRecord(
        run_id=PENDING_ROLLBACK_ID,
        event_id=target.record.event_id,
        kind=RunKind.ROLLBACK,
        started_at_ms=max((r.record.started_at_ms for r in runs), default=0) + 1,
        target_run_id=target.run_id,
    )
    return [*runs, RunView(record, RunState.RUNNING, RunStats())]


def conflicting_markets(runs: Sequence[RunView], candidates: set[str]) -> dict[str, list[str]]:
    """For each settle run in ``candidates`` that is in effect in ``runs``: the markets it shares with
    another settle run in effect (two results in effect for one market)."""
    eff = effective_run_ids(runs)
    settles = [r for r in runs if r.record.kind == RunKind.SETTLE and r.run_id in eff]
    out: dict[str, list[str]] = {}
    for run in settles:
        if run.run_id not in candidates:
            continue
        mine = set(run.record.results.markets)
        shared = {m for other in settles if other.run_id != run.run_id for m in other.record.results.markets} & mine
        if shared:
            out[run.run_id] = sorted(shared)
    return out
