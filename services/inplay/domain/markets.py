"""Market lifecycle and the append-only change log.

Lifecycle: ACTIVE -> SUSPENDED -> ACTIVE (reopened) -> SETTLED (terminal). Status changes go through the
odds cache's atomic status script (version bump + publish); prices go through the feed pipeline. Every
change of price or status is recorded here with its source and reason: in the :class:`MarketChangeLog`
(Cassandra ``market_changes``, migration 0003) and on Kafka ``inplay.market-changes.v1`` (key market id).

Suspension reasons (``MarketState.status_reason``):

- feed: ``BET_STOP``, ``FEED_LAG``, ``PRICE_JUMP``, ``PROVIDER_DISCONNECT``, ``GOAL``, ``RED_CARD``,
  ``VAR`` — cleared by fresh prices from the active provider (newer than the suspension);
- ``MATCH_END`` — held: later prices keep it, no other suspension replaces it (a disconnect, kill switch or
  goal would otherwise be lifted by the next price); only settlement (or ``ResumeMarket``) changes it;
- ``OPERATOR`` — sticky: only ``AdminService.ResumeMarket`` reopens the market;
- ``KILL_SWITCH`` — held while the event's or sport's kill switch is engaged (even if prices arrive);
  after release, fresh prices reopen the market.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from inplay.core import Odds, encode_odds_records
from inplay.domain.feed import fastjson
from inplay.errors import FailedPrecondition, InvalidArgument, NotFound
from inplay.model import MarketChange, MarketState, MarketStatus
from inplay.ports import (
    TOPIC_MARKET_CHANGES,
    TOPIC_ODDS,
    BusMessage,
    EventBus,
    LiveOddsCache,
    StatusWrite,
    WriteResult,
)

log = logging.getLogger("inplay.markets")

# Feed suspension reasons.
BET_STOP = "BET_STOP"
FEED_LAG = "FEED_LAG"
PRICE_JUMP = "PRICE_JUMP"
PROVIDER_DISCONNECT = "PROVIDER_DISCONNECT"
# The producer was down (silent past INPLAY_FEED_PRODUCER_DOWN_MS): held until its recovery snapshot is complete.
PROVIDER_DOWN = "PROVIDER_DOWN"
MATCH_END = "MATCH_END"
INCIDENTS = ("GOAL", "RED_CARD", "VAR")
OPERATOR = "OPERATOR"
KILL_SWITCH = "KILL_SWITCH"
SETTLED = "SETTLED"

SCOPES = ("event", "sport")
CHUNK = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MarketChangeLog(Protocol):
    """Append-only log of price/status changes, per market, oldest first."""

    async def append(self, changes: Sequence[MarketChange]) -> None:
        """Idempotent per change (market, version, at, kind, selection): a retry stores the same rows."""
        ...

    async def list(self, market_id: str, page_size: int, page_token: str) -> tuple[list[MarketChange], str]:
        """Returns (changes, next_page_token); the token is empty on the last page."""
        ...


def status_text(status: MarketStatus, reason: str) -> str:
    return status.name if not reason or status != MarketStatus.SUSPENDED else f"{status.name}:{reason}"


# ``status.name`` is an enum descriptor call (~1 µs under cProfile, three times per update): a table instead.
_STATUS_NAME = {s: s.name for s in MarketStatus}


# Change-log text per price ("2.10 (21/10)"): a feed revisits the same ladder prices, and the display
# rounding is a core call. Bounded: cleared when full.
_ODDS_TEXT: dict[tuple[int, int], str] = {}
_ODDS_TEXT_MAX = 65_536


def odds_text(odds: Odds) -> str:
    key = (odds.num, odds.den)
    text = _ODDS_TEXT.get(key)
    if text is None:
        if len(_ODDS_TEXT) >= _ODDS_TEXT_MAX:
            _ODDS_TEXT.clear()
        text = _ODDS_TEXT[key] = f"{odds.decimal_str()} ({odds.num}/{odds.den})"
    return text


def changes_between(
    before: MarketState | None, after: MarketState, source: str, reason: str, at_ms: int
) -> list[MarketChange]:
    """The log entries for one applied write: one STATUS entry if the status changed, one PRICE entry per
    selection whose odds changed (or appeared)."""
    out: list[MarketChange] = []
    if before is not None and before.status == after.status and before.status_reason == after.status_reason:
        old_status = new_status = ""  # the same status (the usual price write): no text to compare
    else:
        old_status = status_text(before.status, before.status_reason) if before is not None else ""
        new_status = status_text(after.status, after.status_reason)
    if old_status != new_status:
        out.append(
            MarketChange(
                after.market_id,
                "",
                "STATUS",
                old_status,
                new_status,
                source,
                reason or after.status_reason or "FEED",
                after.version,
                at_ms,
            )
        )
    olds = before.selections if before is not None else ()
    n_old = len(olds)
    for k, sel in enumerate(after.selections):
        # The same layout before and after (the usual case): the old price at the same position.
        old = olds[k] if k < n_old and olds[k].selection_id == sel.selection_id else None
        if old is None and before is not None:
            old = before.selection(sel.selection_id)
        if old is None or old.odds.num != sel.odds.num or old.odds.den != sel.odds.den:
            out.append(
                MarketChange(
                    after.market_id,
                    sel.selection_id,
                    "PRICE",
                    "" if old is None else odds_text(old.odds),
                    odds_text(sel.odds),
                    source,
                    reason or "FEED",
                    after.version,
                    at_ms,
                )
            )
    return out


# One encoder for every message: json.dumps with keyword arguments builds a new encoder per call.
_compact = fastjson.dumps


def odds_json(state: MarketState, changes: Sequence[MarketChange] = ()) -> bytes:
    """The ``inplay.odds.v1`` payload of one applied state (price or status change), with the change-log
    entries of that write (source and reason each): one record per update carries both."""
    return _compact(
        {
            "market_id": state.market_id,
            "event_id": state.event_id,
            "sport": state.sport,
            "market_type": state.market_type,
            "status": _STATUS_NAME[state.status],
            "status_reason": state.status_reason,
            "version": state.version,
            "selections": [[s.selection_id, s.odds.num, s.odds.den] for s in state.selections],
            "updated_at_ms": state.updated_at_ms,
            "source": state.source,
            "changes": changes if isinstance(changes, list) else list(changes),  # dataclasses: see fastjson
        }
    )


def changes_to_json(changes: Sequence[MarketChange]) -> bytes:
    """One Kafka message per market write: ``{"market_id", "version", "at_ms", "changes": [...]}``."""
    first = changes[0]
    return _compact(
        {
            "market_id": first.market_id,
            "version": first.version,
            "at_ms": first.at_ms,
            "changes": changes if isinstance(changes, list) else list(changes),
        }
    )


class ChangeRecorder:
    """Writes change entries to the log and to Kafka, one call each per batch."""

    def __init__(
        self, log_store: MarketChangeLog, bus: EventBus | None, topic_prefix: str = "", *, log_from_bus: bool = False
    ) -> None:
        self.store = log_store
        self._bus = bus
        # ``log_from_bus``: the feed pipeline leaves its change rows to the change-log writer, which derives
        # them from the Kafka records (inplay.domain.feed.changelog); only possible with a bus.
        self.feed_logs_inline = bus is None or not log_from_bus
        self._topic = topic_prefix + TOPIC_MARKET_CHANGES
        self._odds_topic = topic_prefix + TOPIC_ODDS

    def bus_messages(self, changes: Sequence[MarketChange]) -> list[BusMessage]:
        """The Kafka messages of ``changes`` (one per market write, in order); none without a bus."""
        if self._bus is None or not changes:
            return []
        groups: dict[tuple[str, int, int], list[MarketChange]] = {}
        for c in changes:
            groups.setdefault((c.market_id, c.version, c.at_ms), []).append(c)
        return [BusMessage(self._topic, key[0], changes_to_json(group)) for key, group in groups.items()]

    def odds_messages(self, states: Sequence[MarketState], changes: Sequence[MarketChange] = ()) -> list[BusMessage]:
        """One ``inplay.odds.v1`` record per applied state (status-only changes included) carrying the change
        entries of that write; entries with no state of their own (a provider switch's ``PROVIDER`` rows,
        stamped with the version they happened at) go to ``inplay.market-changes.v1``. Order: the states'."""
        if self._bus is None:
            return []
        by_write: dict[tuple[str, int], list[MarketChange]] = {}
        apart: list[MarketChange] = []
        for c in changes:
            if c.kind == "PROVIDER":  # not a write of the market: always on its own topic, whatever the chunk
                apart.append(c)
            else:
                by_write.setdefault((c.market_id, c.version), []).append(c)
        groups = [by_write.pop((st.market_id, st.version), []) for st in states]
        values = encode_odds_records(states, [_STATUS_NAME[st.status] for st in states], groups)
        if values is None:  # a number beyond 64 bits: the reference encoder (the same bytes otherwise)
            values = [odds_json(st, group) for st, group in zip(states, groups, strict=True)]
        topic = self._odds_topic
        out = [BusMessage(topic, st.market_id, v) for st, v in zip(states, values, strict=True)]
        return out + self.bus_messages(apart + [c for group in by_write.values() for c in group])

    async def record(self, changes: Sequence[MarketChange], states: Sequence[MarketState] = ()) -> None:
        """Change entries to Kafka and the log; ``states``: the applied states, to the odds topic."""
        if not changes and not states:
            return
        if self._bus is not None:
            await self._bus.publish(self.odds_messages(states, changes))
        if changes:
            await self.store.append(changes)


