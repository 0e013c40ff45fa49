"""Bet placement under load with ghz, beside same-run baselines.

    set -a; . .stack/env; set +a
    .venv/bin/python perf/bench_bets.py [--duration 15] [--concurrency 50] [--batch 100] [--accounts 200]

Starts ``python -m inplay.server`` on the real stack (fresh keyspace / Redis prefix / topic prefix), puts one
market in the odds cache, funds the accounts, then runs with ghz (reflection, no proto files):
  1. baseline: ``grpc.health.v1.Health/Check`` on the same server (the cost of a trivial RPC here)
  2. ``BetService/PlaceBet`` (unary; the server group-commits concurrent calls)
  3. ``BetService/PlaceBets`` (``--batch`` slips per call)
  4. baseline: raw Cassandra inserts of the same rows a bet writes (driver ``execute_concurrent``, no logic)
and reports bets/s and p50/p95/p99 per run. JSON + markdown go to perf/results/bets.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
OPERATOR = {"x-inplay-subject": "perf-ops", "x-inplay-roles": "operator"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_protoset(path: Path) -> Path:
    """A FileDescriptorSet of our services and grpc.health.v1, built from the generated modules.

    ghz could use server reflection, but Python's reflection service cannot resolve method-level symbols
    (ghz asks for ``pkg.Service.Method``), so ghz gets the descriptors from this file instead."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    from inplay.bets.v1 import bets_pb2
    from inplay.wallet.v1 import wallet_pb2

    seen: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        seen[fd.name] = proto

    for module in (bets_pb2, wallet_pb2, health_pb2):
        add(module.DESCRIPTOR)
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(seen.values())).SerializeToString())
    return path


PROTOSET = write_protoset(Path(tempfile.mkdtemp()) / "inplay.protoset") if __name__ == "__main__" else None


