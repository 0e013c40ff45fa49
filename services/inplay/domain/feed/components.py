"""Builds the odds pipeline's objects for the composition root (``inplay.app``)::

odds = await open_odds_components(runtime.odds, runtime.bus, settings.stack,
                                  cassandra_session=ledger.session)   # None -> memory change log
runtime.components["odds"] = odds; runtime.closers.append(odds.close)
servicers.odds.add_to_server(server, runtime.odds, odds.hub)
servicers.feed.add_to_server(server, odds.pipeline)
servicers.admin.add_to_server(server, odds.control, odds.changes, runtime.wallet_store)
settlement: odds.control.settle(market_ids)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inplay.config import StackSettings
from inplay.domain.feed.hub import OddsHub
from inplay.domain.feed.mapping import FeedMappingService, FeedMappingStore
from inplay.domain.feed.pipeline import FeedPipeline
from inplay.domain.feed.rules import FeedRules
from inplay.domain.markets import ChangeRecorder, MarketChangeLog, MarketControl
from inplay.ports import EventBus, LiveOddsCache


@dataclass
class OddsComponents:
    hub: OddsHub
    control: MarketControl
    changes: MarketChangeLog
    mappings: FeedMappingService
    pipeline: FeedPipeline
    mapping_store: FeedMappingStore

    async def close(self) -> None:
        await self.pipeline.stop()
        await self.hub.close()


async def open_odds_components(
    odds: LiveOddsCache,
    bus: EventBus,
    stack: StackSettings,
    cassandra_session: Any = None,
    rules: FeedRules | None = None,
    start_watchdog: bool = True,
) -> OddsComponents:
    changes: MarketChangeLog
    store: FeedMappingStore
    if cassandra_session is not None:
        from inplay.adapters.cassandra_changes import CassandraMarketChangeLog

        changes = CassandraMarketChangeLog(cassandra_session)
    else:
        from inplay.adapters.memory_odds import MemoryMarketChangeLog

        changes = MemoryMarketChangeLog()
    client = getattr(odds, "client", None)
    if client is not None:
        from inplay.adapters.redis_odds import RedisFeedMappings

        store = RedisFeedMappings(client, stack.redis_prefix)
    else:
        from inplay.adapters.memory_odds import MemoryFeedMappings

        store = MemoryFeedMappings()
    mappings = FeedMappingService(store)
    await mappings.refresh()
    control = MarketControl(odds, ChangeRecorder(changes, bus, stack.topic_prefix))
    pipeline = FeedPipeline(odds, bus, mappings, control, rules or FeedRules.from_env(), stack.topic_prefix)
    if start_watchdog:
        pipeline.start()
    return OddsComponents(OddsHub(odds), control, changes, mappings, pipeline, store)
