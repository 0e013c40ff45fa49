"""OddsService: markets from the odds cache, and live odds (StreamOdds) through the process-wide hub.

Dependencies for :func:`add_to_server`: a :class:`inplay.ports.LiveOddsCache` (Redis or memory) and,
optionally, the process's :class:`inplay.domain.feed.hub.OddsHub` (one is created when not given; close it
on shutdown with ``hub.close()``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import grpc

from inplay.convert import market_to_proto
from inplay.domain.feed.hub import ClientFeed, MarketReadCache, OddsHub
from inplay.errors import FieldViolation, InvalidArgument, NotFound, abort_with
from inplay.model import MarketState
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.ports import LiveOddsCache
from inplay.servicers.rpc import rpc

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_STREAM_EVENTS = 100
MAX_STREAM_MARKETS = 1000
MAX_ID = 200


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("o:"):
            raise ValueError(text)
        value = int(text[2:])
        if value < 0:
            raise ValueError(text)
        return value
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(
            "invalid page_token", violations=[FieldViolation("page_token", "not a token from this API")]
        ) from None


def _check_id(value: str, name: str) -> None:
    if not value or len(value) > MAX_ID:
        raise InvalidArgument(f"{name} is required", violations=[FieldViolation(name, "required, <= 200 chars")])


class OddsServicer(odds_pb2_grpc.OddsServiceServicer):
    def __init__(self, cache: LiveOddsCache, hub: OddsHub) -> None:
        self._cache = cache
        self._hub = hub
        # GetMarket / ListMarkets / StreamOdds snapshots: decoded markets in process, fresh through the hub
        # (no Redis round trip when nothing changed).
        self._reads = MarketReadCache(cache, hub)

    @rpc
    async def GetMarket(
        self, request: odds_pb2.GetMarketRequest, context: grpc.aio.ServicerContext
    ) -> odds_pb2.GetMarketResponse:
        _check_id(request.market_id, "market_id")
        state = await self._reads.get_market(request.market_id)
        if state is None:
            raise NotFound(f"market {request.market_id} not found")
        return odds_pb2.GetMarketResponse(market=market_to_proto(state, _now_ms()))

    @rpc
    async def ListMarkets(
        self, request: odds_pb2.ListMarketsRequest, context: grpc.aio.ServicerContext
    ) -> odds_pb2.ListMarketsResponse:
        _check_id(request.event_id, "event_id")
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", violations=[FieldViolation("page_size", ">= 0")])
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        start = _offset(request.page_token)
        markets = await self._reads.list_event_markets(request.event_id)  # ordered by market id
        page = markets[start : start + size]
        end = start + len(page)
        now = _now_ms()
        return odds_pb2.ListMarketsResponse(
            markets=[market_to_proto(m, now) for m in page],
            next_page_token=_page_token(end) if end < len(markets) else "",
        )

    async def _snapshot(self, client: ClientFeed) -> list[MarketState]:
        """From the read cache, which the same hub subscription keeps fresh: the client is attached first, so
        nothing applied after this read is missed. 1,000 clients opening at once cost one Redis read per event
        (they used to open 1,000 concurrent reads and exhaust the connection pool)."""
        states: dict[str, MarketState] = {}
        for event_id in sorted(client.whole_events):
            for m in await self._reads.list_event_markets(event_id):
                states[m.market_id] = m
        for mid in sorted(client.market_ids - states.keys()):
            st = await self._reads.get_market(mid)
            if st is not None:
                states[st.market_id] = st
        return [states[k] for k in sorted(states)]

    async def _open(self, request: odds_pb2.StreamOddsRequest) -> ClientFeed:
        event_ids = list(dict.fromkeys(request.event_ids))
        market_ids = list(dict.fromkeys(request.market_ids))
        if not event_ids and not market_ids:
            raise InvalidArgument(
                "subscribe to at least one event or market",
                violations=[FieldViolation("event_ids", "event_ids or market_ids required")],
            )
        if len(event_ids) > MAX_STREAM_EVENTS or len(market_ids) > MAX_STREAM_MARKETS:
            raise InvalidArgument(
                f"at most {MAX_STREAM_EVENTS} events and {MAX_STREAM_MARKETS} markets per stream",
                violations=[FieldViolation("event_ids", "too many")],
            )
        for i, e in enumerate(event_ids):
            _check_id(e, f"event_ids[{i}]")
        for i, m in enumerate(market_ids):
            _check_id(m, f"market_ids[{i}]")
        market_events: set[str] = set()
        for mid in market_ids:
            st = await self._reads.get_market(mid)
            if st is None:
                raise NotFound(f"market {mid} not found")
            market_events.add(st.event_id)
        return ClientFeed(event_ids, market_ids, market_events)

    async def StreamOdds(
        self, request: odds_pb2.StreamOddsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[odds_pb2.StreamOddsResponse]:
        try:
            client = await self._open(request)
            await self._hub.attach(client)
        except Exception as exc:  # a server-streaming handler: the @rpc mapping, inline
            await abort_with(context, exc)
        try:
            # Subscribed first, then read: nothing applied after the read is missed (duplicates are dropped
            # by version below).
            snapshot = await self._snapshot(client)
            sent: dict[str, int] = {m.market_id: m.version for m in snapshot}
            yield self._first(request, client, snapshot)
            while True:
                await client.wake.wait()
                edges = client.take_edges()
                pending, coalesced, resync = client.take()
                # L4: a version below what was sent means the cache was reset (pub/sub keeps the cache's order
                # per market): a SNAPSHOT, else the client would filter every new version as a duplicate.
                if resync or any(s.version < sent.get(s.market_id, 0) for s in pending):
                    snapshot = await self._snapshot(client)
                    sent = {m.market_id: m.version for m in snapshot}
                    yield self._message(odds_pb2.UPDATE_KIND_SNAPSHOT, snapshot, coalesced)
                    continue
                edges = [s for s in edges if s.version > sent.get(s.market_id, 0)]
                if edges:  # L1: the suspension first, then the state that replaced it
                    for s in edges:
                        sent[s.market_id] = s.version
                    yield self._message(odds_pb2.UPDATE_KIND_DELTA, edges, 0)
                fresh = [s for s in pending if s.version > sent.get(s.market_id, 0)]
                if not fresh:
                    continue
                for s in fresh:
                    sent[s.market_id] = s.version
                fresh.sort(key=lambda s: s.market_id)
                yield self._message(odds_pb2.UPDATE_KIND_DELTA, fresh, coalesced)
        except Exception as exc:  # after the first message too: a store outage is UNAVAILABLE (retryable)
            await abort_with(context, exc)
        finally:
            await self._hub.detach(client)

    def _first(
        self, request: odds_pb2.StreamOddsRequest, client: ClientFeed, snapshot: list[MarketState]
    ) -> odds_pb2.StreamOddsResponse:
        """The first message: SNAPSHOT; an empty DELTA when every known version is current; with ``resume``,
        RESUMED with only what changed since the known versions (SNAPSHOT when those are no longer known)."""
        known = dict(request.known_versions)
        if request.resume and known:
            now = {m.market_id: m.version for m in snapshot}
            # a known market gone (or not in the subscription) or behind the client's version: not resumable
            lost = any(now.get(mid, -1) < v for mid, v in known.items())
            if not lost:
                changed = [m for m in snapshot if m.version > known.get(m.market_id, 0)]
                return self._message(odds_pb2.UPDATE_KIND_RESUMED, changed, 0)
        elif known and all(known.get(m.market_id) == m.version for m in snapshot):
            # The client is up to date: an empty DELTA confirms the stream is live.
            return odds_pb2.StreamOddsResponse(kind=odds_pb2.UPDATE_KIND_DELTA)
        return self._message(odds_pb2.UPDATE_KIND_SNAPSHOT, snapshot, 0)

    @staticmethod
    def _message(kind: odds_pb2.UpdateKind, markets: list[MarketState], coalesced: int) -> odds_pb2.StreamOddsResponse:
        now = _now_ms()
        return odds_pb2.StreamOddsResponse(
            kind=kind, markets=[market_to_proto(m, now) for m in markets], coalesced_updates=coalesced
        )


def add_to_server(server: grpc.aio.Server, cache: LiveOddsCache, hub: OddsHub | None = None) -> OddsHub:
    """Registers OddsService. Needs the odds cache; shares ``hub`` (or a new one, returned) for streaming."""
    hub = hub or OddsHub(cache)
    odds_pb2_grpc.add_OddsServiceServicer_to_server(OddsServicer(cache, hub), server)
    return hub


__all__ = ["OddsServicer", "add_to_server"]
