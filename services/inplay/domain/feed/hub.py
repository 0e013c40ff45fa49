"""StreamOdds fan-out: one Redis subscription per process for all local clients (channels added while
an event has at least one client, removed after its last one leaves), and a bounded, coalescing buffer
per client.

A client's buffer is a dict market_id -> latest state plus an ``asyncio.Event``: a slow reader never
grows a queue; an update to a market that is still pending replaces it and counts as coalesced. A
correction (or a lost subscription) flags the client for a full SNAPSHOT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from inplay.model import MarketState
from inplay.ports import LiveOddsCache, OddsNotice, OddsSubscription

log = logging.getLogger("inplay.odds.hub")


class ClientFeed:
    """The per-client buffer. ``event_ids``: whole events; ``market_ids``: single markets of other events."""

    def __init__(self, event_ids: Iterable[str], market_ids: Iterable[str], market_events: Iterable[str]) -> None:
        self.whole_events = frozenset(event_ids)
        self.market_ids = frozenset(market_ids)
        self.events = self.whole_events | frozenset(market_events)
        self.pending: dict[str, MarketState] = {}
        self.coalesced = 0
        self.resync = False
        self.wake = asyncio.Event()

    def wants(self, state: MarketState) -> bool:
        return state.event_id in self.whole_events or state.market_id in self.market_ids

    def offer(self, notice: OddsNotice) -> None:
        state = notice.state
        if not self.wants(state):
            return
        if notice.correction:
            self.resync = True
            self.wake.set()
        prev = self.pending.get(state.market_id)
        if prev is not None:
            self.coalesced += 1
            if prev.version >= state.version:
                return
        self.pending[state.market_id] = state
        self.wake.set()

    def flag_resync(self) -> None:
        self.resync = True
        self.wake.set()

    def take(self) -> tuple[list[MarketState], int, bool]:
        """Everything pending (the latest state per market), the coalesced count and the resync flag."""
        pending, coalesced, resync = self.pending, self.coalesced, self.resync
        self.pending, self.coalesced, self.resync = {}, 0, False
        self.wake.clear()
        return list(pending.values()), coalesced, resync


class OddsHub:
    def __init__(self, cache: LiveOddsCache, retry_s: float = 0.5, max_retry_s: float = 5.0) -> None:
        self._cache = cache
        self._clients: dict[str, set[ClientFeed]] = {}
        self._sub: OddsSubscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self.delivered = 0
        self.resubscribe_failures = 0
        self._recovering = False

    @property
    def events(self) -> list[str]:
        return sorted(self._clients)

    async def attach(self, client: ClientFeed) -> None:
        """Registers the client; returns once its events' channels are subscribed (so a snapshot read after
        this misses nothing)."""
        async with self._lock:
            if self._recovering:
                raise ConnectionError("odds subscription lost; resubscribing")
            new = [e for e in client.events if e not in self._clients]
            for e in client.events:
                self._clients.setdefault(e, set()).add(client)
            if self._sub is None:
                self._sub = self._cache.open_subscription()
            if new:
                try:
                    await self._sub.add(new)
                except BaseException:
                    for e in client.events:
                        clients = self._clients.get(e)
                        if clients is not None:
                            clients.discard(client)
                            if not clients:
                                del self._clients[e]
                    raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._run(), name="odds-hub")

    async def detach(self, client: ClientFeed) -> None:
        async with self._lock:
            gone = []
            for e in client.events:
                clients = self._clients.get(e)
                if clients is None:
                    continue
                clients.discard(client)
                if not clients:
                    del self._clients[e]
                    gone.append(e)
            if gone and self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.remove(gone)

    async def _run(self) -> None:
        while True:
            sub = self._sub
            if sub is None:
                return
            try:
                async for notice in sub:
                    clients = self._clients.get(notice.state.event_id)
                    if clients:
                        for c in clients:
                            c.offer(notice)
                        self.delivered += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("odds subscription lost, resubscribing", extra={"error": str(exc)})
                await self._resubscribe(sub)

    async def _resubscribe(self, lost: OddsSubscription) -> None:
        """Reopens the subscription until Redis confirms every event channel (backoff from ``retry_s`` up to
        ``max_retry_s``), then flags every client for a SNAPSHOT. Until then new clients cannot attach
        (``attach`` fails UNAVAILABLE) rather than attaching to a subscription that would deliver nothing."""
        delay = self._retry_s
        async with self._lock:
            self._recovering = True
            self._sub = None
        with contextlib.suppress(Exception):
            await lost.close()
        while True:
            await asyncio.sleep(delay)
            async with self._lock:
                sub = self._cache.open_subscription()
                try:
                    if self._clients:
                        await sub.add(list(self._clients))
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await sub.close()
                    self._sub = None
                    self.resubscribe_failures += 1
                    log.warning("resubscribe failed; retrying", extra={"error": str(exc), "retry_s": delay})
                    delay = min(self._max_retry_s, delay * 2)
                    continue
                self._sub = sub
                self._recovering = False
                for clients in self._clients.values():
                    for c in clients:
                        c.flag_resync()
                return

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._sub is not None:
            await self._sub.close()
            self._sub = None


__all__ = ["ClientFeed", "OddsHub"]
