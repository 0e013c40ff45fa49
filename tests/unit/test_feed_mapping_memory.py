"""The mapping service over the memory twin of the per-event store (M7/H7); the same scenarios run on the real
Redis in tests/integration/test_feed_mapping.py."""

from __future__ import annotations

import asyncio

import pytest

from inplay.adapters.memory_odds import MemoryFeedMappings
from inplay.domain.feed import wire
from inplay.domain.feed.mapping import FeedMappingService
from inplay.errors import NotFound


async def test_concurrent_loads_of_different_events_all_survive() -> None:
    store = MemoryFeedMappings()
    writers = [FeedMappingService(store) for _ in range(4)]
    docs = [wire.two_provider_mapping(f"ev{i}", f"A-{i}", 100 + i) for i in range(4)]
    await asyncio.gather(*(w.load(d) for w, d in zip(writers, docs, strict=True)))
    table = await FeedMappingService(store).refresh()
    assert sorted(table.events) == ["ev0", "ev1", "ev2", "ev3"]


async def test_replace_deletes_the_others_and_a_deleted_event_keeps_its_revision() -> None:
    store = MemoryFeedMappings()
    svc = FeedMappingService(store)
    await svc.load(wire.two_provider_mapping("ev0", "A-0", 100))
    await svc.load(wire.two_provider_mapping("ev1", "A-1", 101), replace=True)
    assert sorted(svc.table.events) == ["ev1"]
    _, revs = await store.snapshot()
    assert revs == {"ev0": 2, "ev1": 1}
    ok, _ = await store.put_events([wire.two_provider_mapping("ev0", "A-0", 100)["events"][0]], {"ev0": 0})
    assert not ok  # a writer that never saw the deletion cannot resurrect the event


async def test_followers_apply_newer_revisions_only() -> None:
    store = MemoryFeedMappings()
    writer, follower = FeedMappingService(store), FeedMappingService(store)
    await writer.load(wire.two_provider_mapping("ev0", "A-0", 100, in_play=False))
    follower.start()
    try:
        await asyncio.sleep(0)
        await writer.update_event("ev0", {"in_play": True, "status": "LIVE"})
        for _ in range(50):
            if "ev0" in follower.table.events and follower.table.events["ev0"].in_play:
                break
            await asyncio.sleep(0.01)
        assert (follower.table.events["ev0"].status, follower.table.events["ev0"].rev) == ("LIVE", 2)
        assert not await follower.apply_notice([("ev0", 1)])
    finally:
        await follower.stop()


async def test_fixture_change_of_an_unknown_event_is_not_found() -> None:
    with pytest.raises(NotFound):
        await FeedMappingService(MemoryFeedMappings()).update_event("nope", {"status": "LIVE"})
