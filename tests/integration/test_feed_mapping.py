"""M7 and H7 on the real Redis: the mapping table is stored per event and written by compare-and-set, and a
fixture change made by another process reaches a running pipeline through the change feed (no restart,
no poll)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from inplay.adapters.redis_odds import RedisFeedMappings, RedisOddsCache
from inplay.domain.feed import wire
from inplay.domain.feed.mapping import FeedMappingService
from inplay.domain.feed.pipeline import RawMessage
from inplay.model import MarketStatus
from tests.integration.conftest_odds import OddsEnv, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def writers(redis_url: str, redis_prefix: str) -> AsyncIterator[list[FeedMappingService]]:
    """Eight mapping writers, each on its own Redis connection (eight CLI runs at once)."""
    stores = [await RedisFeedMappings.connect(redis_url, redis_prefix) for _ in range(8)]
    yield [FeedMappingService(s) for s in stores]
    for s in stores:
        await s.close()


async def test_m7_concurrent_mapping_updates_for_different_events_both_survive(
    writers: list[FeedMappingService], redis_url: str, redis_prefix: str, unique_id: Callable[[str], str]
) -> None:
    """Before: each load read the whole document, merged its events and wrote the document back, so of
    concurrent loads of different events only the last write survived."""
    events = [unique_id("ev") for _ in writers]
    docs = [wire.two_provider_mapping(ev, f"A-{ev}", 7_000 + i) for i, ev in enumerate(events)]
    await asyncio.gather(*(w.load(doc) for w, doc in zip(writers, docs, strict=True)))
    reader = FeedMappingService(await RedisFeedMappings.connect(redis_url, redis_prefix))
    try:
        table = await reader.refresh()
        assert sorted(e for e in table.events if e in events) == sorted(events)
        assert all(f"{ev}:mr" in table.markets for ev in events)
    finally:
        await reader.store.close()  # type: ignore[attr-defined]


async def test_m7_concurrent_fixture_changes_of_one_event_both_survive(
    writers: list[FeedMappingService], unique_id: Callable[[str], str]
) -> None:
    """Compare-and-set on the same event: two writers changing different fields both keep their change (the
    loser of the race re-reads the newer entry and writes again)."""
    ev = unique_id("ev")
    await writers[0].load(wire.two_provider_mapping(ev, f"A-{ev}", 7_100, in_play=False))
    a, b = writers[1], writers[2]
    await asyncio.gather(a.update_event(ev, {"in_play": True}), b.update_event(ev, {"status": "LIVE"}))
    table = await writers[3].refresh()
    info = table.events[ev]
    assert (info.in_play, info.status, info.rev) == (True, "LIVE", 3)
    # a stale revision is refused: nothing written
    ok, conflicts = await a.store.put_events([{"event_id": ev, "markets": []}], {ev: 1})
    assert (ok, conflicts) == (False, [(ev, -1)])
    assert (await writers[3].refresh()).events[ev].market_ids == (f"{ev}:mr", f"{ev}:ou")


async def test_h7_fixture_change_from_another_process_reaches_a_running_pipeline(
    odds_env: OddsEnv, redis_url: str, unique_id: Callable[[str], str]
) -> None:
    """The running pipeline follows the mapping change feed: the CLI (another process) turns an event in-play
    and the very next price gets the in-play lag rule, with the version poll out of the picture (60 s)."""
    env = odds_env
    env.pipeline.rules = dataclasses.replace(env.pipeline.rules, mapping_refresh_ms=60_000)
    event, alpha_ref = unique_id("ev"), f"A-{unique_id('x')}"
    await env.mappings.load(wire.two_provider_mapping(event, alpha_ref, 4_343, in_play=False))
    env.pipeline.start()
    try:
        await asyncio.sleep(0.3)  # the follower subscribed
        t = now_ms()
        prices = {f"{alpha_ref}-MR-H": "2.00", f"{alpha_ref}-MR-D": "3.40", f"{alpha_ref}-MR-A": "3.80"}
        out = await env.pipeline.ingest(
            [RawMessage("alpha", wire.alpha_odds(1, t - 2_000, alpha_ref, f"{alpha_ref}-MR", prices), t)]
        )
        assert (out.accepted, dict(out.rejected)) == (1, {}), out
        (st,) = await env.cache.get_markets([f"{event}:mr"])
        assert st is not None and (st.status, st.in_play) == (MarketStatus.ACTIVE, False)  # pre-match: 2 s lag ok
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inplay.cli",
            "mapping",
            "fixture",
            event,
            "--in-play",
            "yes",
            "--status",
            "LIVE",
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT / "services"),
                "INPLAY_REDIS_URL": redis_url,
                "INPLAY_REDIS_PREFIX": env.cache.prefix,
            },
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await cli.communicate()
        assert cli.returncode == 0 and b"in_play=True" in stdout, stdout
        for _ in range(50):
            info = env.mappings.table.events.get(event)
            if info is not None and info.in_play:
                break
            await asyncio.sleep(0.05)
        assert env.mappings.table.events[event].status == "LIVE"
        t = now_ms()
        await env.pipeline.ingest(
            [RawMessage("alpha", wire.alpha_odds(2, t - 2_000, alpha_ref, f"{alpha_ref}-MR", prices), t)]
        )
        (st,) = await env.cache.get_markets([f"{event}:mr"])
        assert st is not None and (st.status, st.status_reason, st.in_play) == (
            MarketStatus.SUSPENDED,
            "FEED_LAG",
            True,
        )
    finally:
        await env.pipeline.stop()


async def test_h7_a_late_or_repeated_notice_changes_nothing(
    live_cache: RedisOddsCache, redis_url: str, redis_prefix: str, unique_id: Callable[[str], str]
) -> None:
    """Version-checked: a notice naming a revision already held (or older) does not re-read or roll back."""
    ev = unique_id("ev")
    follower = FeedMappingService(RedisFeedMappings(live_cache.client, redis_prefix))
    writer = FeedMappingService(await RedisFeedMappings.connect(redis_url, redis_prefix))
    try:
        await writer.load(wire.two_provider_mapping(ev, f"A-{ev}", 7_200, in_play=False))
        await writer.update_event(ev, {"in_play": True})
        await follower.refresh()
        assert follower.table.events[ev].rev == 2
        assert not await follower.apply_notice([(ev, 1)])  # a late notice of revision 1
        assert follower.table.events[ev].in_play
    finally:
        await writer.store.close()  # type: ignore[attr-defined]
