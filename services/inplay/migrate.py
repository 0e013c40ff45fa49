"""``python -m inplay.migrate``: applies the ledger keyspace's CQL migrations (adapters/cql/NNNN_*.cql).

    python -m inplay.migrate [--hosts 127.0.0.1] [--port 19042] [--keyspace inplay] [--replication dc1=3] [--status]

Defaults come from ``INPLAY_CASSANDRA_HOSTS`` / ``INPLAY_CASSANDRA_PORT`` / ``INPLAY_KEYSPACE``. The
services also apply pending migrations when they start; this command is for deployments that migrate first
(a k8s Job) and for ``--status``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inplay.app import run_migrations
from inplay.config import setting_int, setting_str


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inplay.migrate", description="Inplay CQL migrations")
    parser.add_argument("--hosts", default=setting_str("INPLAY_CASSANDRA_HOSTS") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=setting_int("INPLAY_CASSANDRA_PORT"))
    parser.add_argument("--keyspace", default=setting_str("INPLAY_KEYSPACE"))
    parser.add_argument("--replication", default=None, help="overrides INPLAY_CASSANDRA_REPLICATION")
    parser.add_argument("--status", action="store_true", help="list the migrations and whether each is applied")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hosts = [h for h in args.hosts.split(",") if h]
    for line in run_migrations(hosts, args.port, args.keyspace, replication=args.replication, status=args.status):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
