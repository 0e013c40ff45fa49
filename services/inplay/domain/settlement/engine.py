"""Execution of one settlement run (settle or rollback) over all bets of an event.

Every run re-evaluates each bet of the event under the results *in effect after the run* (this event's
effective results; for accumulators, the other events' too), and moves money by the difference between
what the bet should have returned and what it has been paid so far::

    target = return of the bet (0 while OPEN or LOST);   delta = target - paid_so_far

A settle run thus pays winners once, a rollback reverses exactly what the results it takes away had paid
(including an accumulator paid by a run of another event), and a rollback of a rollback pays it again.

Exactly once: every row a run writes is deterministic (entry ``payout:<run_id>:<bet_id>``, created at the
run's start time; the bet history row keyed by the same time and run), the ledger rows are written before
the Redis credit (deduplicated per entry id), and ``paid_so_far`` never includes the run's own rows, so a
retried page recomputes the identical rows. Checkpoint rows (one per page, with a fingerprint of its
bets) let a resumed run skip finished pages; they are an optimisation, not a correctness requirement.

Bets with legs on other events are evaluated last (phase ``M``) under one global lock, so that two runs of
different events never race on the same accumulator; for them ``paid_so_far`` comes from the bet's own
history, and a row the run already wrote for the bet is reused rather than recomputed.

This module is the run's I/O (pages, intent rows, payouts, credits, checkpoints); what a page writes is
planned by the pure ``evaluation.py``, the leases are used through ``lease.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from inplay import metrics
from inplay.core import LegOutcome
from inplay.domain.settlement.effective import effective_results
from inplay.domain.settlement.evaluation import (
    PlannedPage,
    RunContext,
    bus_messages,
    evaluate,
    plan_page,
    replan_own_rows,
    row_kind_for,
    split_by_own_row,
)
from inplay.domain.settlement.ids import fingerprint
from inplay.domain.settlement.lease import MULTI_LOCK_KEY, Guard, LeaseLost, acquire
from inplay.domain.settlement.model import Checkpoint, PriorState, Results, RunMark, RunRecord, RunStats, RunView
from inplay.domain.settlement.ports import BetWatermark, LockService, SettlementStore
from inplay.domain.settlement.settings import SettlementConfig
from inplay.model import BetEvent, BetState, PlacedBet, RunKind, RunState
from inplay.ports import TOPIC_SETTLEMENTS, EventBus, Ledger, WalletStore

log = logging.getLogger("inplay.settlement")

MarkSettled = Callable[[Sequence[str]], Awaitable[object]]


async def _chunks(pages: AsyncIterator[list[PlacedBet]]) -> AsyncIterator[list[PlacedBet]]:
    async for page in pages:
        if page:
            yield page


@dataclass
class _Pages:
    """What the workers of one execution share (one event loop: no locking needed)."""

    done_ids: set[str]
    priors: dict[str, PriorState]
    multis: list[PlacedBet] = field(default_factory=list)
    seen: int = 0

    def take(self, page: Sequence[PlacedBet]) -> list[PlacedBet]:
        """The page's single-event bets not yet done; accumulators are set aside for the multi phase."""
        self.seen += len(page)
        singles = []
        for bet in page:
            if bet.bet_id in self.done_ids:
                continue
            if len(bet.legs) > 1 and len(bet.event_ids) > 1:
                self.multis.append(bet)
            else:
                singles.append(bet)
        return singles


