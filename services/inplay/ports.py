"""Ports: the small interfaces the domain talks to. Real adapters live in ``inplay.adapters`` (Redis,
Cassandra, Kafka); ``inplay.adapters.memory`` implements the same ports for the embedded demo and for unit
tests of pure logic. Every port method is batch-first: one call per batch is the unit of group commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import field
from typing import Protocol

from inplay.model import (
    BetEvent,
    JournalBatch,
    LedgerEntry,
    MarketChange,
    MarketState,
    MarketStatus,
    PlacedBet,
    SelectionPrice,
)
from inplay.valuetype import value

# ---------------------------------------------------------------------------------------------------------
# Odds cache (Redis): the state bets are checked against and odds are read from.
# ---------------------------------------------------------------------------------------------------------


@value
class CacheWrite:
    """Outcome of a versioned cache write."""

    applied: bool
    # The version held by the cache after the call (the new one if applied).
    cached_version: int


# Status reasons that only an operator lifts: fresh feed prices never reopen a market suspended for one of
# these. (KILL_SWITCH holds while the switch is engaged; once released, fresh prices reopen the market.)
STICKY_REASONS = frozenset({"OPERATOR"})


@value
class PriceWrite:
    """A feed price update for one market. The cache assigns the new version (cached + 1) atomically."""

    market_id: str
    event_id: str
    sport: str
    market_type: str
    name: str
    in_play: bool
    selections: tuple[SelectionPrice, ...]
    # Provider timestamp of the prices (ms), clamped to the receive time (a clock running ahead cannot push
    # the market watermark into the future): a write older than the cached watermark is dropped (STALE).
    source_ts_ms: int
    # When the prices were confirmed (what ``updated_at`` / ``age_ms`` report).
    updated_at_ms: int
    source: str
    # Non-empty: store the prices but keep the market SUSPENDED for this reason (FEED_LAG, PRICE_JUMP ...).
    suspend_reason: str = ""
    # A provider correction: subscribers get a full SNAPSHOT instead of a DELTA.
    correction: bool = False
    # The provider's own timestamp (unclamped; 0 = ``source_ts_ms``): a write not newer than the last one
    # applied from the same provider (``source``) is STALE, so order within a provider follows its clock.
    provider_ts_ms: int = 0
    # The event's primary provider when the write is routed (feed prices): the cache applies it only if
    # ``source`` is the event's active provider in the shared route (no route yet = this primary), else the
    # outcome is "STANDBY". Empty = no routing check. (H6: two ingest pods never apply two providers.)
    route_primary: str = ""


@value
class StatusWrite:
    """A status change for one market (SUSPENDED / ACTIVE / SETTLED), with a version bump when it changes
    anything. ``source_ts_ms`` > 0 also raises the market's provider watermark (prices older than a bet stop
    are then STALE)."""

    market_id: str
    status: MarketStatus
    reason: str
    source_ts_ms: int = 0
    # Only for ACTIVE: resume only if the market is suspended for one of these reasons (empty = any).
    only_reasons: tuple[str, ...] = ()
    # The provider of a feed status change and its own (unclamped) timestamp: raises that provider's
    # watermark, so its prices stamped before a bet stop stay STALE even when its clock runs ahead.
    provider: str = ""
    provider_ts_ms: int = 0


@value
class WriteResult:
    """Outcome of a price or status write. ``outcome``: "APPLIED", "STALE", "SETTLED", "NOT_FOUND",
    "UNCHANGED" (a status write that would change nothing), "KILL_SWITCH" (resume refused)."""

    outcome: str
    before: MarketState | None
    after: MarketState | None

    @property
    def applied(self) -> bool:
        return self.outcome == "APPLIED"


@value
class OddsNotice:
    """One applied change as seen by subscribers."""

    state: MarketState
    correction: bool = False


class OddsSubscription(Protocol):
    """One multiplexed subscription (one connection) whose set of events can change while it runs."""

    async def add(self, event_ids: Sequence[str]) -> None:
        """Returns once the subscription is confirmed (changes applied after this are delivered)."""
        ...

    async def remove(self, event_ids: Sequence[str]) -> None: ...

    def __aiter__(self) -> AsyncIterator[OddsNotice]: ...

    async def close(self) -> None: ...


@value
class ProviderLiveness:
    """One provider's health as every ingest pod sees it (server arrival clock, ms; see
    :class:`inplay.domain.feed.health.ProviderHealth`). Merged field by field: times take the newest, the
    sequence position (``last_seq``, ``max_ts_ms``) the one with the newest provider timestamp."""

    name: str
    last_seen_ms: int = 0
    lag_ms: int = 0
    lag_at_ms: int = 0
    lag_bad_at_ms: int = 0
    gap_at_ms: int = 0
    reconnected_at_ms: int = 0
    last_seq: int = -1
    max_ts_ms: int = -1
    # Producer lifecycle: UP | DOWN | RECOVERING, when it last changed (the newest change wins), the recovery
    # request being answered and since when the producer was silent.
    producer: str = "UP"
    producer_at_ms: int = 0
    recovery_id: str = ""
    down_since_ms: int = 0


@value
class FeedStateView:
    """What :meth:`FeedStateStore.load_feed_state` returns."""

    providers: dict[str, ProviderLiveness]
    # Per provider: the probed (seq, provider ts) keys already in the shared duplicate window.
    seen: dict[str, set[tuple[int, int]]]
    # Per event: the active provider ("" = never switched: the event's primary).
    active: dict[str, str]


class FeedStateStore(Protocol):
    """Routing, provider health and sequence state shared by every ingest pod (H6). Each call is atomic."""

    async def load_feed_state(
        self, providers: Collection[str], probes: Mapping[str, Sequence[tuple[int, int]]], events: Collection[str]
    ) -> FeedStateView: ...

    async def save_feed_state(
        self,
        providers: Sequence[ProviderLiveness],
        seen: Mapping[str, Sequence[tuple[int, int]]],
        reset: Collection[str] = (),
    ) -> None:
        """Merges the liveness, adds the seen keys to each provider's window (the newest 4096 sequence
        numbers kept); ``reset``: providers whose window restarts first (a new provider session)."""
        ...

    async def switch_provider(self, event_id: str, old: str, new: str, primary: str) -> tuple[bool, str]:
        """Compare-and-set of the event's active provider (``old`` -> ``new``); (won, active after)."""
        ...

    async def list_producers(self) -> list[ProviderLiveness]:
        """Every provider any pod has saved, by name (AdminService.ListProducers)."""
        ...


