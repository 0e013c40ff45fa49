"""Settlement throughput on the real stack, beside a same-run baseline.

    python perf/bench_settlement.py --bets 50000 [--accounts 2000] [--page-size 5000] [--lwt-sample 20000]

1. Places N single bets on one event, in bulk through the ledger's projection shape:
   ``CassandraLedger.project_bets`` (the rows the journal projector writes: bets_by_event, bets_by_account,
   STAKE entry, PLACED history, as multi-partition UNLOGGED batches of 100 rows) in chunks of 10 000, and
   the stake debits in Redis with ``credit_batch`` (``-stake`` per ``stake:<bet_id>``). Accounts are funded
   with one DEPOSIT entry each. One third win.
2. Settles the event with :class:`SettlementService` (the production path: paged reads of the 64 buckets,
   one Rust call per page, settlement rows + bet history + payout entries, Redis credits, BetsSettled to
   Kafka, checkpoints; several workers over bucket ranges) and reports bets settled/s, with the time per step.
3. Baseline, same run, same keyspace: the raw driver reads every by-event row of the event, then writes the
   same number of rows to the same three tables the run wrote (settlement_bets, bet_history,
   ledger_by_account; under baseline keys), grouped as the run groups them (per page: settlement_bets one
   UNLOGGED batch per (run, bucket) partition, history rows and entries packed 100 to a multi-partition
   UNLOGGED batch) with 256 in flight — no domain logic, no Redis, no Kafka.
4. The cost of the exactly-once options (docs/settlement.md): plain INSERT with a deterministic key vs
   INSERT ... IF NOT EXISTS (LWT) on a scratch table, and a Redis SET NX dedupe marker per entry.

Writes perf/results/settlement.json (one entry per N, replaced on re-run). Needs the stack
(``./dev up``; ``set -a; . .stack/env; set +a``). Uses its own keyspace (default ``inplay_bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cassandra.query import BatchStatement, BatchType

from inplay import core
from inplay.adapters.cassandra_ledger import CassandraLedger
from inplay.adapters.cassandra_settlement import CassandraSettlementStore
from inplay.adapters.kafka_bus import KafkaEventBus, ensure_topics
from inplay.adapters.redis_lease import RedisLocks
from inplay.adapters.redis_wallet import RedisWallet
from inplay.config import StackSettings
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.settlement import SettlementConfig, SettlementService, make_results
from inplay.domain.settlement.evaluation import MESSAGE_BETS
from inplay.model import EntryKind, LedgerEntry, Leg, PlacedBet, RunState
from inplay.ports import TOPIC_SETTLEMENTS, Credit, LedgerError

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "perf" / "results" / "settlement.json"
IN_FLIGHT = 256
SELECTIONS = (("home", "2.10"), ("draw", "3.40"), ("away", "3.60"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class CpuMeter:
    """CPU seconds of this process (all threads: the driver's I/O thread too) and, if given, of the local
    Cassandra process (from /proc): on a 2-core box shared with the stack, who burns the CPU decides."""

    def __init__(self, cassandra_pid: int) -> None:
        self._pid = cassandra_pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def _cassandra(self) -> float:
        if not self._pid:
            return 0.0
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def snapshot(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), self._cassandra()

    def since(self, start: tuple[float, float, float]) -> dict[str, float]:
        wall, proc, cass = self.snapshot()
        out = {"wall_s": round(wall - start[0], 2), "client_cpu_s": round(proc - start[1], 2)}
        if self._pid:
            out["cassandra_cpu_s"] = round(cass - start[2], 2)
        return out


async def _run_all(session: Any, statements: list[Any], in_flight: int = IN_FLIGHT) -> None:
    """Executes statements with at most ``in_flight`` outstanding (driver futures bridged to asyncio)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(in_flight)

    async def once(stmt: Any) -> None:
        fut: asyncio.Future[None] = loop.create_future()

        def done(exc: BaseException | None) -> None:
            if not fut.done():
                fut.set_exception(exc) if exc else fut.set_result(None)

        rf = session.execute_async(stmt)
        rf.add_callbacks(lambda _: loop.call_soon_threadsafe(done, None), lambda e: loop.call_soon_threadsafe(done, e))
        await fut

    async def one(stmt: Any) -> None:
        async with sem:
            for attempt in range(5):  # idempotent rows: a timed-out write is simply written again (as the run does)
                try:
                    return await once(stmt)
                except Exception:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)

    await asyncio.gather(*(one(s) for s in statements))


def _grouped(prepared: Any, rows: dict[Any, list[tuple[Any, ...]]], max_rows: int = 100) -> list[Any]:
    out: list[Any] = []
    for group in rows.values():
        for start in range(0, len(group), max_rows):
            chunk = group[start : start + max_rows]
            if len(chunk) == 1:
                out.append(prepared.bind(chunk[0]))
            else:
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for params in chunk:
                    batch.add(prepared, params)
                out.append(batch)
    return out


