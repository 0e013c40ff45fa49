"""The fault suite runs on the local cluster (scripts/stack/cluster.sh, `./dev chaos`), never on the shared
single-node stack: its addresses come from the cluster's env file only, and it fails (not skips) without it."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inplay import ports
from tests.chaos.harness import HEADER, Cluster, Row
from tests.chaos.settlement import SETTLEMENT_HEADER, SettlementRow

ROOT = Path(__file__).resolve().parents[2]
ROWS: list[Row] = []
SETTLEMENT_ROWS: list[SettlementRow] = []


def _cluster_env_file() -> Path:
    return Path(os.environ.get("INPLAY_CLUSTER_DIR") or ROOT / ".stack-cluster") / "env"


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    path = _cluster_env_file()
    if not path.exists():
        pytest.fail(
            f"the cluster is not up ({path} is missing): run `./dev chaos` or `./dev up --cluster`", pytrace=False
        )
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.startswith("INPLAY_"):
            env[key] = value.strip().strip("'\"")
    # Code of this process that reads Settings/INPLAY_* (the keyspace's RF 3) sees the cluster, not .stack/env.
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def cluster(cluster_env: dict[str, str]) -> Cluster:
    return Cluster({**os.environ, **cluster_env})


def wait_for_ring(hosts: list[str], port: int, nodes: int, within_s: float = 120.0) -> None:
    """Until every node is up in the driver's view and knows every other node (``system.peers``). A node
    "ready" means its CQL port answers; it may still be joining the ring, and a keyspace made then is placed
    on fewer nodes ("replication factor 3 ... is higher than the number of nodes 2") and its new tables
    reach that node late (docs/reliability.md, defect 7)."""
    from cassandra.cluster import Cluster as CqlCluster

    deadline = time.monotonic() + within_s
    cql = CqlCluster(hosts, port=port, protocol_version=5)
    last: Exception | None = None
    try:
        session = cql.connect()
        while True:
            up = [h for h in cql.metadata.all_hosts() if h.is_up]
            try:
                known = [len(list(session.execute("SELECT peer FROM system.peers", host=h))) for h in up]
            except Exception as exc:  # the driver's pool to a node just seen up may not be open yet
                known = [-1]
                last = exc
            if len(up) >= nodes and all(k >= nodes - 1 for k in known):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the Cassandra ring did not settle: {len(up)} nodes up, peers known {known} ({last!r})"
                )
            time.sleep(0.5)
    finally:
        cql.shutdown()


@pytest.fixture(scope="session")
async def chaos_keyspace(cluster_env: dict[str, str]) -> AsyncIterator[str]:
    """A fresh RF 3 keyspace of this session, migrated at LOCAL_QUORUM (dropped at the end)."""
    from inplay.adapters.cassandra_ledger import CassandraLedger

    keyspace = f"chaos_{uuid.uuid4().hex[:10]}"
    hosts = cluster_env["INPLAY_CASSANDRA_HOSTS"].split(",")
    await asyncio.to_thread(wait_for_ring, hosts, int(cluster_env["INPLAY_CASSANDRA_PORT"]), len(hosts))
    store = await CassandraLedger.connect(
        hosts, int(cluster_env["INPLAY_CASSANDRA_PORT"]), keyspace, consistency="LOCAL_QUORUM"
    )
    yield keyspace
    try:
        await asyncio.to_thread(store.session.execute, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        await store.close()


@pytest.fixture(scope="session")
async def chaos_topics(cluster_env: dict[str, str]) -> str:
    """A topic prefix of this session, every topic created with RF 3 (min ISR 2 is the brokers' default)."""
    from inplay.adapters.kafka_bus import ensure_topics

    prefix = f"c{uuid.uuid4().hex[:8]}."
    topics = {
        prefix + t: 12
        for t in (
            ports.TOPIC_BETS,
            ports.TOPIC_ODDS,
            ports.TOPIC_SETTLEMENTS,
            ports.TOPIC_RESULTS,
            ports.TOPIC_FEED_RAW,
            ports.TOPIC_MARKET_CHANGES,
        )
    }
    await ensure_topics(cluster_env["INPLAY_KAFKA_BOOTSTRAP"], topics, replication=3, timeout_s=60)
    return prefix


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The main suite (``./dev test``) never runs the fault suite: only ``-m chaos`` selects it."""
    if "chaos" in (config.option.markexpr or ""):
        return
    keep = [i for i in items if i.get_closest_marker("chaos") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("chaos") is not None])
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS and not SETTLEMENT_ROWS:
        return
    tables = []
    if ROWS:
        tables.append(HEADER + "\n" + "\n".join(r.markdown() for r in ROWS))
    if SETTLEMENT_ROWS:
        tables.append(SETTLEMENT_HEADER + "\n" + "\n".join(r.markdown() for r in SETTLEMENT_ROWS))
    table = "\n\n".join(tables)
    terminalreporter.write_sep("=", "fault table")
    terminalreporter.write_line(table)
    out = _cluster_env_file().parent / "chaos-table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
