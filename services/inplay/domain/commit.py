"""Group commit of bets through the journal: one writer per shard, one batch in flight, deterministic retries.

The protocol of one batch (``ShardWriter._commit``), each step fixed before the next starts:

1. **Form.** Up to ``max_batch`` queued slips become batch ``(shard, slot)``; every bet id
   (``journal_bet_id(shard, slot, pos)``), the timestamp and every journal row are fixed now.
2. **Debit + intent** (one atomic wallet call, fenced by the shard lease): balances, limits, liability and
   the idempotency reservation, and the debited slips' rows stored as the batch's *intent*. Slips the wallet
   refuses get their rejection; nothing of them goes further.
3. **Journal write**: one single-partition write of the batch. Unknown outcome (timeout, reset) -> the
   same bytes are written again, with backoff, until acknowledged: the stake is never refunded on a guess.
   Only a write the store certainly refused (``JournalRejected``) is compensated in the wallet.
4. **Finish**: final idempotency records and the intent dropped (one wallet call; idempotent).
5. **Answer** each slip, then hand the batch to the projector (views + BetPlaced outbox).

A writer that cannot learn a batch's outcome within ``commit_timeout_s`` answers UNAVAILABLE ("retry with
the same key"), keeps the intent, and resolves it (``recover``) before it forms any further batch, so the
checksum chain stays in slot order. A writer that starts (or adopts an orphaned shard) first resolves every
intent of the shard: each is written to the journal as recorded (roll forward: the debit happened, the rows
are deterministic) and finished. No key stays IN_PROGRESS after a restart.

The commit runs in the writer's own task, never in an RPC's: a cancelled or timed-out call stops waiting,
not committing. A full queue answers OVERLOADED (RESOURCE_EXHAUSTED) at once: clients retry with the same
key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from inplay import metrics
from inplay.config import setting_str
from inplay.domain.journal import (
    GENESIS_CHECKSUM,
    ROW_BET,
    JournalBatch,
    JournalRow,
    bet_row_body,
    decode_bet_row,
    journal_bet_id,
)
from inplay.ids import liability_key
from inplay.model import Leg, PlacedBet
from inplay.ports import (
    BatchIntent,
    BusMessage,
    Debit,
    DebitResult,
    EventBus,
    JournalRejected,
    Ledger,
    LedgerError,
    PendingIntent,
    WalletNotReplicated,
    WalletStore,
)
from inplay.tracing import tracer

log = logging.getLogger("inplay.commit")

PROJECTION_CONSUMER = "views+outbox"
# Slots claimed by other writers that one batch may skip before the writer gives up (a split brain).
MAX_SKIPPED_SLOTS = 1000


@dataclass(frozen=True, slots=True)
class CommitSlip:
    """A slip that passed every check that does not need the wallet: it only needs to be debited and written."""

    account_id: str
    idempotency_key: str
    legs: tuple[Leg, ...]
    stake_minor: int
    currency: str
    potential_return_minor: int
    policy: int
    slip_hash: str
    liability_cap_minor: int


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """``status``: DEBITED (the bet is committed: ``bet``), a wallet refusal (INSUFFICIENT_FUNDS,
    DUPLICATE with ``existing``, MARKET_CLOSED ...), UNAVAILABLE (not committed or outcome unknown: retry
    with the same key) or OVERLOADED (queue full)."""

    status: str
    bet: PlacedBet | None = None
    balance_minor: int = 0
    existing: str = ""
    message: str = ""


@dataclass
class _Queued:
    slip: CommitSlip
    future: asyncio.Future[CommitOutcome]
    # The record stored under the slip's key with the batch (None: nothing is stored, e.g. transient).
    final_record: Callable[[CommitSlip, CommitOutcome], str | None]
    # The submitting request's span: the batch span links to it (one batch serves many traces).
    origin: trace.SpanContext | None = None


@dataclass(frozen=True, slots=True)
class WriterConfig:
    # The journal's tag (``journal.journal_tag`` of its name), part of every bet id.
    tag: str = "00000000"
    shards: int = 64
    max_batch: int = 1000
    max_queue: int = 20_000
    lease_ttl_ms: int = 10_000
    commit_timeout_s: float = 20.0
    retry_base_s: float = 0.02
    retry_cap_s: float = 1.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utc_day(ms: int) -> str:
    """The UTC day (yyyymmdd) of the daily stake counters."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d")


