"""kill -9 of the bet server during a PlaceBets load, then a restart on the same stores (issue 12).

After the restart and a retry of every unanswered call with the same keys: every acknowledged bet is in the
journal (GetBet), in the views (ListBets, ListLedgerEntries) once the projector caught up, and on Kafka
(BetPlaced) once the outbox caught up; no key placed twice; money conserved from the ledger alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.ports import TOPIC_BETS
from tests.support.api import as_user, balance, deposit, ledger_entries, slip
from tests.support.api import make_market as _make_market

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 4
CLIENTS = 8
SLIPS = 50
STAKE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "inplay.server", "--port", str(port)],
        env={**env, "INPLAY_GRPC_PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_ready(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"")[-3000:]
        try:
            await asyncio.wait_for(channel.channel_ready(), 1.0)
            return
        except TimeoutError:
            assert time.monotonic() < deadline, "the server did not come up"


class Odds:
    """What ``make_market`` needs of a runtime: its odds cache."""

    def __init__(self, runtime_odds: RedisOddsCache) -> None:
        self.odds = runtime_odds


async def test_kill_9_during_placebets_loses_nothing(
    redis_url: str,
    redis_prefix: str,
    cassandra_keyspace: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    unique_id: Callable[[str], str],
) -> None:
    env = {k: v for k, v in os.environ.items()}
    env.update(
        INPLAY_KEYSPACE=cassandra_keyspace,
        INPLAY_REDIS_PREFIX=redis_prefix,
        INPLAY_TOPIC_PREFIX=topic_prefix,
        INPLAY_WRITER_ID=unique_id("writer"),
        INPLAY_MAX_PRICE_AGE_PREMATCH_MS="600000",
        INPLAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    proc = start_server(env, port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    cache = await RedisOddsCache.connect(redis_url, redis_prefix)
    try:
        await wait_ready(channel, proc)
        market = await _make_market(Odds(cache), unique_id)
        accounts = [unique_id("acc") for _ in range(ACCOUNTS)]
        for a in accounts:
            await deposit(channel, a, 100_000_000)
        acknowledged: dict[str, str] = {}  # idempotency key -> bet id, from answered calls only
        unanswered: list[tuple[str, list[bets_pb2.BetSlip]]] = []
        stop = asyncio.Event()

        async def client(c: int) -> None:
            stub = bets_pb2_grpc.BetServiceStub(channel)
            n = 0
            while not stop.is_set():
                account = accounts[(c + n) % ACCOUNTS]
                slips = [slip(market, "2.00", f"c{c}-{n}-{i}", STAKE) for i in range(SLIPS)]
                n += 1
                try:
                    reply = await stub.PlaceBets(
                        bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account), timeout=5
                    )
                except grpc.aio.AioRpcError:
                    unanswered.append((account, slips))
                    await asyncio.sleep(0.05)
                    continue
                for s, r in zip(slips, reply.results, strict=True):
                    if r.WhichOneof("result") == "bet":
                        acknowledged[s.idempotency_key] = r.bet.bet_id
                    else:
                        unanswered.append((account, [s]))

        clients = [asyncio.create_task(client(c)) for c in range(CLIENTS)]
        await asyncio.sleep(3.0)
        before_kill = len(acknowledged)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*clients)
        assert before_kill > 0, "no bet was acknowledged before the kill"

        proc = start_server(env, port)  # same writer id: it takes its shard back and resolves the intents
        await wait_ready(channel, proc)
        stub = bets_pb2_grpc.BetServiceStub(channel)
        for account, slips in unanswered:  # every unanswered call retried with the same keys
            for _ in range(50):
                reply = await stub.PlaceBets(bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account))
                pending = [r for r in reply.results if r.WhichOneof("result") != "bet"]
                if not pending:
                    break
                assert {r.rejection.reason for r in pending} <= {
                    bets_pb2.REJECTION_REASON_IN_PROGRESS,
                    bets_pb2.REJECTION_REASON_UNAVAILABLE,
                }, pending[:2]
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"keys still unresolved after the restart: {pending[:2]}")
            for s, r in zip(slips, reply.results, strict=True):
                earlier = acknowledged.setdefault(s.idempotency_key, r.bet.bet_id)
                assert earlier == r.bet.bet_id, "a key placed two bets"

        # Every acknowledged bet is in the journal, in the views, and on Kafka; money conserved.
        for key, bet_id in list(acknowledged.items())[:200]:
            got = await stub.GetBet(
                bets_pb2.GetBetRequest(bet_id=bet_id),
                metadata=(("x-inplay-subject", "ops"), ("x-inplay-roles", "operator")),
            )
            assert got.bet.idempotency_key == key
        bet_ids = set(acknowledged.values())
        assert len(bet_ids) == len(acknowledged)
        deadline = time.monotonic() + 60
        while True:
            staked = {e.bet_id for a in accounts for e in await ledger_entries(channel, a) if e.amount.amount_minor < 0}
            if staked >= bet_ids or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert staked == bet_ids, f"{len(bet_ids - staked)} acknowledged bets missing from the views"
        for a in accounts:
            entries = await ledger_entries(channel, a)
            assert len({e.entry_id for e in entries}) == len(entries)
            assert await balance(channel, a) == sum(e.amount.amount_minor for e in entries)
        total_staked = 0
        for a in accounts:
            total_staked -= sum(
                e.amount.amount_minor for e in await ledger_entries(channel, a) if e.amount.amount_minor < 0
            )
        assert total_staked == STAKE * len(bet_ids)
        print(
            f"kill -9: {before_kill} bets acknowledged before the kill, {len(unanswered)} calls/slips unanswered, "
            f"{len(bet_ids)} distinct bets after retries, 0 lost, 0 duplicated"
        )
        published = await asyncio.to_thread(_bet_ids_on_kafka, kafka_bootstrap, topic_prefix + TOPIC_BETS, bet_ids)
        assert published >= bet_ids, f"{len(bet_ids - published)} acknowledged bets never published"
    finally:
        await cache.close()
        await channel.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _bet_ids_on_kafka(bootstrap: str, topic: str, wanted: set[str], timeout_s: float = 60) -> set[str]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{time.time_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                if msg.error() is None:
                    seen.add(json.loads(msg.value()).get("bet", {}).get("id", ""))
    finally:
        consumer.close()
    return seen
