"""Feed pipeline builders shared by the feed tests (memory stores, a list bus, a fixed clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from google.protobuf import timestamp_pb2

from inplay.adapters.memory_odds import MemoryFeedMappings, MemoryMarketChangeLog, MemoryOddsCache
from inplay.core import Odds
from inplay.domain.feed import wire
from inplay.domain.feed.mapping import FeedMappingService
from inplay.domain.feed.pipeline import FeedPipeline
from inplay.domain.feed.rules import FeedRules
from inplay.domain.markets import ChangeRecorder, MarketControl
from inplay.feed.v1 import feed_pb2
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.ports import BusMessage

T0 = 1_740_000_000_000


class ListBus:
    def __init__(self) -> None:
        self.messages: list[BusMessage] = []

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        self.messages.extend(messages)

    async def flush(self, timeout_s: float = 10.0) -> None:
        return None

    async def deliver(self, messages: Sequence[BusMessage], timeout_s: float = 10.0) -> None:
        self.messages.extend(messages)

    async def close(self) -> None:
        return None


async def make_pipeline(
    rules: FeedRules | None = None, *, log_from_bus: bool = False
) -> tuple[FeedPipeline, MemoryOddsCache, list[int]]:
    """``log_from_bus``: the change rows are left to the change-log writer (INPLAY_FEED_CHANGE_LOG=kafka)."""
    clock = [T0]
    cache = MemoryOddsCache()
    bus = ListBus()
    mappings = FeedMappingService(MemoryFeedMappings())
    await mappings.load(wire.two_provider_mapping("ev", "A-EV", 77))
    recorder = ChangeRecorder(MemoryMarketChangeLog(), bus, log_from_bus=log_from_bus)
    control = MarketControl(cache, recorder, clock=lambda: clock[0])
    pipe = FeedPipeline(cache, bus, mappings, control, rules or FeedRules(), clock=lambda: clock[0])
    return pipe, cache, clock


def state(mid: str, version: int, price: str = "2.00") -> MarketState:
    return MarketState(
        mid,
        "ev",
        "football",
        "MATCH_RESULT",
        "Match result",
        True,
        MarketStatus.ACTIVE,
        "",
        (SelectionPrice("h", "Home", Odds.from_decimal(price)),),
        version,
        T0,
    )


async def ingest_requests(items: list[tuple[str, bytes, int]]) -> AsyncIterator[feed_pb2.IngestOddsRequest]:
    for provider, payload, received in items:
        ts = timestamp_pb2.Timestamp()
        ts.FromMilliseconds(received)
        yield feed_pb2.IngestOddsRequest(provider=provider, payload=payload, received_at=ts)
