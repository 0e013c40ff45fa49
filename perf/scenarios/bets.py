"""``steady`` and ``kickoff``: bet placement under ghz load on one server process of the real stack, each
beside its same-run baselines (a trivial RPC on the same server; raw Cassandra writes of the same rows).

Accepted / rejected / replayed bets come from the server's own Prometheus counters (scraped before and after
each run), server-side latency from its ``inplay_rpc_duration_seconds`` histogram, client-side latency and
status codes from ghz.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cassandra_baseline, cpu
from .common import OPERATOR_MD, Server, delta, histogram_quantiles, label, loadavg, server
from .ghz import GhzResult, Load, details_of, in_window, percentile, run_ghz

HEALTH = "grpc.health.v1.Health/Check"
PLACE_BET = "inplay.bets.v1.BetService/PlaceBet"
PLACE_BETS = "inplay.bets.v1.BetService/PlaceBets"
STAKE = 100


@dataclass
class Options:
    duration_s: int = 15
    concurrency: int = 50
    batch: int = 100
    batch_concurrency: int = 10
    accounts: int = 200
    kickoff_base_rps: int = 25
    kickoff_factor: int = 10
    kickoff_pre_s: int = 5
    # Server processes sharing the port (SO_REUSEPORT), one journal shard each.
    processes: int = 1
    # A py-spy binary: each run of the server is sampled into profile-<run>.txt (collapsed stacks).
    profiler: str = ""
    # Only these steady runs (health, placebet, open, placebets); empty = all.
    runs: tuple[str, ...] = ()


@dataclass
class Market:
    market_id: str
    num: int
    den: int


async def _prepare(srv: Server, accounts: int) -> Market:
    """One priced, active pre-match market in the odds cache; ``accounts`` funded through
    WalletService.Deposit with the operator identity."""
    import grpc

    from inplay.adapters.redis_odds import RedisOddsCache
    from inplay.core import Odds
    from inplay.model import MarketState, MarketStatus, SelectionPrice
    from inplay.type.v1 import types_pb2
    from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

    cache = await RedisOddsCache.connect(srv.env["INPLAY_REDIS_URL"], srv.env["INPLAY_REDIS_PREFIX"])
    odds = Odds(2, 1)
    market_id = f"perf-mkt-{uuid.uuid4().hex[:6]}"
    try:
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
    finally:
        await cache.close()
    async with grpc.aio.insecure_channel(srv.target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        await asyncio.gather(
            *(
                stub.Deposit(
                    wallet_pb2.DepositRequest(
                        account_id=f"acct-{i}",
                        amount=types_pb2.Money(amount_minor=10**10, currency="EUR"),
                        idempotency_key=f"perf-fund-{i}",
                    ),
                    metadata=OPERATOR_MD,
                )
                for i in range(accounts)
            )
        )
    return Market(market_id, odds.num, odds.den)


def _slip(market: Market, key: str) -> dict[str, Any]:
    return {
        "legs": [
            {
                "market_id": market.market_id,
                "selection_id": "home",
                "odds": {"numerator": market.num, "denominator": market.den},
            }
        ],
        "stake": {"amount_minor": STAKE, "currency": "EUR"},
        "acceptance_policy": "ACCEPTANCE_POLICY_ANY",
        "idempotency_key": key,
    }


def _user_md(accounts: int) -> dict[str, str]:
    # ghz templates: each call picks one of the funded accounts (identity as Envoy would set it).
    return {"x-inplay-subject": f"acct-{{{{randomInt 0 {accounts}}}}}"}


def _measure(
    srv: Server,
    out_dir: Path,
    protoset: Path,
    name: str,
    role: str,
    call: str,
    data: Any,
    metadata: dict[str, str],
    load: Load,
    profiler: str = "",
) -> dict[str, Any]:
    before = srv.metrics()
    cpu_before = cpu.snapshot(srv.pids)
    load_before = loadavg()
    with _profiled(srv, profiler, out_dir / f"profile-{name}.txt", load.duration_s):
        result = run_ghz(name, call, srv.target, protoset, data, metadata, load, out_dir)
    cpu_after = cpu.snapshot(srv.pids)
    after = srv.metrics()
    entry = result.as_dict()
    entry["role"] = role
    entry["loadavg_1m"] = [load_before, loadavg()]
    # CPU seconds of the server process(es) during the run: per call / per bet, this compares across runs
    # on a shared box far better than rates do (other work steals wall time, not the server's CPU time).
    cpu_s = sum(delta(before, after, "process_cpu_seconds_total").values())
    entry["server_cpu_s"] = round(cpu_s, 2)
    entry["server_cpu_us_per_call"] = round(cpu_s * 1e6 / max(1, sum(result.summary["status"].values())))
    method = "/" + call
    entry["server_latency"] = histogram_quantiles(
        before, after, "inplay_rpc_duration_seconds", method, (0.5, 0.95, 0.99)
    )
    entry["server_codes"] = {
        label(k, "code"): int(v)
        for k, v in delta(before, after, "inplay_rpc_total{").items()
        if label(k, "method") == method
    }
    if call != HEALTH:
        accepted = int(sum(delta(before, after, "inplay_bets_accepted_total").values()))
        replayed = int(sum(delta(before, after, "inplay_bets_replayed_total").values()))
        rejected = {label(k, "reason"): int(v) for k, v in delta(before, after, "inplay_bets_rejected_total{").items()}
        wall = result.summary["wall_s"] or load.duration_s
        # Journal commit to views + outbox written (per batch), from the server's histogram.
        entry["projection_lag"] = histogram_quantiles(
            before, after, "inplay_projection_lag_seconds", "", (0.5, 0.99, 1.0)
        )
        # The group commit: how big the journal batches were and how long one commit took (debit + journal
        # write + finish), from the writer's histograms: concurrency should turn into batch size.
        batches = sum(delta(before, after, "inplay_journal_batch_size_count").values())
        slips = sum(delta(before, after, "inplay_journal_batch_size_sum").values())
        entry["journal"] = {
            "batches": int(batches),
            "mean_batch": round(slips / batches, 1) if batches else 0.0,
            "commit": histogram_quantiles(before, after, "inplay_journal_commit_seconds", "", (0.5, 0.99)),
        }
        # Where the CPU of a bet went, by process, and the rate that bounds this box at (cores / total).
        entry["cpu_us_per_bet"] = cpu.per_bet(cpu_before, cpu_after, accepted)
        entry["bets"] = {
            "accepted": accepted,
            "accepted_per_s": round(accepted / wall, 1),
            "rejected": rejected,
            "replayed": replayed,
            "server_cpu_us_per_bet": round(cpu_s * 1e6 / max(1, accepted)),
        }
    if load.step_after_s:
        entry["phases"] = _phases(result, out_dir)
    print(
        f"    {name:<22} {result.summary['ok_per_s']:>8} ok calls/s  p50 {result.summary['p50_ms']:>8} ms  "
        f"p99 {result.summary['p99_ms']:>8} ms  {entry.get('bets', {}).get('accepted_per_s', '-')} bets/s  "
        f"{result.summary['status']}  server CPU {entry['server_cpu_us_per_call']} us/call",
        flush=True,
    )
    return entry


@contextlib.contextmanager
def _profiled(srv: Server, profiler: str, out: Path, seconds: int) -> Iterator[None]:
    """Samples the (first) server process with py-spy while the load runs: collapsed stacks, 100 Hz,
    ``--nonblocking`` so that the sampling does not pause the server."""
    if not profiler or not srv.pids:
        yield
        return
    cmd = [profiler, "record", "--pid", str(srv.pids[0]), "--rate", "100", "--nonblocking", "--format", "raw"]
    proc = subprocess.Popen(
        [*cmd, "--duration", str(seconds), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


def _phases(result: GhzResult, out_dir: Path) -> dict[str, Any]:
    """Before and after the step of a stepped load: offered vs achieved rate, p50/p99 (OK calls)."""
    details, t0 = details_of(out_dir, result.name)
    if not details:
        return {}
    step = result.load.step_after_s
    out: dict[str, Any] = {}
    for phase, lo, hi, offered in (
        ("before", 0.0, float(step), result.load.rps),
        ("spike", float(step), float("inf"), result.load.rps_end),
    ):
        calls, lat = in_window(details, t0, lo, hi)
        span = (min(hi, result.load.duration_s) - lo) or 1.0
        out[phase] = {
            "offered_per_s": offered,
            "ok_per_s": round(len(lat) / span, 1),
            "errors": len(calls) - len(lat),
            "p50_ms": round(percentile(lat, 0.5), 2),
            "p99_ms": round(percentile(lat, 0.99), 2),
        }
    return out


def _raw_baseline(srv: Server, accepted: int) -> dict[str, Any]:
    n = max(10_000, min(accepted, 20_000))  # small samples are dominated by warm-up
    started = loadavg()
    out = cassandra_baseline.run(srv.env, n)
    out["loadavg_1m"] = [started, loadavg()]
    first = out["raw_logged_batches"]
    print(
        f"    {'raw cassandra':<22} {first['bets_per_s']:>8} bets/s (logged batches, same rows, {n} bets)", flush=True
    )
    return out


def steady(out_dir: Path, protoset: Path, opt: Options) -> dict[str, Any]:
    """Health/Check (the baseline, always), unary PlaceBet closed loop, open loop at half its rate, PlaceBets;
    ``opt.runs`` picks a subset (the open loop needs the closed one), the raw journal baseline follows
    PlaceBets."""
    run_tag = uuid.uuid4().hex[:4]
    wanted = set(opt.runs) or {"placebet", "open", "placebets"}
    with server(out_dir, "steady", processes=opt.processes) as srv:
        market = asyncio.run(_prepare(srv, opt.accounts))
        md = _user_md(opt.accounts)
        closed = Load(opt.concurrency, opt.duration_s)

        def measure(name: str, call: str, data: Any, load: Load, role: str = "subject") -> dict[str, Any]:
            return _measure(srv, out_dir, protoset, name, role, call, data, md, load, opt.profiler)

        runs = [_measure(srv, out_dir, protoset, "steady-health", "baseline", HEALTH, {}, {}, closed, opt.profiler)]
        if "placebet" in wanted:
            runs.append(
                measure(
                    "steady-placebet", PLACE_BET, {"slip": _slip(market, f"s{run_tag}-{{{{.RequestNumber}}}}")}, closed
                )
            )
        if "open" in wanted and "placebet" in wanted:
            # Open loop at half the closed-loop maximum: a closed loop at high concurrency measures queueing
            # (Little's law), so the latency goal is set at an offered rate.
            half = max(1, int(runs[-1]["summary"]["ok_per_s"] / 2))
            open_load = Load(opt.concurrency, opt.duration_s, rps=half)
            runs.append(
                measure(
                    "steady-placebet-open",
                    PLACE_BET,
                    {"slip": _slip(market, f"o{run_tag}-{{{{.RequestNumber}}}}")},
                    open_load,
                )
            )
        raw: dict[str, Any] = {}
        if "placebets" in wanted:
            slips = [_slip(market, f"b{run_tag}-{{{{.RequestNumber}}}}-{i}") for i in range(opt.batch)]
            batch_load = Load(opt.batch_concurrency, opt.duration_s)
            runs.append(measure(f"steady-placebets{opt.batch}", PLACE_BETS, {"slips": slips}, batch_load))
            raw = _raw_baseline(srv, runs[-1]["bets"]["accepted"])
    return {"runs": runs, "raw_cassandra": raw, "options": vars(opt)}


def kickoff(out_dir: Path, protoset: Path, opt: Options) -> dict[str, Any]:
    """Unary PlaceBet at ``kickoff_base_rps`` for ``kickoff_pre_s`` seconds, then x``kickoff_factor`` at once
    (ghz step schedule) until the end; the health check baseline gets the same schedule."""
    run_tag = uuid.uuid4().hex[:4]
    peak = opt.kickoff_base_rps * opt.kickoff_factor
    load = Load(
        concurrency=min(max(peak, opt.concurrency), 1000),
        duration_s=opt.duration_s,
        rps=opt.kickoff_base_rps,
        rps_end=peak,
        step_after_s=opt.kickoff_pre_s,
    )
    with server(out_dir, "kickoff") as srv:
        market = asyncio.run(_prepare(srv, opt.accounts))
        runs = [
            _measure(srv, out_dir, protoset, "kickoff-health", "baseline", HEALTH, {}, {}, load),
            _measure(
                srv,
                out_dir,
                protoset,
                "kickoff-placebet",
                "subject",
                PLACE_BET,
                {"slip": _slip(market, f"k{run_tag}-{{{{.RequestNumber}}}}")},
                _user_md(opt.accounts),
                load,
            ),
        ]
        raw = _raw_baseline(srv, runs[-1]["bets"]["accepted"])
    return {"runs": runs, "raw_cassandra": raw, "options": vars(opt)}
