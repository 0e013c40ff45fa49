"""A chunk's price writes in flight together (``LiveOddsCache.send_prices``), on the real Redis.

Guarantee under test: calls sent one after another run in the order sent, each atomic, as if each had
waited for the one before; a script error answers its own call only; a lost connection fails every call not
yet answered (outcome unknown) and the chunk is retried whole, applying what did not run and nothing twice.
Conservation of prices: every applied update has its change rows (versions 1..N, none missing, none twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from inplay.adapters import redis_odds
from inplay.adapters.redis_odds import RedisOddsCache, _OrderedCalls
from inplay.domain.feed import wire
from inplay.domain.feed.pipeline import SEND_EVERY
from inplay.ports import PriceWrite, SentPrices
from tests.integration.conftest_odds import OddsEnv, now_ms

pytest_plugins = ["tests.integration.conftest_odds"]

CHUNK = 5 * SEND_EVERY  # five parts: sent at messages 100, 200, 300, 400 and at the end of the chunk


def home(k: int) -> str:
    """Prices within the jump band, a different one each update (each update changes a selection)."""
    return "2.02" if k % 2 else "2.00"


async def change_versions(env: OddsEnv, market_id: str) -> list[int]:
    rows, token = await env.changes.list(market_id, 5000, "")
    out = [r.version for r in rows]
    while token:
        rows, token = await env.changes.list(market_id, 5000, token)
        out += [r.version for r in rows]
    return out


async def assert_applied_and_logged(env: OddsEnv, market_id: str, n: int) -> None:
    """The market is at version ``n`` and the change log holds every version 1..n (none missing)."""
    assert (await env.market(market_id)).version == n
    assert sorted(set(await change_versions(env, market_id))) == list(range(1, n + 1))


class CountingCache(RedisOddsCache):
    """The real cache, counting the price calls sent and not yet answered."""

    def __init__(self, inner: RedisOddsCache) -> None:
        super().__init__(inner.client, inner.prefix)
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

    async def send_prices(self, writes: Sequence[PriceWrite]) -> SentPrices:
        sent = await super().send_prices(writes)
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return _Counted(self, sent)


class _Counted:
    def __init__(self, cache: CountingCache, sent: SentPrices) -> None:
        self.cache, self.sent = cache, sent

    async def results(self) -> list[Any]:
        try:
            return await self.sent.results()
        finally:
            self.cache.in_flight -= 1


def use(env: OddsEnv, cache: RedisOddsCache) -> None:
    env.pipeline.cache = cache
    env.pipeline.state = cache
    env.control.cache = cache


def mr_updates(env: OddsEnv, t: int, ks: range) -> list[tuple[str, bytes, int]]:
    return [("alpha", env.alpha_mr(t + k, home(k), "3.40", "3.80"), t + k + 1) for k in ks]


async def test_a_chunks_price_writes_are_in_flight_together_and_run_in_order(odds_env: OddsEnv) -> None:
    env = odds_env
    cache = CountingCache(env.cache)
    use(env, cache)
    t = now_ms() - 60_000
    out = await env.ingest(*mr_updates(env, t, range(CHUNK)))
    assert (out.accepted, dict(out.rejected)) == (CHUNK, {}), out
    # every part of the chunk was sent before the first answer was read
    assert (cache.calls, cache.most_in_flight) == (5, 5)
    state = await env.market(env.mr)
    assert (state.version, await env.prices(env.mr)) == (CHUNK, [home(CHUNK - 1), "3.40", "3.80"])
    versions = await change_versions(env, env.mr)
    assert sorted(set(versions)) == list(range(1, CHUNK + 1))  # every update logged, in its own version
    await cache.close()


async def test_a_bet_stop_inside_a_chunk_runs_between_the_price_writes_around_it(odds_env: OddsEnv) -> None:
    env = odds_env
    t = now_ms() - 60_000
    before = mr_updates(env, t, range(150))
    stop = ("alpha", wire.alpha_bet_stop(env.seq("alpha"), t + 150, env.alpha_event), t + 151)
    after = mr_updates(env, t, range(151, 300))
    out = await env.ingest(*before, stop, *after)
    assert (out.accepted, dict(out.rejected)) == (300, {}), out
    rows, _ = await env.changes.list(env.mr, 5000, "")
    status = [(r.version, r.new_value) for r in rows if r.kind == "STATUS"]
    # version 1 opens the market; 151: the stop, after the 150 prices before it; 152: the next price reopens it
    assert [v for v, _ in status] == [1, 151, 152], status
    assert (await env.market(env.mr)).version == 300


class BadSecondCall:
    """``encode_price_items`` whose second call's text is not JSON: the price script fails on it."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = redis_odds.encode_price_items

    def __call__(self, writes: Any, held: Any) -> Any:
        self.calls += 1
        text = self.real(writes, held)
        return "not json" if self.calls == 2 else text


