"""Latency Envoy adds per call: the same RPC, same run, direct to the service vs through the edge.

    .venv/bin/python perf/bench_envoy.py [--calls 10000] [--concurrency 1,16] [--method balance|market]

Starts ``python -m inplay.server`` (real stores when the ``.stack/env`` variables are set, embedded otherwise)
and an Envoy with the rendered edge config in front of it, then runs the calls in alternating rounds (direct,
edge, direct, edge, ...) so that both see the same machine state. Direct calls carry the identity headers
Envoy would set; edge calls carry a bearer token (so the edge path includes JWT verification, RBAC lookup,
header mutation and the router). Results: ``perf/results/envoy.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from inplay.odds.v1 import odds_pb2, odds_pb2_grpc  # noqa: E402
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc  # noqa: E402
from inplay_edge import (  # noqa: E402
    EdgeSettings,
    ensure_keys,
    envoy_binary,
    mint_token,
    start_envoy,
    wait_ready,
    write_rendered,
)

Call = Callable[[], Awaitable[Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    idx = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns)) - 1))
    return sorted_ns[idx] / 1000


def summary(samples: list[int], wall_s: float) -> dict[str, float]:
    s = sorted(samples)
    return {
        "calls": len(s),
        "p50_us": percentile(s, 50),
        "p90_us": percentile(s, 90),
        "p99_us": percentile(s, 99),
        "p999_us": percentile(s, 99.9),
        "mean_us": statistics.fmean(s) / 1000,
        "throughput_rps": len(s) / wall_s if wall_s else 0.0,
    }


async def run_round(make_call: Call, calls: int, concurrency: int, out: list[int]) -> float:
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            t0 = time.perf_counter_ns()
            await make_call()
            out.append(time.perf_counter_ns() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"inplay.server exited with {proc.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit("inplay.server did not become SERVING")


async def bench(
    args: argparse.Namespace, concurrency: int, server_port: int, settings: EdgeSettings, token: str
) -> dict[str, Any]:
    subject = "bench-user"
    direct_md = (("x-inplay-subject", subject),)
    edge_md = (("authorization", f"Bearer {token}"),)
    opts = [("grpc.max_concurrent_streams", 1000)]
    direct = grpc.aio.insecure_channel(f"127.0.0.1:{server_port}", options=opts)
    edge = grpc.aio.insecure_channel(f"127.0.0.1:{settings.listen_port}", options=opts)

    def caller(channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Call:
        if args.method == "market":
            odds = odds_pb2_grpc.OddsServiceStub(channel)
            req = odds_pb2.GetMarketRequest(market_id="bench-market")

            async def market() -> Any:
                try:
                    return await odds.GetMarket(req, metadata=md, timeout=10)
                except grpc.aio.AioRpcError as err:  # NOT_FOUND is a full round trip too
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    return None

            return market
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        req_b = wallet_pb2.GetBalanceRequest()

        async def balance() -> Any:
            return await wallet.GetBalance(req_b, metadata=md, timeout=10)

        return balance

    call_direct, call_edge = caller(direct, direct_md), caller(edge, edge_md)
    # Sanity: both paths answer, and the edge passes the token's subject.
    first = await call_edge()
    if args.method == "balance" and first.account_id != subject:
        raise SystemExit(f"edge answered for {first.account_id!r}")
    await call_direct()
    warm: list[int] = []
    await run_round(call_direct, args.warmup, concurrency, warm)
    await run_round(call_edge, args.warmup, concurrency, warm)

    samples: dict[str, list[int]] = {"direct": [], "edge": []}
    wall = {"direct": 0.0, "edge": 0.0}
    per_round = args.calls // args.rounds
    for _ in range(args.rounds):
        wall["direct"] += await run_round(call_direct, per_round, concurrency, samples["direct"])
        wall["edge"] += await run_round(call_edge, per_round, concurrency, samples["edge"])
    await direct.close()
    await edge.close()
    d, e = summary(samples["direct"], wall["direct"]), summary(samples["edge"], wall["edge"])
    return {
        "concurrency": concurrency,
        "direct": d,
        "edge": e,
        "added_by_envoy_us": {
            "p50": round(e["p50_us"] - d["p50_us"], 1),
            "p90": round(e["p90_us"] - d["p90_us"], 1),
            "p99": round(e["p99_us"] - d["p99_us"], 1),
            "mean": round(e["mean_us"] - d["mean_us"], 1),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000, help="measured calls per path and concurrency")
    parser.add_argument("--concurrency", default="1,16", help="in-flight calls per path; a comma list runs each")
    parser.add_argument("--rounds", type=int, default=10, help="alternating direct/edge rounds")
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--method", choices=["balance", "market"], default="balance")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="envoy worker threads")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "envoy.json")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-envoy-"))
    server_port, listen_port, admin_port = free_port(), free_port(), free_port()
    env = dict(os.environ, INPLAY_GRPC_PORT=str(server_port), INPLAY_METRICS_PORT="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "services"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("INPLAY_LOG_LEVEL", "WARNING")
    server_log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "inplay.server", "--port", str(server_port)],
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    envoy: subprocess.Popen[bytes] | None = None
    try:
        wait_serving(server_port, server)
        key = ensure_keys(tmp / "keys")
        settings = replace(
            EdgeSettings.from_env(ROOT),
            listen_port=listen_port,
            admin_port=admin_port,
            upstream_host="127.0.0.1",
            upstream_port=server_port,
            keys_dir=tmp / "keys",
            jwks_file="",
            access_log="/dev/null",
            health_interval_s=1,
        )
        config = write_rendered(settings, tmp / "envoy.yaml")
        envoy = start_envoy(config, tmp / "envoy.log", concurrency=args.envoy_concurrency)
        wait_ready(settings, envoy, timeout_s=30, require_upstream=True)
        token = mint_token(key, "bench-user", ttl_s=3600, audience=settings.audience, issuer=settings.issuer)
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
        runs = [asyncio.run(bench(args, c, server_port, settings, token)) for c in levels]
        version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout.strip()
        report = {
            "benchmark": "envoy_added_latency",
            "method": {
                "balance": "WalletService.GetBalance",
                "market": "OddsService.GetMarket (NOT_FOUND)",
            }[args.method],
            "calls_per_path": args.calls,
            "rounds": args.rounds,
            "envoy_concurrency": args.envoy_concurrency,
            "stores": "real" if env.get("INPLAY_REDIS_URL") else "embedded",
            "envoy": version.split("version:")[-1].strip(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "client": "grpc.aio (Python), one HTTP/2 connection per path, same process",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        for run in runs:
            d, e, a = run["direct"], run["edge"], run["added_by_envoy_us"]
            print(
                f"concurrency {run['concurrency']:>3}: "
                f"direct p50 {d['p50_us']:.0f} us p99 {d['p99_us']:.0f} us | "
                f"edge p50 {e['p50_us']:.0f} us p99 {e['p99_us']:.0f} us | added p50 {a['p50']:.0f} us "
                f"p99 {a['p99']:.0f} us"
            )
        print(f"-> {args.out}")
        return 0
    finally:
        if envoy is not None and envoy.poll() is None:
            envoy.terminate()
            envoy.wait(10)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        server_log.close()


if __name__ == "__main__":
    sys.exit(main())
