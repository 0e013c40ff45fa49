"""Keyspaces that tests create for a server subprocess: dropped when the test is done."""

from __future__ import annotations


def drop_keyspace(stack_env: dict[str, str], keyspace: str) -> None:
    """Stale keyspaces cost the shared node CPU (flushes, compactions of thousands of tables) in every later
    test and benchmark; a server started by a test gets its own keyspace, dropped with it."""
    from cassandra.cluster import Cluster

    cluster = Cluster(
        stack_env["INPLAY_CASSANDRA_HOSTS"].split(","), port=int(stack_env.get("INPLAY_CASSANDRA_PORT", "9042"))
    )
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        cluster.shutdown()