async def test_a_script_error_fails_its_part_and_the_parts_sent_after_it_still_count(
    odds_env: OddsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 2 (messages 100..199, the over/under market) fails in the script; parts 1 and 3..5 (the match
    result market) ran, and their states and change rows are kept; the connector's retry applies part 2
    only: the others are STALE_VERSION, none DUPLICATE."""
    env = odds_env
    t = now_ms() - 60_000
    chunk = [
        ("alpha", env.alpha_ou(t + k, home(k), "1.90"), t + k + 1)
        if SEND_EVERY <= k < 2 * SEND_EVERY
        else ("alpha", env.alpha_mr(t + k, home(k), "3.40", "3.80"), t + k + 1)
        for k in range(CHUNK)
    ]
    bad = BadSecondCall()
    monkeypatch.setattr(redis_odds, "encode_price_items", bad)
    with pytest.raises(redis_odds.aioredis.ResponseError):
        await env.ingest(*chunk)
    monkeypatch.setattr(redis_odds, "encode_price_items", bad.real)
    await env.pipeline.drain()  # the rows of what ran (shipped in the background after the failure)
    await assert_applied_and_logged(env, env.mr, CHUNK - SEND_EVERY)
    assert (await env.cache.get_markets([env.ou])) == [None]
    again = await env.ingest(*chunk)
    assert (again.accepted, dict(again.rejected)) == (SEND_EVERY, {"STALE_VERSION": CHUNK - SEND_EVERY}), again
    assert await env.prices(env.ou) == [home(2 * SEND_EVERY - 1), "1.90"]
    assert sorted(set(await change_versions(env, env.ou))) == list(range(1, SEND_EVERY + 1))
    assert await env.prices(env.mr) == [home(CHUNK - 1), "3.40", "3.80"]


async def kill_connection(client: Any, name: str) -> None:
    """Redis closes the connection with that client name (a price-write connection: ``_OrderedCalls.name``)."""
    listing = (await client.execute_command("CLIENT", "LIST")).decode()
    ids = [line.split()[0].split("=", 1)[1] for line in listing.splitlines() if f" name={name} " in f" {line} "]
    assert len(ids) == 1, listing
    await client.execute_command("CLIENT", "KILL", "ID", ids[0])


class KillAtThirdCall(RedisOddsCache):
    """The real cache whose price connection Redis closes (CLIENT KILL) once parts 1 and 2 have run: before
    part 3 is sent, or (``lose_part_3``) after it was sent and held unrun (CLIENT PAUSE WRITE), so its
    answer never comes."""

    def __init__(self, inner: RedisOddsCache, market_id: str, lose_part_3: bool) -> None:
        super().__init__(inner.client, inner.prefix)
        self.market_id = market_id
        self.lose_part_3 = lose_part_3
        self.calls = 0

    async def send_prices(self, writes: Sequence[PriceWrite]) -> SentPrices:
        self.calls += 1
        if self.calls != 3:
            return await super().send_prices(writes)
        for _ in range(500):  # parts 1 and 2 ran in Redis (their answers are on their way)
            st = (await self.get_markets([self.market_id]))[0]
            if st is not None and st.version == 2 * SEND_EVERY:
                break
            await asyncio.sleep(0.01)
        if not self.lose_part_3:
            await kill_connection(self.client, self._price_calls.name)
            await asyncio.sleep(0.05)  # the close reaches this process
            return await super().send_prices(writes)
        await self.client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            sent = await super().send_prices(writes)
            await asyncio.sleep(0.05)  # part 3 reaches Redis, which holds it
            await kill_connection(self.client, self._price_calls.name)
        finally:
            await self.client.execute_command("CLIENT", "UNPAUSE")
        return sent


def killing(env: OddsEnv, lose_part_3: bool) -> tuple[KillAtThirdCall, list[tuple[str, bytes, int]]]:
    """The pipeline on a :class:`KillAtThirdCall` cache, and a chunk of five parts for the match result."""
    cache = KillAtThirdCall(env.cache, env.mr, lose_part_3)
    use(env, cache)
    return cache, mr_updates(env, now_ms() - 60_000, range(CHUNK))


async def test_a_connection_closed_between_parts_loses_nothing(odds_env: OddsEnv) -> None:
    """Parts 1 and 2 ran and were answered before Redis closed the connection: their answers are read from
    it, and parts 3..5 go on a new connection, after them."""
    env = odds_env
    cache, chunk = killing(env, lose_part_3=False)
    out = await env.ingest(*chunk)
    assert (out.accepted, dict(out.rejected)) == (CHUNK, {}), out
    await assert_applied_and_logged(env, env.mr, CHUNK)
    await cache.close()


async def test_a_lost_answer_fails_the_chunk_nothing_runs_after_it_and_the_retry_applies_the_rest(
    odds_env: OddsEnv,
) -> None:
    """Part 3's answer is lost (the connection closed while Redis held it): the chunk fails, parts 4 and 5
    are not sent after it, parts 1 and 2 (answered) keep their states and rows, and the connector's retry
    applies parts 3..5, and nothing twice."""
    env = odds_env
    cache, chunk = killing(env, lose_part_3=True)
    with pytest.raises(RedisConnectionError):
        await env.ingest(*chunk)
    await env.pipeline.drain()
    await assert_applied_and_logged(env, env.mr, 2 * SEND_EVERY)
    again = await env.ingest(*chunk)  # the connector re-sends the chunk; the cache opens a new connection
    assert (again.accepted, dict(again.rejected)) == (
        CHUNK - 2 * SEND_EVERY,
        {"STALE_VERSION": 2 * SEND_EVERY},
    ), again
    await assert_applied_and_logged(env, env.mr, CHUNK)
    await cache.close()


async def test_ordered_calls_answer_in_any_order_and_a_script_error_answers_its_own_call(
    live_cache: RedisOddsCache,
) -> None:
    script = "if ARGV[1] == 'bad' then error('bad call') end return ARGV[1]"
    calls = _OrderedCalls(live_cache.client, script, f"test-{live_cache.prefix}")
    sent = [await calls.send([text]) for text in ("a", "bad", "c", "d")]
    assert await calls.answer(sent[3]) == b"d"  # read past the others: each keeps its own answer
    assert await calls.answer(sent[0]) == b"a"
    with pytest.raises(redis_odds.aioredis.ResponseError, match="bad call"):
        await calls.answer(sent[1])
    assert await calls.answer(sent[2]) == b"c"
    assert await calls.answer(await calls.send(["e"])) == b"e"  # the connection stayed in step
    await calls.close()


async def test_a_lost_answer_seen_by_its_caller_does_not_fail_the_next_call(live_cache: RedisOddsCache) -> None:
    """Redis holds a call unrun (CLIENT PAUSE WRITE) while its connection is killed: the call fails with its
    outcome unknown; once its caller has read that failure, the next call goes out on a new connection
    (the connector's retry of a failed chunk is not failed again by the same loss)."""
    calls = _OrderedCalls(live_cache.client, "return ARGV[1]", f"test-{live_cache.prefix}")
    assert await calls.answer(await calls.send(["warm"])) == b"warm"
    await live_cache.client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        held = await calls.send(["held"])
        await asyncio.sleep(0.05)  # the call reaches Redis, which holds it
        await kill_connection(live_cache.client, calls.name)
    finally:
        await live_cache.client.execute_command("CLIENT", "UNPAUSE")
    with pytest.raises(RedisConnectionError):
        await calls.answer(held)
    assert await calls.answer(await calls.send(["next"])) == b"next"
    await calls.close()
