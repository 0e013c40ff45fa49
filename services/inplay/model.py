"""The internal model shared by every service: markets and prices, bets, ledger entries, settlement runs.

Money is always an ``int`` in minor units; odds are exact :class:`inplay.core.Odds` fractions. Timestamps
are integer milliseconds since the epoch (UTC) so that records are exact and comparable across processes.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import field

from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.core import BetState as BetState  # the one numbering of bet states lives in core
from inplay.valuetype import value


class MarketStatus(enum.IntEnum):
    """Matches ``inplay.type.v1.MarketStatus``."""

    UNSPECIFIED = 0
    ACTIVE = 1
    SUSPENDED = 2
    SETTLED = 3


@value
class SelectionPrice:
    selection_id: str
    name: str
    odds: Odds


@value
class MarketState:
    """The cached state of one market: what bets are checked against and what clients read."""

    market_id: str
    event_id: str
    sport: str
    market_type: str
    name: str
    in_play: bool
    status: MarketStatus
    status_reason: str
    selections: tuple[SelectionPrice, ...]
    # Monotonic per market; a cache write with an older or equal version is dropped.
    version: int
    # When the provider last confirmed these prices (ms since epoch).
    updated_at_ms: int
    # Which provider the prices came from.
    source: str = ""

    def selection(self, selection_id: str) -> SelectionPrice | None:
        for sel in self.selections:
            if sel.selection_id == selection_id:
                return sel
        return None


@value
class MarketChange:
    """One entry of the append-only price/status change log."""

    market_id: str
    selection_id: str
    kind: str  # "PRICE" | "STATUS"
    old_value: str
    new_value: str
    source: str
    reason: str
    version: int
    at_ms: int


@value
class Leg:
    market_id: str
    selection_id: str
    odds: Odds
    event_id: str = ""


@value
class BetRequest:
    """A bet slip as submitted by an (already authenticated) account."""

    account_id: str
    legs: tuple[Leg, ...]
    stake_minor: int
    currency: str
    policy: AcceptancePolicy
    idempotency_key: str


@value
class PlacedBet:
    """An accepted bet: what the ledger stores at placement (legs at the accepted prices)."""

    bet_id: str
    account_id: str
    legs: tuple[Leg, ...]
    stake_minor: int
    currency: str
    potential_return_minor: int
    policy: AcceptancePolicy
    idempotency_key: str
    placed_at_ms: int

    @property
    def event_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(leg.event_id for leg in self.legs))


class EntryKind(enum.IntEnum):
    """Matches ``inplay.wallet.v1.EntryKind``."""

    UNSPECIFIED = 0
    DEPOSIT = 1
    STAKE = 2
    STAKE_REVERSAL = 3
    PAYOUT = 4
    PAYOUT_REVERSAL = 5
    WITHDRAWAL = 6


@value
class LedgerEntry:
    """One append-only money movement of an account. Signed: credits > 0, debits < 0.

    ``entry_id`` is deterministic for everything that may be retried (stake of bet X, payout of bet X in
    run R, deposit with key K), so writing the same entry twice stores one row.
    """

    entry_id: str
    account_id: str
    kind: EntryKind
    amount_minor: int
    currency: str
    bet_id: str
    reference: str
    created_at_ms: int


@value
class BetEvent:
    """One append-only state change of a bet (PLACED, SETTLED, ROLLED_BACK, ...)."""

    bet_id: str
    seq_key: str  # deterministic ordering/identity key within the bet's history
    kind: str
    status: BetState
    amount_minor: int
    run_id: str
    at_ms: int
    # Per-leg outcomes recorded by a settlement run (accumulator legs may settle one at a time).
    leg_outcomes: tuple[LegOutcome, ...] = field(default_factory=tuple)


class RunKind(enum.IntEnum):
    UNSPECIFIED = 0
    SETTLE = 1
    ROLLBACK = 2


class RunState(enum.IntEnum):
    UNSPECIFIED = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3


# The bet journal's storage shape (inplay.domain.journal states its guarantees).


@value
class JournalRow:
    pos: int
    kind: str
    body: str


@value
class JournalBatch:
    shard: int
    slot: int
    prev_slot: int
    prev_checksum: str
    committed_at_ms: int
    rows: tuple[JournalRow, ...]
    # As read back from the store (not part of the checksum): what the audit compares.
    stored_checksum: str = ""
    stored_row_count: int = 0

    @property
    def checksum(self) -> str:
        return batch_checksum(self)


def batch_checksum(batch: JournalBatch) -> str:
    digest = hashlib.sha256()
    header = (
        f"{batch.prev_checksum}|{batch.shard}|{batch.slot}|{batch.prev_slot}|{batch.committed_at_ms}|{len(batch.rows)}"
    )
    digest.update(header.encode())
    for row in batch.rows:
        digest.update(f"\n{row.pos}|{row.kind}|".encode())
        digest.update(row.body.encode())
    return digest.hexdigest()