async def project(ledger: CassandraLedger, bets: list[PlacedBet]) -> None:
    """The projection's rows of ``bets``, written again (idempotent) when the driver pushes back (its
    socket buffer full: ConnectionBusy), as the projector does."""
    for attempt in range(20):
        try:
            await ledger.project_bets(bets)
            return
        except LedgerError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def place(ledger: CassandraLedger, wallet: RedisWallet, event_id: str, n: int, accounts: list[str]) -> float:
    t0 = time.perf_counter()
    at = now_ms()
    deposits = [LedgerEntry(f"deposit:{a}", a, EntryKind.DEPOSIT, 10**9, "EUR", "", "bench", at) for a in accounts]
    await ledger.append_entries(deposits)
    await wallet.credit_batch([Credit(e.account_id, e.entry_id, e.amount_minor) for e in deposits])
    odds = {s: Odds.from_decimal(o) for s, o in SELECTIONS}
    chunk = 10_000
    for start in range(0, n, chunk):
        bets = []
        for i in range(start, min(n, start + chunk)):
            sel = SELECTIONS[i % 3][0]
            stake = 100 + i % 900
            bets.append(
                PlacedBet(
                    bet_id=f"{at:013x}{i:010d}",
                    account_id=accounts[i % len(accounts)],
                    legs=(Leg("match-result", sel, odds[sel], event_id),),
                    stake_minor=stake,
                    currency="EUR",
                    # As the bet path records it: settlement releases the liability (return - stake).
                    potential_return_minor=core.potential_return(stake, [odds[sel]]),
                    policy=AcceptancePolicy.NONE,
                    idempotency_key=f"bench-{i}",
                    placed_at_ms=at + i // 1000,
                )
            )
        await project(ledger, bets)
        await wallet.credit_batch([Credit(b.account_id, f"stake:{b.bet_id}", -b.stake_minor) for b in bets])
        if (start // chunk) % 10 == 0:
            print(f"  placed {start + len(bets)}/{n}", flush=True)
    return time.perf_counter() - t0


async def ledger_balance(ledger: CassandraLedger, account_id: str) -> int:
    """Σ of one account's ledger entries (the bench keyspace keeps every earlier run: no full scan)."""
    total, token = 0, ""
    while True:
        entries, token = await ledger.account_entries(account_id, 1000, token)
        total += sum(e.amount_minor for e in entries)
        if not token:
            return total


async def baseline(
    ledger: CassandraLedger, event_id: str, rows_written: dict[str, int], page_size: int
) -> dict[str, float]:
    """Raw driver: read every by-event row of the event, then write as many rows to the same tables."""
    session = ledger.session
    select = session.prepare(
        "SELECT bet_id, account_id, legs, stake_minor FROM bets_by_event WHERE event_id = ? AND bucket = ?"
    )
    t0 = time.perf_counter()
    bets: list[Any] = []

    async def read_bucket(bucket: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        out: list[Any] = []
        state = None
        while True:
            stmt = select.bind((event_id, bucket))
            stmt.fetch_size = 5000
            rs = await loop.run_in_executor(None, lambda s=stmt, p=state: session.execute(s, paging_state=p))
            out.extend(rs.current_rows)
            state = rs.paging_state
            if not state:
                return out

    for start in range(0, 64, 8):
        for rows in await asyncio.gather(*(read_bucket(b) for b in range(start, start + 8))):
            bets.extend(rows)
    read_s = time.perf_counter() - t0

    run = f"baseline-{uuid.uuid4().hex[:8]}"
    ins_bet = session.prepare(
        "INSERT INTO settlement_bets (run_id, bucket, bet_id, account_id, status, return_minor, delta_minor, kind, "
        "leg_outcomes, event_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    ins_hist = session.prepare(
        "INSERT INTO bet_history (bet_id, seq_key, kind, status, amount_minor, run_id, at_ms, leg_outcomes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    ins_entry = session.prepare(
        "INSERT INTO ledger_by_account (account_id, created_at_ms, entry_id, kind, amount_minor, currency, bet_id, "
        "reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    at = now_ms()
    t1 = time.perf_counter()
    # Grouped like the run groups them, per page of ``page_size`` bets: settlement_bets by (run, bucket)
    # partition, history rows and entries in multi-partition UNLOGGED batches of 100 whole partition groups.
    statements: list[Any] = []
    history_rows = bets[: rows_written["bet_history"]]
    entry_rows = bets[: rows_written["ledger_entries"]]
    for start in range(0, len(bets), page_size):
        rows_bets: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
        rows_hist: list[tuple[Any, ...]] = []
        rows_entry: list[tuple[Any, ...]] = []
        for i, b in enumerate(bets[start : start + page_size], start=start):
            if i < rows_written["settlement_bets"]:
                bucket = i % 64
                rows_bets[bucket].append((run, bucket, b.bet_id, b.account_id, 2, 200, 200, "SETTLED", ["WIN"], ["e"]))
        for b in history_rows[start : start + page_size]:
            rows_hist.append((b.bet_id, f"{at:013d}:{run}", "SETTLED", 2, 200, run, at, [1]))
        for b in entry_rows[start // 3 : (start + page_size) // 3]:
            rows_entry.append((b.account_id, at, f"{run}:{b.bet_id}", int(EntryKind.PAYOUT), 0, "EUR", b.bet_id, run))
        statements += _grouped(ins_bet, rows_bets)
        statements += _grouped(ins_hist, {"all": rows_hist}) + _grouped(ins_entry, {"all": rows_entry})
    build_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    chunk = 20_000
    for start in range(0, len(statements), chunk):
        await _run_all(session, statements[start : start + chunk])
    write_s = time.perf_counter() - t2
    total = time.perf_counter() - t0
    return {
        "rows_read": len(bets),
        "statements": len(statements),
        "read_s": read_s,
        "build_s": build_s,
        "write_s": write_s,
        "total_s": total,
    }


async def exactly_once_costs(ledger: CassandraLedger, redis_url: str, n: int) -> dict[str, float]:
    """Rows/s of the three ways to make a retried write harmless."""
    session = ledger.session
    session.execute("CREATE TABLE IF NOT EXISTS bench_exactly_once (k text PRIMARY KEY, v bigint)")
    plain = session.prepare("INSERT INTO bench_exactly_once (k, v) VALUES (?, ?)")
    lwt = session.prepare("INSERT INTO bench_exactly_once (k, v) VALUES (?, ?) IF NOT EXISTS")
    tag = uuid.uuid4().hex[:8]
    out: dict[str, float] = {}
    t = time.perf_counter()
    await _run_all(session, [plain.bind((f"p:{tag}:{i}", i)) for i in range(n)])
    out["plain_insert_rows_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    await _run_all(session, [plain.bind((f"p:{tag}:{i}", i)) for i in range(n)])  # the retry: same rows
    out["plain_insert_retry_rows_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    await _run_all(session, [lwt.bind((f"l:{tag}:{i}", i)) for i in range(n)])
    out["lwt_insert_rows_per_s"] = n / (time.perf_counter() - t)
    client = aioredis.from_url(redis_url)
    try:
        t = time.perf_counter()
        for start in range(0, n, 5000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 5000)):
                pipe.set(f"bench:{tag}:applied:{i}", "1", nx=True, ex=600)
            await pipe.execute()
        out["redis_setnx_dedupe_per_s"] = n / (time.perf_counter() - t)
    finally:
        await client.aclose()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bets", type=int, default=50_000)
    parser.add_argument("--accounts", type=int, default=0, help="default: bets / 25")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--commit-concurrency", type=int, default=SettlementConfig.commit_concurrency)
    parser.add_argument("--workers", type=int, default=SettlementConfig.workers)
    parser.add_argument("--keyspace", default="inplay_bench")
    parser.add_argument("--lwt-sample", type=int, default=20_000)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--profile", default="", help="write a cProfile of the settle run (only) to this file")
    parser.add_argument(
        "--cassandra-pid", type=int, default=0, help="report this (local) Cassandra process's CPU seconds per phase"
    )
    parser.add_argument(
        "--settle-at", type=float, default=0.0, help="unix time to start settling (several bench processes at once)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw-driver baseline (profiling)")
    args = parser.parse_args()
    stack = StackSettings.from_env()
    if stack.embedded:
        raise SystemExit("needs the real stack: ./dev up; set -a; . .stack/env; set +a")
    n = args.bets
    meter = CpuMeter(args.cassandra_pid)
    load_at_start = round(os.getloadavg()[0], 2)
    ledger = await CassandraLedger.connect(list(stack.cassandra_hosts), stack.cassandra_port, args.keyspace)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    topic_prefix = f"bench{uuid.uuid4().hex[:6]}."
    wallet = await RedisWallet.connect(stack.redis_url, prefix)
    await ensure_topics(stack.kafka_bootstrap, {topic_prefix + TOPIC_SETTLEMENTS: 12})
    bus = KafkaEventBus(stack.kafka_bootstrap, topic_prefix=topic_prefix)
    locks = RedisLocks.connect(stack.redis_url, prefix)
    store = CassandraSettlementStore.for_ledger(ledger)
    config = SettlementConfig(
        page_size=args.page_size,
        commit_concurrency=args.commit_concurrency,
        workers=args.workers,
        topic_prefix=topic_prefix,
    )
    service = SettlementService(store, ledger, wallet, bus, locks, config=config)
    event_id = f"bench-{uuid.uuid4().hex[:10]}"
    accounts = [f"bench-acc-{uuid.uuid4().hex[:6]}-{i}" for i in range(args.accounts or max(1, n // 25))]
    try:
        print(f"placing {n} bets on {event_id} ({len(accounts)} accounts)", flush=True)
        place_s = await place(ledger, wallet, event_id, n, accounts)
        print(f"  placed in {place_s:.1f} s ({n / place_s:,.0f} bets/s)", flush=True)

        results = make_results([("match-result", "home", LegOutcome.WIN, (1, 1))], [])
        if args.settle_at:
            await asyncio.sleep(max(0.0, args.settle_at - time.time()))
        print("settling", flush=True)
        profiler = cProfile.Profile() if args.profile else None
        settle_cpu = meter.snapshot()
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        run = await service.settle_event(event_id, results, "bench")
        settle_s = time.perf_counter() - t0
        cpu = {"settle": meter.since(settle_cpu)}
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        # The same request again: the completed run is found and returned (nothing is re-read or written).
        t0 = time.perf_counter()
        again = await service.settle_event(event_id, results, "bench")
        rerun_s = time.perf_counter() - t0
        assert again.run_id == run.run_id and again.state == RunState.COMPLETED, again
        print(f"  re-run of the same request: {rerun_s * 1000:.1f} ms", flush=True)
        assert run.state == RunState.COMPLETED, run
        assert run.stats.bets_processed == n, run.stats
        winners = [i for i in range(n) if i % 3 == 0]
        expected = sum((100 + i % 900) * 21 // 10 for i in winners)
        assert run.stats.payouts_minor == expected, (run.stats.payouts_minor, expected)
        sample = accounts[:200]
        truth = [await ledger_balance(ledger, a) for a in sample]
        assert await wallet.balances(sample) == truth, "redis != ledger"
        timings = {k: round(v, 2) for k, v in service.executor.timings.items()}
        print(f"  settled in {settle_s:.1f} s ({n / settle_s:,.0f} bets/s); busy seconds per step: {timings}")
        print(f"  cpu: {cpu['settle']}", flush=True)

        rows_written = {"settlement_bets": n, "bet_history": n, "ledger_entries": len(winners)}
        if args.no_baseline:
            return
        print("baseline (raw driver reads + writes of the same rows)", flush=True)
        base_cpu = meter.snapshot()
        base = await baseline(ledger, event_id, rows_written, args.page_size)
        cpu["baseline"] = meter.since(base_cpu)
        print(f"  cpu: {cpu['baseline']}", flush=True)
        print(f"  baseline {base['total_s']:.1f} s ({n / base['total_s']:,.0f} bets/s): {base}")

        costs = {}
        if args.lwt_sample:
            print(f"exactly-once options on {args.lwt_sample} rows", flush=True)
            costs = await exactly_once_costs(ledger, stack.redis_url, args.lwt_sample)
            print(f"  {costs}")
    finally:
        await bus.close()
        await locks.close()
        await wallet.close()
        await ledger.close()

    # BetsSettled: up to MESSAGE_BETS bets per message, per page.
    messages = -(-n // args.page_size) * -(-args.page_size // MESSAGE_BETS)
    entry = {
        "bets": n,
        "accounts": len(accounts),
        "page_size": args.page_size,
        "commit_concurrency": args.commit_concurrency,
        "workers": args.workers,
        "place_s": round(place_s, 2),
        "place_bets_per_s": round(n / place_s),
        "settle_s": round(settle_s, 2),
        "settle_bets_per_s": round(n / settle_s),
        "settle_step_busy_s": timings,
        "rerun_same_request_s": round(rerun_s, 4),
        "rerun_vs_first": round(rerun_s / settle_s, 5),
        "cpu_s": cpu,
        "rows_written": {**rows_written, "checkpoints": -(-n // args.page_size), "kafka_messages": messages},
        "payouts_minor": run.stats.payouts_minor,
        "baseline": {k: round(v, 2) for k, v in base.items()},
        "baseline_bets_per_s": round(n / base["total_s"]),
        "settle_vs_baseline": round(settle_s / base["total_s"], 2),
        "exactly_once_options_rows_per_s": {k: round(v) for k, v in costs.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cassandra_nodes": 1,
            # Other processes share the box (tests, other benchmarks): the 1-minute load average at the end.
            "load_average_1m": round(os.getloadavg()[0], 2),
            "load_average_at_start_1m": load_at_start,
        },
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_result(Path(args.out), entry)


def write_result(out: Path, entry: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    runs = [r for r in data.get("runs", []) if r.get("bets") != entry["bets"]] + [entry]
    data = {"benchmark": "settlement", "runs": sorted(runs, key=lambda r: int(r["bets"]))}
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
