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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from inplay import core, metrics
from inplay.core import LegOutcome, SettleLeg
from inplay.domain.settlement.effective import effective_results
from inplay.domain.settlement.lease import MULTI_LOCK_KEY, Guard, LeaseLost, acquire
from inplay.domain.settlement.model import (
    KIND_REINSTATED,
    KIND_ROLLED_BACK,
    KIND_SETTLED,
    SETTLEMENT_KINDS,
    BetSettlementRow,
    Checkpoint,
    PriorState,
    Results,
    RunMark,
    RunRecord,
    RunStats,
    RunView,
    SelectionResult,
    outcome_name,
)
from inplay.domain.settlement.ports import BetWatermark, LockService, SettlementStore
from inplay.domain.settlement.settings import SettlementConfig
from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, Leg, PlacedBet, RunKind, RunState
from inplay.ports import TOPIC_SETTLEMENTS, BusMessage, Credit, EventBus, Ledger, WalletStore

log = logging.getLogger("inplay.settlement")

# Bets per BetsSettled message (~250 bytes each: far below the producer's 1 MB message limit).
MESSAGE_BETS = 500
# One prebuilt compact encoder (json.dumps with keyword arguments builds one per call).
_JSON = json.JSONEncoder(separators=(",", ":"))

MarkSettled = Callable[[Sequence[str]], Awaitable[object]]


def id_part(text: str) -> str:
    """One component of a run id, escaped so that the id parses one way only: ``.`` separates the parts
    of a run id, ``:`` those of an entry id (``payout:<run>:<bet>``), ``%`` is the escape. Ids made of
    other characters are unchanged (so are the run ids written before the escaping)."""
    return text.replace("%", "%25").replace(".", "%2E").replace(":", "%3A")


def settle_run_id(event_id: str, request_id: str) -> str:
    """``<event>.s.<request>`` (parts escaped): exactly two unescaped dots."""
    return f"{id_part(event_id)}.s.{id_part(request_id)}"


def rollback_run_id(target_run_id: str, n: int) -> str:
    """``<target>.r<n>``: a settle id has exactly two unescaped dots and each rollback adds one, so no
    rollback id equals a settle id (request ``a.r1`` gives ``E.s.a%2Er1``, the rollback ``E.s.a.r1``)."""
    return f"{target_run_id}.r{n}"


def entry_id_for(run_kind: RunKind, run_id: str, bet_id: str) -> str:
    prefix = "payout" if run_kind == RunKind.SETTLE else "reversal"
    return f"{prefix}:{run_id}:{bet_id}"


def seq_key_for(at_ms: int, run_id: str) -> str:
    """Bet history key of a settlement row: ordered by time, unique per run."""
    return f"{at_ms:013d}:{run_id}"


