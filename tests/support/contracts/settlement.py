"""The SettlementStore contract (inplay.domain.settlement.ports): run headers and marks (intents), page
checkpoints, per-run bet rows (the once-markers a resumed run skips by) and request records, the same
over ``MemorySettlementStore`` and ``CassandraSettlementStore``."""

from __future__ import annotations

from inplay.core import LegOutcome
from inplay.domain.settlement.model import (
    BetSettlementRow,
    Checkpoint,
    RunMark,
    RunRecord,
    RunStats,
    make_results,
)
from inplay.domain.settlement.ports import SettlementStore
from inplay.model import BetState, RunKind, RunState
from tests.support.contracts import uid

T0 = 1_772_323_200_000


def run(event: str, started_at_ms: int, run_id: str | None = None, **kw: object) -> RunRecord:
    results = make_results([(f"{event}:mr", "home", LegOutcome.WIN, (1, 1))], ())
    return RunRecord(run_id or uid("run"), event, RunKind.SETTLE, started_at_ms, results=results, **kw)  # type: ignore[arg-type]


def bet_row(run_id: str, bet_id: str, delta: int = 2_500) -> BetSettlementRow:
    return BetSettlementRow(
        run_id, bet_id, uid("acc"), BetState.WON, 2_500, delta, "SETTLED", (LegOutcome.WIN,), (uid("ev"),)
    )


class SettlementContract:
    async def test_run_headers_read_back_oldest_first(self, settlement_store: SettlementStore) -> None:
        ev = uid("ev")
        late, early = run(ev, T0 + 10, "run-b"), run(ev, T0 + 5, "run-z", request_id="req-1", reason="why")
        rollback = RunRecord("run-a", ev, RunKind.ROLLBACK, T0 + 10, target_run_id="run-z")
        for record in (late, early, rollback, late):  # a retried header rewrites the same row
            await settlement_store.create_run(record)
        views = await settlement_store.event_runs(ev)
        assert [v.record for v in views] == [early, rollback, late]  # start time, then run id
        assert all(v.state == RunState.RUNNING for v in views)  # no marks yet: started, maybe crashed
        assert await settlement_store.event_runs(uid("ev")) == []

    async def test_marks_fold_into_the_run_state(self, settlement_store: SettlementStore) -> None:
        ev = uid("ev")
        r = run(ev, T0)
        await settlement_store.create_run(r)
        await settlement_store.mark_run(ev, RunMark(r.run_id, "ATTEMPT", T0 + 1, fence=1))
        await settlement_store.mark_run(ev, RunMark(r.run_id, "FAILED", T0 + 2, RunStats(bets_total=9), "boom"))
        [failed] = await settlement_store.event_runs(ev)
        assert (failed.state, failed.error, failed.finished_at_ms, failed.stats.bets_total) == (
            RunState.FAILED,
            "boom",
            T0 + 2,
            9,
        )
        await settlement_store.mark_run(ev, RunMark(r.run_id, "ATTEMPT", T0 + 3, fence=2))  # a retry resumes it
        assert [v.state for v in await settlement_store.event_runs(ev)] == [RunState.RUNNING]
        stats = RunStats(9, 9, 0, 22_500, 9, ("acc-negative",))
        done = RunMark(r.run_id, "COMPLETED", T0 + 4, stats)
        await settlement_store.mark_run(ev, done)
        await settlement_store.mark_run(ev, done)  # repeated: the same row
        [completed] = await settlement_store.event_runs(ev)
        assert (completed.state, completed.stats, completed.finished_at_ms) == (RunState.COMPLETED, stats, T0 + 4)

    async def test_checkpoints_with_and_without_their_bet_ids(self, settlement_store: SettlementStore) -> None:
        run_id = uid("run")
        page1 = Checkpoint(run_id, "S", "p0001", RunStats(10, 2), T0, ("b1", "b2"))
        page2 = Checkpoint(run_id, "S", "p0002", RunStats(10, 4, payouts_minor=500), T0 + 1, ("b3", "b4"))
        count = Checkpoint(run_id, "C", "", RunStats(bets_total=10), T0 + 2)
        await settlement_store.append_checkpoints([page2, count])
        await settlement_store.append_checkpoints([page1, page2])  # a page repeated after a crash: once
        assert await settlement_store.checkpoints(run_id, with_bet_ids=True) == [count, page1, page2]
        bare = await settlement_store.checkpoints(run_id)
        assert [(c.phase, c.page_key, c.stats, c.bet_ids) for c in bare] == [
            ("C", "", count.stats, ()),
            ("S", "p0001", page1.stats, ()),
            ("S", "p0002", page2.stats, ()),
        ]
        assert await settlement_store.checkpoints(uid("run")) == []

    async def test_bet_rows_are_written_once_per_run_and_bet(self, settlement_store: SettlementStore) -> None:
        run_id, other_run = uid("run"), uid("run")
        rows = [bet_row(run_id, f"{uid('bet')}-{i}") for i in range(3)]
        await settlement_store.append_bet_rows(rows)
        await settlement_store.append_bet_rows(rows[:2])  # a retried page: the same rows
        ids = [r.bet_id for r in rows]
        assert await settlement_store.bet_rows(run_id, [*ids, uid("bet")]) == {r.bet_id: r for r in rows}
        assert await settlement_store.bet_rows(other_run, ids) == {}  # per run
        assert await settlement_store.bet_rows(run_id, []) == {}

    async def test_run_bet_rows_returns_every_row_once_in_pages(self, settlement_store: SettlementStore) -> None:
        run_id = uid("run")
        rows = [bet_row(run_id, f"{uid('bet')}-{i:03d}", delta=i) for i in range(250)]
        await settlement_store.append_bet_rows(rows)
        pages = [page async for page in settlement_store.run_bet_rows(run_id, page_size=40)]
        assert all(0 < len(p) <= 40 for p in pages)
        got = [r for p in pages for r in p]
        assert sorted(got, key=lambda r: r.bet_id) == sorted(rows, key=lambda r: r.bet_id)
        assert [p async for p in settlement_store.run_bet_rows(uid("run"))] == []

    async def test_requests_record_what_was_decided(self, settlement_store: SettlementStore) -> None:
        ev = uid("ev")
        assert await settlement_store.get_request(ev, "req-1") is None
        await settlement_store.put_request(ev, "req-1", '{"rollback":"run-1"}')
        await settlement_store.put_request(ev, "req-2", '{"rollback":"run-2"}')
        assert await settlement_store.get_request(ev, "req-1") == '{"rollback":"run-1"}'
        assert await settlement_store.get_request(ev, "req-2") == '{"rollback":"run-2"}'
        assert await settlement_store.get_request(uid("ev"), "req-1") is None
