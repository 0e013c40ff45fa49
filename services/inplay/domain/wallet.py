"""Deposits and balances.

A deposit is claimed once per (account, idempotency key) (:mod:`inplay.adapters.deposit_keys`), appended
to the ledger (the truth), then credited to the Redis projection deduplicated by the entry id. A crash
between the steps is repaired by retrying the same call: every step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from inplay.domain.commit import PROJECTION_CONSUMER, accepted_record, utc_day, wait_for_projection
from inplay.domain.journal import GENESIS_CHECKSUM, decode_bet_row
from inplay.domain.settlement.model import SETTLEMENT_KINDS
from inplay.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable
from inplay.ids import bet_liability
from inplay.model import BetState, EntryKind, LedgerEntry, PlacedBet
from inplay.ports import (
    AccountLimits,
    Credit,
    DepositKeys,
    Ledger,
    RepairOvertaken,
    WalletRebuild,
    WalletStore,
    WalletUnavailable,
)

log = logging.getLogger("inplay.wallet")

MAX_DEPOSIT_MINOR = 100_000_000_00


@dataclass(frozen=True, slots=True)
class DepositResult:
    entry: LedgerEntry
    balance_minor: int
    replayed: bool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Wallet:
    def __init__(
        self,
        wallet: WalletStore,
        ledger: Ledger,
        deposit_keys: DepositKeys,
        currency: str,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._keys = deposit_keys
        self.currency = currency
        self._clock = clock

    async def deposit(
        self, account_id: str, amount_minor: int, currency: str, idempotency_key: str, reason: str = ""
    ) -> DepositResult:
        violations = []
        if not account_id:
            violations.append(FieldViolation("account_id", "required"))
        if amount_minor <= 0 or amount_minor > MAX_DEPOSIT_MINOR:
            violations.append(FieldViolation("amount.amount_minor", f"must be 1..{MAX_DEPOSIT_MINOR}"))
        if currency != self.currency:
            violations.append(FieldViolation("amount.currency", f"must be {self.currency}"))
        if not idempotency_key or len(idempotency_key) > 128:
            violations.append(FieldViolation("idempotency_key", "required, at most 128 characters"))
        if violations:
            raise InvalidArgument("invalid deposit", violations=violations)
        claim = await self._keys.claim(account_id, idempotency_key, amount_minor, currency, self._clock())
        if not claim.fresh and claim.amount_minor != amount_minor:
            raise FailedPrecondition(
                "idempotency_key already used for a different amount", reason="IDEMPOTENCY_KEY_REUSED"
            )
        # Every column comes from the claim (or the key), never from the retried request: a retry rewrites
        # the identical row (M3: a retry with another reason must not change the stored row).
        entry = LedgerEntry(
            entry_id=claim.entry_id,
            account_id=account_id,
            kind=EntryKind.DEPOSIT,
            amount_minor=claim.amount_minor,
            currency=claim.currency,
            bet_id="",
            reference=idempotency_key,
            created_at_ms=claim.created_at_ms,
        )
        await self._ledger.append_entries([entry])
        try:
            await self._wallet.credit_batch([Credit(account_id, entry.entry_id, entry.amount_minor)])
        except WalletUnavailable as exc:
            # The ledger has the deposit; a retry with the same key credits the projection once.
            raise Unavailable(str(exc), reason="WALLET_REPAIRING") from exc
        [balance] = await self._wallet.balances([account_id])
        return DepositResult(entry=entry, balance_minor=balance, replayed=not claim.fresh)

    async def balance(self, account_id: str) -> int:
        [balance] = await self._wallet.balances([account_id])
        return balance


class DurableLimits:
    """Responsible-gambling limits: recorded in the ledger first (durable, rebuilt into the projection by a
    repair), then set in the wallet projection that the atomic debit reads."""

    def __init__(self, wallet: WalletStore, ledger: Ledger, clock: Callable[[], int] = _now_ms) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._clock = clock

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None:
        await self._ledger.record_limits(account_id, limits, self._clock())
        await self._wallet.set_limits(account_id, limits)

    async def get_limits(self, account_id: str) -> AccountLimits:
        return await self._wallet.get_limits(account_id)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    accounts: int
    mismatched: dict[str, tuple[int, int]]  # account -> (projection, ledger)
    repaired: bool
    # The projection had lost its data (no epoch marker): every debit answers NOT_READY until it is repaired.
    lost: bool = False


async def reconcile(
    wallet: WalletStore,
    ledger: Ledger,
    repair: bool,
    accounts: list[str] | None = None,
    *,
    projection: str = "",
    shards: int = 64,
) -> ReconcileReport:
    """Compares the Redis balance projection with Σ ledger entries once the views cover the journal; with
    ``repair`` the whole projection is rebuilt from the ledger under a fence (``repair_projection``), never
    by overwriting balances while bets and credits run (H10). A projection that lost its data (no epoch
    marker) is compared as it is, without waiting for a watermark it cannot have: its heads went with it,
    and its repair is this call's (or a starting writer's) rebuild from the journal. A lost projection
    with ``repair`` is rebuilt at once, without the comparison: the comparison is a full scan of the
    ledger, bets answer NOT_READY until the rebuild is done, and the rebuild scans the ledger itself."""
    lost = await wallet.epoch() is None
    if lost and repair:
        await repair_or_join(wallet, ledger, projection, shards)
        return ReconcileReport(accounts=0, mismatched={}, repaired=True, lost=True)
    if not lost:
        await wait_for_projection(wallet, ledger, shards, timeout_s=30.0)
    truth = await ledger.account_balances()
    if accounts is not None:
        truth = {a: truth.get(a, 0) for a in accounts}
    names = sorted(truth)
    projected = await wallet.balances(names) if names else []
    mismatched = {name: (proj, truth[name]) for name, proj in zip(names, projected, strict=True) if proj != truth[name]}
    repaired = repair and bool(mismatched)
    if repaired:
        await repair_or_join(wallet, ledger, projection, shards)
    return ReconcileReport(accounts=len(names), mismatched=mismatched, repaired=repaired, lost=lost)


# --------------------------------------------------------------------------------------------------------
# The projection's lifecycle: epoch marker, fenced rebuild from the ledger and the journal
# --------------------------------------------------------------------------------------------------------


async def ensure_projection_ready(
    wallet: WalletStore, ledger: Ledger, projection: str, shards: int, *, clock: Callable[[], int] = _now_ms
) -> str:
    """Called at start. A fresh projection gets an epoch (recorded in the ledger); a projection the ledger
    knows but whose epoch marker is gone has lost its data (a flushed or failed-over Redis) and is rebuilt
    from the ledger before any bet can use it (the debit refuses NOT_READY meanwhile). Returns the action."""
    epoch = await wallet.epoch()
    known = await ledger.epochs(projection)
    if epoch is not None:
        if epoch not in known:
            await ledger.record_epoch(projection, epoch, clock())
        return "ready"
    if not known:
        fresh = os.urandom(8).hex()
        await ledger.record_epoch(projection, fresh, clock())
        await wallet.set_epoch(fresh)
        return "fresh"
    log.error("wallet projection %r lost its data (epoch marker missing): rebuilding from the ledger", projection)
    await repair_or_join(wallet, ledger, projection, shards, clock=clock)
    return "rebuilt"


REPAIR_ATTEMPTS = 3
OTHER_REPAIR_WAIT_S = 120.0


async def repair_or_join(
    wallet: WalletStore,
    ledger: Ledger,
    projection: str,
    shards: int,
    *,
    clock: Callable[[], int] = _now_ms,
    other_repair_wait_s: float = OTHER_REPAIR_WAIT_S,
) -> None:
    """``repair_projection``, or, when another repair overtakes it (every process that starts on a lost
    projection repairs it, and so does an operator's ``reconcile --repair``), the other repair's outcome:
    its rebuild started later, so from a later read of the ledger, and is as good as ours. Done when a
    repair's new epoch is up; raises WalletUnavailable if repairs kept overtaking each other."""
    for _ in range(REPAIR_ATTEMPTS):
        before = await wallet.epoch()
        try:
            await repair_projection(wallet, ledger, projection, shards, clock=clock)
            return
        except RepairOvertaken:
            log.warning("another repair of %r overtook this one; waiting for its new epoch", projection)
            if await _wait_for_new_epoch(wallet, before, other_repair_wait_s):
                return
    raise WalletUnavailable(f"the projection {projection!r} could not be rebuilt: repairs kept overtaking")


async def _wait_for_new_epoch(wallet: WalletStore, before: str | None, timeout_s: float) -> bool:
    """A repair ends by putting up a new epoch marker (the fence down first): True once one differs from
    ``before`` (the marker seen when this process's own repair started)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = await wallet.epoch()
        if now is not None and now != before:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


async def repair_projection(
    wallet: WalletStore,
    ledger: Ledger,
    projection: str,
    shards: int,
    *,
    clock: Callable[[], int] = _now_ms,
    settle_timeout_s: float = 30.0,
) -> WalletRebuild:
    """Rebuilds everything the projection holds for money from the ledger and the journal, without racing
    live traffic: a fence makes every debit answer NOT_READY and every credit refuse (callers retry),
    in-flight batches finish, the views catch up with the journal, then the state is rebuilt and the fence
    lifted. Returns what was written."""
    token = os.urandom(8).hex()  # this repair's fence: an overtaking repair takes it over, and then we write nothing
    await wallet.set_fence(True, token, FENCE_TTL_MS)
    keeper = asyncio.get_running_loop().create_task(_keep_fence(wallet, token))
    t0 = time.monotonic()
    try:
        await _quiesce(wallet, ledger, shards, settle_timeout_s)
        t1 = time.monotonic()
        state = await rebuild_state(ledger, clock(), shards)
        t2 = time.monotonic()
        # The keeper stops before the write: the write is a WATCH on the fence, and a refresh of the fence's
        # TTL is a write to it, so a refresh landing between WATCH and EXEC failed this repair as "overtaken"
        # by itself (a chaos run's reconcile --repair did). One refresh now leaves the write a full TTL.
        await _stop(keeper)
        if not await wallet.refresh_fence(token, FENCE_TTL_MS):
            raise RepairOvertaken("another repair took the fence while this one read the ledger")
        await wallet.rebuild(state, token)
        # An operator's repair is rare and slow: where its time went is worth a line each time.
        log.warning(
            "projection %r rebuilt: quiesce %.1f s, read %.1f s (%d accounts, %d idempotency records), write %.1f s",
            projection,
            t1 - t0,
            t2 - t1,
            len(state.balances),
            len(state.idempotency),
            time.monotonic() - t2,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # fail closed: without a new epoch every debit stays NOT_READY
            await wallet.set_fence(False, token)
        raise
    finally:
        keeper.cancel()
    # The fence comes down BEFORE the new epoch goes up: if lifting it fails, the epoch is still missing,
    # so the next start rebuilds again; and a fence whose lift failed (or whose repair died) expires.
    await wallet.set_fence(False, token)
    epoch = os.urandom(8).hex()
    await ledger.record_epoch(projection, epoch, clock())
    await wallet.set_epoch(epoch)
    return state


# The repair fence expires unless its repair keeps it (a dead repair must not fence the wallet forever).
FENCE_TTL_MS = 30_000


FENCE_REFRESH_S = FENCE_TTL_MS / 3000


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _keep_fence(wallet: WalletStore, token: str) -> None:
    while True:
        await asyncio.sleep(FENCE_REFRESH_S)
        with contextlib.suppress(Exception):
            if not await wallet.refresh_fence(token, FENCE_TTL_MS):
                return


async def _quiesce(wallet: WalletStore, ledger: Ledger, shards: int, timeout_s: float) -> None:
    """Under the fence no new debit happens; batches already debited finish (their intents resolve), so
    that every debited batch is in the journal before it is scanned. The views need no waiting: the
    rebuild projects every batch past its shard's checkpoint itself (a start-up rebuild has no running
    projector to wait for)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while any(await wallet.intents_pending(shards)):
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable("journal intents are still unresolved; is a writer down? (retry the repair)")
        await asyncio.sleep(0.05)


