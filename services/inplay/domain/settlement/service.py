"""The settlement use cases: SettleEvent, RollbackSettlement, ResettleEvent, GetSettlementStatus.

Sharding: runs of different events proceed in parallel; one event's runs are serialized by a per-event
lock (Redis ``SET NX PX`` with a fencing counter and a heartbeat). Under the lock a request first resumes
any run of the event that started and did not complete, then creates its own run (header row first,
deterministic run id) and executes it. Without the lock a request only reports: the run it names (if it
exists) or ABORTED (another run of the event is in progress; retry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from inplay.domain.settlement.effective import (
    conflicting_markets,
    effective_results,
    effective_rollback_of,
    effective_run_ids,
    incomplete_effective_runs,
    latest_effective_settle,
    rollbacks_by_target,
    with_rollback_of,
)
from inplay.domain.settlement.engine import MarkSettled, RunExecutor
from inplay.domain.settlement.ids import rollback_run_id, settle_run_id
from inplay.domain.settlement.lease import Guard, acquire, event_lock_key
from inplay.domain.settlement.model import Results, RunRecord, RunStats, RunView
from inplay.domain.settlement.ports import BetWatermark, Lease, LockService, MarketCatalog, SettlementStore
from inplay.domain.settlement.settings import SettlementConfig
from inplay.domain.settlement.validation import FieldPaths, result_violations
from inplay.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from inplay.model import RunKind, RunState
from inplay.ports import EventBus, Ledger, WalletStore

log = logging.getLogger("inplay.settlement")

MAX_ID = 128


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Resettle:
    """One ResettleEvent request."""

    event_id: str
    request_id: str
    settle_id: str
    results: Results
    reason: str


@dataclass(frozen=True, slots=True)
class StatusReport:
    run: RunView
    history: list[RunView]


def _check_id(name: str, value: str, violations: list[FieldViolation]) -> None:
    if not value:
        violations.append(FieldViolation(name, "required"))
    elif len(value) > MAX_ID or any(c in value for c in " \t\n"):
        violations.append(FieldViolation(name, f"at most {MAX_ID} characters, no whitespace"))


class SettlementService:
    def __init__(
        self,
        store: SettlementStore,
        ledger: Ledger,
        wallet: WalletStore,
        bus: EventBus,
        locks: LockService,
        *,
        mark_settled: MarkSettled | None = None,
        config: SettlementConfig | None = None,
        clock: Callable[[], int] = _now_ms,
        markets: MarketCatalog | None = None,
        bet_watermark: BetWatermark | None = None,
    ) -> None:
        self.config = config or SettlementConfig()
        self._store = store
        self._locks = locks
        self._clock = clock
        self._markets = markets
        self.executor = RunExecutor(
            store, ledger, wallet, bus, locks, self.config, clock, mark_settled, bet_watermark=bet_watermark
        )
        self._background: set[asyncio.Task[object]] = set()

    # --- requests --------------------------------------------------------------------------------------

    async def settle_event(
        self,
        event_id: str,
        results: Results,
        request_id: str,
        *,
        reason: str = "",
        wait: bool = True,
        field_paths: FieldPaths | None = None,
    ) -> RunView:
        await self._validate("settlement", event_id, request_id, results, field_paths)
        run_id = settle_run_id(event_id, request_id)

        async def body(lease: Lease, guard: Guard) -> RunView:
            runs = await self._store.event_runs(event_id)
            existing = _find(runs, run_id)
            if existing is not None:
                if existing.record.kind != RunKind.SETTLE:  # a run id of the old, ambiguous scheme
                    raise FailedPrecondition(f"run id {run_id} is taken by a rollback", reason="RUN_ID_TAKEN")
                if existing.record.results != results:
                    raise FailedPrecondition(
                        f"request_id {request_id} was used with other results",
                        reason="IDEMPOTENCY_KEY_REUSED",
                    )
                return existing
            runs = await self._resume_incomplete(runs, guard)
            self._check_no_overlap(runs, results)
            record = RunRecord(
                run_id=run_id,
                event_id=event_id,
                kind=RunKind.SETTLE,
                started_at_ms=self._clock(),
                request_id=request_id,
                results=results,
                reason=reason,
            )
            await guard.verify()
            await self._store.create_run(record)
            # Closed before the request returns (also with wait=false), not only when execution starts.
            await self.executor.close_markets(record, guard)
            return RunView(record, RunState.RUNNING, RunStats())

        return await self._run_request(event_id, run_id, body, wait)

    async def rollback(self, event_id: str, run_id: str, *, reason: str = "", wait: bool = True) -> RunView:
        violations: list[FieldViolation] = []
        _check_id("event_id", event_id, violations)
        _check_id("run_id", run_id, violations)
        if violations:
            raise InvalidArgument("invalid rollback request", violations=violations)
        holder: dict[str, str] = {}

        async def body(lease: Lease, guard: Guard) -> RunView:
            runs = await self._store.event_runs(event_id)
            return await self._create_rollback(runs, event_id, run_id, reason, guard, holder)

        return await self._run_request(event_id, None, body, wait)

    async def resettle(
        self,
        event_id: str,
        results: Results,
        request_id: str,
        *,
        reason: str = "",
        wait: bool = True,
        field_paths: FieldPaths | None = None,
    ) -> tuple[RunView, RunView]:
        """Rolls back the event's latest settle run in effect, then settles with ``results``. The request
        first records which run it rolls back, so a retry after a crash continues the same correction.
        Every precondition (valid results, no market left with two results) is checked before the
        rollback changes any money."""
        await self._validate("resettle", event_id, request_id, results, field_paths)
        request = _Resettle(event_id, request_id, settle_run_id(event_id, request_id), results, reason)
        lease = await acquire(self._locks, event_lock_key(event_id), self.config.lock_ttl_ms, self.config.lock_wait_ms)
        if lease is None:
            return await self._resettle_in_progress(request)
        guard = Guard(lease, self.config.lock_ttl_ms)
        await guard.__aenter__()
        try:
            rollback = await self._begin_resettle(request, guard)
        except BaseException:
            await guard.__aexit__(None, None, None)
            await lease.release()
            raise

        async def finish() -> tuple[RunView, RunView]:
            try:
                return await self._finish_resettle(request, rollback, guard)
            finally:
                await guard.__aexit__(None, None, None)
                await lease.release()

        if wait:
            return await finish()
        self._spawn(finish())
        pending_settle = RunView(
            RunRecord(request.settle_id, event_id, RunKind.SETTLE, 0, request_id, "", results, reason),
            RunState.RUNNING,
            RunStats(),
        )
        return rollback, pending_settle

    async def _resettle_in_progress(self, request: _Resettle) -> tuple[RunView, RunView]:
        """Without the lock: the progress of this request's runs if it already started, else EVENT_BUSY."""
        runs = await self._store.event_runs(request.event_id)
        settle = _find(runs, request.settle_id)
        payload = await self._store.get_request(request.event_id, request.request_id)
        if settle is not None and payload is not None:
            rb = _find(runs, json.loads(payload).get("rollback_run_id", ""))
            if rb is not None:
                return await self._live(rb), await self._live(settle)
        raise Aborted("another settlement run of this event is in progress", reason="EVENT_BUSY")

    async def _begin_resettle(self, request: _Resettle, guard: Guard) -> RunView:
        """Under the lock: the run to roll back (recorded before acting), then its rollback run."""
        event_id, request_id = request.event_id, request.request_id
        runs = await self._store.event_runs(event_id)
        payload = await self._store.get_request(event_id, request_id)
        if payload is None:
            runs, target_id = await self._record_resettle_target(request, runs, guard)
        else:
            target_id = json.loads(payload)["target_run_id"]
            recorded_target = _find(runs, target_id)
            if _find(runs, request.settle_id) is None and recorded_target is not None:
                self._check_no_overlap(with_rollback_of(runs, recorded_target), request.results)
        rollback = await self._create_rollback(runs, event_id, target_id, request.reason, guard, {})
        stored = json.loads(payload) if payload else {}
        if stored.get("rollback_run_id") != rollback.run_id:
            decision = {"kind": "RESETTLE", "target_run_id": target_id, "rollback_run_id": rollback.run_id}
            await self._store.put_request(event_id, request_id, json.dumps(decision, separators=(",", ":")))
        return rollback

    async def _record_resettle_target(
        self, request: _Resettle, runs: list[RunView], guard: Guard
    ) -> tuple[list[RunView], str]:
        """A new correction: the latest settle run in effect is the target, if the new results fit once it
        is rolled back; recorded before any money moves."""
        if _find(runs, request.settle_id) is not None:
            raise FailedPrecondition(
                f"request_id {request.request_id} was used by a SettleEvent", reason="IDEMPOTENCY_KEY_REUSED"
            )
        runs = await self._resume_incomplete(runs, guard)
        target = latest_effective_settle(runs)
        if target is None:
            raise FailedPrecondition(f"event {request.event_id} has no settlement in effect", reason="NOT_SETTLED")
        self._check_no_overlap(with_rollback_of(runs, target), request.results)
        await guard.verify()
        decision = json.dumps({"kind": "RESETTLE", "target_run_id": target.run_id}, separators=(",", ":"))
        await self._store.put_request(request.event_id, request.request_id, decision)
        return runs, target.run_id

    async def _finish_resettle(self, request: _Resettle, rollback: RunView, guard: Guard) -> tuple[RunView, RunView]:
        """Executes the rollback, then creates (once) and executes the new settle run."""
        rb = rollback
        if rb.state != RunState.COMPLETED:
            rb = await self._execute(rb, guard)
        runs = await self._store.event_runs(request.event_id)
        settle = _find(runs, request.settle_id)
        if settle is None:
            self._check_no_overlap(runs, request.results)
            record = RunRecord(
                run_id=request.settle_id,
                event_id=request.event_id,
                kind=RunKind.SETTLE,
                started_at_ms=self._clock(),
                request_id=request.request_id,
                results=request.results,
                reason=request.reason,
            )
            await guard.verify()
            await self._store.create_run(record)
            settle = RunView(record, RunState.RUNNING, RunStats())
        elif settle.record.results != request.results:
            raise FailedPrecondition(
                f"request_id {request.request_id} was used with other results", reason="IDEMPOTENCY_KEY_REUSED"
            )
        if settle.state != RunState.COMPLETED:
            settle = await self._execute(settle, guard)
        return rb, settle

    async def status(self, event_id: str, run_id: str = "") -> StatusReport:
        if not event_id:
            raise InvalidArgument("event_id is required", violations=[FieldViolation("event_id", "required")])
        runs = await self._store.event_runs(event_id)
        if not runs:
            raise NotFound(f"event {event_id} has no settlement runs")
        history = [await self._live(r) for r in runs]
        if run_id:
            chosen = _find(history, run_id)
            if chosen is None:
                raise NotFound(f"run {run_id} not found for event {event_id}")
        else:
            chosen = history[-1]
        return StatusReport(chosen, history)

    async def effective_results(self, event_id: str) -> Results:
        return effective_results(await self._store.event_runs(event_id))

    async def resume_event(self, event_id: str) -> list[RunView]:
        """Resumes every incomplete run of an event (after a crash); returns them completed."""
        lease = await acquire(self._locks, event_lock_key(event_id), self.config.lock_ttl_ms, self.config.lock_wait_ms)
        if lease is None:
            raise Aborted("another settlement run of this event is in progress", reason="EVENT_BUSY")
        try:
            async with Guard(lease, self.config.lock_ttl_ms) as guard:
                runs = await self._store.event_runs(event_id)
                before = {r.run_id for r in incomplete_effective_runs(runs)}
                runs = await self._resume_incomplete(runs, guard)
                return [r for r in runs if r.run_id in before]
        finally:
            await lease.release()

    async def drain(self, timeout_s: float | None = None) -> None:
        """Waits for background runs (``wait=False``) to finish; after ``timeout_s`` cancels them (they
        stay RUNNING in the history and are resumed by a retry or by ``worker resume``)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._background:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(list(self._background), timeout=remaining)
            if pending and deadline is not None and loop.time() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return

    # --- internals -------------------------------------------------------------------------------------

    async def _run_request(
        self,
        event_id: str,
        run_id: str | None,
        body: Callable[[Lease, Guard], object],
        wait: bool,
    ) -> RunView:
        lease = await acquire(self._locks, event_lock_key(event_id), self.config.lock_ttl_ms, self.config.lock_wait_ms)
        if lease is None:
            if run_id is not None:
                existing = _find(await self._store.event_runs(event_id), run_id)
                if existing is not None:
                    return await self._live(existing)
            raise Aborted("another settlement run of this event is in progress", reason="EVENT_BUSY")
        guard = Guard(lease, self.config.lock_ttl_ms)
        await guard.__aenter__()
        try:
            coro = body(lease, guard)
            assert asyncio.iscoroutine(coro)
            run: RunView = await coro
        except BaseException:
            await guard.__aexit__(None, None, None)
            await lease.release()
            raise

        async def finish() -> RunView:
            try:
                if run.state == RunState.COMPLETED:
                    return run
                if run.run_id not in effective_run_ids(await self._store.event_runs(event_id)):
                    return run  # rolled back before it completed: never resumed
                return await self._execute(run, guard)
            finally:
                await guard.__aexit__(None, None, None)
                await lease.release()

        if wait or run.state == RunState.COMPLETED:
            return await finish()
        self._spawn(finish())
        return replace(run, state=RunState.RUNNING)

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background settlement failed: %r", t.exception())

        task.add_done_callback(done)

    async def _execute(self, run: RunView, guard: Guard) -> RunView:
        runs = await self._store.event_runs(run.record.event_id)
        current = _find(runs, run.run_id)
        if current is not None and current.state == RunState.COMPLETED:
            return current
        return await self.executor.execute(run, runs, guard)

    async def _resume_incomplete(self, runs: list[RunView], guard: Guard) -> list[RunView]:
        """Completes every started, unfinished run of the event (oldest first) before anything else."""
        pending = incomplete_effective_runs(runs)
        for run in pending:
            log.info("resuming incomplete run %s", run.run_id)
            await self._execute(run, guard)
        if pending:
            runs = await self._store.event_runs(runs[0].record.event_id)
        return runs

    async def _create_rollback(
        self,
        runs: list[RunView],
        event_id: str,
        target_id: str,
        reason: str,
        guard: Guard,
        holder: dict[str, str],
    ) -> RunView:
        target = _find(runs, target_id)
        if target is None:
            raise NotFound(f"run {target_id} not found for event {event_id}")
        existing = effective_rollback_of(runs, target_id)
        if existing is not None:
            return existing  # already rolled back: the same rollback (resumed if unfinished)
        runs = await self._resume_incomplete(runs, guard)
        target = _find(runs, target_id)
        assert target is not None
        self._check_reinstates_nothing_superseded(runs, target)
        n = len(rollbacks_by_target(runs).get(target_id, [])) + 1
        while _find(runs, rollback_run_id(target_id, n)) is not None:  # never reuse (overwrite) a header
            n += 1
        record = RunRecord(
            run_id=rollback_run_id(target_id, n),
            event_id=event_id,
            kind=RunKind.ROLLBACK,
            started_at_ms=self._clock(),
            target_run_id=target_id,
            reason=reason,
        )
        await guard.verify()
        await self._store.create_run(record)
        holder["run_id"] = record.run_id
        return RunView(record, RunState.RUNNING, RunStats())

    async def _validate(
        self, what: str, event_id: str, request_id: str, results: Results, paths: FieldPaths | None
    ) -> None:
        """Request fields, then the results against the markets (when a market catalog is wired)."""
        violations: list[FieldViolation] = []
        _check_id("event_id", event_id, violations)
        _check_id("request_id", request_id, violations)
        if not results.markets:
            violations.append(FieldViolation("outcomes", "at least one outcome or void market"))
        if not violations and self._markets is not None:
            ids = sorted(results.markets)
            found = await self._markets.get_markets(ids)
            violations = result_violations(event_id, results, dict(zip(ids, found, strict=True)), paths)
        if violations:
            raise InvalidArgument(f"invalid {what} request", violations=violations)

    @staticmethod
    def _check_reinstates_nothing_superseded(runs: list[RunView], target: RunView) -> None:
        """A rollback of a rollback puts a settle run back in effect: refused when one of its markets
        has been settled again since (two results would be in effect for one market)."""
        before = effective_run_ids(runs)
        after = with_rollback_of(runs, target)
        reinstated = {r.run_id for r in after if r.record.kind == RunKind.SETTLE} - before
        conflicts = conflicting_markets(after, reinstated & effective_run_ids(after))
        if conflicts:
            run_id, markets = next(iter(sorted(conflicts.items())))
            raise FailedPrecondition(
                f"rolling back {target.run_id} would reinstate {run_id}, whose markets "
                f"{', '.join(markets[:10])} were settled again since (roll back or resettle that run instead)",
                reason="MARKET_RESETTLED",
                metadata={"run_id": run_id, "market_ids": ",".join(markets[:50])},
            )

    @staticmethod
    def _check_no_overlap(runs: list[RunView], results: Results) -> None:
        current = effective_results(runs)
        overlap = sorted(set(current.markets) & set(results.markets))
        if overlap:
            raise FailedPrecondition(
                f"markets already settled: {', '.join(overlap[:10])} (use ResettleEvent)",
                reason="MARKET_ALREADY_SETTLED",
                metadata={"market_ids": ",".join(overlap[:50])},
            )

    async def _live(self, run: RunView) -> RunView:
        """A run with its progress filled in from checkpoints when it has not completed."""
        if run.state == RunState.COMPLETED:
            return run
        return replace(run, stats=await self.executor.progress(run))


def _find(runs: list[RunView], run_id: str) -> RunView | None:
    for run in runs:
        if run.run_id == run_id:
            return run
    return None
