"""Same-run store baseline: the rows N accepted bets write, inserted straight through the driver.

* ``raw_journal_batches``: the journal's commit shape, the ceiling of the new bet path: the same bets as
  journal rows, ``JOURNAL_BATCH`` per single-partition UNLOGGED batch (``CassandraLedger.write_journal``'s
  statement, preceded by the slot's claim, a compare-and-set on a small row), through
  ``execute_concurrent``; ``raw_journal_batches_no_cas``: the same without the claims (their cost);
* ``raw_logged_batches``: the pre-journal shape, for each bet the LOGGED batch of 6 rows in 6 partitions
  (``CassandraLedger.bet_batch``), through the driver's ``execute_concurrent`` (no asyncio, no service logic);
* ``raw_rows_unbatched`` (when ``perf/bench_ledger.py`` is present, its ``ledger_rows``/``INSERTS``
  helpers): the same rows as independent INSERTs.

Written into the scenario server's own keyspace (already migrated), with bet ids of their own.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from typing import Any

from .common import ROOT

CONCURRENCY = 256  # the ledger adapter's in-flight bound
JOURNAL_BATCH = 100  # slips per PlaceBets call in the steady scenario


def _bets(n: int, tag: str, accounts: int) -> list[Any]:
    from inplay.core import AcceptancePolicy, Odds
    from inplay.model import Leg, PlacedBet

    t0 = time.time_ns() // 1_000_000
    event = f"{tag}-ev"
    return [
        PlacedBet(
            bet_id=f"{t0 + i:013x}{uuid.uuid4().hex[:16]}",
            account_id=f"{tag}-acct-{i % accounts}",
            legs=(Leg(f"{tag}-mkt", "home", Odds(2, 1), event),),
            stake_minor=100,
            currency="EUR",
            potential_return_minor=200,
            policy=AcceptancePolicy.ANY,
            idempotency_key=f"{tag}-{i}",
            placed_at_ms=t0 + i,
        )
        for i in range(n)
    ]


def run(env: dict[str, str], n: int, accounts: int = 200) -> dict[str, Any]:
    import asyncio

    from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args

    from inplay.adapters.cassandra_ledger import CassandraLedger

    ledger = asyncio.run(
        CassandraLedger.connect(
            env["INPLAY_CASSANDRA_HOSTS"],
            int(env.get("INPLAY_CASSANDRA_PORT", "9042")),
            env["INPLAY_KEYSPACE"],
            create_schema=False,
        )
    )
    session = ledger.session
    out: dict[str, Any] = {"bets": n}
    try:
        tag = f"raw{uuid.uuid4().hex[:6]}"
        out["raw_journal_batches"] = _journal(ledger, _bets(n, tag + "j", accounts), tag, claim=True)
        # The same batches without the slot's claim (compare-and-set): what the claim costs.
        out["raw_journal_batches_no_cas"] = _journal(ledger, _bets(n, tag + "p", accounts), tag + "p")
        bets = _bets(n, tag, accounts)
        start = time.perf_counter()
        done = execute_concurrent(
            session, [(ledger.bet_batch(b), None) for b in bets], concurrency=CONCURRENCY, raise_on_first_error=False
        )
        secs = time.perf_counter() - start
        out["raw_logged_batches"] = {
            "seconds": round(secs, 3),
            "failed": sum(1 for ok, _ in done if not ok),
            "bets_per_s": round(n / secs, 1),
        }
        helper = _bench_ledger()
        if helper is not None:
            bets = _bets(n, tag + "u", accounts)
            by_table: dict[str, list[tuple[Any, ...]]] = {t: [] for t in helper.INSERTS}
            for b in bets:
                for table, rows in helper.ledger_rows(b).items():
                    by_table[table] += rows
            prepared = {t: session.prepare(q) for t, q in helper.INSERTS.items()}
            rows_total = sum(len(v) for v in by_table.values())
            failed = 0
            start = time.perf_counter()
            for table, rows in by_table.items():
                results = execute_concurrent_with_args(
                    session, prepared[table], rows, concurrency=CONCURRENCY, raise_on_first_error=False
                )
                failed += sum(1 for ok, _ in results if not ok)
            secs = time.perf_counter() - start
            out["raw_rows_unbatched"] = {
                "seconds": round(secs, 3),
                "rows": rows_total,
                "failed": failed,
                "bets_per_s": round(n / secs, 1),
            }
    finally:
        asyncio.run(ledger.close())
    return out


def _journal(ledger: Any, bets: list[Any], tag: str, claim: bool = False) -> dict[str, Any]:
    from cassandra.concurrent import execute_concurrent
    from cassandra.query import BatchStatement, BatchType

    from inplay.domain.journal import ROW_BET, bet_row_body

    session = ledger.session
    statements = []
    for slot, start_i in enumerate(range(0, len(bets), JOURNAL_BATCH), start=1):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        chunk = bets[start_i : start_i + JOURNAL_BATCH]
        if claim:  # write_journal's first step: the slot's claim (IF NOT EXISTS on a small row)
            statements.append((ledger._claim_journal_slot, (tag, 0, slot, "writer#0123456789ab")))
        batch.add(ledger._ins_journal_header, (tag, 0, slot, slot - 1, "0" * 64, "x" * 64, 0, len(chunk)))
        for pos, bet in enumerate(chunk):
            batch.add(ledger._ins_journal_row, (tag, 0, slot, pos, ROW_BET, bet_row_body(bet, "h")))
        statements.append((batch, None))
    start = time.perf_counter()
    done = execute_concurrent(session, statements, concurrency=32, raise_on_first_error=False)
    secs = time.perf_counter() - start
    return {
        "seconds": round(secs, 3),
        "batch": JOURNAL_BATCH,
        "failed": sum(1 for ok, _ in done if not ok),
        "bets_per_s": round(len(bets) / secs, 1),
    }


def _bench_ledger() -> Any:
    """perf/bench_ledger.py (another benchmark's helpers) if present, else None."""
    perf = str(ROOT / "perf")
    if perf not in sys.path:
        sys.path.insert(0, perf)
    try:
        return importlib.import_module("bench_ledger")
    except ImportError:
        return None
