"""Shared fixtures: the real stack (Redis, Cassandra, Kafka), isolated per test or per session.

The servers are started once by ``./dev up`` (``scripts/stack/stack.sh up``; ``./dev test`` does it too) and
are shared by every test process; their addresses come from the ``INPLAY_*`` variables of ``.stack/env``
(read from the environment, or from the file when the environment lacks them). Tests never start, stop or
flush the shared servers. Isolation instead:

- Redis: a unique key prefix per test (``redis_prefix``, ``t:<8 hex>:``); ``wallet`` uses it.
- Cassandra: one fresh keyspace per session (``cassandra_keyspace``), migrated once by ``ledger`` and
  dropped at the end; tests isolate by unique account/event/bet ids (``unique_id`` / ``new_id``).
- Kafka: a unique topic prefix per session (``topic_prefix``, every ``ports.TOPIC_*`` created once);
  ``bus`` is a producer shared by the session.

Async fixtures run on the session's event loop (pyproject: ``asyncio_default_fixture_loop_scope`` and
``asyncio_default_test_loop_scope`` = session), so session-scoped clients are usable from every test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inplay import ports
from tests.support import taskdump

if TYPE_CHECKING:
    from inplay.adapters.cassandra_ledger import CassandraLedger
    from inplay.adapters.kafka_bus import KafkaEventBus
    from inplay.adapters.redis_wallet import RedisWallet

# A helper module that test modules import before they name it in pytest_plugins: registered before any of
# them is collected, so its asserts are rewritten (pytest warned "Module already imported so cannot be
# rewritten" and its asserts failed without the compared values).
pytest.register_assert_rewrite("tests.integration.conftest_odds")

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("INPLAY_REDIS_URL", "INPLAY_CASSANDRA_HOSTS", "INPLAY_CASSANDRA_PORT", "INPLAY_KAFKA_BOOTSTRAP")
# Every topic of ports, created once per session under the session's prefix (partitions per topic).
SESSION_TOPICS = {
    ports.TOPIC_ODDS: 3,
    ports.TOPIC_BETS: 3,
    ports.TOPIC_SETTLEMENTS: 3,
    ports.TOPIC_RESULTS: 3,
    ports.TOPIC_FEED_RAW: 3,
    ports.TOPIC_MARKET_CHANGES: 3,
}


def pytest_configure(config: pytest.Config) -> None:
    taskdump.install()


def _phase_watchdog(item: pytest.Item) -> Any:
    """The asyncio tasks are printed 30 s before pytest-timeout ends a stuck phase (tests/support/taskdump.py)."""
    timeout = float(item.config.getini("timeout") or 0)
    return taskdump.watchdog(timeout - 30 if timeout > 60 else 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    with _phase_watchdog(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    with _phase_watchdog(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    with _phase_watchdog(item):
        return (yield)


def new_id(prefix: str) -> str:
    """A unique id for test data (accounts, events, markets, keys): ``<prefix>-<10 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _load_stack_env() -> dict[str, str]:
    """``INPLAY_*`` from the environment, completed from ``.stack/env`` (also exported into os.environ,
    so that code reading ``Settings.from_env()`` sees the same stack)."""
    env_file = ROOT / ".stack" / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export ") :]
            key, sep, value = line.partition("=")
            if sep and key.startswith("INPLAY_"):
                os.environ.setdefault(key, value.strip().strip("'\""))
    return {k: v for k, v in os.environ.items() if k.startswith("INPLAY_")}


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The real stack's ``INPLAY_*`` variables; fails (not skips) when the stack is not configured."""
    env = _load_stack_env()
    missing = [k for k in REQUIRED if not env.get(k)]
    if missing:
        pytest.fail(
            f"the real stack is not configured (missing {', '.join(missing)}): run `./dev up` "
            "(or `bash scripts/stack/stack.sh up`), then `set -a; . .stack/env; set +a`",
            pytrace=False,
        )
    return env


@pytest.fixture(scope="session")
def unique_id() -> Callable[[str], str]:
    """``unique_id("acc")`` -> ``acc-<10 hex>`` (see :func:`new_id`)."""
    return new_id


# --- Redis ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(stack_env: dict[str, str]) -> str:
    return stack_env["INPLAY_REDIS_URL"]


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test only (``t:<8 hex>:``)."""
    return f"t:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def wallet(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisWallet]:
    from inplay.adapters.redis_wallet import RedisWallet

    store = await RedisWallet.connect(redis_url, redis_prefix)
    yield store
    await store.close()


# --- Cassandra -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def ledger(stack_env: dict[str, str]) -> AsyncIterator[CassandraLedger]:
    """A CassandraLedger on a fresh keyspace of this session (every migration applied once; dropped at
    the end). Its ``session`` serves the other Cassandra stores of the keyspace."""
    from inplay.adapters.cassandra_ledger import CassandraLedger

    keyspace = f"t_{uuid.uuid4().hex[:12]}"
    hosts = [h for h in stack_env["INPLAY_CASSANDRA_HOSTS"].split(",") if h]
    store = await CassandraLedger.connect(hosts, int(stack_env["INPLAY_CASSANDRA_PORT"]), keyspace)
    yield store
    try:
        await asyncio.to_thread(store.session.execute, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        await store.close()


@pytest.fixture(scope="session")
def cassandra_keyspace(ledger: CassandraLedger) -> str:
    """The session's keyspace, already migrated (for code that opens its own connection to it)."""
    return ledger.keyspace


# --- Kafka ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env["INPLAY_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
async def topic_prefix(kafka_bootstrap: str) -> str:
    """A topic prefix of this session (``t<8 hex>.``); every ``ports.TOPIC_*`` exists under it."""
    from inplay.adapters.kafka_bus import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka_bootstrap, {prefix + name: n for name, n in SESSION_TOPICS.items()})
    return prefix


@pytest.fixture(scope="session")
async def bus(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[KafkaEventBus]:
    from inplay.adapters.kafka_bus import KafkaEventBus

    producer = KafkaEventBus(kafka_bootstrap, topic_prefix=topic_prefix)
    yield producer
    await producer.close()


@pytest.fixture
async def served(redis_prefix: str, cassandra_keyspace: str, topic_prefix: str) -> AsyncIterator[tuple[Any, Any]]:
    """All gRPC services in-process on the real stores (this test's Redis prefix, the session keyspace and
    topics), with wide price-freshness windows; yields (runtime, channel)."""
    from dataclasses import replace

    import grpc

    from inplay.app import open_runtime
    from inplay.config import Settings
    from inplay.server import start_server

    base = Settings.from_env()
    settings = replace(
        base,
        stack=replace(base.stack, redis_prefix=redis_prefix, keyspace=cassandra_keyspace, topic_prefix=topic_prefix),
        bets=replace(base.bets, max_price_age_inplay_ms=60_000, max_price_age_prematch_ms=60_000),
    )
    runtime = await open_runtime(settings)
    server, port = await start_server(runtime, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield runtime, channel
    await channel.close()
    await server.stop(None)
    await runtime.close()


@pytest.fixture(scope="session", autouse=True)
def every_error_reason_is_registered() -> Any:
    """The error contract: every ErrorInfo reason any in-process server answered during the session is in
    ``inplay.errors.REASONS`` (and so in docs/errors.md)."""
    from inplay import errors

    yield
    assert not errors.UNREGISTERED_REASONS, (
        f"reasons answered but missing from inplay.errors.REASONS: {sorted(errors.UNREGISTERED_REASONS)}"
    )
