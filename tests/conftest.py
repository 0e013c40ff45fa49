"""Shared fixtures: the real stack, isolated per test.

The servers are started once per run by ``./dev test`` (``scripts/stack/stack.sh up``); their addresses come
from the ``INPLAY_*`` variables (``.stack/env``). Isolation without restarting servers:
- Redis: a unique key prefix per test (``redis_prefix``);
- Cassandra: one fresh keyspace per session (``cassandra_keyspace``), migrated once; tests use unique
  account/event ids (``unique_id``);
- Kafka: a unique topic prefix per session (``topic_prefix``), topics created once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from inplay import ports

ROOT = Path(__file__).resolve().parents[1]


def _load_stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("INPLAY_")}
    env_file = ROOT / ".stack" / "env"
    if "INPLAY_REDIS_URL" not in env and env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export ") :].split("=", 1)
                env[key] = value
                os.environ.setdefault(key, value)
    return env


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    env = _load_stack_env()
    missing = [k for k in ("INPLAY_REDIS_URL", "INPLAY_CASSANDRA_HOSTS", "INPLAY_KAFKA_BOOTSTRAP") if k not in env]
    if missing:
        pytest.fail(f"the real stack is not configured ({', '.join(missing)}): run ./dev up (or ./dev test)")
    return env


@pytest.fixture(scope="session")
def redis_url(stack_env: dict[str, str]) -> str:
    return stack_env["INPLAY_REDIS_URL"]


@pytest.fixture
def redis_prefix() -> str:
    return f"t:{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env["INPLAY_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def unique_id() -> Callable[[str], str]:
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(scope="session")
def cassandra_keyspace(stack_env: dict[str, str]) -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
async def ledger(stack_env: dict[str, str], cassandra_keyspace: str) -> AsyncIterator[object]:
    from inplay.adapters.cassandra_ledger import CassandraLedger

    hosts = stack_env["INPLAY_CASSANDRA_HOSTS"].split(",")
    port = int(stack_env.get("INPLAY_CASSANDRA_PORT", "9042"))
    cassandra = await CassandraLedger.connect(hosts, port, cassandra_keyspace)
    yield cassandra
    try:
        cassandra.session.execute(f"DROP KEYSPACE IF EXISTS {cassandra_keyspace}", timeout=60)
    finally:
        await cassandra.close()


@pytest.fixture
async def wallet(redis_url: str, redis_prefix: str) -> AsyncIterator[object]:
    from inplay.adapters.redis_wallet import RedisWallet

    store = await RedisWallet.connect(redis_url, redis_prefix)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def topic_prefix(kafka_bootstrap: str) -> str:
    from inplay.adapters.kafka_bus import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = [
        ports.TOPIC_ODDS,
        ports.TOPIC_BETS,
        ports.TOPIC_SETTLEMENTS,
        ports.TOPIC_RESULTS,
        ports.TOPIC_FEED_RAW,
        ports.TOPIC_MARKET_CHANGES,
    ]
    await ensure_topics(kafka_bootstrap, {prefix + t: 3 for t in topics})
    return prefix


@pytest.fixture(scope="session")
async def bus(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[object]:
    from inplay.adapters.kafka_bus import KafkaEventBus

    producer = KafkaEventBus(kafka_bootstrap, topic_prefix=topic_prefix)
    yield producer
    await producer.close()