async def retry_until(
    attempt: Callable[[], Awaitable[None]], *, deadline: float, base_s: float, cap_s: float, what: str
) -> bool:
    """Runs ``attempt`` until it succeeds (True) or the monotonic ``deadline`` passes (False). Only for
    attempts that are safe to repeat. ``JournalRejected`` (certain refusal) propagates."""
    delay = base_s
    while True:
        try:
            await attempt()
            return True
        except JournalRejected:
            raise
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                log.warning("%s: giving up for now after %r", what, exc)
                return False
            log.info("%s failed (%r); retrying in %.2f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(cap_s, delay * 2)


class ShardWriter:
    """The single writer of one journal shard in this process (see the module docstring)."""

    def __init__(
        self,
        wallet: WalletStore,
        ledger: Ledger,
        config: WriterConfig,
        *,
        owner: str,
        on_batch: Callable[[int, int, JournalBatch | None, list[PlacedBet]], None],
        clock: Callable[[], int] = now_ms,
        preferred_shard: int = -1,
    ) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self.config = config
        self.owner = owner
        self._on_batch = on_batch
        self._clock = clock
        self._preferred = preferred_shard
        self.shard = -1
        self._next_slot = 1
        self._last_slot = 0
        self._last_checksum = GENESIS_CHECKSUM
        self._queue: deque[_Queued] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._needs_recovery = True
        self._lease_ok = False
        self._stopping = False
        # This writer incarnation's name on the slots it claims in the ledger (Ledger.claim_slot): another
        # process, or this one restarted, is another claimant, so it can never write into these slots.
        self.claimant = f"{owner.replace('|', '_')}#{uuid.uuid4().hex[:12]}"
        # (shard, slot) -> its claim, made ahead of its batch; cancelled only when the writer task ends.
        self._claims: dict[tuple[int, int], asyncio.Task[bool]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claims a shard and resolves its intents (a dead writer's batches) before taking any slip and
        before its projector reads the journal back: a projector that read a slot whose intent is still
        unresolved would take it for empty and pass it for good."""
        await self._claim()
        delay = self.config.retry_base_s
        while True:
            try:
                await self.recover()
                break
            except Exception:
                log.warning("start-up recovery of shard %d failed; retrying", self.shard, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(self.config.retry_cap_s, delay * 2)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"journal-writer-{self.shard}")
        self._lease_task = asyncio.get_running_loop().create_task(self._keep_lease(), name="journal-lease")

    async def stop(self, drain_s: float = 30.0) -> None:
        """Finishes the batch in flight (for at most ``drain_s``: a batch still unresolved then keeps its
        intent, which the next start rolls forward), answers the queued slips UNAVAILABLE, releases the lease."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await _bounded(self._task, drain_s)
        await _cancelled(self._lease_task)
        self._fail_queued("the server is shutting down; retry with the same key")
        if self._lease_ok:
            with contextlib.suppress(Exception):
                await self._wallet.renew_shard(self.shard, self.owner, 0)

    @property
    def head_slot(self) -> int:
        return self._next_slot - 1

    async def _claim(self) -> None:
        preferred = self.shard if self.shard >= 0 else self._preferred
        claim = await self._wallet.claim_shard(self.owner, self.config.lease_ttl_ms, self.config.shards, preferred)
        if claim is None:
            raise RuntimeError(f"every one of the {self.config.shards} journal shards is taken")
        same_shard = claim.shard == self.shard
        self.shard = claim.shard
        # A slot is never used twice: not below the head kept in the wallet, nor below the projector's
        # checkpoint kept in the ledger (a lost or stale Redis forgets heads; an empty slot the projector
        # passed would otherwise be reused and its batch never projected), nor below what this process
        # already used on this shard (a batch of it may still be in flight).
        projected = await self._ledger.load_progress(claim.shard, PROJECTION_CONSUMER)
        used = self._next_slot - 1 if same_shard else 0
        self._next_slot = max(claim.head_slot, projected, used) + 1
        if not same_shard or claim.last_slot > self._last_slot:
            self._last_slot = claim.last_slot
            self._last_checksum = claim.last_checksum or GENESIS_CHECKSUM
        self._lease_ok = True
        self._needs_recovery = True
        log.info("journal shard %d claimed by %s (head slot %d)", self.shard, self.owner, claim.head_slot)

    async def _keep_lease(self) -> None:
        period = self.config.lease_ttl_ms / 3000
        while not self._stopping:  # the flag ends it even if its cancellation was lost
            await asyncio.sleep(period)
            try:
                self._lease_ok = await self._wallet.renew_shard(self.shard, self.owner, self.config.lease_ttl_ms)
            except Exception:
                log.warning("journal lease renewal failed", exc_info=True)
                continue
            if not self._lease_ok:
                log.error("journal shard %d lease lost; claiming again", self.shard)
                with contextlib.suppress(Exception):
                    await self._claim()

    # --- submission ------------------------------------------------------------------------------------

    def submit(
        self, slips: Sequence[CommitSlip], final_record: Callable[[CommitSlip, CommitOutcome], str | None]
    ) -> list[asyncio.Future[CommitOutcome]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[CommitOutcome]] = []
        for slip in slips:
            future: asyncio.Future[CommitOutcome] = loop.create_future()
            if self._stopping or len(self._queue) >= self.config.max_queue:
                metrics.BETS_SHED.inc()
                future.set_result(
                    CommitOutcome("OVERLOADED", message="the commit queue is full; retry with the same key")
                )
            else:
                origin = trace.get_current_span().get_span_context()
                self._queue.append(_Queued(slip, future, final_record, origin if origin.is_valid else None))
            futures.append(future)
        metrics.COMMIT_QUEUE.set(len(self._queue))
        self._wake.set()
        return futures

    def _fail_queued(self, message: str) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_result(CommitOutcome("UNAVAILABLE", message=message))

    # --- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:  # stopped or killed: the claims made ahead end with it (their requests are cancelled)
            self._drop_claims_ahead()

    async def _loop(self) -> None:
        while True:
            # An unknown outcome is resolved at once, not when the next slip happens to arrive: a retry of
            # the same key never reaches the queue, and the settlement watermark waits for this slot.
            if self._needs_recovery and not self._stopping:
                await self._recover_or_wait()
                continue
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            items = [self._queue.popleft() for _ in range(min(self.config.max_batch, len(self._queue)))]
            metrics.COMMIT_QUEUE.set(len(self._queue))
            try:
                await self._commit(items)
            except Exception:  # a bug must not kill the writer: answer and resolve the batch by recovery
                log.exception("journal batch failed unexpectedly")
                self._needs_recovery = True
                self._answer_all(items, CommitOutcome("UNAVAILABLE", message="internal error; retry with the same key"))

    async def _recover_or_wait(self) -> None:
        try:
            await self.recover()
        except Exception:
            log.warning("journal recovery of shard %d failed; retrying", self.shard, exc_info=True)
            await asyncio.sleep(self.config.retry_cap_s)

    @staticmethod
    def _answer_all(items: Sequence[_Queued], outcome: CommitOutcome) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_result(outcome)

    # --- one batch -------------------------------------------------------------------------------------

    async def _commit(self, items: list[_Queued]) -> None:
        origins = {(o.trace_id, o.span_id): o for item in items if (o := item.origin) is not None}
        links = [Link(origin) for origin in origins.values()]
        with tracer.start_as_current_span("journal.batch", links=links) as span:
            span.set_attribute("inplay.batch_size", len(items))
            await self._commit_traced(items, span)

    async def _commit_traced(self, items: list[_Queued], span: trace.Span) -> None:
        slot = await self._claimed_slot()
        if slot is None:
            self._answer_all(
                items, CommitOutcome("UNAVAILABLE", message="the journal did not answer; retry with the same key")
            )
            return
        at = self._clock()
        bets, debits = self._form(items, slot, at)
        intent = BatchIntent(self.shard, slot, self.owner, self._last_slot, self._last_checksum, at, self.claimant)
        started = time.perf_counter()
        bet_ids = [b.bet_id for b in bets]
        span.set_attribute("inplay.bet_ids", bet_ids)
        try:
            with tracer.start_as_current_span(
                "redis wallet.debit_batch", attributes={"db.system": "redis", "inplay.bet_ids": bet_ids}
            ):
                outcomes = await self._wallet.debit_batch(debits, intent)
        except Exception as exc:
            # The script may or may not have run: its intent (if any) is resolved before the next batch.
            log.warning("wallet debit of batch %d/%d failed: %r", self.shard, slot, exc)
            self._needs_recovery = True
            self._answer_all(
                items, CommitOutcome("UNAVAILABLE", message="the wallet did not answer; retry with the same key")
            )
            return
        if outcomes and outcomes[0].status == "SHARD_LOST":
            self._lease_ok = False
            self._needs_recovery = True
            with contextlib.suppress(Exception):
                await self._claim()
        rows = tuple(
            JournalRow(d.pos, ROW_BET, d.row) for d, o in zip(debits, outcomes, strict=True) if o.status == "DEBITED"
        )
        batch = JournalBatch(self.shard, slot, self._last_slot, self._last_checksum, at, rows) if rows else None
        committed = await self._write(batch, debits, outcomes) if batch is not None else True
        if committed is None:  # unknown: the intent stays; recovery resolves it before the next batch
            self._needs_recovery = True
        results = self._results(items, bets, outcomes, committed)
        await self._finish(slot, batch if committed else None, items, results, keep_intent=committed is None)
        metrics.COMMIT_BATCH_SIZE.observe(len(items))
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        self._answer(items, results)
        if committed is not None:
            self._on_batch(
                self.shard,
                slot,
                batch if committed else None,
                [b for b, r in zip(bets, results, strict=True) if r.status == "DEBITED"],
            )

    async def _claimed_slot(self) -> int | None:
        """The next slot, claimed in the ledger for this writer before anything is debited for it (None if
        the ledger did not answer in time: nothing was debited, the slips are answered UNAVAILABLE). A slot
        another claimant holds is skipped: it is that writer's (a batch of it may still land there). The
        claim of the slot after it starts at once, so the next batch finds it made (off the commit path)."""
        deadline = time.monotonic() + self.config.commit_timeout_s
        for _ in range(MAX_SKIPPED_SLOTS):
            key = (self.shard, self._next_slot)
            for stale in [k for k in self._claims if k != key]:  # an older slot, or a shard held before
                self._claims.pop(stale).cancel()
            ours = await self._claim_until(key, self._claims.pop(key, None), deadline)
            if ours is None:
                return None
            self._next_slot = key[1] + 1
            if ours:
                self._claim_ahead(key[1] + 1)
                return key[1]
            log.warning("journal slot %d/%d is claimed by another writer; skipped", *key)
        raise RuntimeError(f"{MAX_SKIPPED_SLOTS} journal slots of shard {self.shard} claimed by other writers")

    async def _claim_until(
        self, key: tuple[int, int], ahead: asyncio.Task[bool] | None, deadline: float
    ) -> bool | None:
        """Whether slot ``key`` is this writer's (the claim made ahead, else claimed now), retried while the
        outcome is unknown (the same claimant is idempotent); None if still unknown at ``deadline``."""
        outcome: list[bool] = []

        async def claim_once() -> None:
            nonlocal ahead
            pending, ahead = ahead, None  # the claim made ahead is awaited once; a retry claims anew
            outcome.append(await (pending or self._ledger.claim_slot(*key, self.claimant)))

        ok = await retry_until(
            claim_once,
            deadline=deadline,
            base_s=self.config.retry_base_s,
            cap_s=self.config.retry_cap_s,
            what=f"claim of journal slot {key[0]}/{key[1]}",
        )
        return outcome[0] if ok else None

    def _drop_claims_ahead(self) -> None:
        for task in self._claims.values():
            task.cancel()
        self._claims.clear()

    def _claim_ahead(self, slot: int) -> None:
        key = (self.shard, slot)
        task = asyncio.get_running_loop().create_task(
            self._ledger.claim_slot(*key, self.claimant), name=f"claim-{key[0]}-{key[1]}"
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: re-claimed on demand
        self._claims[key] = task

    def _form(self, items: Sequence[_Queued], slot: int, at: int) -> tuple[list[PlacedBet], list[Debit]]:
        day = utc_day(at)
        bets: list[PlacedBet] = []
        debits: list[Debit] = []
        for pos, item in enumerate(items):
            s = item.slip
            bet = PlacedBet(
                bet_id=journal_bet_id(self.shard, slot, pos, self.config.tag),
                account_id=s.account_id,
                legs=s.legs,
                stake_minor=s.stake_minor,
                currency=s.currency,
                potential_return_minor=s.potential_return_minor,
                policy=s.policy,  # type: ignore[arg-type]
                idempotency_key=s.idempotency_key,
                placed_at_ms=at,
            )
            bets.append(bet)
            debits.append(
                Debit(
                    account_id=s.account_id,
                    idempotency_key=s.idempotency_key,
                    bet_id=bet.bet_id,
                    amount_minor=s.stake_minor,
                    liability_keys=tuple(liability_key(lg.market_id, lg.selection_id) for lg in s.legs),
                    liability_minor=max(0, s.potential_return_minor - s.stake_minor),
                    liability_cap_minor=s.liability_cap_minor,
                    day=day,
                    now_ms=at,
                    slip_hash=s.slip_hash,
                    pos=pos,
                    row=bet_row_body(bet, s.slip_hash),
                    market_ids=tuple(lg.market_id for lg in s.legs),
                )
            )
        return bets, debits

    async def _write(self, batch: JournalBatch, debits: list[Debit], outcomes: list[DebitResult]) -> bool | None:
        """True = written, False = certainly not (stakes returned), None = unknown (intent kept)."""
        deadline = time.monotonic() + self.config.commit_timeout_s
        bet_ids = [journal_bet_id(batch.shard, batch.slot, r.pos, self.config.tag) for r in batch.rows]
        attributes = {"db.system": "cassandra", "inplay.bet_ids": bet_ids}
        try:
            with tracer.start_as_current_span("cassandra journal.write", attributes=attributes):
                ok = await retry_until(
                    lambda: self._ledger.write_journal(batch, self.claimant),
                    deadline=deadline,
                    base_s=self.config.retry_base_s,
                    cap_s=self.config.retry_cap_s,
                    what=f"journal batch {batch.shard}/{batch.slot}",
                )
        except JournalRejected:
            if await self._landed(batch):  # an earlier attempt of the same bytes did land: committed
                self._last_slot, self._last_checksum = batch.slot, batch.checksum
                return True
            log.error("journal batch %d/%d refused by the store; returning the stakes", batch.shard, batch.slot)
            debited = [d for d, o in zip(debits, outcomes, strict=True) if o.status == "DEBITED"]
            try:  # stakes returned and intent dropped in one step: never rolled forward afterwards
                await self._wallet.abandon_batch(batch.shard, batch.slot, debited)
            except Exception:
                log.warning("abandoning batch %d/%d failed; recovery resolves it", batch.shard, batch.slot)
                return None
            return False
        if not ok:
            return None
        self._last_slot, self._last_checksum = batch.slot, batch.checksum
        return True

    @staticmethod
    def _results(
        items: Sequence[_Queued], bets: Sequence[PlacedBet], outcomes: Sequence[DebitResult], committed: bool | None
    ) -> list[CommitOutcome]:
        results: list[CommitOutcome] = []
        for bet, outcome in zip(bets, outcomes, strict=True):
            if outcome.status != "DEBITED":
                results.append(
                    CommitOutcome(outcome.status, balance_minor=outcome.balance_minor, existing=outcome.existing)
                )
            elif committed:
                results.append(CommitOutcome("DEBITED", bet=bet, balance_minor=outcome.balance_minor))
            elif committed is None:
                results.append(
                    CommitOutcome(
                        "UNAVAILABLE", message="the commit's outcome is not known yet; retry with the same key"
                    )
                )
            else:
                results.append(CommitOutcome("UNAVAILABLE", message="the bet could not be recorded; stake returned"))
        return results

    async def _finish(
        self,
        slot: int,
        batch: JournalBatch | None,
        items: Sequence[_Queued],
        results: Sequence[CommitOutcome],
        *,
        keep_intent: bool,
    ) -> None:
        records = [
            (item.slip.account_id, item.slip.idempotency_key, record)
            for item, result in zip(items, results, strict=True)
            if (record := item.final_record(item.slip, result)) is not None
        ]
        if keep_intent:
            if records:  # rejections only: the accepted rows' records are written by recovery
                await self._finish_records(records)
            return
        checksum = batch.checksum if batch is not None else ""

        async def attempt() -> None:
            try:
                await self._wallet.finish_batch(self.shard, slot, checksum, records)
            except WalletNotReplicated:
                # Applied on the primary, not yet on its replicas: a failover could bring the intent back
                # without this finish, so recovery (behind a replication barrier) finishes it again.
                self._needs_recovery = True

        ok = await retry_until(
            attempt,
            deadline=time.monotonic() + self.config.commit_timeout_s,
            base_s=self.config.retry_base_s,
            cap_s=self.config.retry_cap_s,
            what=f"finish of batch {self.shard}/{slot}",
        )
        if not ok:
            self._needs_recovery = True

    async def _finish_records(self, records: list[tuple[str, str, str]]) -> None:
        with contextlib.suppress(Exception):
            await self._wallet.finish_idempotent(records)

    @staticmethod
    def _answer(items: Sequence[_Queued], results: Sequence[CommitOutcome]) -> None:
        for item, result in zip(items, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    # --- recovery --------------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Resolves every intent of the shard (roll forward), in slot order. Returns how many."""
        # An intent applied by the Redis primary but not yet by its replicas could vanish in a failover:
        # journaled now, it would be a bet whose debit the promoted replica never saw.
        await self._wallet.replication_barrier()
        intents = await self._wallet.pending_intents(self.shard)
        for intent in intents:
            await self._resolve(intent)
        self._needs_recovery = False
        return len(intents)

    async def _resolve(self, intent: PendingIntent) -> None:
        rows = tuple(JournalRow(pos, ROW_BET, body) for pos, body in sorted(intent.rows.items()))
        batch = JournalBatch(intent.shard, intent.slot, intent.prev_slot, intent.prev_checksum, intent.at_ms, rows)
        bets = [decode_bet_row(r.body) for r in rows]
        try:
            ok = await retry_until(
                lambda: self._ledger.write_journal(batch, intent.claimant),
                deadline=time.monotonic() + self.config.commit_timeout_s,
                base_s=self.config.retry_base_s,
                cap_s=self.config.retry_cap_s,
                what=f"recovery of journal batch {intent.shard}/{intent.slot}",
            )
        except JournalRejected:  # the store certainly refuses this content: return the stakes instead
            if await self._landed(batch):
                await self._finish_resolved(intent, batch, bets)
                return
            await self._wallet.abandon_batch(
                intent.shard,
                intent.slot,
                [_debit_of(b, h, pos) for (b, h), pos in zip(bets, sorted(intent.rows), strict=True)],
            )
            log.error("journal batch %d/%d refused on recovery; stakes returned", intent.shard, intent.slot)
            self._on_batch(intent.shard, intent.slot, None, [])
            return
        if not ok:
            raise LedgerError(f"journal batch {intent.shard}/{intent.slot} still unresolved")
        await self._finish_resolved(intent, batch, bets)

    async def _landed(self, batch: JournalBatch) -> bool:
        """A refusal after earlier attempts whose outcome was unknown: one of them may have landed. The
        partition is read back; the batch counts as committed only if its exact content is there."""
        stored = await self._ledger.read_journal(batch.shard, batch.slot)
        return stored is not None and stored.rows == batch.rows and stored.stored_checksum == batch.checksum

    async def _finish_resolved(
        self, intent: PendingIntent, batch: JournalBatch, bets: list[tuple[PlacedBet, str]]
    ) -> None:
        records = [(b.account_id, b.idempotency_key, accepted_record(b, h)) for b, h in bets]
        # The batch is in the journal: its views may go ahead whatever happens to the finish below (a finish
        # applied whose reply is lost leaves no intent to resolve again, so the offer must not wait for it).
        self._on_batch(intent.shard, intent.slot, batch, [b for b, _ in bets])
        await self._wallet.finish_batch(intent.shard, intent.slot, batch.checksum, records)
        if intent.slot > self._last_slot:
            self._last_slot, self._last_checksum = intent.slot, batch.checksum
        self._next_slot = max(self._next_slot, intent.slot + 1)
        metrics.INTENTS_RECOVERED.inc(len(batch.rows))
        log.warning(
            "journal batch %d/%d rolled forward from its intent (%d bets)", intent.shard, intent.slot, len(batch.rows)
        )


def _debit_of(bet: PlacedBet, slip_hash: str, pos: int) -> Debit:
    """The debit a journal row was made from (to return its stake when the store refuses the row)."""
    return Debit(
        account_id=bet.account_id,
        idempotency_key=bet.idempotency_key,
        bet_id=bet.bet_id,
        amount_minor=bet.stake_minor,
        liability_keys=tuple(liability_key(lg.market_id, lg.selection_id) for lg in bet.legs),
        liability_minor=max(0, bet.potential_return_minor - bet.stake_minor),
        liability_cap_minor=0,
        day=utc_day(bet.placed_at_ms),
        now_ms=bet.placed_at_ms,
        slip_hash=slip_hash,
        pos=pos,
    )


def accepted_record(bet: PlacedBet, slip_hash: str) -> str:
    """The final idempotency record of an accepted bet: its id and the slip's hash. A replay reads the bet
    itself from the journal (one row, by its positional id): the record stays small in Redis and costs no
    encoding on the bet path."""
    return f"BET:{bet.bet_id}:{slip_hash}"


# --------------------------------------------------------------------------------------------------------
# The projector: views and outbox from the journal
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Projected:
    slot: int
    batch: JournalBatch | None
    bets: list[PlacedBet] = field(default_factory=list)


class Projector:
    """Tails one shard's journal: writes the views (``Ledger.project_bets``), publishes BetPlaced (the
    outbox), then saves the checkpoint. Crash between any two steps: the same rows and messages are
    written again from the checkpoint (views are idempotent; BetPlaced is at-least-once, keyed by event,
    carrying the bet id for idempotent consumers)."""

    def __init__(
        self,
        ledger: Ledger,
        bus: EventBus,
        topic: str,
        *,
        clock: Callable[[], int] = now_ms,
        max_bets: int = 5000,
        retry_cap_s: float = 1.0,
    ) -> None:
        self._ledger = ledger
        self._bus = bus
        self._topic = topic
        self._clock = clock
        self._max_bets = max_bets
        self._retry_cap_s = retry_cap_s
        self._queue: deque[_Projected] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.shard = -1
        self.checkpoint = 0
        self._caught_up = asyncio.Event()
        self._stopping = False

    def offer(self, shard: int, slot: int, batch: JournalBatch | None, bets: list[PlacedBet]) -> None:
        """Called by the writer for every finished slot, in slot order (empty slots too)."""
        self._queue.append(_Projected(slot, batch, bets))
        self._wake.set()

    async def start(self, shard: int, head_slot: int) -> None:
        """Resumes from the checkpoint: first the journal up to ``head_slot`` (read back), then live."""
        self.shard = shard
        self.checkpoint = await self._ledger.load_progress(shard, PROJECTION_CONSUMER)
        await self.catch_up(head_slot)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"projector-{shard}")

    async def catch_up(self, head_slot: int) -> None:
        slot = self.checkpoint + 1
        while slot <= head_slot:
            batch = await self._ledger.read_journal(self.shard, slot)
            bets = [decode_bet_row(r.body)[0] for r in batch.rows] if batch is not None else []
            await self._apply([_Projected(slot, batch, bets)])
            slot += 1

    async def stop(self, drain_s: float = 15.0) -> None:
        """Projects what is queued for at most ``drain_s`` (a store that does not answer must not hold a
        shutdown forever: the checkpoint makes the next start project the rest)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await _bounded(self._task, drain_s)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group: list[_Projected] = []
            count = 0
            while self._queue and count < self._max_bets:
                item = self._queue.popleft()
                group.append(item)
                count += len(item.bets)
            while True:
                try:
                    await self._apply(group)
                    break
                except Exception:
                    log.warning("projection of shard %d failed; retrying", self.shard, exc_info=True)
                    await asyncio.sleep(self._retry_cap_s)

    async def _apply(self, group: list[_Projected]) -> None:
        fresh = await self._with_gaps(sorted((g for g in group if g.slot > self.checkpoint), key=lambda g: g.slot))
        if not fresh:
            return
        bets = [b for g in fresh for b in g.bets]
        if bets:
            bet_ids = [b.bet_id for b in bets]
            with tracer.start_as_current_span("journal.project", attributes={"inplay.bet_ids": bet_ids}):
                await self._ledger.project_bets(bets)
                with tracer.start_as_current_span(
                    "kafka bus.publish",
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.destination.name": self._topic,
                        "inplay.bet_ids": bet_ids,
                    },
                ):
                    await self._publish(fresh)
        top = max(g.slot for g in fresh)
        now = self._clock()
        await self._ledger.save_progress(self.shard, PROJECTION_CONSUMER, top, now)
        self.checkpoint = top
        for g in fresh:
            if g.batch is not None:
                metrics.PROJECTION_LAG.observe(max(0, now - g.batch.committed_at_ms) / 1000)

    async def _with_gaps(self, fresh: list[_Projected]) -> list[_Projected]:
        """Slots between the checkpoint and the first offered slot that were never offered (a batch whose
        offer was lost with a failed step, a slot whose debit reply was lost) are read back from the journal:
        the writer offers a slot only once every earlier slot is resolved, so each is final (a batch or
        nothing), and the checkpoint never passes a slot it did not project."""
        if not fresh:
            return fresh
        offered = {g.slot for g in fresh}
        missing = [n for n in range(self.checkpoint + 1, fresh[-1].slot) if n not in offered]
        for slot in missing:
            batch = await self._ledger.read_journal(self.shard, slot)
            bets = [decode_bet_row(r.body)[0] for r in batch.rows] if batch is not None else []
            fresh.append(_Projected(slot, batch, bets))
        return sorted(fresh, key=lambda g: g.slot)

    async def _publish(self, group: list[_Projected]) -> None:
        """BetPlaced per bet: the journal row's JSON as the message body (no second encoding), keyed by
        the event of the first leg; consumers dedupe by the bet id inside."""
        messages = [
            BusMessage(
                topic=self._topic,
                key=bet.legs[0].event_id,
                value=b'{"type":"BetPlaced","bet":' + row.body.encode() + b"}",
            )
            for g in group
            if g.batch is not None
            for row, bet in zip(g.batch.rows, g.bets, strict=True)
        ]
        await self._bus.deliver(messages, timeout_s=10.0)


# How long a cancelled task may take to end before a shutdown goes on without it.
CANCEL_GRACE_S = 5.0


async def _bounded(task: asyncio.Task[None], seconds: float) -> None:
    """Waits for ``task`` at most ``seconds``, then cancels it (``_cancelled``)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("%s did not finish within %.0f s; cancelled", task.get_name(), seconds)
        await _cancelled(task)
    else:
        await asyncio.gather(task, return_exceptions=True)  # retrieves its exception, if any


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancels ``task`` and waits at most CANCEL_GRACE_S for it to end: a shutdown never hangs on a task
    that lost its cancellation (CPython 3.11's ``wait_for`` can swallow one, gh-86296); it logs where the
    task is parked and goes on without it."""
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    if done:
        await asyncio.gather(task, return_exceptions=True)
    else:
        log.error("%s ignored its cancellation; left behind (parked at %s)", task.get_name(), task.get_stack())


def writer_owner() -> str:
    """This process's writer identity: ``INPLAY_WRITER_ID`` (a stable pod name: a restart takes its shard
    back at once) or a random one."""
    return setting_str("INPLAY_WRITER_ID") or f"w-{os.getpid()}-{os.urandom(4).hex()}"


async def wait_for_epoch(wallet: WalletStore, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Waits until the wallet projection has its epoch marker (it is in place: fresh, or rebuilt by some
    process's repair). False on timeout."""
    deadline = time.monotonic() + timeout_s
    while await wallet.epoch() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def wait_for_projection(
    wallet: WalletStore, ledger: Ledger, shards: int, *, timeout_s: float, poll_s: float = 0.05
) -> bool:
    """The projection watermark: waits until every shard's views cover its journal head as of now (every
    bet committed or debited before this call is in the views). False on timeout.

    The heads are the wallet projection's: a lost Redis (no epoch marker) has none, and "every head is 0"
    would pass at once over bets the views do not have yet. So the projection must be in place first (its
    rebuild restores the heads from the journal); until then this waits (the sim's seed 110: a settlement
    run during a Redis loss settled an event without a bet of a dead writer's unprojected slot)."""
    deadline = time.monotonic() + timeout_s
    if not await wait_for_epoch(wallet, timeout_s, poll_s):
        return False
    heads = await wallet.journal_heads(shards)
    waiting = {n: head for n, head in enumerate(heads) if head > 0}
    while waiting:
        for n in list(waiting):
            if await ledger.load_progress(n, PROJECTION_CONSUMER) >= waiting[n]:
                del waiting[n]
        if not waiting:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


class OrphanAdopter:
    """Finishes the work of writers that died for good. Every bet-accepting process runs one: every
    ``period_s`` it looks for shards whose lease is free but whose journal still needs work (intents not
    resolved, or views behind the head), takes the shard's lease under its own adopter id, rolls the intents
    forward (``ShardWriter.recover``), projects the shard up to its head, and releases the lease. Holding
    the lease makes the adoption exclusive (a restarted owner or another adopter waits for it), and a
    writer that wakes up after its lease expired is fenced (SHARD_LOST)."""

    def __init__(
        self,
        wallet: WalletStore,
        ledger: Ledger,
        bus: EventBus,
        topic: str,
        config: WriterConfig,
        *,
        owner: str,
        period_s: float = 2.0,
    ) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._bus = bus
        self._topic = topic
        self._config = config
        self._owner = f"{owner}/adopter"
        self._period_s = period_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.adopted = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-adopter")

    async def stop(self) -> None:
        self._stopping = True
        await _cancelled(self._task)

    async def _run(self) -> None:
        while not self._stopping:  # the flag ends it even if its cancellation was lost
            await asyncio.sleep(self._period_s)
            try:
                await self.run_once()
            except Exception:
                log.warning("orphaned-shard adoption failed; retrying", exc_info=True)

    async def run_once(self) -> list[int]:
        """One pass; returns the shards adopted."""
        shards = self._config.shards
        heads = await self._wallet.journal_heads(shards)
        holders = await self._wallet.shard_holders(shards)
        pending = await self._wallet.intents_pending(shards)
        done = []
        for n in range(shards):
            if holders[n] is not None or heads[n] == 0:
                continue
            behind = await self._ledger.load_progress(n, PROJECTION_CONSUMER) < heads[n]
            if (pending[n] or behind) and await self._adopt(n):
                done.append(n)
        return done

    async def _adopt(self, shard: int) -> bool:
        writer = ShardWriter(
            self._wallet, self._ledger, self._config, owner=self._owner, on_batch=lambda *_: None, preferred_shard=shard
        )
        claim = await self._wallet.claim_shard(self._owner, self._config.lease_ttl_ms, self._config.shards, shard)
        if claim is None:
            return False
        try:
            if claim.shard != shard:  # taken meanwhile: another process is on it
                return False
            writer.shard = shard
            await writer.recover()
            projector = Projector(self._ledger, self._bus, self._topic)
            projector.shard = shard
            projector.checkpoint = await self._ledger.load_progress(shard, PROJECTION_CONSUMER)
            head = max(claim.head_slot, writer.head_slot)
            await projector.catch_up(head)
            self.adopted += 1
            log.warning("adopted orphaned journal shard %d (views at %d, head %d)", shard, projector.checkpoint, head)
            return True
        finally:
            with contextlib.suppress(Exception):
                await self._wallet.renew_shard(claim.shard, self._owner, 0)


class JournalWatermark:
    """The settlement run's ``BetWatermark``: after the run closed its markets (the debit refuses closed
    markets atomically, so nothing is accepted after the close), it waits until the views cover every
    shard's journal head, i.e. every bet accepted before the close is readable by event."""

    def __init__(self, wallet: WalletStore, ledger: Ledger, shards: int, timeout_s: float = 30.0) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._shards = shards
        self._timeout_s = timeout_s

    async def wait_visible(self, event_id: str, closed_at_ms: int) -> None:
        if not await wait_for_projection(self._wallet, self._ledger, self._shards, timeout_s=self._timeout_s):
            raise LedgerError(f"bets of {event_id} are not all visible yet (a journal writer down?); retry the run")


__all__ = [
    "PROJECTION_CONSUMER",
    "CommitOutcome",
    "CommitSlip",
    "JournalWatermark",
    "OrphanAdopter",
    "Projector",
    "ShardWriter",
    "WriterConfig",
    "accepted_record",
    "wait_for_epoch",
    "wait_for_projection",
    "writer_owner",
]