class RunExecutor:
    """Runs one settlement run to completion (resuming from its checkpoints)."""

    def __init__(
        self,
        store: SettlementStore,
        ledger: Ledger,
        wallet: WalletStore,
        bus: EventBus,
        locks: LockService,
        config: SettlementConfig,
        clock: Callable[[], int],
        mark_settled: MarkSettled | None = None,
        *,
        bet_watermark: BetWatermark | None = None,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._wallet = wallet
        self._bus = bus
        self._locks = locks
        self._config = config
        self._clock = clock
        self._mark_settled = mark_settled
        self._bet_watermark = bet_watermark
        self._closed_runs: set[str] = set()
        self._topic = config.topic_prefix + TOPIC_SETTLEMENTS
        # Seconds spent per step (summed over pages, overlapping when pages commit concurrently).
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    # ----------------------------------------------------------------------------------------------------

    async def execute(self, run: RunView, runs: Sequence[RunView], guard: Guard) -> RunView:
        """Executes (or resumes) ``run``; ``runs`` is the event's history including ``run``."""
        record = run.record
        await guard.verify()
        await self._store.mark_run(
            record.event_id, RunMark(record.run_id, "ATTEMPT", self._clock(), fence=guard.lease.fence)
        )
        try:
            stats = await self._execute(RunContext(run, row_kind_for(run, runs)), runs, guard)
        except LeaseLost:
            log.error("run %s: lock lost, stopped (the next lock holder resumes it)", record.run_id)
            raise
        except Exception as exc:
            log.exception("run %s failed", record.run_id)
            with contextlib.suppress(Exception):
                progress = await self.progress(run)
                await self._store.mark_run(
                    record.event_id,
                    RunMark(record.run_id, "FAILED", self._clock(), stats=progress, error=repr(exc)[:500]),
                )
            raise
        finished = self._clock()
        await guard.verify()
        await self._store.mark_run(
            record.event_id,
            RunMark(record.run_id, "COMPLETED", finished, stats=stats, fence=guard.lease.fence),
        )
        log.info(
            "run %s completed: %d bets, %d changed, %d still open, payouts %d",
            record.run_id,
            stats.bets_processed,
            stats.bets_changed,
            stats.bets_still_open,
            stats.payouts_minor,
        )
        return replace(run, state=RunState.COMPLETED, stats=stats, finished_at_ms=finished, error="")

    async def progress(self, run: RunView) -> RunStats:
        """Progress of a run from its checkpoint rows (each bet is covered by at most one of them)."""
        total = RunStats()
        for cp in await self._store.checkpoints(run.run_id, with_bet_ids=False):
            total = total.plus(cp.stats)
        return total

    async def _execute(self, ctx: RunContext, runs: Sequence[RunView], guard: Guard) -> RunStats:
        record = ctx.run.record
        results = effective_results(runs)
        done_ids: set[str] = set()
        total = RunStats()
        counted = False
        for cp in await self._store.checkpoints(record.run_id, with_bet_ids=True):
            done_ids.update(cp.bet_ids)
            total = total.plus(cp.stats)
            counted = counted or cp.phase == "C"
        if done_ids:
            log.info("run %s: resuming, %d bets already done", record.run_id, len(done_ids))
        await self.close_markets(record, guard)
        # The progress total is counted beside the run, not before it (a count reads the whole event).
        count_task = None if counted else asyncio.get_running_loop().create_task(self._count(record))
        try:
            priors = await self._single_priors(record.run_id, runs)
            pages = _Pages(done_ids, priors)
            for stats in await self._run_workers(ctx, results, pages, guard):
                total = total.plus(stats)
            if count_task is not None:
                total = total.plus(await count_task)
        finally:
            if count_task is not None and not count_task.done():
                count_task.cancel()
                with contextlib.suppress(BaseException):
                    await count_task
        if pages.multis:
            total = total.plus(await self._multi_phase(ctx, pages.multis, results, guard))
        if total.bets_total < pages.seen:
            total = replace(total, bets_total=pages.seen)
        return total

    async def _count(self, record: RunRecord) -> RunStats:
        """Counts the event's bets once per run (the "C" checkpoint: progress = processed / total)."""
        with self._timed("count"):
            count = await self._store.count_event_bets(record.event_id)
        if count is None:
            return RunStats()
        stats = RunStats(bets_total=count)
        await self._store.append_checkpoints([Checkpoint(record.run_id, "C", "count", stats, self._clock())])
        return stats

    def _sources(self, event_id: str) -> list[AsyncIterator[list[PlacedBet]]]:
        """One page source per worker: contiguous ranges of the by-event buckets when the ledger can read
        a range (``event_bets_in``), else the whole event for one worker."""
        size = self._config.page_size
        ranged = getattr(self._ledger, "event_bets_in", None)
        buckets = int(getattr(self._ledger, "EVENT_BUCKETS", 0))
        workers = min(max(1, self._config.workers), buckets)
        if ranged is None or workers <= 1:
            return [self._ledger.event_bets(event_id, size)]
        bounds = [i * buckets // workers for i in range(workers + 1)]
        # lean: only the fields settlement reads (fewer cells to serialize and decode per bet).
        return [ranged(event_id, range(bounds[i], bounds[i + 1]), size, lean=True) for i in range(workers)]

    async def _run_workers(self, ctx: RunContext, results: Results, pages: _Pages, guard: Guard) -> list[RunStats]:
        """The event's own bets, settled by one worker per bucket range, all under the run's event lease:
        every page's writes are preceded by ``guard.verify()`` (the lease's fence still ours), and the
        first failure (``LeaseLost`` included) cancels every other worker before it propagates, so no
        worker writes after the run stopped. Pages may complete in any order: checkpoints name their bets."""
        finished: list[RunStats] = []
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._worker(ctx, source, results, pages, guard, finished))
            for source in self._sources(ctx.run.record.event_id)
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                error = task.exception() if task in done else None
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return finished

    async def _worker(
        self,
        ctx: RunContext,
        source: AsyncIterator[list[PlacedBet]],
        results: Results,
        pages: _Pages,
        guard: Guard,
        finished: list[RunStats],
    ) -> None:
        """Reads its pages, evaluates each (one Rust call per page) and commits it; up to
        ``commit_concurrency`` pages of this worker write at once while its next page is read."""
        record = ctx.run.record
        none = PriorState()
        in_flight: set[asyncio.Task[RunStats]] = set()

        async def settle_page() -> None:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                in_flight.discard(task)
                finished.append(task.result())

        try:
            async for page in _chunks(source):
                singles = pages.take(page)
                if not singles:
                    continue
                with self._timed("evaluate"):
                    evals = await asyncio.to_thread(evaluate, singles, {record.event_id: results})
                    priors = [pages.priors.get(b.bet_id, none) for b in singles]
                    planned = plan_page(ctx, singles, priors, evals, record.started_at_ms)
                while len(in_flight) >= max(1, self._config.commit_concurrency):
                    await settle_page()
                in_flight.add(asyncio.get_running_loop().create_task(self._commit(ctx, "S", singles, planned, guard)))
            while in_flight:
                await settle_page()
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def close_markets(self, record: RunRecord, guard: Guard) -> None:
        """Closes the run's markets for betting (SETTLED in the odds cache) before any bet is read, then
        waits until every bet accepted before the close is readable (:meth:`wait_for_bet_watermark`).
        Done by the request (before SettleEvent returns) and again by any other process that executes
        the run (a resume): closing a SETTLED market again changes nothing."""
        if record.kind != RunKind.SETTLE or not record.results.markets or self._mark_settled is None:
            return
        if record.run_id in self._closed_runs:  # closed by this process already (the request did it)
            return
        await guard.verify()
        await self._mark_settled(sorted(record.results.markets))
        await self.wait_for_bet_watermark(record.event_id, self._clock())
        if len(self._closed_runs) >= 10_000:
            self._closed_runs.clear()
        self._closed_runs.add(record.run_id)

    async def wait_for_bet_watermark(self, event_id: str, closed_at_ms: int) -> None:
        """THE HOOK for the bet journal's projection watermark: returns once the bets accepted on the
        event before ``closed_at_ms`` can all be read by ``Ledger.event_bets``. Without a watermark port
        wired it returns at once (today's bet path writes the ledger before it acknowledges a bet, but a
        bet that passed the market check before the close may still be committing: the watermark closes
        that window)."""
        if self._bet_watermark is not None:
            await self._bet_watermark.wait_visible(event_id, closed_at_ms)

    async def _single_priors(self, run_id: str, runs: Sequence[RunView]) -> dict[str, PriorState]:
        """Paid-so-far and last state of each single-event bet, from the rows of the event's other runs
        (runs of one event are serialized and complete before the next starts)."""
        paid: dict[str, int] = {}
        last: dict[str, tuple[BetState, tuple[LegOutcome, ...]]] = {}
        for other in runs:
            if other.run_id == run_id:
                continue
            async for rows in self._store.run_bet_rows(other.run_id, self._config.page_size):
                for row in rows:
                    if len(row.event_ids) > 1:
                        continue
                    paid[row.bet_id] = paid.get(row.bet_id, 0) + row.delta_minor
                    last[row.bet_id] = (row.status, row.leg_outcomes)
        return {bet_id: PriorState(paid[bet_id], status, legs) for bet_id, (status, legs) in last.items()}

    # ----------------------------------------------------------------------------------------------------

    async def _commit(
        self,
        ctx: RunContext,
        phase: str,
        bets: Sequence[PlacedBet],
        planned: PlannedPage,
        guard: Guard,
        multi_guard: Guard | None = None,
    ) -> RunStats:
        """Writes one page: ledger-side rows first, then the Redis credit, then the events, then the
        checkpoint. Every step is idempotent, so a crash anywhere is repaired by redoing the page."""
        await guard.verify()
        if multi_guard is not None:
            # Right before the writes (after the page's history reads): narrows the window in which a
            # lost multi-event lease lets another run pay the same accumulator (review M7).
            await multi_guard.verify()
        with self._timed("write_cassandra"):
            await self._write_rows(planned)
        negatives: tuple[str, ...] = ()
        if planned.credits:
            await guard.verify()
            with self._timed("credit_redis"):
                await self._wallet.credit_batch(planned.credits)
            debited = sorted({c.account_id for c in planned.credits if c.amount_minor < 0})
            if debited:
                balances = await self._wallet.balances(debited)
                negatives = tuple(a for a, b in zip(debited, balances, strict=True) if b < 0)
                if negatives:
                    log.warning("run %s: %d accounts now negative", ctx.run_id, len(negatives))
        if planned.liability:
            # After the history rows (a redone page re-sends the same states: each applies once).
            await guard.verify()
            with self._timed("liability_redis"):
                await self._wallet.settle_liability(planned.liability)
        if planned.messages:
            with self._timed("publish_kafka"):
                await self._bus.publish(bus_messages(ctx, self._topic, planned.messages))
                await self._bus.flush()
        stats = replace(planned.stats, negative_balance_accounts=negatives)
        ids = tuple(b.bet_id for b in bets)
        metrics.SETTLEMENT_BETS.labels(ctx.kind.name).inc(stats.bets_processed)
        with self._timed("checkpoint"):
            await self._store.append_checkpoints(
                [Checkpoint(ctx.run_id, phase, fingerprint(ids), stats, self._clock(), ids)]
            )
        return stats

    async def _write_rows(self, planned: PlannedPage) -> None:
        """History rows first, acknowledged, then the per-run rows and the money rows (concurrently).

        The history row records the intent: a resumed run that finds its own row for a bet reuses it
        (never recomputes), and a bet without its own row has no entry either, because no entry is
        sent before its history row returned. Every row is keyed by values fixed by the run, so redoing
        any of these writes rewrites identical rows."""
        if planned.events:
            await self._ledger.append_bet_events(planned.events)
        writes: list[Awaitable[object]] = []
        if planned.rows:
            writes.append(self._store.append_bet_rows(planned.rows))
        if planned.entries:
            writes.append(self._ledger.append_entries(planned.entries))
        if writes:
            await asyncio.gather(*writes)

    # ----------------------------------------------------------------------------------------------------

    async def _multi_phase(
        self, ctx: RunContext, bets: list[PlacedBet], own_results: Results, guard: Guard
    ) -> RunStats:
        event_id = ctx.run.record.event_id
        bets.sort(key=lambda b: b.bet_id)
        size = self._config.multi_page_size
        total = RunStats()
        lease = await acquire(self._locks, MULTI_LOCK_KEY, self._config.lock_ttl_ms, self._config.multi_lock_wait_ms)
        if lease is None:
            raise TimeoutError("could not take the multi-event settlement lock")
        try:
            async with Guard(lease, self._config.lock_ttl_ms) as multi_guard:
                # Read under the lock: runs of other events in their own multi phase cannot interleave.
                results_by_event = {event_id: own_results}
                for other in sorted({e for b in bets for e in b.event_ids if e != event_id}):
                    results_by_event[other] = effective_results(await self._store.event_runs(other))
                for start in range(0, len(bets), size):
                    await multi_guard.verify()
                    page = bets[start : start + size]
                    total = total.plus(await self._multi_page(ctx, page, results_by_event, guard, multi_guard))
        finally:
            await lease.release()
        return total

    async def _multi_page(
        self,
        ctx: RunContext,
        bets: list[PlacedBet],
        results_by_event: dict[str, Results],
        guard: Guard,
        multi_guard: Guard,
    ) -> RunStats:
        """One page of accumulators: their histories give paid-so-far; a bet this run already wrote a
        history row for is re-sent from that row, the others are evaluated afresh."""
        histories = await self._histories(bets)
        fresh, fresh_priors, own_rows = split_by_own_row(ctx.run_id, bets, histories)
        evals = await asyncio.to_thread(evaluate, fresh, results_by_event)
        # Timed by the run (its start), never by the clock at write time: a re-planned bet (one without
        # its own history row, hence without an entry) gets the same keys as the first attempt would.
        planned = plan_page(ctx, fresh, fresh_priors, evals, ctx.run.record.started_at_ms)
        written = await self._store.bet_rows(ctx.run_id, [bet.bet_id for bet, _, _ in own_rows]) if own_rows else {}
        replan_own_rows(planned, ctx, own_rows, written)
        return await self._commit(ctx, "M", bets, planned, guard, multi_guard)

    async def _histories(self, bets: Sequence[PlacedBet]) -> list[list[BetEvent]]:
        sem = asyncio.Semaphore(self._config.history_concurrency)

        async def history(bet_id: str) -> list[BetEvent]:
            async with sem:
                return await self._ledger.bet_history(bet_id)

        return await asyncio.gather(*(history(b.bet_id) for b in bets))