class OddsCache(Protocol):
    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        """One round trip for all ids; ``None`` where unknown."""
        ...

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        """Every cached market of an event, ordered by market id."""
        ...

    async def put_markets(self, markets: Sequence[MarketState]) -> list[CacheWrite]:
        """Versioned compare-and-set per market: written only if ``version`` is newer than the cached one.
        Each applied write is also published to the market's event channel (for StreamOdds fan-out),
        atomically with the write so that cache order == publish order per market."""
        ...

    def subscribe(self, event_ids: Sequence[str]) -> AsyncIterator[MarketState]:
        """Yields every market state applied to these events' channels after the call (live fan-out)."""
        ...


class SentPrices(Protocol):
    """A price-write call sent to the cache whose answer has not been read yet."""

    async def results(self) -> list[WriteResult]:
        """The call's results, as :meth:`LiveOddsCache.write_prices` returns them. Raises the call's failure:
        a connection lost before the answer was read leaves the outcome unknown (the writes may or may not be
        stored; a retry of an applied write is STALE, never applied twice)."""
        ...


class AnsweredPrices:
    """A price-write call already answered (:class:`SentPrices`): an empty call, or a store whose call and
    answer are one step (the memory adapter)."""

    def __init__(self, results: list[WriteResult]) -> None:
        self._results = results

    async def results(self) -> list[WriteResult]:
        return self._results


