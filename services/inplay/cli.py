"""``python -m inplay.cli`` (or ``./dev cli``): operational commands.

reconcile [--repair] [--account A ...]   compare Redis balances with the ledger (the ledger wins)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from inplay.app import open_runtime
from inplay.config import Settings
from inplay.domain.wallet import reconcile


async def _reconcile(repair: bool, accounts: list[str] | None) -> int:
    settings = Settings.from_env()
    if settings.stack.embedded:
        print("reconcile needs the real stack: load .stack/env (./dev up) first", file=sys.stderr)
        return 2
    runtime = await open_runtime(settings)
    try:
        # The projection is named by the Redis prefix (as open_bet_path names it): a repair records its new
        # epoch under that name, and waits for this deployment's shards.
        report = await reconcile(
            runtime.wallet_store,
            runtime.ledger,
            repair=repair,
            accounts=accounts,
            projection=settings.stack.redis_prefix,
            shards=settings.journal.shards,
        )
    finally:
        await runtime.close()
    print(f"accounts checked: {report.accounts}")
    for account, (projected, ledger) in sorted(report.mismatched.items()):
        print(f"  {account}: redis={projected} ledger={ledger} diff={projected - ledger}")
    if report.mismatched:
        print("repaired from the ledger" if report.repaired else "mismatches found (run with --repair)")
        return 0 if report.repaired else 1
    print("projection matches the ledger")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inplay")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconcile", help="compare Redis balances with the ledger")
    rec.add_argument("--repair", action="store_true", help="overwrite the projection with ledger balances")
    rec.add_argument("--account", action="append", help="only these accounts")
    args = parser.parse_args(argv)
    if args.command == "reconcile":
        return asyncio.run(_reconcile(args.repair, args.account))
    return 2


if __name__ == "__main__":
    sys.exit(main())
