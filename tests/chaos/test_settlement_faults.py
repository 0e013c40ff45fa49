"""Faults during a settlement run on the local cluster (issue 16, docs/reliability.md).

Each test places a book of CHAOS_SETTLEMENT_BETS singles (default 5,000 in CI; 50,000 for the full run) on
one event through the real bet server, starts the settlement worker (a subprocess, ``settle``), injects one
fault once a fifth of the bets is processed, and supervises the run to COMPLETED: a worker that dies or gives
up is replaced by the one documented command, ``python -m <worker> resume --event EV``. Then, from the ledger
alone: every winner paid exactly once (duplicated 0, missed 0), no loser paid, entry ids unique, each
account's entries sum to deposit - stakes + payouts and to its wallet balance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from inplay import ports
from inplay.adapters.redis_odds import RedisOddsCache
from tests.chaos.conftest import SETTLEMENT_ROWS
from tests.chaos.harness import BetServer, Cluster, flushall_and_repair, leader_of_partition0, server_env, until
from tests.chaos.settlement import Settlement, SettlementRow, check_settlement, place_book

pytestmark = pytest.mark.chaos


@dataclass
class Stage:
    cluster: Cluster
    server: BetServer
    run: Settlement
    env: dict[str, str]
    topics: str


Fault = Callable[[Stage], Awaitable[str]]


async def kill_worker(s: Stage) -> str:
    s.run.kill()
    return "worker SIGKILLed mid-run; `resume --event` started by the supervisor"


async def kill_cassandra_node(s: Stage) -> str:
    await s.cluster.kill("cassandra2")
    await asyncio.sleep(5.0)
    t0 = time.monotonic()
    await s.cluster.start("cassandra2")
    return f"127.0.0.3 kill -9, restarted after 5 s (ready in {time.monotonic() - t0:.0f} s)"


async def kill_kafka_leader(s: Stage) -> str:
    topic = s.topics + ports.TOPIC_SETTLEMENTS
    leader = await asyncio.to_thread(leader_of_partition0, s.env["INPLAY_KAFKA_BOOTSTRAP"], topic)
    await s.cluster.kill(f"kafka{leader}")
    await asyncio.sleep(10.0)
    await s.cluster.start(f"kafka{leader}")
    return f"broker {leader} (leader of partition 0 of the settlements topic) kill -9, restarted after 10 s"


async def fail_over_redis(s: Stage) -> str:
    old = await s.cluster.redis_master_port()
    component = "redis-primary" if old == 26379 else "redis-replica"
    await s.cluster.kill(component)

    async def promoted() -> bool:
        try:
            return await s.cluster.redis_master_port() != old
        except (OSError, ValueError):
            return False

    took = await until(promoted, 60, "Sentinel promoting the replica")
    await s.cluster.start(component)
    return f"Redis primary :{old} kill -9, Sentinel promoted the replica in {took:.1f} s"


async def slow_cassandra_node(s: Stage) -> str:
    await s.cluster.proxy("delay cassandra1 200")
    await asyncio.sleep(15.0)
    await s.cluster.proxy("heal cassandra1")
    return "+200 ms on every chunk to and from 127.0.0.2 for 15 s"


async def partition_cassandra_node(s: Stage) -> str:
    await s.cluster.proxy("stall cassandra3")
    await asyncio.sleep(30.0)
    await s.cluster.proxy("heal cassandra3")
    return "127.0.0.4 cut off from clients and peers for 30 s, then healed"


async def kill_bet_server(s: Stage) -> str:
    s.server.kill()
    await asyncio.sleep(2.0)
    t0 = time.monotonic()
    await s.server.start()
    return f"bet server kill -9, restarted after 2 s (same writer id; serving in {time.monotonic() - t0:.1f} s)"


async def flushall_then_repair(s: Stage) -> str:
    return "FLUSHALL of Redis mid-run, then one command: " + await flushall_and_repair(s.cluster, s.env)


# id -> (title, fault, the longest stall without settlement progress it may cause, s)
FAULTS: dict[str, tuple[str, Fault, float]] = {
    "worker-kill": ("kill -9 settlement worker", kill_worker, 60),
    "cassandra-kill": ("kill -9 Cassandra node", kill_cassandra_node, 60),
    "kafka-leader-kill": ("kill -9 Kafka partition leader", kill_kafka_leader, 60),
    "redis-failover": ("kill -9 Redis primary, Sentinel promotes", fail_over_redis, 60),
    "cassandra-latency": ("+200 ms on one Cassandra node", slow_cassandra_node, 30),
    "cassandra-partition": ("Cassandra node cut off 30 s", partition_cassandra_node, 60),
    "bet-server-kill": ("kill -9 bet server", kill_bet_server, 30),
    "redis-flushall": ("FLUSHALL Redis, then repair", flushall_then_repair, 90),
}


async def settle_under_fault(
    title: str,
    fault: Fault,
    cluster: Cluster,
    cluster_env: dict[str, str],
    keyspace: str,
    topics: str,
    unique_id: Callable[[str], str],
) -> SettlementRow:
    prefix = f"s:{uuid.uuid4().hex[:8]}:"
    env = server_env(cluster_env, keyspace, prefix, topics, unique_id("writer"))
    log_dir = cluster.dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tag = title.split()[-1]
    server = BetServer(env, log_dir / f"server-settle-{tag}-{prefix[2:-1]}.log")
    odds = await RedisOddsCache.connect(cluster_env["INPLAY_REDIS_URL"], prefix)
    run: Settlement | None = None
    try:
        await server.start()
        book = await place_book(server, odds, unique_id)
        run = Settlement(env, server, book, log_dir / f"worker-{tag}-{prefix[2:-1]}.log")
        run.start()
        total = len(book.winners) + len(book.losers)
        processed = await run.wait_processed(total // 5)
        assert processed < total, "the run finished before the fault: use more bets or smaller pages"
        t_fault = time.monotonic()
        supervisor = asyncio.create_task(run.supervise())
        try:
            note = await fault(Stage(cluster, server, run, env, topics))
        finally:
            await supervisor
        note += f"; fault at {processed}/{total} processed"
        return await check_settlement(server, run, title, run.stalled_after(t_fault), note)
    finally:
        if run is not None and run.proc is not None and run.proc.poll() is None:
            run.kill()
        await odds.close()
        await server.stop()


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault_during_settlement_run(
    name: str,
    cluster: Cluster,
    cluster_env: dict[str, str],
    chaos_keyspace: str,
    chaos_topics: str,
    unique_id: Callable[[str], str],
) -> None:
    title, fault, max_stall_s = FAULTS[name]
    row = await settle_under_fault(title, fault, cluster, cluster_env, chaos_keyspace, chaos_topics, unique_id)
    SETTLEMENT_ROWS.append(row)
    print("\n" + row.markdown())
    assert row.duplicated == 0, row
    assert row.missed == 0, row
    assert row.settled == row.bets, row
    assert row.recovery_s <= max_stall_s, f"{title}: no settlement progress for {row.recovery_s:.1f} s"