def fingerprint(bet_ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for bet_id in sorted(bet_ids):
        h.update(bet_id.encode())
        h.update(b"\0")
    return f"{len(bet_ids)}:{h.hexdigest()}"


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


async def _chunks(pages: AsyncIterator[list[PlacedBet]]) -> AsyncIterator[list[PlacedBet]]:
    async for page in pages:
        if page:
            yield page


@dataclass
class _Planned:
    rows: list[BetSettlementRow]
    events: list[BetEvent]
    entries: list[LedgerEntry]
    credits: list[Credit]
    # One item per bet (BetsSettled messages carry up to MESSAGE_BETS of them).
    messages: list[dict[str, object]]
    stats: RunStats


@dataclass
class _Pages:
    """What the workers of one execution share (one event loop: no locking needed)."""

    done_ids: set[str]
    priors: dict[str, PriorState]
    multis: list[PlacedBet] = field(default_factory=list)
    seen: int = 0
    page_no: int = 0

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


@dataclass(frozen=True, slots=True)
class _Ctx:
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
def _message_legs(legs: tuple[Leg, ...], outcomes: tuple[LegOutcome, ...]) -> list[dict[str, str]]:
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
            stats = await self._execute(_Ctx(run, row_kind_for(run, runs)), runs, guard)
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

    async def _execute(self, ctx: _Ctx, runs: Sequence[RunView], guard: Guard) -> RunStats:
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

    async def _run_workers(self, ctx: _Ctx, results: Results, pages: _Pages, guard: Guard) -> list[RunStats]:
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
        ctx: _Ctx,
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
                pages.page_no += 1
                page_no = pages.page_no
                with self._timed("evaluate"):
                    evals = await asyncio.to_thread(evaluate, singles, {record.event_id: results})
                    priors = [pages.priors.get(b.bet_id, none) for b in singles]
                    planned = self._plan(ctx, singles, priors, evals, record.started_at_ms)
                while len(in_flight) >= max(1, self._config.commit_concurrency):
                    await settle_page()
                in_flight.add(
                    asyncio.get_running_loop().create_task(self._commit(ctx, "S", page_no, singles, planned, guard))
                )
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

    def _plan(
        self,
        ctx: _Ctx,
        bets: Sequence[PlacedBet],
        priors: Sequence[PriorState],
        evals: Sequence[Evaluation],
        at_ms: int,
    ) -> _Planned:
        planned = _Planned([], [], [], [], [], RunStats())
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
            self._add(planned, ctx, bet, ev.status, ev.legs, delta, ev.target_minor, at_ms, write_event=True)
        planned.stats = RunStats(
            bets_processed=len(bets), bets_still_open=still_open, payouts_minor=payouts, bets_changed=changed
        )
        return planned

    def _add(
        self,
        planned: _Planned,
        ctx: _Ctx,
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
            positive_payout = ctx.kind == RunKind.SETTLE and delta > 0
            entry_id = entry_id_for(ctx.kind, run_id, bet.bet_id)
            planned.entries.append(
                LedgerEntry(
                    entry_id=entry_id,
                    account_id=bet.account_id,
                    kind=EntryKind.PAYOUT if positive_payout else EntryKind.PAYOUT_REVERSAL,
                    amount_minor=delta,
                    currency=bet.currency,
                    bet_id=bet.bet_id,
                    reference=run_id,
                    created_at_ms=at_ms,
                )
            )
            planned.credits.append(Credit(bet.account_id, entry_id, delta))
        planned.messages.append(
            {
                "bet_id": bet.bet_id,
                "account_id": bet.account_id,
                "status": status.name,
                "return_minor": return_minor,
                "amount_minor": delta,
                "currency": bet.currency,
                "legs": _message_legs(bet.legs, legs),
                "at_ms": at_ms,
            }
        )

    def _bus_messages(self, ctx: _Ctx, items: Sequence[dict[str, object]]) -> list[BusMessage]:
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
            out.append(BusMessage(topic=self._topic, key=ctx.run.record.event_id, value=value))
        return out

    async def _commit(
        self,
        ctx: _Ctx,
        phase: str,
        page_no: int,
        bets: Sequence[PlacedBet],
        planned: _Planned,
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
        if planned.messages:
            with self._timed("publish_kafka"):
                await self._bus.publish(self._bus_messages(ctx, planned.messages))
                await self._bus.flush()
        stats = replace(planned.stats, negative_balance_accounts=negatives)
        ids = tuple(b.bet_id for b in bets)
        metrics.SETTLEMENT_BETS.labels(ctx.kind.name).inc(stats.bets_processed)
        with self._timed("checkpoint"):
            await self._store.append_checkpoints(
                [Checkpoint(ctx.run_id, phase, fingerprint(ids), stats, self._clock(), ids)]
            )
        if self._config.page_delay_ms:
            await asyncio.sleep(self._config.page_delay_ms / 1000)
        return stats

    async def _write_rows(self, planned: _Planned) -> None:
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

    async def _multi_phase(self, ctx: _Ctx, bets: list[PlacedBet], own_results: Results, guard: Guard) -> RunStats:
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
                for no, start in enumerate(range(0, len(bets), size), start=1):
                    await multi_guard.verify()
                    page = bets[start : start + size]
                    total = total.plus(await self._multi_page(ctx, no, page, results_by_event, guard, multi_guard))
        finally:
            await lease.release()
        return total

    async def _multi_page(
        self,
        ctx: _Ctx,
        page_no: int,
        bets: list[PlacedBet],
        results_by_event: dict[str, Results],
        guard: Guard,
        multi_guard: Guard,
    ) -> RunStats:
        sem = asyncio.Semaphore(self._config.history_concurrency)

        async def history(bet_id: str) -> list[BetEvent]:
            async with sem:
                return await self._ledger.bet_history(bet_id)

        histories = await asyncio.gather(*(history(b.bet_id) for b in bets))
        fresh: list[PlacedBet] = []
        fresh_priors: list[PriorState] = []
        own_rows: list[tuple[PlacedBet, BetEvent, PriorState]] = []
        for bet, hist in zip(bets, histories, strict=True):
            paid = 0
            status = BetState.OPEN
            legs: tuple[LegOutcome, ...] = ()
            own: BetEvent | None = None
            for ev in hist:
                if ev.kind not in SETTLEMENT_KINDS:
                    continue
                if ev.run_id == ctx.run_id:
                    own = ev
                    continue
                paid += ev.amount_minor
                status = ev.status
                legs = ev.leg_outcomes
            prior = PriorState(paid, status, legs)
            if own is not None:
                own_rows.append((bet, own, prior))
            else:
                fresh.append(bet)
                fresh_priors.append(prior)
        evals = await asyncio.to_thread(evaluate, fresh, results_by_event)
        # Timed by the run (its start), never by the clock at write time: a re-planned bet (one without
        # its own history row, hence without an entry) gets the same keys as the first attempt would.
        planned = self._plan(ctx, fresh, fresh_priors, evals, ctx.run.record.started_at_ms)
        extra = RunStats()
        written = await self._store.bet_rows(ctx.run_id, [bet.bet_id for bet, _, _ in own_rows]) if own_rows else {}
        for bet, own, prior in own_rows:
            # The per-run row already written (if any) is kept as it is: its return was computed with
            # the other runs' rows of that moment.
            row = written.get(bet.bet_id)
            total_paid = row.return_minor if row is not None else prior.paid_minor + own.amount_minor
            self._add(
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
            extra = extra.plus(
                RunStats(
                    bets_processed=1,
                    bets_still_open=int(own.status == BetState.OPEN),
                    payouts_minor=own.amount_minor,
                    bets_changed=1,
                )
            )
        planned.stats = planned.stats.plus(extra)
        return await self._commit(ctx, "M", page_no, bets, planned, guard, multi_guard)