class LiveOddsCache(OddsCache, FeedStateStore, Protocol):
    """The odds cache as the odds pipeline uses it: feed writes, status changes, kill switches and the
    multiplexed subscription of the StreamOdds hub (Redis and memory adapters implement both)."""

    async def write_prices(self, writes: Sequence[PriceWrite]) -> list[WriteResult]:
        """All writes in one atomic server-side call, in order: provider-timestamp check, settled check,
        kill switch / sticky suspension, version = cached + 1, store, publish to the event channel."""
        ...

    async def send_prices(self, writes: Sequence[PriceWrite]) -> SentPrices:
        """The call of :meth:`write_prices`, sent without waiting for its answer. **Guarantee:** calls sent one
        after another run in the order they were sent, each one atomic, exactly as the same
        :meth:`write_prices` calls one after another would; their answers are read in any order. So the
        feed pipeline keeps several calls of one chunk in flight while it judges the rest."""
        ...

    async def write_status(self, writes: Sequence[StatusWrite]) -> list[WriteResult]:
        """Status changes in one atomic call (version bump + publish for each one that changes something)."""
        ...

    async def set_kill_switch(self, scope: str, target: str, engaged: bool) -> list[str]:
        """Engages/releases the kill switch of ``scope`` ("event" | "sport") ``target``; returns the ids of
        the markets in scope (the caller suspends them)."""
        ...

    async def kill_switch_engaged(self, event_id: str, sport: str) -> bool: ...

    def open_subscription(self) -> OddsSubscription: ...


# ---------------------------------------------------------------------------------------------------------
# Wallet (Redis): the balance projection, idempotency records and risk counters, changed atomically.
# ---------------------------------------------------------------------------------------------------------


@value
class Debit:
    """Reserve an idempotency key and debit a stake, atomically, if every limit allows."""

    account_id: str
    idempotency_key: str
    bet_id: str
    amount_minor: int
    # Liability added per selection key ("market_id/selection_id") and the cap per selection (0 = none).
    liability_keys: tuple[str, ...]
    liability_minor: int
    liability_cap_minor: int
    # The account's UTC day (yyyymmdd) for the daily stake counter.
    day: str
    # Now, for the self-exclusion check.
    now_ms: int
    # The journal row of the bet (stored in the batch's intent, atomically with the debit), its position in
    # the batch, the hash of the slip (IDEMPOTENCY_KEY_REUSED) and the markets whose status the debit
    # re-checks atomically (a market closed or suspended after the quote check rejects the slip).
    slip_hash: str = ""
    pos: int = 0
    row: str = ""
    market_ids: tuple[str, ...] = ()


@value
class BatchIntent:
    """The journal batch a debit call belongs to: the call is fenced by the shard's lease (``owner``) and
    records the debited slips' rows as the batch's intent, before anything is written to the journal."""

    shard: int
    slot: int
    owner: str
    prev_slot: int
    prev_checksum: str
    at_ms: int
    # Who claimed the slot in the ledger (Ledger.claim_slot) before this debit: recovery writes the rows
    # under the same claim.
    claimant: str = ""


@value
class PendingIntent:
    """A batch debited in the wallet whose journal write was not (known to be) finished."""

    shard: int
    slot: int
    prev_slot: int
    prev_checksum: str
    at_ms: int
    rows: dict[int, str]
    claimant: str = ""  # "" = an intent recorded before slot claims (the batch's checksum claims it)


@value
class ShardClaim:
    shard: int
    head_slot: int
    last_slot: int
    last_checksum: str


@value
class BalanceScan:
    """Σ entries per account and the (account, entry id) of every credit-side entry (all but STAKE rows:
    the wallet's once-markers), from ONE pass over the entries. Entries keep landing while a repair scans
    (settlement pages write the ledger under the repair fence; only their Redis credits wait), so each entry
    must be in both or in neither: one marked applied but not counted would never reach the wallet."""

    balances: dict[str, int]
    credit_entry_ids: list[tuple[str, str]]


@value
class WalletRebuild:
    """Everything the wallet projection holds for money, rebuilt from the ledger and the journal."""

    balances: dict[str, int]
    applied_entry_ids: list[str]
    idempotency: dict[tuple[str, str], str]
    daily_stake: dict[tuple[str, str], int]
    liability: dict[str, int]
    limits: dict[str, AccountLimits]
    # shard -> (head slot, last committed slot, its checksum)
    journal: dict[int, tuple[int, int, str]]
    # Journal bets whose liability is released (settled) / counted (still open): their markers.
    liability_released: list[str] = field(default_factory=list)
    liability_open: list[str] = field(default_factory=list)


class WalletUnavailable(Exception):
    """The wallet projection refuses writes for now (a repair fence is up, or it is not rebuilt yet)."""