async def settled_bet_ids(ledger: Ledger) -> set[str]:
    """Bets whose latest settlement row (history order) is a final status: their liability is released."""
    latest: dict[str, tuple[str, BetState]] = {}
    async for ev in ledger.scan_bet_history():
        if ev.kind in SETTLEMENT_KINDS:
            seen = latest.get(ev.bet_id)
            if seen is None or ev.seq_key > seen[0]:
                latest[ev.bet_id] = (ev.seq_key, ev.status)
    return {bet_id for bet_id, (_, status) in latest.items() if status != BetState.OPEN}


async def rebuild_state(ledger: Ledger, now: int, shards: int = 0) -> WalletRebuild:
    """One pass over the journal (idempotency records, daily stake, liability, heads, and the views of
    every batch past its shard's checkpoint, written first), then balances and once-markers from the
    ledger: the views may lag the journal (a writer died before its projector ran, the heads that the
    watermark waits on were in the lost Redis), so they are completed from the journal before being read."""
    idempotency: dict[tuple[str, str], str] = {}
    daily: dict[tuple[str, str], int] = defaultdict(int)
    liability: dict[str, int] = defaultdict(int)
    # Liability only of bets still open: a settled bet's was released by its settlement run.
    settled = await settled_bet_ids(ledger)
    liability_released: list[str] = []
    liability_open: list[str] = []
    journal: dict[int, tuple[int, int, str]] = {}
    recent_days = {utc_day(now), utc_day(now - 86_400_000)}
    checkpoints: dict[int, int] = {}
    unprojected: list[PlacedBet] = []
    async for batch in ledger.scan_journal():
        if batch.shard not in checkpoints:
            checkpoints[batch.shard] = await ledger.load_progress(batch.shard, PROJECTION_CONSUMER)
        head, last_slot, _ = journal.get(batch.shard, (0, 0, GENESIS_CHECKSUM))
        if batch.slot > last_slot:
            journal[batch.shard] = (max(head, batch.slot), batch.slot, batch.stored_checksum or batch.checksum)
        for row in batch.rows:
            bet, slip = decode_bet_row(row.body)
            if batch.slot > checkpoints[batch.shard]:
                unprojected.append(bet)
            idempotency[(bet.account_id, bet.idempotency_key)] = accepted_record(bet, slip)
            day = utc_day(bet.placed_at_ms)
            if day in recent_days:
                daily[(bet.account_id, day)] += bet.stake_minor
            keys, amount = bet_liability(bet)
            released = bet.bet_id in settled
            (liability_released if released else liability_open).append(bet.bet_id)
            for key in keys:  # a selection whose bets are all settled is reset to 0, not left stale
                liability[key] += 0 if released else amount
    for shard in range(shards):  # a head never below what the projector passed (empty slots included)
        projected = checkpoints.get(shard)
        if projected is None:
            projected = await ledger.load_progress(shard, PROJECTION_CONSUMER)
        head, last_slot, last_checksum = journal.get(shard, (0, 0, GENESIS_CHECKSUM))
        if projected > head:
            journal[shard] = (projected, last_slot, last_checksum)
    for start in range(0, len(unprojected), 1000):  # idempotent rows; the checkpoint is the projector's
        await ledger.project_bets(unprojected[start : start + 1000])
    scan = await ledger.scan_balances()  # one pass: a payout landing meanwhile is counted iff marked
    return WalletRebuild(
        balances=scan.balances,
        applied_entry_ids=[entry_id for _, entry_id in scan.credit_entry_ids],
        idempotency=idempotency,
        daily_stake=dict(daily),
        liability=dict(liability),
        liability_released=liability_released,
        liability_open=liability_open,
        limits=await ledger.all_limits(),
        journal=journal,
    )
