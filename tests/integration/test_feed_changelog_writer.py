"""The change-log writer against the real stack (Kafka, Cassandra): with the pipeline leaving its change
rows to the writer (INPLAY_FEED_CHANGE_LOG=kafka), the log the writer derives from the odds topics holds
exactly the entries the inline pipeline writes for the same messages (prices, a failover's PROVIDER rows,
a bet stop, the match end); a writer that dies inside a batch, after part of its append, leaves the batch
uncommitted and the next writer of the group completes it with nothing lost and nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from inplay.adapters.cassandra_changes import CassandraMarketChangeLog
from inplay.adapters.kafka_bus import KafkaConsumerLoop
from inplay.adapters.redis_odds import RedisOddsCache
from inplay.domain.feed import wire
from inplay.domain.feed.changelog import ChangeLogWriter
from inplay.domain.feed.rules import FeedRules
from inplay.model import MarketChange
from inplay.ports import TOPIC_MARKET_CHANGES, TOPIC_ODDS, EventBus
from tests.integration.conftest_odds import OddsEnv, build_env, now_ms

ROOT = Path(__file__).resolve().parents[2]

pytest_plugins = ["tests.integration.conftest_odds"]
pytestmark = pytest.mark.integration

RULES = FeedRules(heartbeat_timeout_ms=1_000, failover_lag_ms=1_000, gap_window_ms=1_000, failback_after_ms=2_000)

Entry = tuple[str, str, str, str, str, str, str, int]


async def scenario(env: OddsEnv) -> None:
    """Both providers price; alpha skips sequence numbers (failover to bravo: PROVIDER rows on the
    market-changes topic); bravo moves; a bet stop; bravo prices again; the match ends."""
    t = now_ms() - 60_000
    for k, (home, us) in enumerate([("2.00", 110), ("2.02", 115)]):
        if k == 1:
            env._seq["alpha"] += 3
        await env.ingest(
            ("alpha", env.alpha_mr(t + k * 100, home, "3.40", "3.80"), t + k * 100 + 10),
            ("bravo", env.bravo_prices(t + k * 100, [us, 240, 280], [-110, -105]), t + k * 100 + 10),
        )
    await env.ingest(("bravo", env.bravo_prices(t + 300, [120, 250, 260], [-115, -105]), t + 310))
    await env.ingest(("bravo", wire.bravo_stop(env.seq("bravo"), t + 400, env.bravo_match), t + 410))
    await env.ingest(("bravo", env.bravo_prices(t + 500, [125, 250, 255], [-120, -105]), t + 510))
    await env.ingest(("bravo", wire.bravo_final(env.seq("bravo"), t + 600, env.bravo_match), t + 610))


async def entries(env: OddsEnv) -> Counter[Entry]:
    """Both markets' logs, ids relative to the event, without the wall-clock ``at``."""
    out: Counter[Entry] = Counter()
    for market_id in (env.mr, env.ou):
        page, _ = await env.changes.list(market_id, 1000, "")
        out.update(
            (c.market_id.replace(env.event_id, "EV"), c.selection_id.replace(env.event_id, "EV"), c.kind,
             c.old_value, c.new_value, c.source, c.reason, c.version)
            for c in page
        )  # fmt: skip
    return out