class RepairOvertaken(WalletUnavailable):
    """A projection repair found its fence taken by another repair and wrote nothing: the other repair's
    rebuild (started later, so from a later read of the ledger) is the one that counts."""


class WalletNotReplicated(WalletUnavailable):
    """A money write was applied by the Redis primary but not acknowledged by the required replicas in time
    (``INPLAY_REDIS_WAIT_REPLICAS``): a failover now could lose it, so its outcome counts as unknown — the
    journal writer does not commit on it and resolves it after a replication barrier."""


@value
class DebitResult:
    # "DEBITED" | "DUPLICATE" (key already used; see ``existing``) | "INSUFFICIENT_FUNDS" |
    # "DAILY_STAKE_LIMIT" | "SELF_EXCLUDED" | "LIABILITY_EXCEEDED"
    status: str
    balance_minor: int
    # For DUPLICATE: the stored record of the first call (JSON text), "PENDING:<bet_id>" while in flight.
    existing: str = ""


@value
class Credit:
    """Credit (or debit, if negative) an account once per ``entry_id`` (dedupe marker kept in Redis)."""

    account_id: str
    entry_id: str
    amount_minor: int


@value
class LiabilityChange:
    """A bet's share of the book's liability counters: released once it is settled (any final status,
    void included), counted again if a rollback reopens it. Idempotent per bet (a marker per bet id)."""

    bet_id: str
    # The liability counters of the bet's selections ("market_id/selection_id", escaped: inplay.ids).
    keys: tuple[str, ...]
    amount_minor: int
    released: bool


@value
class AccountLimits:
    daily_stake_limit_minor: int = 0  # 0 = no limit
    self_excluded_until_ms: int = 0


@value
class DepositClaim:
    entry_id: str
    amount_minor: int
    currency: str
    created_at_ms: int
    # False when the key had been claimed before (the stored claim is returned).
    fresh: bool


class DepositKeys(Protocol):
    """Deposit idempotency keys: the first claim of (account, key) fixes the deposit's amount and time."""

    async def claim(self, account_id: str, key: str, amount_minor: int, currency: str, now_ms: int) -> DepositClaim: ...


class LimitsStore(Protocol):
    """Account limits as the admin API sets them (``inplay.domain.wallet.DurableLimits``)."""

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None: ...

    async def get_limits(self, account_id: str) -> AccountLimits: ...


