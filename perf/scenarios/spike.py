"""Kickoff spike through Envoy, with clients that retry with the same key (issue 16).

    set -a; . .stack/env; set +a
    PYTHONPATH=services:perf .venv/bin/python -m scenarios.spike [--steady-s 10] [--factor 10] [--spike-s 10]

One server process on the real stack, the rendered edge config in front of it (JWT, RBAC, rate limits), and
an asyncio gRPC client (bearer tokens of many funded accounts). Three phases:

1. **steady maximum**: closed loop at ``--concurrency`` in-flight PlaceBet calls for ``--steady-s``: the
   accepted bets/s the stack sustains (the reference);
2. **pre**: open loop at ``--base-frac`` x that maximum for ``--pre-s``;
3. **spike**: open loop at ``--factor`` x the pre rate for ``--spike-s`` (kickoff: everyone bets at once;
   with the defaults 0.3 x 10 = 3 x the steady maximum is offered).

Every arrival is one new slip with its own idempotency key; RESOURCE_EXHAUSTED (Envoy's global bucket, or
the journal queue's OVERLOADED), UNAVAILABLE and IN_PROGRESS are retried **with the same key** after a
jittered backoff, until an answer or a 10 s budget. Reported: accepted bets/s during the spike vs the steady
maximum, client latency of the accepted attempts (p50/p99), end-to-end latency including retries, shed
counts by code, and the exactly-once check (accepted bet ids per key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .common import ROOT, loadavg, server

RETRYABLE = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "ABORTED")


@dataclass
class Phase:
    name: str
    started: float = 0.0
    ended: float = 0.0
    accepted: int = 0
    attempt_ms: list[float] = field(default_factory=list)  # the accepted attempts
    upstream_ms: list[float] = field(default_factory=list)  # the same, as Envoy saw them (x-envoy-upstream-...)
    window_end: float = 0.0  # open loop: when the last arrival was sent (the spike itself, without the drain)
    in_window: int = 0  # accepted before window_end
    total_ms: list[float] = field(default_factory=list)  # first attempt -> accepted (incl. retries)
    codes: Counter[str] = field(default_factory=Counter)
    gave_up: int = 0

    def summary(self) -> dict[str, Any]:
        wall = max(self.ended - self.started, 1e-9)
        return {
            "phase": self.name,
            "seconds": round(wall, 2),
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted / wall, 1),
            "attempt_p50_ms": pct(self.attempt_ms, 0.50),
            "attempt_p99_ms": pct(self.attempt_ms, 0.99),
            "upstream_p50_ms": pct(self.upstream_ms, 0.50),
            "upstream_p99_ms": pct(self.upstream_ms, 0.99),
            "arrival_window_s": round(self.window_end - self.started, 2) if self.window_end else None,
            "accepted_per_s_in_window": (
                round(self.in_window / max(self.window_end - self.started, 1e-9), 1) if self.window_end else None
            ),
            "end_to_end_p50_ms": pct(self.total_ms, 0.50),
            "end_to_end_p99_ms": pct(self.total_ms, 0.99),
            "codes": dict(self.codes),
            "gave_up": self.gave_up,
        }


class LoopLag:
    """How late the client's own event loop runs a 20 ms timer: a saturated client inflates the latencies it
    measures (its callbacks run late), which this separates from the server's."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.02)
            self.lags_ms.append((time.perf_counter() - t0 - 0.02) * 1000)

    def summary(self) -> dict[str, float]:
        return {"p50": pct(self.lags_ms, 0.5), "p99": pct(self.lags_ms, 0.99), "max": pct(self.lags_ms, 1.0)}


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def pushback_s(err: Any) -> float:
    """The retry delay a shed answer carries in its ``grpc-retry-pushback-ms`` trailer (0 without one)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-retry-pushback-ms":
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return 0.0
    return 0.0


class Client:
    def __init__(self, target: str, tokens: list[tuple[tuple[str, str], ...]], market: Any) -> None:
        import grpc

        from inplay.bets.v1 import bets_pb2_grpc

        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.max_concurrent_streams", 10_000)])
        self.stub = bets_pb2_grpc.BetServiceStub(self.channel)
        self.tokens = tokens
        self.market = market
        self.rng = random.Random(16)
        self.bets_by_key: dict[str, set[str]] = {}

    def request(self, key: str) -> Any:
        from inplay.bets.v1 import bets_pb2
        from inplay.type.v1 import types_pb2

        leg = bets_pb2.BetLeg(
            market_id=self.market.market_id,
            selection_id="home",
            odds=types_pb2.Odds(numerator=self.market.num, denominator=self.market.den),
        )
        slip = bets_pb2.BetSlip(
            legs=[leg],
            stake=types_pb2.Money(amount_minor=100, currency="EUR"),
            acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_ANY,
            idempotency_key=key,
        )
        return bets_pb2.PlaceBetRequest(slip=slip)

    async def bet(self, phase: Phase, budget_s: float = 10.0) -> None:
        import grpc

        key = uuid.uuid4().hex
        md = self.tokens[self.rng.randrange(len(self.tokens))]
        req = self.request(key)
        first = time.perf_counter()
        delay = 0.05
        while True:
            t0 = time.perf_counter()
            try:
                call = self.stub.PlaceBet(req, metadata=md, timeout=5)
                resp = await call
                upstream = dict(await call.initial_metadata() or ()).get("x-envoy-upstream-service-time")
            except grpc.aio.AioRpcError as err:
                phase.codes[err.code().name] += 1
                if err.code().name not in RETRYABLE or time.perf_counter() - first > budget_s:
                    phase.gave_up += 1
                    return
                # The server's hint (admission control: RetryInfo / grpc-retry-pushback-ms) is the floor of
                # the backoff; the jitter spreads the retries of one spike over the hinted interval.
                delay = max(delay, pushback_s(err))
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, max(1.0, 4 * pushback_s(err)))
                continue
            now = time.perf_counter()
            phase.codes["OK"] += 1
            phase.accepted += 1
            phase.attempt_ms.append((now - t0) * 1000)
            if upstream is not None:
                phase.upstream_ms.append(float(upstream))
            if not phase.window_end or now <= phase.window_end:
                phase.in_window += 1
            phase.total_ms.append((now - first) * 1000)
            self.bets_by_key.setdefault(key, set()).add(resp.bet.bet_id)
            return

    async def closed_loop(self, phase: Phase, concurrency: int, seconds: float) -> None:
        phase.started = time.perf_counter()
        stop = phase.started + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                await self.bet(phase)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.ended = time.perf_counter()

    async def open_loop(self, phase: Phase, rps: float, seconds: float) -> None:
        """Arrivals at ``rps`` regardless of answers (a spike does not wait for the server)."""
        phase.started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        n = int(rps * seconds)
        for i in range(n):
            due = phase.started + i / rps
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(self.bet(phase)))
        phase.window_end = time.perf_counter()
        # The phase's throughput counts what was accepted by the end of its arrivals plus the drain.
        await asyncio.gather(*tasks)
        phase.ended = time.perf_counter()


async def run(
    args: argparse.Namespace, target: str, tokens: list[tuple[tuple[str, str], ...]], market: Any
) -> dict[str, Any]:
    client = Client(target, tokens, market)
    lag = LoopLag()
    probe = asyncio.create_task(lag.run())
    warm = Phase("warmup")
    await client.closed_loop(warm, args.concurrency, 2.0)
    steady = Phase("steady-max")
    await client.closed_loop(steady, args.concurrency, args.steady_s)
    steady_rate = steady.accepted / max(steady.ended - steady.started, 1e-9)
    base = max(1.0, steady_rate * args.base_frac)
    pre = Phase("pre")
    await client.open_loop(pre, base, args.pre_s)
    spike = Phase("spike")
    await client.open_loop(spike, base * args.factor, args.spike_s)
    await client.channel.close()
    probe.cancel()
    doubled = {k: v for k, v in client.bets_by_key.items() if len(v) > 1}
    s = spike.summary()
    return {
        "phases": [p.summary() for p in (steady, pre, spike)],
        "offered_rps": {"pre": round(base, 1), "spike": round(base * args.factor, 1)},
        "spike_vs_steady": round(s["accepted_per_s"] / max(steady_rate, 1e-9), 3),
        "spike_vs_steady_in_window": round((s["accepted_per_s_in_window"] or 0) / max(steady_rate, 1e-9), 3),
        "spike_accepted_attempt_p99_ms": s["attempt_p99_ms"],
        "spike_accepted_upstream_p99_ms": s["upstream_p99_ms"],
        "client_loop_lag_ms": lag.summary(),
        "keys_with_two_bets": len(doubled),
    }


def ghz_spike(
    args: argparse.Namespace, srv: Any, target: str, tokens: list[str], market: Any, out_dir: Path
) -> dict[str, Any]:
    """The same three phases with ghz (Go) as the client instead of this process's asyncio client.

    On a 2-core box the Python client saturates at the spike's rate (its event loop runs timers up to 0.9 s
    late), so its latencies measure itself. ghz costs a fraction of the CPU per call. It does not retry: a
    shed arrival counts as shed (the same-key retry of a shed call is proven by tests/integration/
    test_admission.py); its open loop at ``--factor`` x the pre rate stands for the arrivals plus retries.
    The spike's figures count the calls *started* in the spike window (ghz's per-call details)."""
    from . import cpu
    from .bets import PLACE_BET, _slip
    from .common import delta, label
    from .ghz import Load, details_of, in_window, percentile, run_ghz, write_protoset

    protoset = write_protoset(out_dir / "spike.protoset")
    # One bearer token per call, round-robin over the accounts: ghz 0.121 takes one metadata object, but
    # its templates have sprig's list/index/mod (JWTs contain no backticks, Go's raw-string quote).
    listed = " ".join(f"`{t}`" for t in tokens)
    md = {"authorization": f"Bearer {{{{ index (list {listed}) (mod .RequestNumber {len(tokens)}) }}}}"}
    tag = uuid.uuid4().hex[:4]

    def data(prefix: str) -> dict[str, Any]:
        return {"slip": _slip(market, f"{prefix}{tag}-{{{{.RequestNumber}}}}")}

    run_ghz("spike-warmup", PLACE_BET, target, protoset, data("w"), md, Load(args.concurrency, 2), out_dir)
    cpu0 = cpu.snapshot(srv.pids)
    steady = run_ghz(
        "spike-steady", PLACE_BET, target, protoset, data("s"), md, Load(args.concurrency, int(args.steady_s)), out_dir
    )
    steady_cpu = cpu.per_bet(cpu0, cpu.snapshot(srv.pids), int(steady.summary["ok"]))
    steady_rate = float(steady.summary["ok_per_s"])
    base = max(1, round(steady_rate * args.base_frac))
    peak = round(base * args.factor)
    pre_s, spike_s = int(args.pre_s), int(args.spike_s)
    load = Load(args.ghz_workers, pre_s + spike_s, rps=base, rps_end=peak, step_after_s=pre_s, connections=20)
    before, cpu1 = srv.metrics(), cpu.snapshot(srv.pids)
    stepped = run_ghz("spike-step", PLACE_BET, target, protoset, data("k"), md, load, out_dir)
    after, cpu2 = srv.metrics(), cpu.snapshot(srv.pids)
    details, t0 = details_of(out_dir, stepped.name)

    def window(lo: float, hi: float) -> dict[str, Any]:
        calls, ok = in_window(details, t0, lo, hi)
        return {
            "started": len(calls),
            "started_per_s": round(len(calls) / (hi - lo), 1),
            "accepted": len(ok),
            "accepted_per_s": round(len(ok) / (hi - lo), 1),
            "accepted_p50_ms": round(percentile(ok, 0.50), 1),
            "accepted_p99_ms": round(percentile(ok, 0.99), 1),
            "accepted_max_ms": round(ok[-1], 1) if ok else 0.0,
            "codes": dict(Counter(d["status"] for d in calls)),
        }

    pre, spike = window(0.0, float(pre_s)), window(float(pre_s), float(pre_s + spike_s))
    shed = {
        f"{label(k, 'method')}:{label(k, 'why')}": int(v)
        for k, v in delta(before, after, "inplay_admission_shed_total{").items()
    }
    return {
        "client": "ghz",
        "steady": {**steady.summary, "concurrency": args.concurrency, "cpu_us_per_bet": steady_cpu},
        "offered_rps": {"pre": base, "spike": peak},
        "pre": pre,
        "spike": spike,
        "spike_vs_steady": round(spike["accepted_per_s"] / max(steady_rate, 1e-9), 3),
        "spike_accepted_p99_ms": spike["accepted_p99_ms"],
        "server_accepted": int(sum(delta(before, after, "inplay_bets_accepted_total").values())),
        "server_rejected": {
            label(k, "reason"): int(v) for k, v in delta(before, after, "inplay_bets_rejected_total{").items()
        },
        "server_shed": shed,
        # pre + spike together: per accepted bet, so the CPU that shedding cost shows beside the steady run's
        "step_cpu_us_per_accepted_bet": cpu.per_bet(cpu1, cpu2, int(pre["accepted"]) + int(spike["accepted"])),
        "timeline": stepped.timeline,
    }


def admission_env(args: argparse.Namespace) -> dict[str, str]:
    """The server's admission-control settings the run overrides (unset: the registry's defaults)."""
    pairs = (
        ("INPLAY_ADMISSION_MAX_IN_FLIGHT", args.admission_max_in_flight),
        ("INPLAY_ADMISSION_QUEUE_TARGET_MS", args.admission_queue_ms),
        ("INPLAY_ADMISSION_RETRY_AFTER_MS", args.admission_retry_ms),
    )
    return {name: str(value) for name, value in pairs if value is not None}


def _tokens(settings: Any, key: Any, accounts: int) -> list[tuple[tuple[str, str], ...]]:
    from inplay_edge import mint_token

    def token(i: int) -> str:
        return mint_token(key, f"acct-{i}", ttl_s=3600, audience=settings.audience, issuer=settings.issuer)

    return [(("authorization", f"Bearer {token(i)}"),) for i in range(accounts)]


def main() -> int:
    from inplay_edge import EdgeSettings, ensure_keys, start_envoy, wait_ready, write_rendered

    from .bets import _prepare
    from .common import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--steady-s", type=float, default=10.0)
    parser.add_argument("--base-frac", type=float, default=0.3, help="pre rate / steady max (x factor: the spike)")
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--pre-s", type=float, default=5.0)
    parser.add_argument("--spike-s", type=float, default=10.0)
    parser.add_argument("--journal-max-queue", type=int, default=2000)
    parser.add_argument("--admission-max-in-flight", type=int, default=None, help="server's cap (0: off)")
    parser.add_argument("--admission-queue-ms", type=int, default=None, help="server's queue-time target")
    parser.add_argument("--admission-retry-ms", type=int, default=None, help="server's retry hint")
    parser.add_argument("--edge-max-in-flight", type=int, default=None, help="Envoy's bet circuit breaker")
    parser.add_argument("--edge-retry-ms", type=int, default=None, help="Envoy's retry hint of a shed call")
    parser.add_argument("--client", choices=("python", "ghz"), default="python", help="load generator")
    parser.add_argument("--ghz-workers", type=int, default=1000, help="ghz open-loop workers (--client ghz)")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "spike.json")
    args = parser.parse_args()
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"INPLAY_JOURNAL_MAX_QUEUE": str(args.journal_max_queue), **admission_env(args)}
    with server(out_dir, "spike", extra) as srv:
        market = asyncio.run(_prepare(srv, args.accounts))
        tmp = out_dir / "spike-edge"
        key = ensure_keys(tmp / "keys")
        host, port = srv.target.rsplit(":", 1)
        settings = replace(
            EdgeSettings.from_env(ROOT),
            listen_port=free_port(),
            admin_port=free_port(),
            upstream_host=host,
            upstream_port=int(port),
            keys_dir=tmp / "keys",
            jwks_file="",
            access_log="/dev/null",
            health_interval_s=1,
            # Per-user limits out of the way (each account bets a few times a second); the global bucket stays.
            bet_user_rate=1000,
            bet_user_burst=1000,
        )
        settings = replace(
            settings,
            bet_max_in_flight=args.edge_max_in_flight or settings.bet_max_in_flight,
            bet_retry_after_ms=args.edge_retry_ms or settings.bet_retry_after_ms,
        )
        config = write_rendered(settings, tmp / "envoy.yaml")
        envoy = start_envoy(config, tmp / "envoy.log")
        try:
            wait_ready(settings, envoy, timeout_s=30, require_upstream=True)
            tokens = _tokens(settings, key, args.accounts)
            load_before = loadavg()
            target = f"127.0.0.1:{settings.listen_port}"
            if args.client == "ghz":
                bearer = [dict(md)["authorization"].removeprefix("Bearer ") for md in tokens]
                report = ghz_spike(args, srv, target, bearer, market, out_dir)
            else:
                report = asyncio.run(run(args, target, tokens, market))
        finally:
            envoy.terminate()
            envoy.wait(10)
    report.update(
        {
            "scenario": "kickoff spike through Envoy, same-key retries",
            "global_bucket": {"rate": settings.bet_global_rate, "burst": settings.bet_global_burst},
            "edge_admission": {"max_in_flight": settings.bet_max_in_flight, "retry_ms": settings.bet_retry_after_ms},
            "journal_max_queue": args.journal_max_queue,
            "admission": admission_env(args) or "registry defaults",
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
