"""Ledger write throughput against the real Cassandra, with raw-driver baselines in the same run.

    set -a; . .stack/env; set +a
    .venv/bin/python perf/bench_ledger.py --bets 20000

Three ways to write the same N bets into a fresh keyspace (migrated, dropped at the end):

1. ``raw bets rows``: one plain prepared INSERT per bet into ``bets`` through the driver's
   ``execute_concurrent_with_args`` (the floor: what the driver + node do for one row per bet);
2. ``raw all rows``: the same rows ``append_bets`` writes (bets, bets_by_event, bets_by_account, stake entry,
   PLACED history, idempotency) as independent INSERTs, no batch (not atomic: the cost of the rows alone);
3. ``raw logged batches``: exactly the batches ``append_bets`` sends, through ``execute_concurrent`` (the
   driver's own callback loop, no asyncio): the baseline for the adapter's asyncio bridge;
4. ``CassandraLedger.append_bets``: one LOGGED batch per bet, in chunks of ``--chunk`` bets (a group commit
   of the placement path), ``--parallel`` chunks at a time.

3 and 4 alternate for ``--rounds`` rounds (best round reported; all kept in the JSON).

2 vs 3 is the price (or gain: one request instead of six) of per-bet atomicity; 3 vs 4 the adapter's
cost. Other benchmarks reuse ``make_bets`` / ``raw_insert`` / ``open_bench_ledger``. Writes
perf/results/ledger.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args  # noqa: E402

from inplay.adapters.cassandra_ledger import CassandraLedger, event_bucket, legs_to_json  # noqa: E402
from inplay.core import AcceptancePolicy, Odds  # noqa: E402
from inplay.domain.journal import placed_event, stake_entry  # noqa: E402
from inplay.model import Leg, PlacedBet  # noqa: E402

CONCURRENCY = 256  # same bound as CassandraLedger.MAX_IN_FLIGHT


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set: run `set -a; . .stack/env; set +a` first (./dev up)")
    return value


def make_bets(n: int, tag: str, events: int = 20, accounts: int = 2000, acca_every: int = 5) -> list[PlacedBet]:
    """n bets over ``events`` events and ``accounts`` accounts; every ``acca_every``-th bet is a 2-leg
    accumulator over two events (two by-event rows)."""
    t0 = time.time_ns() // 1_000_000
    out = []
    for i in range(n):
        ev = f"{tag}-ev{i % events}"
        legs = [Leg(f"{ev}:mr", "home", Odds(21, 10), ev)]
        if acca_every and i % acca_every == 0:
            ev2 = f"{tag}-ev{(i + 1) % events}"
            legs.append(Leg(f"{ev2}:ou", "over", Odds(19, 10), ev2))
        out.append(
            PlacedBet(
                bet_id=f"{t0 + i:013x}{uuid.uuid4().hex[:16]}",
                account_id=f"{tag}-acc{i % accounts}",
                legs=tuple(legs),
                stake_minor=1_000,
                currency="EUR",
                potential_return_minor=2_100,
                policy=AcceptancePolicy.ANY,
                idempotency_key=f"k{i}",
                placed_at_ms=t0 + i,
            )
        )
    return out


def raw_insert(session: Any, statement: Any, params: Sequence[Sequence[Any]], concurrency: int = CONCURRENCY) -> float:
    """Plain prepared INSERTs through execute_concurrent (blocking); returns seconds. Raises on any failure."""
    start = time.perf_counter()
    results = execute_concurrent_with_args(
        session, statement, params, concurrency=concurrency, raise_on_first_error=True
    )
    elapsed = time.perf_counter() - start
    assert all(ok for ok, _ in results)
    return elapsed


def ledger_rows(bet: PlacedBet) -> dict[str, list[tuple[Any, ...]]]:
    """The rows append_bets writes for a bet, by table (the raw 'all rows' baseline)."""
    legs = legs_to_json(bet.legs)
    common = (bet.stake_minor, bet.currency, bet.potential_return_minor, int(bet.policy), bet.idempotency_key)
    row = (bet.bet_id, bet.account_id, legs, *common, bet.placed_at_ms)
    stake, placed = stake_entry(bet), placed_event(bet)
    return {
        "bets": [row],
        "bets_by_event": [(ev, event_bucket(bet.bet_id), *row) for ev in bet.event_ids],
        "bets_by_account": [row],
        "ledger_by_account": [
            (
                stake.account_id,
                stake.created_at_ms,
                stake.entry_id,
                int(stake.kind),
                stake.amount_minor,
                stake.currency,
                stake.bet_id,
                stake.reference,
            )
        ],
        "bet_history": [
            (placed.bet_id, placed.seq_key, placed.kind, int(placed.status), placed.amount_minor, "", placed.at_ms, [])
        ],
        "bets_by_idempotency": [(bet.account_id, bet.idempotency_key, bet.placed_at_ms, bet.bet_id)],
    }


BET_COLS = (
    "bet_id, account_id, legs, stake_minor, currency, potential_return_minor, policy, idempotency_key, placed_at_ms"
)
INSERTS = {
    "bets": f"INSERT INTO bets ({BET_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "bets_by_event": f"INSERT INTO bets_by_event (event_id, bucket, {BET_COLS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "bets_by_account": f"INSERT INTO bets_by_account ({BET_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "ledger_by_account": "INSERT INTO ledger_by_account (account_id, created_at_ms, entry_id, kind, amount_minor, "
    "currency, bet_id, reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "bet_history": "INSERT INTO bet_history (bet_id, seq_key, kind, status, amount_minor, run_id, at_ms, "
    "leg_outcomes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "bets_by_idempotency": "INSERT INTO bets_by_idempotency (account_id, idempotency_key, placed_at_ms, bet_id) "
    "VALUES (?, ?, ?, ?)",
}


async def open_bench_ledger(keyspace: str | None = None) -> CassandraLedger:
    """A CassandraLedger on a fresh (migrated) keyspace of the INPLAY_* stack."""
    hosts = [h for h in env("INPLAY_CASSANDRA_HOSTS").split(",") if h]
    port = int(env("INPLAY_CASSANDRA_PORT"))
    return await CassandraLedger.connect(hosts, port, keyspace or f"bench_{uuid.uuid4().hex[:10]}")


async def run(n: int, chunk: int, parallel: int, rounds_n: int, keep: bool) -> dict[str, Any]:
    ledger = await open_bench_ledger()
    session = ledger.session
    results: dict[str, Any] = {"bets": n, "keyspace_replication": "SimpleStrategy RF 1", "chunk": chunk}
    try:
        tag = uuid.uuid4().hex[:6]
        # Warm-up (connections, prepared statement caches, JIT of the node): not measured.
        warm = make_bets(500, f"w{tag}")
        assert all(r is None for r in await ledger.append_bets(warm))

        # 1. raw: one row per bet.
        bets = make_bets(n, f"a{tag}")
        insert_bet = session.prepare(INSERTS["bets"])
        params = [ledger_rows(b)["bets"][0] for b in bets]
        secs = await asyncio.to_thread(raw_insert, session, insert_bet, params)
        results["raw_bets_rows"] = {"seconds": round(secs, 3), "rows": n, "rows_per_s": round(n / secs)}

        # 2. raw: every row append_bets writes, unbatched.
        bets = make_bets(n, f"b{tag}")
        by_table: dict[str, list[tuple[Any, ...]]] = {t: [] for t in INSERTS}
        for b in bets:
            for table, rows in ledger_rows(b).items():
                by_table[table] += rows
        prepared = {t: session.prepare(q) for t, q in INSERTS.items()}
        rows_total = sum(len(v) for v in by_table.values())
        start = time.perf_counter()
        for table, rows in by_table.items():
            await asyncio.to_thread(raw_insert, session, prepared[table], rows)
        secs = time.perf_counter() - start
        results["raw_all_rows"] = {
            "seconds": round(secs, 3),
            "rows": rows_total,
            "rows_per_s": round(rows_total / secs),
            "bets_per_s": round(n / secs),
        }

        # 3 and 4 alternate for --rounds rounds (the machine is shared: alternation spreads the noise); the
        # best round of each is reported, every round is kept in the JSON.
        def raw_batches(part: list[PlacedBet]) -> float:
            # Building the batches is timed too: append_bets builds them as well.
            start = time.perf_counter()
            batches = [(ledger.bet_batch(b), None) for b in part]
            done = execute_concurrent(session, batches, concurrency=CONCURRENCY, raise_on_first_error=True)
            elapsed = time.perf_counter() - start
            assert all(ok for ok, _ in done)
            return elapsed

        gate = asyncio.Semaphore(parallel)
        failures = 0

        async def commit(part: list[PlacedBet]) -> None:
            nonlocal failures
            async with gate:
                failures += sum(r is not None for r in await ledger.append_bets(part))

        rounds: dict[str, list[float]] = {"raw_logged_batches": [], "append_bets": []}
        for r in range(max(1, rounds_n)):
            # 3. raw: the same logged batch per bet as append_bets, through execute_concurrent (no asyncio).
            raw = make_bets(n, f"r{r}{tag}")
            rounds["raw_logged_batches"].append(await asyncio.to_thread(raw_batches, raw))
            # 4. CassandraLedger.append_bets: one logged batch per bet, in chunks like group commits.
            bets = make_bets(n, f"c{r}{tag}")
            start = time.perf_counter()
            await asyncio.gather(*(commit(bets[i : i + chunk]) for i in range(0, n, chunk)))
            rounds["append_bets"].append(time.perf_counter() - start)
            # Sanity: the bets are readable, whole.
            sample = bets[:: max(1, n // 50)]
            assert await asyncio.gather(*(ledger.get_bet(b.bet_id) for b in sample)) == sample
        for name, times in rounds.items():
            secs = min(times)
            results[name] = {
                "seconds": round(secs, 3),
                "rows": rows_total,
                "rows_per_s": round(rows_total / secs),
                "bets_per_s": round(n / secs),
                "rounds_bets_per_s": [round(n / t) for t in times],
            }
        results["append_bets"]["failed"] = failures
    finally:
        if not keep:
            await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {ledger.keyspace}", timeout=120)
        await ledger.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--bets", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500, help="bets per append_bets call (group commit size)")
    parser.add_argument("--parallel", type=int, default=2, help="append_bets calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the batch variants (3, 4)")
    parser.add_argument("--keep", action="store_true", help="keep the bench keyspace")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = asyncio.run(run(args.bets, args.chunk, args.parallel, args.rounds, args.keep))
    results["cpus"] = os.cpu_count()
    # The machine may be shared (other benchmarks, tests): the load says how much to trust one run.
    results["loadavg_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    for name in ("raw_bets_rows", "raw_all_rows", "raw_logged_batches", "append_bets"):
        r = results[name]
        extra = f", {r['bets_per_s']:>6} bets/s" if "bets_per_s" in r else ""
        print(f"{name:<18} {r['rows']:>7} rows in {r['seconds']:>6.2f} s: {r['rows_per_s']:>6} rows/s{extra}")
    out = ROOT / "perf" / "results" / "ledger.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