class WalletStore(Protocol):
    async def debit_batch(self, debits: Sequence[Debit], intent: BatchIntent | None = None) -> list[DebitResult]:
        """All debits of a batch in one atomic server-side call (Lua), in order. With ``intent``: fenced by
        the shard lease and the projection's readiness, and the debited rows are recorded as the intent."""
        ...

    async def finish_batch(self, shard: int, slot: int, checksum: str, records: Sequence[tuple[str, str, str]]) -> None:
        """After the journal write of (shard, slot) is acknowledged: final idempotency records (account, key,
        result JSON), the intent dropped, the shard's last batch moved forward. Idempotent."""
        ...

    async def pending_intents(self, shard: int) -> list[PendingIntent]: ...

    async def replication_barrier(self) -> None:
        """Returns once everything written so far survives a failover of the store (a no-op for a store
        without replicas); raises WalletNotReplicated otherwise. Recovery calls it before it rolls an
        intent forward: an intent that a failover could still lose must not reach the journal."""
        ...

    async def claim_shard(self, owner: str, ttl_ms: int, shards: int, preferred: int = -1) -> ShardClaim | None: ...

    async def renew_shard(self, shard: int, owner: str, ttl_ms: int) -> bool:
        """Extends (``ttl_ms`` > 0) or releases (0) the lease; False if it is no longer ours."""
        ...

    async def journal_heads(self, shards: int) -> list[int]: ...

    async def intents_pending(self, shards: int) -> list[int]: ...

    async def shard_holders(self, shards: int) -> list[str | None]: ...

    async def epoch(self) -> str | None: ...

    async def set_epoch(self, epoch: str) -> None: ...

    async def set_fence(self, up: bool, token: str = "1", ttl_ms: int = 60_000) -> None:
        """Raises the repair fence holding ``token`` for ``ttl_ms``, or lowers it only if it still holds
        ``token``."""
        ...

    async def refresh_fence(self, token: str, ttl_ms: int = 60_000) -> bool: ...

    async def rebuild(self, state: WalletRebuild, fence: str = "1") -> None:
        """Writes ``state`` atomically, only while the fence holds ``fence`` (else WalletUnavailable)."""
        ...

    async def credit_batch(self, credits: Sequence[Credit]) -> list[bool]:
        """Applies each credit at most once; returns True where it was applied now (False = already)."""
        ...

    async def settle_liability(self, changes: Sequence[LiabilityChange]) -> list[bool]:
        """Sets each bet's liability state (released or counted) in one atomic call; a change already in
        effect does nothing (True where it changed a counter now). Refused (WalletUnavailable) while a
        repair fence is up, like credits."""
        ...

    async def compensate(self, debits: Sequence[Debit]) -> None:
        """Undo debits whose ledger write failed: refund, release liability/daily counters, forget the key."""
        ...

    async def abandon_batch(self, shard: int, slot: int, debits: Sequence[Debit]) -> None:
        """A journal batch the store certainly refused: ``compensate`` its debits and drop its intent, in one
        atomic step (a batch whose stakes were returned must never be rolled forward)."""
        ...

    async def finish_idempotent(self, records: Sequence[tuple[str, str, str]]) -> None:
        """Store the final result (JSON) of (account_id, idempotency_key, result_json)."""
        ...

    async def get_idempotent(self, keys: Sequence[tuple[str, str]]) -> list[str | None]: ...

    async def balances(self, account_ids: Sequence[str]) -> list[int]: ...

    async def set_balances(self, balances: dict[str, int]) -> None:
        """Reconciliation only: overwrite the projection with balances rebuilt from the ledger."""
        ...

    async def get_limits(self, account_id: str) -> AccountLimits: ...

    async def set_limits(self, account_id: str, limits: AccountLimits) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# Ledger (Cassandra): append-only, the source of truth.
# ---------------------------------------------------------------------------------------------------------


class LedgerError(Exception):
    """A ledger write whose outcome is unknown (it may or may not have landed): retry the same write."""


class JournalRejected(LedgerError):
    """The store refused a journal write: it certainly did not land."""


