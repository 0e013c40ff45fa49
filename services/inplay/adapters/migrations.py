"""Versioned CQL migrations: every ``cql/NNNN_*.cql`` file, applied in order, once.

Applied versions are recorded in ``schema_migrations`` (append-only). Statements use IF NOT EXISTS, so a
migration interrupted half-way is simply applied again. The keyspace uses SimpleStrategy RF 1 unless
``INPLAY_CASSANDRA_REPLICATION`` gives a replication map (production: NetworkTopologyStrategy, RF 3).

    python -m inplay.adapters.migrations --hosts 127.0.0.1 --port 19042 --keyspace inplay
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any

CQL_DIR = Path(__file__).resolve().parent / "cql"
_KEYSPACE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,47}$")


def migration_files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(CQL_DIR.glob("[0-9][0-9][0-9][0-9]_*.cql")):
        files.append((int(path.name[:4]), path))
    return files


def statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def replication() -> str:
    return os.environ.get("INPLAY_CASSANDRA_REPLICATION") or "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def migrate(session: Any, keyspace: str) -> list[int]:
    """Creates the keyspace if needed and applies pending migrations; returns the versions applied now."""
    if not _KEYSPACE_RE.match(keyspace):
        raise ValueError(f"bad keyspace name {keyspace!r}")
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication()}")
    session.cluster.control_connection.wait_for_schema_agreement()
    session.set_keyspace(keyspace)
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at_ms bigint)"
    )
    done = {row.version for row in session.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, path in migration_files():
        if version in done:
            continue
        for statement in statements(path.read_text()):
            session.execute(statement, timeout=60)
        session.cluster.control_connection.wait_for_schema_agreement()
        session.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (%s, %s, %s)",
            (version, path.name, time.time_ns() // 1_000_000),
        )
        applied.append(version)
    return applied


def main() -> None:
    from cassandra.cluster import Cluster

    parser = argparse.ArgumentParser(description="Apply Inplay's CQL migrations")
    parser.add_argument("--hosts", default=os.environ.get("INPLAY_CASSANDRA_HOSTS", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("INPLAY_CASSANDRA_PORT", "9042")))
    parser.add_argument("--keyspace", default=os.environ.get("INPLAY_KEYSPACE", "inplay"))
    args = parser.parse_args()
    cluster = Cluster(args.hosts.split(","), port=args.port)
    try:
        session = cluster.connect()
        applied = migrate(session, args.keyspace)
        print(f"keyspace {args.keyspace}: applied {applied or 'nothing (up to date)'}")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
