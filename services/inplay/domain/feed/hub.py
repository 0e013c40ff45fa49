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
from collections import OrderedDict
from collections.abc import Iterable

from inplay.model import MarketState, MarketStatus
from inplay.ports import LiveOddsCache, OddsNotice, OddsSubscription

log = logging.getLogger("inplay.odds.hub")


class ClientFeed:
    """The per-client buffer. ``event_ids``: whole events; ``market_ids``: single markets of other events."""

    def __init__(self, event_ids: Iterable[str], market_ids: Iterable[str], market_events: Iterable[str]) -> None:
        self.whole_events = frozenset(event_ids)
        self.market_ids = frozenset(market_ids)
        self.events = self.whole_events | frozenset(market_events)
        self.pending: dict[str, MarketState] = {}
        # L1: a pending suspension that a newer non-suspended state replaced (one per market): delivered
        # before it, so a slow reader still sees the status edge (not only the latest state).
        self.edges: dict[str, MarketState] = {}
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
            if prev.version >= state.version:
                self.coalesced += 1
                return
            if prev.status == MarketStatus.SUSPENDED and state.status != MarketStatus.SUSPENDED:
                self.edges[state.market_id] = prev
            else:
                self.coalesced += 1
        self.pending[state.market_id] = state
        self.wake.set()

    def flag_resync(self) -> None:
        self.resync = True
        self.wake.set()

    def take_edges(self) -> list[MarketState]:
        """The suspensions replaced while pending (to send before :meth:`take`'s states)."""
        if not self.edges:
            return []
        edges, self.edges = self.edges, {}
        return sorted(edges.values(), key=lambda s: s.market_id)

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
    def recovering(self) -> bool:
        """The subscription is lost and not yet reopened (what is held in process may be stale)."""
        return self._recovering

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


class _EventMarkets(ClientFeed):
    """The read cache's subscriber of one event: the decoded markets, updated by the event channel (a newer
    version replaces the held state; an older or equal one is dropped). ``live`` turns False when the hub
    lost the subscription: reads go to Redis again until the event is reloaded."""

    def __init__(self, event_id: str) -> None:
        super().__init__((event_id,), (), ())
        self.event_id = event_id
        self.markets: dict[str, MarketState] = {}
        self.live = False

    def offer(self, notice: OddsNotice) -> None:
        held = self.markets.get(notice.state.market_id)
        # A provider correction resyncs everything (from Redis, once for all clients); a version below the
        # held one means the cache was reset (L4; the channel keeps the cache's order per market): reload.
        if notice.correction or (held is not None and notice.state.version < held.version):
            self.live = False
        self.put(notice.state)

    def put(self, state: MarketState) -> None:
        held = self.markets.get(state.market_id)
        if held is None or state.version > held.version:
            self.markets[state.market_id] = state

    def flag_resync(self) -> None:
        self.live = False


class MarketReadCache:
    """GetMarket / ListMarkets from decoded markets held in process, kept fresh by the hub's per-event
    subscription: a read of an event already watched costs no Redis round trip. The first read of an event
    subscribes its channel (confirmed by Redis), then reads the event's markets, so no change is lost in
    between. At most ``max_events`` events are watched (least recently read dropped). Writes made by this
    process are applied at once (``apply``), so a process reads its own writes; another process's writes
    arrive by pub/sub, a few ms later (bets never read through here: they check Redis)."""

    def __init__(self, cache: LiveOddsCache, hub: OddsHub, max_events: int = 1_000) -> None:
        self._cache = cache
        self._hub = hub
        self._max_events = max_events
        self._events: OrderedDict[str, _EventMarkets] = OrderedDict()
        self._market_event: dict[str, str] = {}
        self._loading: dict[str, asyncio.Future[_EventMarkets | None]] = {}
        self.hits = 0
        self.misses = 0
        listeners = getattr(cache, "local_listeners", None)
        if isinstance(listeners, list):
            listeners.append(self.apply)

    def apply(self, state: MarketState) -> None:
        """A write this process made (before its pub/sub echo arrives)."""
        entry = self._events.get(state.event_id)
        if entry is not None:
            entry.put(state)
            self._market_event[state.market_id] = state.event_id

    def _live(self, event_id: str) -> _EventMarkets | None:
        entry = self._events.get(event_id)
        if entry is None or not entry.live or self._hub.recovering:
            return None
        self._events.move_to_end(event_id)
        self.hits += 1
        return entry

    async def get_market(self, market_id: str) -> MarketState | None:
        event_id = self._market_event.get(market_id)
        if event_id is not None and (entry := self._live(event_id)) is not None:
            return entry.markets.get(market_id)
        self.misses += 1
        state = (await self._cache.get_markets([market_id]))[0]
        if state is None:
            return None
        entry = await self._watch(state.event_id)
        held = entry.markets.get(market_id) if entry is not None else None
        return held if held is not None and held.version >= state.version else state

    async def list_event_markets(self, event_id: str) -> list[MarketState]:
        entry = self._live(event_id)
        if entry is None:
            self.misses += 1
            entry = await self._watch(event_id)
            if entry is None:
                return await self._cache.list_event_markets(event_id)
        return [entry.markets[k] for k in sorted(entry.markets)]

    async def _watch(self, event_id: str) -> _EventMarkets | None:
        """Subscribes and loads the event (one load at a time per event); None when the hub cannot
        subscribe now (Redis outage: the caller reads Redis directly)."""
        pending = self._loading.get(event_id)
        if pending is not None:
            return await asyncio.shield(pending)
        held = self._events.get(event_id)
        if held is not None and held.live and not self._hub.recovering:
            # Loaded meanwhile (this read's own Redis read came back after another read's load): a reload
            # would only read Redis again.
            return held
        fut: asyncio.Future[_EventMarkets | None] = asyncio.get_running_loop().create_future()
        self._loading[event_id] = fut
        try:
            entry = await self._load(event_id)
            fut.set_result(entry)
            return entry
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it, no "never retrieved" warning
            raise
        finally:
            del self._loading[event_id]

    async def _load(self, event_id: str) -> _EventMarkets | None:
        entry = self._events.get(event_id)
        if entry is None:
            entry = _EventMarkets(event_id)
            try:
                await self._hub.attach(entry)
            except (ConnectionError, TimeoutError, OSError):
                return None
            self._events[event_id] = entry
            await self._evict()
        else:  # a reload (subscription lost, correction, reset): what is held may be ahead of the cache
            entry.live = False  # reads go to Redis until the reload is complete, never to emptied markets
            entry.markets = {}
        for state in await self._cache.list_event_markets(event_id):  # subscribed first: nothing missed
            entry.put(state)
            self._market_event[state.market_id] = event_id
        entry.live = True
        return entry

    async def _evict(self) -> None:
        while len(self._events) > self._max_events:
            _, old = self._events.popitem(last=False)
            for mid in old.markets:
                self._market_event.pop(mid, None)
            await self._hub.detach(old)

    async def close(self) -> None:
        for entry in list(self._events.values()):
            await self._hub.detach(entry)
        self._events.clear()
        self._market_event.clear()


__all__ = ["ClientFeed", "MarketReadCache", "OddsHub"]
