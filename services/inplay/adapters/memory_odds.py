"""In-memory twins of the odds cache, the feed mapping store and the market change log (embedded demo,
unit tests of pure logic). Same semantics as :mod:`inplay.adapters.redis_odds`: versions assigned per
market, provider-timestamp watermark, kill switches, sticky operator suspension, publish on every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from inplay import pagetoken
from inplay.model import MarketChange, MarketState, MarketStatus
from inplay.ports import (
    AnsweredPrices,
    CacheWrite,
    FeedStateView,
    OddsNotice,
    PriceWrite,
    ProviderLiveness,
    StatusWrite,
    WriteResult,
)

SEEN_WINDOW = 4096


class MemoryOddsCache:
    def __init__(self) -> None:
        self._markets: dict[str, MarketState] = {}
        self._watermark: dict[str, int] = {}
        # (market, provider) -> newest provider timestamp applied, by that provider's own clock.
        self._provider_wm: dict[tuple[str, str], int] = {}
        self._by_event: dict[str, set[str]] = {}
        self._by_sport: dict[str, set[str]] = {}
        self._kill: set[tuple[str, str]] = set()
        self._subs: list[MemoryOddsSubscription] = []
        # Shared feed state (as in Redis): provider liveness, duplicate windows, active provider per event.
        self._feed_prov: dict[str, ProviderLiveness] = {}
        self._feed_seen: dict[str, dict[tuple[int, int], int]] = {}
        self._routes: dict[str, str] = {}
        # Every state stored is published at once here (like the Redis adapter's local echo).
        self.local_listeners: list[Callable[[MarketState], None]] = []

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.close()

    # --- reads ---------------------------------------------------------------------------------------------

    async def get_markets(self, market_ids: Sequence[str]) -> list[MarketState | None]:
        return [self._markets.get(m) for m in market_ids]

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        return [self._markets[m] for m in sorted(self._by_event.get(event_id, ()))]

    async def markets_in_scope(self, scope: str, target: str) -> list[str]:
        index = self._by_event if scope == "event" else self._by_sport
        return sorted(index.get(target, ()))

    # --- writes --------------------------------------------------------------------------------------------

    def _store(self, state: MarketState, watermark: int, correction: bool = False) -> None:
        self._markets[state.market_id] = state
        self._watermark[state.market_id] = watermark
        self._by_event.setdefault(state.event_id, set()).add(state.market_id)
        self._by_sport.setdefault(state.sport, set()).add(state.market_id)
        for listener in self.local_listeners:
            listener(state)
        notice = OddsNotice(state, correction)
        for sub in self._subs:
            sub.deliver(notice)

    def _killed(self, event_id: str, sport: str) -> bool:
        return ("event", event_id) in self._kill or ("sport", sport) in self._kill

    async def put_markets(self, markets: Sequence[MarketState]) -> list[CacheWrite]:
        out = []
        for m in markets:
            cur = self._markets.get(m.market_id)
            if cur is not None and m.version <= cur.version:
                out.append(CacheWrite(False, cur.version))
                continue
            self._store(m, m.updated_at_ms)
            out.append(CacheWrite(True, m.version))
        return out

    async def send_prices(self, writes: Sequence[PriceWrite]) -> AnsweredPrices:
        """Applied at once (in memory the call and its answer are one step): calls run in the order sent."""
        return AnsweredPrices(await self.write_prices(writes))

    async def write_prices(self, writes: Sequence[PriceWrite]) -> list[WriteResult]:
        out = []
        for w in writes:
            cur = self._markets.get(w.market_id)
            if cur is not None and cur.status == MarketStatus.SETTLED:
                out.append(WriteResult("SETTLED", cur, None))
                continue
            if w.route_primary and self._routes.get(w.event_id, w.route_primary) != w.source:
                out.append(WriteResult("STANDBY", cur, None))
                continue
            pts = w.provider_ts_ms or w.source_ts_ms
            pwm = self._provider_wm.get((w.market_id, w.source), 0)
            # a correction may re-use the corrected price's time (equal: applied)
            if w.source_ts_ms < self._watermark.get(w.market_id, 0) or pts < pwm or (pts == pwm and not w.correction):
                out.append(WriteResult("STALE", cur, None))
                continue
            self._provider_wm[(w.market_id, w.source)] = pts
            if cur is not None and cur.status == MarketStatus.SUSPENDED and cur.status_reason == "MATCH_END":
                status, reason = MarketStatus.SUSPENDED, "MATCH_END"  # held until settlement
            elif self._killed(w.event_id, w.sport):
                status, reason = MarketStatus.SUSPENDED, "KILL_SWITCH"
            elif cur is not None and cur.status == MarketStatus.SUSPENDED and cur.status_reason == "OPERATOR":
                status, reason = MarketStatus.SUSPENDED, "OPERATOR"
            elif w.suspend_reason:
                status, reason = MarketStatus.SUSPENDED, w.suspend_reason
            else:
                status, reason = MarketStatus.ACTIVE, ""
            new = MarketState(
                market_id=w.market_id,
                event_id=w.event_id,
                sport=w.sport,
                market_type=w.market_type,
                name=w.name,
                in_play=w.in_play,
                status=status,
                status_reason=reason,
                selections=w.selections,
                version=(cur.version if cur is not None else 0) + 1,
                updated_at_ms=w.updated_at_ms,
                source=w.source,
            )
            self._store(new, w.source_ts_ms, w.correction)
            out.append(WriteResult("APPLIED", cur, new))
        return out

    async def write_status(self, writes: Sequence[StatusWrite]) -> list[WriteResult]:
        out = []
        for w in writes:
            cur = self._markets.get(w.market_id)
            if cur is None:
                if w.status == MarketStatus.SUSPENDED:  # not priced yet: a bet stop still raises the watermarks
                    self._raise_watermarks(w)
                out.append(WriteResult("NOT_FOUND", None, None))
                continue
            self._raise_watermarks(w)
            outcome = "APPLIED"
            status, reason = cur.status, cur.status_reason
            if cur.status == MarketStatus.SETTLED:
                outcome = "UNCHANGED" if w.status == MarketStatus.SETTLED else "SETTLED"
            elif w.status == MarketStatus.SETTLED:
                status, reason = MarketStatus.SETTLED, w.reason
            elif w.status == MarketStatus.SUSPENDED:
                if cur.status == MarketStatus.SUSPENDED and (
                    cur.status_reason in (w.reason, "OPERATOR", "MATCH_END")
                    or (cur.status_reason == "KILL_SWITCH" and w.reason != "OPERATOR")
                ):
                    outcome = "UNCHANGED"
                else:
                    status, reason = MarketStatus.SUSPENDED, w.reason
            elif cur.status != MarketStatus.SUSPENDED:
                outcome = "UNCHANGED"
            elif self._killed(cur.event_id, cur.sport):
                outcome = "KILL_SWITCH"
            elif w.only_reasons and cur.status_reason not in w.only_reasons:
                outcome = "UNCHANGED"
            else:
                status, reason = MarketStatus.ACTIVE, ""
            if outcome != "APPLIED":
                out.append(WriteResult(outcome, cur, None))
                continue
            new = replace(cur, status=status, status_reason=reason, version=cur.version + 1)
            self._store(new, self._watermark.get(w.market_id, 0))
            out.append(WriteResult("APPLIED", cur, new))
        return out

    def _raise_watermarks(self, w: StatusWrite) -> None:
        if w.source_ts_ms > self._watermark.get(w.market_id, 0):
            self._watermark[w.market_id] = w.source_ts_ms
        pts = w.provider_ts_ms or w.source_ts_ms
        if w.provider and pts > self._provider_wm.get((w.market_id, w.provider), 0):
            self._provider_wm[(w.market_id, w.provider)] = pts

    async def set_kill_switch(self, scope: str, target: str, engaged: bool) -> list[str]:
        if engaged:
            self._kill.add((scope, target))
        else:
            self._kill.discard((scope, target))
        return await self.markets_in_scope(scope, target)

    async def kill_switch_engaged(self, event_id: str, sport: str) -> bool:
        return self._killed(event_id, sport)

    # --- shared feed state ---------------------------------------------------------------------------------

    async def load_feed_state(
        self, providers: Collection[str], probes: Mapping[str, Sequence[tuple[int, int]]], events: Collection[str]
    ) -> FeedStateView:
        view = FeedStateView({}, {}, {})
        for name in providers:
            view.providers[name] = self._feed_prov.get(name, ProviderLiveness(name))
            window = self._feed_seen.get(name, {})
            view.seen[name] = {k for k in probes.get(name, ()) if k in window}
        for ev in events:
            view.active[ev] = self._routes.get(ev, "")
        return view

    async def save_feed_state(
        self,
        providers: Sequence[ProviderLiveness],
        seen: Mapping[str, Sequence[tuple[int, int]]],
        reset: Collection[str] = (),
    ) -> None:
        for h in providers:
            cur = self._feed_prov.get(h.name, ProviderLiveness(h.name))
            newer_lag = h.lag_at_ms >= cur.lag_at_ms
            status = h if h.producer_at_ms > cur.producer_at_ms else cur
            newer_seq = h.max_ts_ms > cur.max_ts_ms or (h.max_ts_ms == cur.max_ts_ms and h.last_seq > cur.last_seq)
            self._feed_prov[h.name] = ProviderLiveness(
                h.name,
                max(cur.last_seen_ms, h.last_seen_ms),
                h.lag_ms if newer_lag else cur.lag_ms,
                h.lag_at_ms if newer_lag else cur.lag_at_ms,
                max(cur.lag_bad_at_ms, h.lag_bad_at_ms),
                max(cur.gap_at_ms, h.gap_at_ms),
                max(cur.reconnected_at_ms, h.reconnected_at_ms),
                h.last_seq if newer_seq else cur.last_seq,
                h.max_ts_ms if newer_seq else cur.max_ts_ms,
                status.producer,
                status.producer_at_ms,
                status.recovery_id,
                status.down_since_ms,
            )
            window = {} if h.name in reset else self._feed_seen.get(h.name, {})
            for key in seen.get(h.name, ()):
                window[key] = key[0]
            if len(window) > SEEN_WINDOW:  # the newest seqs stay, as the Redis sorted set keeps them
                window = dict(sorted(window.items(), key=lambda kv: kv[1])[-SEEN_WINDOW:])
            self._feed_seen[h.name] = window

    async def list_producers(self) -> list[ProviderLiveness]:
        return [self._feed_prov[n] for n in sorted(self._feed_prov)]

    async def switch_provider(self, event_id: str, old: str, new: str, primary: str) -> tuple[bool, str]:
        cur = self._routes.get(event_id, primary)
        if cur != old:
            return False, cur
        self._routes[event_id] = new
        return True, new

    # --- fan-out -------------------------------------------------------------------------------------------

    def open_subscription(self) -> MemoryOddsSubscription:
        sub = MemoryOddsSubscription(self)
        self._subs.append(sub)
        return sub

    def _drop(self, sub: MemoryOddsSubscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    async def subscribe(self, event_ids: Sequence[str]) -> AsyncIterator[MarketState]:
        sub = self.open_subscription()
        try:
            await sub.add(event_ids)
            async for notice in sub:
                yield notice.state
        finally:
            await sub.close()


class MemoryOddsSubscription:
    def __init__(self, cache: MemoryOddsCache, queue_size: int = 10_000) -> None:
        self._cache = cache
        self._events: set[str] = set()
        self._queue: asyncio.Queue[OddsNotice | None] = asyncio.Queue(queue_size)

    def deliver(self, notice: OddsNotice) -> None:
        if notice.state.event_id in self._events:
            with contextlib.suppress(asyncio.QueueFull):  # like pub/sub: a stuck reader loses messages
                self._queue.put_nowait(notice)

    async def add(self, event_ids: Sequence[str]) -> None:
        self._events.update(event_ids)

    async def remove(self, event_ids: Sequence[str]) -> None:
        self._events.difference_update(event_ids)

    def __aiter__(self) -> AsyncIterator[OddsNotice]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[OddsNotice]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        self._cache._drop(self)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


class MemoryFeedMappings:
    """The twin of :class:`inplay.adapters.redis_odds.RedisFeedMappings`: per-event entries, revisions,
    compare-and-set, and a change feed (one queue per follower)."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, Any]] = {}
        self._revs: dict[str, int] = {}
        self._version = 0
        self._followers: list[asyncio.Queue[tuple[int, list[tuple[str, int]]]]] = []

    async def put_events(
        self, events: Sequence[dict[str, Any]], expected: Mapping[str, int], removed: Sequence[str] = ()
    ) -> tuple[bool, list[tuple[str, int]]]:
        ids = [str(e["event_id"]) for e in events] + list(removed)
        conflicts = [eid for eid in ids if self._revs.get(eid, 0) != expected.get(eid, 0)]
        if conflicts:
            return False, [(eid, -1) for eid in conflicts]
        changed = []
        for e in events:
            eid = str(e["event_id"])
            self._revs[eid] = self._revs.get(eid, 0) + 1
            self._events[eid] = {"rev": self._revs[eid], **{k: v for k, v in e.items() if k != "rev"}}
            changed.append((eid, self._revs[eid]))
        for eid in removed:
            self._revs[eid] = self._revs.get(eid, 0) + 1
            self._events.pop(eid, None)
            changed.append((eid, self._revs[eid]))
        if changed:
            self._version += 1
            for q in self._followers:
                q.put_nowait((self._version, changed))
        return True, changed

    async def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        return {k: dict(v) for k, v in self._events.items()}, dict(self._revs)

    async def events(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return {eid: (dict(self._events[eid]) if eid in self._events else None) for eid in event_ids}

    async def version(self) -> int:
        return self._version

    async def load(self) -> dict[str, Any] | None:
        if not self._events and not self._revs:
            return None
        return {"events": [dict(self._events[k]) for k in sorted(self._events)]}

    async def changes(self) -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
        q: asyncio.Queue[tuple[int, list[tuple[str, int]]]] = asyncio.Queue()
        self._followers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._followers.remove(q)

    async def close(self) -> None:
        return None


class MemoryMarketChangeLog:
    """Keyed as the Cassandra rows: (version, at, digest of the write's entries, position), so a retried
    append stores the same entries and two appends with different entries under one (version, at) keep both."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[tuple[int, int, bytes, int], MarketChange]] = {}

    async def append(self, changes: Sequence[MarketChange]) -> None:
        groups: dict[tuple[str, int, int], list[MarketChange]] = {}
        for c in changes:
            groups.setdefault((c.market_id, c.version, c.at_ms), []).append(c)
        for (market_id, version, at_ms), group in groups.items():
            entries = [(c.kind, c.selection_id, c.old_value, c.new_value, c.source, c.reason) for c in group]
            part = hashlib.blake2b(repr(entries).encode(), digest_size=8).digest()
            rows = self._rows.setdefault(market_id, {})
            for seq, c in enumerate(group):
                rows[(version, at_ms, part, seq)] = c

    async def list(self, market_id: str, page_size: int, page_token: str) -> tuple[list[MarketChange], str]:
        rows = [v for _, v in sorted(self._rows.get(market_id, {}).items())]
        state = pagetoken.decode(f"changes|{market_id}", page_token)
        start = int(state.decode()) if state else 0
        page = rows[start : start + page_size]
        end = start + len(page)
        token = pagetoken.encode(f"changes|{market_id}", str(end).encode()) if end < len(rows) else ""
        return page, token


__all__ = ["MemoryFeedMappings", "MemoryMarketChangeLog", "MemoryOddsCache", "MemoryOddsSubscription"]
