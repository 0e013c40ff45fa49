"""``python -m inplay.cli`` (or ``./dev cli``): operational commands.

reconcile [--repair] [--account A ...]   compare Redis balances with the ledger (the ledger wins)
mapping load FILE [--replace]            validate and store a provider mapping table (merged per event)
mapping show                             print the stored mapping table
mapping fixture EVENT [--in-play yes|no] [--status S] [--starts-at-ms MS]
                                         change one event's fixture (every running process follows)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from inplay import diagnostics
from inplay.app import open_mapping_store, open_money_stores
from inplay.config import Settings, StackSettings
from inplay.domain.wallet import reconcile
from inplay.errors import DomainError


async def _reconcile(repair: bool, accounts: list[str] | None) -> int:
    settings = Settings.from_env()
    if settings.stack.embedded:
        print("reconcile needs the real stack: load .stack/env (./dev up) first", file=sys.stderr)
        return 2
    stores = await open_money_stores(settings.stack)
    try:
        # The projection is named by the Redis prefix (as open_bet_path names it): a repair records its new
        # epoch under that name, and waits for this deployment's shards.
        report = await reconcile(
            stores.wallet_store,
            stores.ledger,
            repair=repair,
            accounts=accounts,
            projection=settings.stack.redis_prefix,
            shards=settings.journal.shards,
        )
    finally:
        await stores.close()
    if report.lost:
        # A lost projection's idempotency records, once-markers and limits went with its balances, so even
        # balances that happen to agree are no "match": every debit answers NOT_READY until it is rebuilt.
        print("the projection lost its data (no epoch marker)")
    else:
        print(f"accounts checked: {report.accounts}")
    for account, (projected, ledger) in sorted(report.mismatched.items()):
        print(f"  {account}: redis={projected} ledger={ledger} diff={projected - ledger}")
    if report.repaired:
        print("repaired from the ledger")
        return 0
    if report.lost or report.mismatched:
        print("run with --repair to rebuild the projection from the ledger")
        return 1
    print("projection matches the ledger")
    return 0


def _fixture_changes(args: argparse.Namespace) -> dict[str, object]:
    changes: dict[str, object] = {}
    if args.in_play is not None:
        changes["in_play"] = args.in_play == "yes"
    if args.status is not None:
        changes["status"] = args.status
    if args.starts_at_ms is not None:
        changes["starts_at_ms"] = args.starts_at_ms
    return changes


async def _mapping(args: argparse.Namespace) -> int:
    stack = StackSettings.from_env()
    if not stack.redis_url:
        print("INPLAY_REDIS_URL is not set", file=sys.stderr)
        return 2
    service, close = await open_mapping_store(stack)
    try:
        if args.mapping_command == "load":
            doc = json.loads(await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8"))
            table = await service.load(doc, replace=args.replace)
            print(f"mapping stored: {len(table.events)} events, {len(table.markets)} markets")
        elif args.mapping_command == "fixture":
            try:
                event = await service.update_event(args.event_id, _fixture_changes(args))
            except DomainError as exc:  # unknown event, invalid entry, endless conflict: said plainly
                print(exc.message, file=sys.stderr)
                return 1
            print(f"event {event.event_id}: in_play={event.in_play} status={event.status!r} rev={event.rev}")
        else:
            print(json.dumps(await service.store.load() or {"events": []}, indent=2))
    finally:
        await close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inplay")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconcile", help="compare Redis balances with the ledger")
    rec.add_argument("--repair", action="store_true", help="overwrite the projection with ledger balances")
    rec.add_argument("--account", action="append", help="only these accounts")
    mapping = sub.add_parser("mapping", help="the provider id mapping table (odds feed)")
    msub = mapping.add_subparsers(dest="mapping_command", required=True)
    load = msub.add_parser("load", help="validate and store a mapping JSON file")
    load.add_argument("file")
    load.add_argument("--replace", action="store_true", help="replace the whole table instead of merging")
    msub.add_parser("show", help="print the stored mapping")
    fixture = msub.add_parser("fixture", help="change one event's fixture data")
    fixture.add_argument("event_id")
    fixture.add_argument("--in-play", choices=("yes", "no"))
    fixture.add_argument("--status")
    fixture.add_argument("--starts-at-ms", type=int)
    args = parser.parse_args(argv)
    diagnostics.install()  # kill -USR1 <pid>: where a stuck command waits
    if args.command == "reconcile":
        return asyncio.run(_reconcile(args.repair, args.account))
    if args.command == "mapping":
        return asyncio.run(_mapping(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