@pytest.fixture
async def envs(
    redis_url: str,
    redis_prefix: str,
    bus: EventBus,
    change_log: CassandraMarketChangeLog,
    odds_topics: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[Callable[[bool], Awaitable[OddsEnv]]]:
    """Each env on its own Redis prefix: the providers' shared state (sequence windows, health) is per
    deployment, and the two envs replay the same provider sessions."""
    caches: list[RedisOddsCache] = []

    async def make(log_from_bus: bool) -> OddsEnv:
        cache = await RedisOddsCache.connect(redis_url, f"{redis_prefix}{len(caches)}:")
        caches.append(cache)
        return await build_env(cache, bus, change_log, odds_topics, unique_id, RULES, log_from_bus=log_from_bus)

    yield make
    for cache in caches:
        await cache.close()


def consumer(kafka_bootstrap: str, topic_prefix: str, group: str) -> KafkaConsumerLoop:
    topics = [topic_prefix + TOPIC_ODDS, topic_prefix + TOPIC_MARKET_CHANGES]
    return KafkaConsumerLoop(kafka_bootstrap, group, topics, batch_size=200)


async def write_until(writer: ChangeLogWriter, loop: KafkaConsumerLoop, done: Callable[[], Awaitable[bool]]) -> None:
    async def run() -> None:
        async for batch in loop.batches():
            await writer.write([value for _, value in batch])
            if await done():
                return

    await asyncio.wait_for(run(), 90)


async def reference_and_derived(envs: Callable[[bool], Awaitable[OddsEnv]]) -> tuple[Counter[Entry], OddsEnv]:
    inline = await envs(False)
    derived = await envs(True)
    await scenario(inline)
    await scenario(derived)
    expected = await entries(inline)
    kinds = {e[2] for e in expected}
    assert {"PRICE", "STATUS", "PROVIDER"} <= kinds, kinds
    assert await entries(derived) == Counter(), "the pipeline appended rows it leaves to the writer"
    return expected, derived


async def test_writer_derives_the_inline_log(
    envs: Callable[[bool], Awaitable[OddsEnv]], kafka_bootstrap: str, odds_topics: str
) -> None:
    expected, derived = await reference_and_derived(envs)
    writer = ChangeLogWriter(derived.changes)
    loop = consumer(kafka_bootstrap, odds_topics, f"changelog-{uuid.uuid4().hex[:8]}")
    try:
        await write_until(writer, loop, lambda: _complete(derived, expected))
    finally:
        await loop.close()
    assert await entries(derived) == expected
    assert writer.skipped == 0


async def _complete(env: OddsEnv, expected: Counter[Entry]) -> bool:
    return sum((await entries(env)).values()) >= sum(expected.values())


class DiesMidAppend(CassandraMarketChangeLog):
    """Appends the rows of a batch that holds ``market_prefix`` entries up to the row of the middle one of
    those, then never returns (a writer killed inside its append, after some of its row batches)."""

    def __init__(self, session: object, market_prefix: str) -> None:
        super().__init__(session)
        self.prefix = market_prefix
        self.died = asyncio.Event()

    async def append(self, changes: Sequence[MarketChange]) -> None:
        mine = [i for i, c in enumerate(changes) if c.market_id.startswith(self.prefix)]
        if mine:
            # whole rows only (a row, one market write's entries, is written atomically or not at all)
            cut = mine[len(mine) // 2]
            key = (changes[cut].market_id, changes[cut].version, changes[cut].at_ms)
            while cut > 0 and (changes[cut - 1].market_id, changes[cut - 1].version, changes[cut - 1].at_ms) == key:
                cut -= 1
            await super().append(changes[:cut])
            self.died.set()
            await asyncio.Event().wait()
        await super().append(changes)


async def test_writer_dying_inside_a_batch_loses_and_duplicates_nothing(
    envs: Callable[[bool], Awaitable[OddsEnv]], kafka_bootstrap: str, odds_topics: str, ledger: Any
) -> None:
    expected, derived = await reference_and_derived(envs)
    group = f"changelog-{uuid.uuid4().hex[:8]}"
    dying = DiesMidAppend(ledger.session, derived.event_id)
    first = consumer(kafka_bootstrap, odds_topics, group)
    task = asyncio.create_task(write_until(ChangeLogWriter(dying), first, lambda: _complete(derived, expected)))
    await asyncio.wait_for(dying.died.wait(), 90)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()  # commits what was processed before the batch it died in, not that batch
    assert sum((await entries(derived)).values()) < sum(expected.values())
    second = consumer(kafka_bootstrap, odds_topics, group)
    try:
        await write_until(ChangeLogWriter(derived.changes), second, lambda: _complete(derived, expected))
    finally:
        await second.close()
    assert await entries(derived) == expected


async def test_worker_changelog_entry_point_writes_the_log_and_stops_on_sigterm(
    envs: Callable[[bool], Awaitable[OddsEnv]], cassandra_keyspace: str, odds_topics: str
) -> None:
    """``python -m inplay.worker changelog`` through the composition root, on this session's keyspace and
    topics: the log complete while it runs; SIGTERM stops it with exit 0."""
    expected, derived = await reference_and_derived(envs)
    env = {**os.environ, "INPLAY_KEYSPACE": cassandra_keyspace, "INPLAY_TOPIC_PREFIX": odds_topics,
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    command = [sys.executable, "-m", "inplay.worker", "changelog"]
    proc = await asyncio.to_thread(
        subprocess.Popen, command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not await _complete(derived, expected):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the writer did not complete the log in 90 s"
            await asyncio.sleep(0.2)
        assert await entries(derived) == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "READY" in out
