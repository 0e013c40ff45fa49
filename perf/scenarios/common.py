"""Shared plumbing: the stack environment, a server subprocess with its metrics port, metric scrapes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_MD = (("x-inplay-subject", "perf-ops"), ("x-inplay-roles", "operator"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env() -> dict[str, str]:
    """The process environment, which must carry the real stack's INPLAY_* variables (``.stack/env``)."""
    missing = [
        n for n in ("INPLAY_REDIS_URL", "INPLAY_CASSANDRA_HOSTS", "INPLAY_KAFKA_BOOTSTRAP") if not os.environ.get(n)
    ]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not set: ./dev up, then `set -a; . .stack/env; set +a`")
    return dict(os.environ)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class Server:
    """A running ``python -m inplay.server`` on an isolated Redis prefix / keyspace / topic prefix."""

    target: str
    metrics_port: int
    env: dict[str, str]
    log: Path
    # Further processes serving the same port (INPLAY_GRPC_REUSEPORT): their metrics are added up.
    more_metrics_ports: tuple[int, ...] = ()
    # Process ids of the server processes (the profiler attaches to them).
    pids: tuple[int, ...] = ()

    def metrics(self) -> dict[str, float]:
        total = scrape(self.metrics_port)
        for port in self.more_metrics_ports:
            for key, value in scrape(port).items():
                total[key] = total.get(key, 0.0) + value
        return total


def _wait_serving(target: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before serving")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not SERVING after {timeout_s:.0f} s")
            time.sleep(0.3)


@contextmanager
def server(out_dir: Path, name: str, extra_env: dict[str, str] | None = None, processes: int = 1) -> Iterator[Server]:
    """Starts the server on the real stack (fresh namespace per run, so runs never see each other's data),
    waits for grpc.health.v1 SERVING, and stops it with SIGTERM (graceful drain) on exit. ``processes`` > 1
    starts that many server processes on one port (SO_REUSEPORT), each with its own journal shard."""
    tag = uuid.uuid4().hex[:6]
    port, metrics_port = free_port(), free_port()
    more_ports = tuple(free_port() for _ in range(processes - 1))
    env = {
        **stack_env(),
        "INPLAY_REDIS_PREFIX": f"perf{tag}:",
        "INPLAY_KEYSPACE": f"perf_{tag}",
        "INPLAY_TOPIC_PREFIX": f"perf{tag}.",
        "INPLAY_METRICS_PORT": str(metrics_port),
        # One market, priced once: keep it fresh for the whole run; stakes up to 1M minor units.
        "INPLAY_MAX_PRICE_AGE_PREMATCH_MS": "86400000",
        "INPLAY_MAX_STAKE_MINOR": "100000000",
        "INPLAY_LOG_LEVEL": "WARNING",
        **({"INPLAY_GRPC_REUSEPORT": "1"} if processes > 1 else {}),
        **(extra_env or {}),
    }
    log = out_dir / f"server-{name}.log"
    with log.open("wb") as log_file:
        procs = []
        for metrics in (metrics_port, *more_ports):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "inplay.server", "--port", str(port)],
                    env={**env, "INPLAY_METRICS_PORT": str(metrics)},
                    cwd=ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )
        target = f"127.0.0.1:{port}"
        try:
            for proc in procs:
                _wait_serving(target, proc, 120)
            yield Server(target, metrics_port, env, log, more_ports, tuple(p.pid for p in procs))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _drop_keyspace(env)


def _drop_keyspace(env: dict[str, str]) -> None:
    """Each run's keyspace is dropped afterwards: a node holding hundreds of stale keyspaces (thousands of
    tables) spends CPU on their flushes and compactions, which then shows up in the next run's figures."""
    from cassandra.cluster import Cluster

    cluster = Cluster(env["INPLAY_CASSANDRA_HOSTS"].split(","), port=int(env.get("INPLAY_CASSANDRA_PORT", "9042")))
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {env['INPLAY_KEYSPACE']}", timeout=120)
    except Exception as exc:  # best effort: a leftover keyspace costs disk, not correctness
        print(f"    (keyspace {env['INPLAY_KEYSPACE']} not dropped: {exc!r})", flush=True)
    finally:
        cluster.shutdown()


def scrape(port: int) -> dict[str, float]:
    """The metrics endpoint as {'name{label="v",...}': value} (labels sorted as the client prints them)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    """Counter increases between two scrapes for the series starting with ``prefix`` (non-zero only)."""
    out = {}
    for key, value in after.items():
        if key.startswith(prefix):
            change = value - before.get(key, 0.0)
            if change:
                out[key] = change
    return out


def label(key: str, name: str) -> str:
    """The value of label ``name`` in a series key (``''`` if absent)."""
    marker = f'{name}="'
    start = key.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return key[start : key.index('"', start)]


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], metric: str, method: str, qs: tuple[float, ...]
) -> dict[str, float]:
    """Server-side latency quantiles (ms) of ``method`` between two scrapes, interpolated inside the
    Prometheus histogram buckets (what ``histogram_quantile`` does)."""
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        if key.startswith(f"{metric}_bucket{{") and label(key, "method") == method:
            le = label(key, "le")
            bound = float("inf") if le == "+Inf" else float(le)
            buckets.append((bound, value - before.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return {}
    total = buckets[-1][1]
    out = {}
    for q in qs:
        rank = q * total
        lower, prev_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    value = lower
                else:
                    span = count - prev_count
                    value = lower + (bound - lower) * ((rank - prev_count) / span if span else 1.0)
                out[f"p{round(q * 100)}_ms"] = round(value * 1000, 2)
                break
            lower, prev_count = bound, count
    return out