class Ledger(Protocol):
    async def append_bets(self, bets: Sequence[PlacedBet]) -> list[BaseException | None]:
        """Records placed bets (bet history PLACED row, by-event row, by-account row, stake ledger entry,
        idempotency row), each bet atomically (logged batch). Per-bet result: None = recorded."""
        ...

    async def append_entries(self, entries: Sequence[LedgerEntry]) -> None:
        """Appends money entries (deposits, payouts, reversals). Idempotent by entry id. Raises LedgerError."""
        ...

    # --- the bet journal (inplay.domain.journal) ---

    def with_journal(self, name: str) -> Ledger:
        """This ledger bound to the journal of one deployment (named by its wallet projection)."""
        ...

    async def claim_slot(self, shard: int, slot: int, claimant: str) -> bool:
        """Claims journal slot ``(shard, slot)`` for ``claimant``, once for good (compare-and-set): True if
        the slot is ``claimant``'s (now, or already), False if another claimant holds it. JournalRejected =
        the store refused the request (certainly not claimed); LedgerError = unknown (claim again: the same
        claimant is idempotent)."""
        ...

    async def write_journal(self, batch: JournalBatch, claimant: str = "") -> None:
        """One atomic single-partition write of the batch into its slot. With ``claimant``, the caller
        has claimed the slot for it (``claim_slot``); without, the batch's checksum claims it first. A slot
        claimed by another batch: JournalRejected, its rows untouched. JournalRejected = certainly not
        written, LedgerError = unknown (write the same batch again)."""
        ...

    async def read_journal(self, shard: int, slot: int) -> JournalBatch | None: ...

    def scan_journal(self) -> AsyncIterator[JournalBatch]: ...

    async def save_progress(self, shard: int, consumer: str, slot: int, at_ms: int) -> None: ...

    async def load_progress(self, shard: int, consumer: str) -> int: ...

    async def project_bets(self, bets: Sequence[PlacedBet]) -> None:
        """The views of journal bets (by event, by account, STAKE entry, PLACED history). Idempotent."""
        ...

    async def record_limits(self, account_id: str, limits: AccountLimits, at_ms: int) -> None: ...

    async def all_limits(self) -> dict[str, AccountLimits]: ...

    async def scan_balances(self) -> BalanceScan:
        """Balances and credit entry ids from one pass (see BalanceScan): the repair's source."""
        ...

    def scan_bet_history(self) -> AsyncIterator[BetEvent]:
        """Every bet history row (a full scan: the repair's view of which bets are settled)."""
        ...

    async def record_epoch(self, projection: str, epoch: str, at_ms: int) -> None: ...

    async def epochs(self, projection: str) -> list[str]: ...

    async def append_bet_events(self, events: Sequence[BetEvent]) -> None:
        """Appends bet history rows (settled, rolled back, ...). Idempotent by (bet_id, seq_key)."""
        ...

    async def get_bet(self, bet_id: str) -> PlacedBet | None: ...

    async def bet_history(self, bet_id: str) -> list[BetEvent]: ...

    async def list_account_bets(self, account_id: str, page_size: int, page_token: str) -> tuple[list[PlacedBet], str]:
        """Newest first. Returns (bets, next_page_token)."""
        ...

    def event_bets(self, event_id: str, page_size: int = 5000) -> AsyncIterator[list[PlacedBet]]:
        """Every bet placed with a leg on this event, in pages (all buckets of the by-event table)."""
        ...

    async def account_entries(self, account_id: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        """Oldest first. Returns (entries, next_page_token)."""
        ...

    async def account_balances(self, as_of_ms: int | None = None) -> dict[str, int]:
        """Σ entries per account, from the ledger alone (optionally only entries created <= as_of_ms)."""
        ...


# ---------------------------------------------------------------------------------------------------------
# Event bus (Kafka)
# ---------------------------------------------------------------------------------------------------------


@value
class BusMessage:
    topic: str
    key: str
    value: bytes


class EventBus(Protocol):
    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Enqueues messages (idempotent producer; per-key order kept). Delivery is confirmed by flush."""
        ...

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Waits until every enqueued message is acknowledged; raises if any delivery failed."""
        ...

    async def deliver(self, messages: Sequence[BusMessage], timeout_s: float = 10.0) -> None:
        """Publishes and waits for exactly these messages' acknowledgements; raises if one of THEM failed
        (another publisher's failure is never reported here)."""
        ...

    async def close(self) -> None: ...


# Topic names (partitioned by the key noted).
TOPIC_ODDS = "inplay.odds.v1"  # key: market_id
TOPIC_FEED_RAW = "inplay.feed.raw.v1"  # key: provider
TOPIC_BETS = "inplay.bets.v1"  # key: event_id of the first leg
TOPIC_SETTLEMENTS = "inplay.settlements.v1"  # key: event_id
TOPIC_RESULTS = "inplay.results.v1"  # key: event_id (result messages that trigger settlement)
TOPIC_MARKET_CHANGES = "inplay.market-changes.v1"  # key: market_id

__all__ = [
    "STICKY_REASONS",
    "TOPIC_BETS",
    "TOPIC_FEED_RAW",
    "TOPIC_MARKET_CHANGES",
    "TOPIC_ODDS",
    "TOPIC_RESULTS",
    "TOPIC_SETTLEMENTS",
    "AccountLimits",
    "AnsweredPrices",
    "BalanceScan",
    "BatchIntent",
    "BusMessage",
    "CacheWrite",
    "Credit",
    "Debit",
    "DebitResult",
    "DepositClaim",
    "DepositKeys",
    "EventBus",
    "FeedStateStore",
    "FeedStateView",
    "JournalRejected",
    "Ledger",
    "LedgerError",
    "LimitsStore",
    "LiveOddsCache",
    "MarketChange",
    "MarketStatus",
    "OddsCache",
    "OddsNotice",
    "OddsSubscription",
    "PendingIntent",
    "PriceWrite",
    "ProviderLiveness",
    "RepairOvertaken",
    "SentPrices",
    "ShardClaim",
    "StatusWrite",
    "WalletNotReplicated",
    "WalletRebuild",
    "WalletStore",
    "WalletUnavailable",
    "WriteResult",
]
