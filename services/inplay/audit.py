"""Audit from the ledger alone (Cassandra; never the Redis projection).

- :func:`bet_audit`: a bet's full history in order — placed, settled, rolled back, reinstated, settled
  again — with the money entries each step moved.
- :func:`balance_at`: an account's balance at any instant, rebuilt as the sum of its ledger entries
  created at or before that instant.

- :func:`verify_journal`: every checksum chain of the bet journal; the first broken link per shard.

``python -m inplay.audit bet BET_ID [--json]``,
``python -m inplay.audit balance ACCOUNT_ID [--at 2026-11-22T18:00:00Z | --at EPOCH_MS] [--json]`` and
``python -m inplay.audit verify`` (exit 1 when a chain is broken).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from inplay.domain.journal import ChainReport, JournalBatch, verify_chains, with_placed
from inplay.model import BetEvent, EntryKind, LedgerEntry, PlacedBet
from inplay.ports import Ledger

PAGE = 1000


@dataclass(frozen=True, slots=True)
class BetAudit:
    bet: PlacedBet | None
    # Every state change of the bet, oldest first.
    history: list[BetEvent]
    # Every money entry of the bet (stake, payouts, reversals), oldest first.
    entries: list[LedgerEntry]

    @property
    def net_minor(self) -> int:
        """What the bet has moved in total (stake negative)."""
        return sum(e.amount_minor for e in self.entries)


@dataclass(frozen=True, slots=True)
class BalanceAt:
    account_id: str
    at_ms: int
    balance_minor: int
    entries: int
    by_kind: dict[str, int]


async def account_entries(ledger: Ledger, account_id: str, until_ms: int | None = None) -> list[LedgerEntry]:
    """Every entry of an account, oldest first (optionally only those created at or before ``until_ms``)."""
    out: list[LedgerEntry] = []
    token = ""
    while True:
        page, token = await ledger.account_entries(account_id, PAGE, token)
        for entry in page:
            if until_ms is not None and entry.created_at_ms > until_ms:
                return out
            out.append(entry)
        if not token:
            return out


async def bet_audit(ledger: Ledger, bet_id: str) -> BetAudit:
    bet = await ledger.get_bet(bet_id)
    history = await ledger.bet_history(bet_id)
    if bet is not None:
        history = with_placed(bet, history)
    history.sort(key=lambda e: (e.at_ms, e.seq_key))
    entries: list[LedgerEntry] = []
    if bet is not None:
        entries = [e for e in await account_entries(ledger, bet.account_id) if e.bet_id == bet_id]
    return BetAudit(bet, history, entries)


async def balance_at(ledger: Ledger, account_id: str, at_ms: int) -> BalanceAt:
    entries = await account_entries(ledger, account_id, until_ms=at_ms)
    by_kind: dict[str, int] = {}
    for e in entries:
        name = EntryKind(e.kind).name
        by_kind[name] = by_kind.get(name, 0) + e.amount_minor
    return BalanceAt(account_id, at_ms, sum(e.amount_minor for e in entries), len(entries), by_kind)


async def verify_journal(ledger: Ledger) -> ChainReport:
    """Reads the whole journal of the ledger's deployment and verifies every shard's checksum chain."""
    batches: list[JournalBatch] = [batch async for batch in ledger.scan_journal()]
    return verify_chains(batches)


def format_chain_report(report: ChainReport) -> str:
    lines = [f"journal: {report.batches} batches, {report.rows} rows, {report.shards} shards"]
    for b in report.breaks:
        lines.append(f"  BROKEN shard {b.shard} at slot {b.slot}: {b.problem}")
    lines.append("every chain verifies" if not report.breaks else f"{len(report.breaks)} broken chain(s)")
    return "\n".join(lines)


async def _verify() -> int:
    from inplay.app import open_journal_reader
    from inplay.config import Settings

    settings = Settings.from_env()
    if settings.stack.embedded:
        print("verify needs the real stack: load .stack/env (./dev up) first", file=sys.stderr)
        return 2
    ledger, close = await open_journal_reader(settings)
    try:
        report = await verify_journal(ledger)
    finally:
        await close()
    print(format_chain_report(report))
    return 0 if not report.breaks else 1


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def parse_instant(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 instant (UTC if no offset)."""
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_bet_audit(audit: BetAudit) -> str:
    lines = []
    if audit.bet is None:
        lines.append("bet not found in the ledger")
    else:
        b = audit.bet
        legs = ", ".join(
            f"{lg.event_id}/{lg.market_id}/{lg.selection_id} @ {lg.odds.num}/{lg.odds.den}" for lg in b.legs
        )
        lines.append(f"bet {b.bet_id} account {b.account_id} stake {b.stake_minor} {b.currency} legs [{legs}]")
    lines.append("history:")
    for ev in audit.history:
        outcomes = ",".join(getattr(o, "name", str(o)) for o in ev.leg_outcomes)
        lines.append(
            f"  {_iso(ev.at_ms)}  {ev.kind:<12} {ev.status.name:<9} amount {ev.amount_minor:>10}  "
            f"run {ev.run_id or '-'}" + (f"  legs [{outcomes}]" if outcomes else "")
        )
    lines.append("entries:")
    for e in audit.entries:
        lines.append(f"  {_iso(e.created_at_ms)}  {EntryKind(e.kind).name:<16} {e.amount_minor:>10}  {e.entry_id}")
    lines.append(f"net: {audit.net_minor}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    from inplay.app import open_runtime
    from inplay.config import Settings

    if args.command == "verify":
        return await _verify()
    runtime = await open_runtime(Settings.from_env())
    try:
        if args.command == "bet":
            audit = await bet_audit(runtime.ledger, args.bet_id)
            if args.json:
                print(
                    json.dumps(
                        {
                            "bet_id": args.bet_id,
                            "found": audit.bet is not None,
                            "history": [
                                {
                                    "at_ms": e.at_ms,
                                    "kind": e.kind,
                                    "status": e.status.name,
                                    "amount_minor": e.amount_minor,
                                    "run_id": e.run_id,
                                    "legs": [getattr(o, "name", str(o)) for o in e.leg_outcomes],
                                }
                                for e in audit.history
                            ],
                            "entries": [
                                {
                                    "entry_id": e.entry_id,
                                    "kind": EntryKind(e.kind).name,
                                    "amount_minor": e.amount_minor,
                                    "created_at_ms": e.created_at_ms,
                                }
                                for e in audit.entries
                            ],
                            "net_minor": audit.net_minor,
                        }
                    )
                )
            else:
                print(format_bet_audit(audit))
            return 0 if audit.bet is not None else 1
        at_ms = parse_instant(args.at) if args.at else 2**62
        result = await balance_at(runtime.ledger, args.account_id, at_ms)
        if args.json:
            print(
                json.dumps(
                    {
                        "account_id": result.account_id,
                        "at_ms": at_ms,
                        "balance_minor": result.balance_minor,
                        "entries": result.entries,
                        "by_kind": result.by_kind,
                    }
                )
            )
        else:
            when = _iso(at_ms) if args.at else "now"
            print(f"balance of {result.account_id} at {when}: {result.balance_minor} ({result.entries} entries)")
            for kind, amount in sorted(result.by_kind.items()):
                print(f"  {kind:<16} {amount:>12}")
        return 0
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inplay.audit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bet = sub.add_parser("bet", help="full ordered history of a bet")
    bet.add_argument("bet_id")
    bet.add_argument("--json", action="store_true")
    bal = sub.add_parser("balance", help="balance of an account at an instant, from the ledger alone")
    bal.add_argument("account_id")
    bal.add_argument("--at", default="", help="ISO 8601 instant or epoch ms (default: now)")
    bal.add_argument("--json", action="store_true")
    sub.add_parser("verify", help="verify every checksum chain of the bet journal (tamper evidence)")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
