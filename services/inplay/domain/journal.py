"""The bet journal: the one commit point of the bet path (pure: ids, row codec, checksums).

Guarantees (what the rest of the system may rely on):

1. **One write commits a group.** A group of accepted bets is ONE journal batch: one partition
   ``(shard, slot)`` of the ``bet_journal`` table written as one single-partition batch, which Cassandra
   applies as one mutation (all rows or none, isolated). A bet exists iff its journal row exists.
2. **Deterministic.** Every row of a batch (its key, its content, its checksum) is fixed before the first
   write attempt and recorded as an *intent* in the wallet projection, atomically with the debit. A write
   whose outcome is unknown is simply written again (the same bytes); a crashed writer's intent is
   written by whoever recovers the shard. Nothing is ever refunded on a guess.
3. **Positional ids.** A bet id names its journal position (shard, slot, pos), so GetBet reads one row of
   one partition, right after the commit, without waiting for any view.
4. **Tamper evidence.** Each batch carries ``checksum = sha256(prev_checksum, header, rows)`` chained to
   the previous batch of its shard (``prev_slot``), so a row changed, removed or inserted in place breaks
   the chain at that batch (``inplay audit verify``).
5. **Views are projections.** ``bets_by_event``, ``bets_by_account``, ``ledger_by_account`` (STAKE),
   ``bet_history`` (PLACED) and the BetPlaced events are derived from the journal by the projector,
   idempotently, behind a per-shard checkpoint; they can be rebuilt from it at any time.

One writer per shard at a time (a fenced lease in the wallet store): slots of a shard are strictly
increasing and a slot is committed by exactly one batch content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inplay.core import AcceptancePolicy, Odds
from inplay.model import (
    BetEvent,
    BetRequest,
    BetState,
    EntryKind,
    JournalBatch,
    JournalRow,
    LedgerEntry,
    Leg,
    PlacedBet,
    batch_checksum,
)

ROW_BET = "BET"
# Bet ids of the journal: "J" + journal tag (8 hex) + shard (4 hex) + slot (12 hex) + pos (4 hex). The tag
# (a hash of the journal's name) keeps ids of two deployments sharing a keyspace apart.
JOURNAL_ID_PREFIX = "J"
_ID_LEN = 1 + 8 + 4 + 12 + 4
MAX_SHARDS = 0xFFFF
MAX_BATCH_ROWS = 0xFFFF
GENESIS_CHECKSUM = "0" * 64
_HEX = frozenset("0123456789abcdef")


def journal_tag(journal: str) -> str:
    return hashlib.sha256(journal.encode()).hexdigest()[:8]


def journal_bet_id(shard: int, slot: int, pos: int, tag: str = "00000000") -> str:
    return f"{JOURNAL_ID_PREFIX}{tag}{shard:04x}{slot:012x}{pos:04x}"


def parse_journal_bet_id(bet_id: str) -> tuple[str, int, int, int] | None:
    """(tag, shard, slot, pos) of a journal bet id, or None for any other string (e.g. pre-journal ids)."""
    if len(bet_id) != _ID_LEN or not bet_id.startswith(JOURNAL_ID_PREFIX) or not _HEX.issuperset(bet_id[1:]):
        return None
    d = bet_id[1:]
    return d[0:8], int(d[8:12], 16), int(d[12:24], 16), int(d[24:28], 16)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    shard: int
    slot: int
    problem: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    batches: int
    rows: int
    shards: int
    # The first broken link of each broken shard (empty = every chain verifies).
    breaks: tuple[ChainBreak, ...]


def verify_chains(batches: Iterable[JournalBatch]) -> ChainReport:
    """Checks every shard's chain: each batch's stored checksum is the checksum of its content, its row
    count matches, and it links to the previous existing batch of its shard (slot and checksum). Reports
    the first broken link per shard."""
    by_shard: dict[int, list[JournalBatch]] = {}
    rows = 0
    for batch in batches:
        by_shard.setdefault(batch.shard, []).append(batch)
        rows += len(batch.rows)
    breaks = []
    for _, chain in sorted(by_shard.items()):
        problem = _first_break(sorted(chain, key=lambda b: b.slot))
        if problem is not None:
            breaks.append(problem)
    return ChainReport(sum(len(c) for c in by_shard.values()), rows, len(by_shard), tuple(breaks))


def _first_break(chain: list[JournalBatch]) -> ChainBreak | None:
    prev_slot, prev_checksum = 0, GENESIS_CHECKSUM
    for batch in chain:
        if batch.stored_checksum != batch.checksum:
            return ChainBreak(batch.shard, batch.slot, "content does not match its checksum (changed in place)")
        if batch.stored_row_count != len(batch.rows):
            return ChainBreak(
                batch.shard, batch.slot, f"{batch.stored_row_count} rows recorded, {len(batch.rows)} found"
            )
        if (batch.prev_slot, batch.prev_checksum) != (prev_slot, prev_checksum):
            return ChainBreak(
                batch.shard, batch.slot, f"links to batch {batch.prev_slot}, but the previous batch is {prev_slot}"
            )
        prev_slot, prev_checksum = batch.slot, batch.stored_checksum
    return None


# --- the bet codec (journal rows, idempotency records, BetPlaced events share it) -------------------------


def bet_to_json(bet: PlacedBet) -> dict[str, object]:
    return {
        "id": bet.bet_id,
        "acc": bet.account_id,
        "legs": [[lg.market_id, lg.selection_id, lg.odds.num, lg.odds.den, lg.event_id] for lg in bet.legs],
        "stake": bet.stake_minor,
        "cur": bet.currency,
        "ret": bet.potential_return_minor,
        "pol": int(bet.policy),
        "key": bet.idempotency_key,
        "at": bet.placed_at_ms,
    }


def bet_from_json(data: dict[str, Any]) -> PlacedBet:
    return PlacedBet(
        bet_id=str(data["id"]),
        account_id=str(data["acc"]),
        legs=tuple(
            Leg(market_id=str(m), selection_id=str(s), odds=Odds(int(n), int(d)), event_id=str(e))
            for m, s, n, d, e in data["legs"]
        ),
        stake_minor=int(data["stake"]),
        currency=str(data["cur"]),
        potential_return_minor=int(data["ret"]),
        policy=AcceptancePolicy(int(data["pol"])),
        idempotency_key=str(data["key"]),
        placed_at_ms=int(data["at"]),
    )


def bet_row_body(bet: PlacedBet, slip_hash: str) -> str:
    """A BET row: the whole bet plus the hash of the slip that placed it (every view is rebuilt from it)."""
    data = bet_to_json(bet)
    data["h"] = slip_hash
    return json.dumps(data, separators=(",", ":"))


def decode_bet_row(body: str) -> tuple[PlacedBet, str]:
    data = json.loads(body)
    return bet_from_json(data), str(data.get("h", ""))


# --- the rows a journal bet projects (the Cassandra and memory ledgers share them) ---------------------

# Sorts before every settlement key ("<13-digit ms>:<run_id>"): '-' < '0'.
PLACED_SEQ_KEY = "0000-placed"


def stake_entry(bet: PlacedBet) -> LedgerEntry:
    """The ledger row of a bet's stake (deterministic id and timestamp: a rewrite is the same row)."""
    return LedgerEntry(
        entry_id=f"stake:{bet.bet_id}",
        account_id=bet.account_id,
        kind=EntryKind.STAKE,
        amount_minor=-bet.stake_minor,
        currency=bet.currency,
        bet_id=bet.bet_id,
        reference=bet.idempotency_key,
        created_at_ms=bet.placed_at_ms,
    )