class MarketControl:
    """Manual and automatic status changes: suspend / resume / settle, kill switches. Used by the feed
    pipeline and watchdog, AdminService and the settlement engine (``settle``)."""

    def __init__(
        self,
        cache: LiveOddsCache,
        recorder: ChangeRecorder,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.cache = cache
        self.recorder = recorder
        self._clock = clock

    async def _apply(
        self,
        writes: Sequence[StatusWrite],
        source: str,
        note: str,
        collect: list[MarketChange] | None = None,
    ) -> list[WriteResult]:
        """``collect``: the caller records the change entries (the feed pipeline keeps them with the rest of
        its chunk, in order, and retries them apart from the cache write); else they are recorded here."""
        results: list[WriteResult] = []
        for start in range(0, len(writes), CHUNK):
            chunk = writes[start : start + CHUNK]
            part = await self.cache.write_status(chunk)
            now = self._clock()
            changes: list[MarketChange] = []
            for res in part:
                if res.applied and res.after is not None:
                    changes += changes_between(res.before, res.after, source, note, now)
            if collect is not None:
                collect += changes
            else:
                await self.recorder.record(changes, [r.after for r in part if r.applied and r.after is not None])
            results += part
        applied = [w.market_id for w, r in zip(writes, results, strict=True) if r.applied]
        if applied:
            log.info(
                "market status changed",
                extra={
                    "markets": applied[:50],
                    "count": len(applied),
                    "source": source,
                    "reason": note,
                    "status": writes[0].status.name,
                },
            )
        return results

    async def suspend(
        self,
        market_ids: Sequence[str],
        reason: str,
        source: str,
        note: str = "",
        source_ts_ms: int = 0,
        provider_ts_ms: int = 0,
        collect: list[MarketChange] | None = None,
    ) -> list[WriteResult]:
        """``source_ts_ms`` > 0 raises the market watermark; with ``provider_ts_ms`` it also raises the
        watermark of provider ``source`` (its own clock)."""
        provider = source if provider_ts_ms else ""
        writes = [
            StatusWrite(m, MarketStatus.SUSPENDED, reason, source_ts_ms, (), provider, provider_ts_ms)
            for m in market_ids
        ]
        return await self._apply(writes, source, note or reason, collect)

    async def resume(
        self, market_ids: Sequence[str], source: str, note: str = "", only_reasons: Sequence[str] = ()
    ) -> list[WriteResult]:
        writes = [StatusWrite(m, MarketStatus.ACTIVE, "", 0, tuple(only_reasons)) for m in market_ids]
        return await self._apply(writes, source, note or "RESUME")

    async def settle(self, market_ids: Sequence[str], source: str = "settlement", note: str = "") -> int:
        """Marks markets SETTLED (terminal: later prices are rejected). Returns how many changed now."""
        results = await self._apply(
            [StatusWrite(m, MarketStatus.SETTLED, SETTLED) for m in market_ids], source, note or SETTLED
        )
        return sum(1 for r in results if r.applied)

    # --- operator actions (AdminService) -------------------------------------------------------------------

    async def operator_suspend(self, market_id: str, subject: str, note: str) -> None:
        res = (await self.suspend([market_id], OPERATOR, f"operator:{subject}", note or OPERATOR))[0]
        if res.outcome == "NOT_FOUND":
            raise NotFound(f"market {market_id} not found")
        if res.outcome == "SETTLED":
            raise FailedPrecondition(f"market {market_id} is settled", reason="MARKET_SETTLED")

    async def operator_resume(self, market_id: str, subject: str, note: str) -> None:
        res = (await self.resume([market_id], f"operator:{subject}", note or "OPERATOR_RESUME"))[0]
        if res.outcome == "NOT_FOUND":
            raise NotFound(f"market {market_id} not found")
        if res.outcome == "SETTLED":
            raise FailedPrecondition(f"market {market_id} is settled", reason="MARKET_SETTLED")
        if res.outcome == "KILL_SWITCH":
            raise FailedPrecondition(
                f"market {market_id} is under an engaged kill switch", reason="KILL_SWITCH_ENGAGED"
            )

    async def set_kill_switch(self, scope: str, target: str, engaged: bool, source: str, note: str) -> int:
        """Engaged: every market in scope is suspended (KILL_SWITCH) and stays so while engaged, whatever
        the feed sends. Released: markets reopen on fresh prices. Returns the markets in scope."""
        if scope not in SCOPES or not target:
            raise InvalidArgument("kill switch needs a scope (event|sport) and a target", reason="BAD_SCOPE")
        market_ids = await self.cache.set_kill_switch(scope, target, engaged)
        log.warning(
            "kill switch %s",
            "engaged" if engaged else "released",
            extra={
                "scope": scope,
                "target": target,
                "source": source,
                "reason": note,
                "markets": len(market_ids),
            },
        )
        if engaged:
            await self.suspend(market_ids, KILL_SWITCH, source, note or KILL_SWITCH)
        return len(market_ids)


__all__ = [
    "BET_STOP",
    "FEED_LAG",
    "INCIDENTS",
    "KILL_SWITCH",
    "MATCH_END",
    "OPERATOR",
    "PRICE_JUMP",
    "PROVIDER_DISCONNECT",
    "ChangeRecorder",
    "MarketChangeLog",
    "MarketControl",
    "changes_between",
]
