"""Ports of the settlement domain: its own append-only store, the per-event lock and the results source."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from inplay.domain.settlement.model import BetSettlementRow, Checkpoint, RunMark, RunRecord, RunView
from inplay.model import MarketState


class SettlementStore(Protocol):
    """Append-only store of runs (headers + state marks), checkpoints and per-run bet rows."""

    async def create_run(self, run: RunRecord) -> None:
        """Writes the run header (deterministic row: a retry rewrites the same values)."""
        ...

    async def mark_run(self, event_id: str, mark: RunMark) -> None: ...

    async def event_runs(self, event_id: str) -> list[RunView]:
        """Every run of the event, oldest first (by start time, then run id)."""
        ...

    async def append_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None: ...

    async def checkpoints(self, run_id: str, *, with_bet_ids: bool = False) -> list[Checkpoint]:
        """Every checkpoint row of a run (with the bet ids they cover only if asked: they are large)."""
        ...

    async def append_bet_rows(self, rows: Sequence[BetSettlementRow]) -> None:
        """Per-run bet rows, idempotent by (run_id, bet_id)."""
        ...

    async def bet_rows(self, run_id: str, bet_ids: Sequence[str]) -> dict[str, BetSettlementRow]:
        """The rows of a run already written for some bets (by bet id; missing ones absent)."""
        ...

    def run_bet_rows(self, run_id: str, page_size: int = 5000) -> AsyncIterator[list[BetSettlementRow]]:
        """Every bet row of a run, in pages."""
        ...

    async def put_request(self, event_id: str, request_id: str, payload: str) -> None:
        """Records what a request decided (for ResettleEvent: the run it rolls back) before acting."""
        ...

    async def get_request(self, event_id: str, request_id: str) -> str | None: ...

    async def count_event_bets(self, event_id: str) -> int | None:
        """Number of bets of an event (progress total), or None if the store cannot count."""
        ...


class Lease(Protocol):
    """A held lock. ``fence`` grows with every acquisition of the same key (fencing token)."""

    @property
    def fence(self) -> int: ...

    async def check(self) -> bool:
        """True if this lease still holds the lock (and extends it)."""
        ...

    async def release(self) -> None: ...


class LockService(Protocol):
    async def acquire(self, key: str, ttl_ms: int) -> Lease | None:
        """Takes the lock if free (None if someone else holds it)."""
        ...


class MarketCatalog(Protocol):
    """The markets results are checked against (the odds cache: ``OddsCache.get_markets``)."""

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]: ...


class BetWatermark(Protocol):
    """The bet journal's projection watermark (built by the bet journal work, issue 14).

    ``wait_visible(event_id, closed_at_ms)`` returns once every bet accepted on the event before
    ``closed_at_ms`` (the moment the run's markets were closed for betting) is readable through
    ``Ledger.event_bets``; a run calls it after closing its markets and before reading any bet."""

    async def wait_visible(self, event_id: str, closed_at_ms: int) -> None: ...


class ResultRecord(Protocol):
    """One message of the results topic (the Kafka client's message type has these methods)."""

    def topic(self) -> str: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def value(self) -> bytes | None: ...


class ResultsSource(Protocol):
    """A member of the results consumer group. Blocking calls (the consumer runs them in a thread); any
    error means "restart me": the consumer closes this source and builds a new one (which resumes from
    the committed offsets)."""

    def consume(self, max_messages: int, timeout_s: float) -> Sequence[ResultRecord]:
        """Up to ``max_messages`` messages (informational errors such as end of partition skipped)."""
        ...

    def commit(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        """Commits (topic, partition, next offset) synchronously."""
        ...

    def lag(self) -> int | None:
        """Σ (high watermark - position) over the assigned partitions, None if unknown (best effort)."""
        ...

    def close(self) -> None: ...