def placed_event(bet: PlacedBet) -> BetEvent:
    """The first history row of a bet. Journal bets do not store it (it is the journal row itself):
    readers prepend it with :func:`with_placed`."""
    return BetEvent(
        bet_id=bet.bet_id,
        seq_key=PLACED_SEQ_KEY,
        kind="PLACED",
        status=BetState.OPEN,
        amount_minor=bet.stake_minor,
        run_id="",
        at_ms=bet.placed_at_ms,
    )


def with_placed(bet: PlacedBet, history: list[BetEvent]) -> list[BetEvent]:
    """A bet's full history: the stored rows, with the PLACED row first (synthesized when not stored)."""
    if any(ev.kind == "PLACED" for ev in history):
        return history
    return [placed_event(bet), *history]


def slip_hash(req: BetRequest) -> str:
    """What the client asked for under an idempotency key (legs as seen, stake, currency, policy): a retry
    must send the same slip; the same key with a different slip is IDEMPOTENCY_KEY_REUSED."""
    canonical = json.dumps(
        [
            [[lg.market_id, lg.selection_id, lg.odds.num, lg.odds.den] for lg in req.legs],
            req.stake_minor,
            req.currency,
            int(req.policy),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


__all__ = [
    "GENESIS_CHECKSUM",
    "PLACED_SEQ_KEY",
    "ROW_BET",
    "ChainBreak",
    "ChainReport",
    "JournalBatch",
    "JournalRow",
    "batch_checksum",
    "bet_from_json",
    "bet_row_body",
    "bet_to_json",
    "decode_bet_row",
    "journal_bet_id",
    "journal_tag",
    "parse_journal_bet_id",
    "placed_event",
    "slip_hash",
    "stake_entry",
    "verify_chains",
    "with_placed",
]