def ghz(
    call: str,
    target: str,
    data: Any,
    metadata: dict[str, str],
    concurrency: int,
    duration: int,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    ghz_bin = os.environ.get("INPLAY_GHZ_BIN") or str(Path.home() / ".cache/inplay/bin/ghz")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
        data_file = f.name
    cmd = [
        ghz_bin,
        "--insecure",
        "--protoset",
        str(PROTOSET),
        "--call",
        call,
        "--data-file",
        data_file,
        "--metadata",
        json.dumps(metadata),
        "--concurrency",
        str(concurrency),
        "--connections",
        str(min(concurrency, 10)),
        "--duration",
        f"{duration}s",
        "--format",
        "json",
        *(extra or []),
        target,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"ghz failed ({out.returncode}): {out.stderr[-2000:]} {out.stdout[-500:]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return {
        "count": report["count"],
        "rps": round(report["rps"], 1),
        "p50_ms": round(lat.get(50, 0), 2),
        "p95_ms": round(lat.get(95, 0), 2),
        "p99_ms": round(lat.get(99, 0), 2),
        "status": report.get("statusCodeDistribution", {}),
        "errors": dict(list((report.get("errorDistribution") or {}).items())[:3]),
    }


def slip(market_id: str, key: str, num: int, den: int, stake: int = 100) -> dict[str, Any]:
    return {
        "legs": [{"market_id": market_id, "selection_id": "home", "odds": {"numerator": num, "denominator": den}}],
        "stake": {"amount_minor": stake, "currency": "EUR"},
        "acceptance_policy": "ACCEPTANCE_POLICY_ANY",
        "idempotency_key": key,
    }


async def prepare(env: dict[str, str], port: int, accounts: int) -> tuple[str, int, int]:
    import grpc

    from inplay.adapters.redis_odds import RedisOddsCache
    from inplay.core import Odds
    from inplay.model import MarketState, MarketStatus, SelectionPrice
    from inplay.type.v1 import types_pb2
    from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

    cache = await RedisOddsCache.connect(env["INPLAY_REDIS_URL"], env["INPLAY_REDIS_PREFIX"])
    market_id = f"perf-mkt-{uuid.uuid4().hex[:6]}"
    odds = Odds.from_decimal("2.00")
    await cache.put_markets(
        [
            MarketState(
                market_id=market_id,
                event_id=f"perf-ev-{uuid.uuid4().hex[:6]}",
                sport="football",
                market_type="MATCH_RESULT",
                name="Match result",
                in_play=False,
                status=MarketStatus.ACTIVE,
                status_reason="",
                selections=(SelectionPrice("home", "Home", odds), SelectionPrice("away", "Away", odds)),
                version=1,
                updated_at_ms=time.time_ns() // 1_000_000,
            )
        ]
    )
    await cache.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await asyncio.gather(
            *(
                stub.Deposit(
                    wallet_pb2.DepositRequest(
                        account_id=f"acct-{i}",
                        amount=types_pb2.Money(amount_minor=10**9, currency="EUR"),
                        idempotency_key=f"perf-{i}",
                    ),
                    metadata=tuple(OPERATOR.items()),
                )
                for i in range(accounts)
            )
        )
    return market_id, odds.num, odds.den


async def raw_cassandra_baseline(env: dict[str, str], rows: int) -> dict[str, Any]:
    """The rows one bet writes (bets, bets_by_event, bets_by_account, ledger entry, history, idempotency),
    inserted with plain prepared statements and execute_concurrent: the store's cost without our logic."""
    from cassandra.cluster import Cluster
    from cassandra.concurrent import execute_concurrent

    cluster = Cluster(env["INPLAY_CASSANDRA_HOSTS"].split(","), port=int(env["INPLAY_CASSANDRA_PORT"]))
    session = cluster.connect(env["INPLAY_KEYSPACE"])
    p = session.prepare
    stmts = [
        p(
            "INSERT INTO bets (bet_id, account_id, legs, stake_minor, currency, potential_return_minor, policy, "
            "idempotency_key, placed_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        p(
            "INSERT INTO bets_by_event (event_id, bucket, bet_id, account_id, legs, stake_minor, currency, "
            "potential_return_minor, policy, idempotency_key, placed_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        p(
            "INSERT INTO ledger_by_account (account_id, created_at_ms, entry_id, kind, amount_minor, currency, bet_id, "
            "reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ),
    ]
    legs = '[["m","home",2,1,"ev"]]'
    now = time.time_ns() // 1_000_000
    batch: list[tuple[Any, tuple[Any, ...]]] = []
    for i in range(rows):
        bet_id = f"raw-{uuid.uuid4().hex}"
        acc = f"raw-acct-{i % 200}"
        common = (bet_id, acc, legs, 100, "EUR", 200, 1, f"k{i}", now)
        batch.append((stmts[0], common))
        batch.append((stmts[1], ("raw-ev", i % 64, *common)))
        batch.append((stmts[2], (acc, now + i, f"stake:{bet_id}", 2, -100, "EUR", bet_id, f"k{i}")))
    start = time.perf_counter()
    results = await asyncio.to_thread(execute_concurrent, session, batch, concurrency=256, raise_on_first_error=False)
    elapsed = time.perf_counter() - start
    failed = sum(1 for ok, _ in results if not ok)
    cluster.shutdown()
    return {"bets": rows, "statements": len(batch), "failed": failed, "bets_per_s": round(rows / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument(
        "--scenario",
        choices=["steady", "kickoff"],
        default="steady",
        help="steady: fixed concurrency; kickoff: unary PlaceBet ramping x10 (50 -> 500 calls/s) within 10 s",
    )
    args = parser.parse_args()
    if "INPLAY_REDIS_URL" not in os.environ:
        sys.exit("load the stack env first: set -a; . .stack/env; set +a")
    tag = uuid.uuid4().hex[:6]
    env = dict(os.environ)
    env.update(
        INPLAY_REDIS_PREFIX=f"perf{tag}:",
        INPLAY_KEYSPACE=f"perf_{tag}",
        INPLAY_TOPIC_PREFIX=f"perf{tag}.",
        INPLAY_MAX_PRICE_AGE_PREMATCH_MS="86400000",
        INPLAY_MAX_STAKE_MINOR="100000000",
        INPLAY_LOG_LEVEL="WARNING",
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "inplay.server", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                import grpc

                grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=1)
                break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not start") from None
        os.environ.update({k: env[k] for k in ("INPLAY_REDIS_PREFIX", "INPLAY_KEYSPACE")})
        market_id, num, den = asyncio.run(prepare(env, port, args.accounts))
        import redis

        client = redis.Redis.from_url(env["INPLAY_REDIS_URL"])
        keys = [f"{env['INPLAY_REDIS_PREFIX']}bal:acct-{i}" for i in range(args.accounts)]
        last = [sum(int(v or 0) for v in client.mget(keys))]

        def accepted() -> int:
            """Bets accepted since the last call: every accepted bet debits a 100-cent stake."""
            now_total = sum(int(v or 0) for v in client.mget(keys))
            count = (last[0] - now_total) // 100
            last[0] = now_total
            return count

        user_md = {"x-inplay-subject": f"acct-{{{{randomInt 0 {args.accounts}}}}}"}
        results: dict[str, Any] = {"config": vars(args)}
        results["baseline_health_check"] = ghz(
            "grpc.health.v1.Health/Check", target, {}, {}, args.concurrency, args.duration
        )
        kickoff = (
            [
                "--load-schedule=step",
                "--load-start=50",
                "--load-step=50",
                "--load-end=500",
                "--load-step-duration=1s",
            ]
            if args.scenario == "kickoff"
            else None
        )
        single = ghz(
            "inplay.bets.v1.BetService/PlaceBet",
            target,
            {"slip": slip(market_id, "u{{.RequestNumber}}-{{.WorkerID}}", num, den)},
            user_md,
            args.concurrency,
            args.duration,
            kickoff,
        )
        single["accepted_bets"] = accepted()
        single["bets_per_s"] = round(single["accepted_bets"] / args.duration, 1)
        results["place_bet_unary"] = single
        batch_conc = max(1, args.concurrency // 5)
        batch = ghz(
            "inplay.bets.v1.BetService/PlaceBets",
            target,
            {
                "slips": [
                    slip(market_id, f"b{{{{.RequestNumber}}}}-{{{{.WorkerID}}}}-{i}", num, den)
                    for i in range(args.batch)
                ]
            },
            user_md,
            batch_conc,
            args.duration,
        )
        batch["accepted_bets"] = accepted()
        batch["bets_per_s"] = round(batch["accepted_bets"] / args.duration, 1)
        batch["concurrency"] = batch_conc
        results["place_bets_batch"] = batch
        results["baseline_raw_cassandra_inserts"] = asyncio.run(
            raw_cassandra_baseline(env, max(5000, int(batch["bets_per_s"] * 3)))
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"bets-{args.scenario}.json").write_text(json.dumps(results, indent=2))
    lines = [
        "| run | calls/s | accepted bets/s | p50 ms | p95 ms | p99 ms | status codes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("baseline_health_check", "place_bet_unary", "place_bets_batch"):
        r = results[name]
        lines.append(
            f"| {name} | {r['rps']} | {r.get('bets_per_s', '-')} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['status']} |"
        )
    raw = results["baseline_raw_cassandra_inserts"]
    lines.append(
        f"| baseline_raw_cassandra_inserts ({raw['statements']} rows) | - | {raw['bets_per_s']} | - | - | - "
        f"| failed {raw['failed']} |"
    )
    report = "\n".join(lines)
    (RESULTS / f"bets-{args.scenario}.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
