"""Session fixtures of the edge end-to-end tests: the real ``python -m inplay.server`` (real stores when the
``.stack/env`` variables are set, embedded otherwise) behind the real Envoy binary with the rendered config.

Isolation on a shared stack: a unique Redis key prefix and Kafka topic prefix per session (the Cassandra
keyspace comes from the environment). The JWT key pair is created per session under pytest's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from edge_helpers import ALLOWED_ORIGIN, Edge, FeedDriver, FeedEvent, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inplay_edge import (
    EdgeSettings,
    build_web,
    ensure_keys,
    repo_root,
    start_envoy,
    validate,
    wait_ready,
    write_rendered,
)

ROOT = repo_root()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_serving(port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"inplay.server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"inplay.server not SERVING on {port} after {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _store_mapping(redis_url: str, prefix: str, event: FeedEvent) -> None:
    from inplay.adapters.redis_odds import RedisFeedMappings
    from inplay.domain.feed.mapping import FeedMappingService

    store = await RedisFeedMappings.connect(redis_url, prefix)
    try:
        await FeedMappingService(store).load(event.mapping())
    finally:
        await store.close()


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    key = ensure_keys(tmp / "keys")
    server_port, listen_port, admin_port = free_port(), free_port(), free_port()
    env = dict(os.environ, INPLAY_GRPC_PORT=str(server_port), INPLAY_METRICS_PORT="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "services"), env.get("PYTHONPATH", "")) if p)
    redis_url = env.get("INPLAY_REDIS_URL", "")
    real = bool(redis_url)
    tag = uuid.uuid4().hex[:8]
    event: FeedEvent | None = None
    redis_prefix = f"e2e{tag}:"
    if real:
        env["INPLAY_REDIS_PREFIX"] = redis_prefix
        env["INPLAY_TOPIC_PREFIX"] = f"e2e{tag}."
        # The mapping table is read when the server starts: store the test event's mapping first.
        event = FeedEvent.make()
        asyncio.run(_store_mapping(redis_url, redis_prefix, event))

    server_log = tmp / "server.log"
    with server_log.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "inplay.server", "--port", str(server_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    envoy: subprocess.Popen[bytes] | None = None
    try:
        _wait_serving(server_port, server, timeout_s=90, log=server_log)
        build_web(ROOT)
        settings = replace(
            EdgeSettings.from_env(ROOT),
            listen_port=listen_port,
            admin_port=admin_port,
            upstream_host="127.0.0.1",
            upstream_port=server_port,
            jwks_file="",
            keys_dir=tmp / "keys",
            dev_tokens=True,
            demo_event_id=event.event_id if event else "",
            web_origins=(ALLOWED_ORIGIN,),
            access_log=str(tmp / "access.log"),
            health_interval_s=1,
        )
        config = tmp / "envoy.yaml"
        write_rendered(settings, config)
        validate(config)
        envoy_log = tmp / "envoy.log"
        envoy = start_envoy(config, envoy_log)
        wait_ready(settings, envoy, timeout_s=30, require_upstream=True)
        edge = Edge(
            settings=settings,
            key=key,
            server_port=server_port,
            real_stores=real,
            envoy_log=envoy_log,
            access_log=tmp / "access.log",
            server_log=server_log,
            event=event,
        )
        yield edge
    finally:
        if envoy is not None:
            _stop(envoy)
        _stop(server)
        if real:
            _drop_prefix(redis_url, redis_prefix)


@pytest.fixture(scope="session")
def feed_session(edge: Edge) -> Iterator[FeedDriver | None]:
    if edge.event is None:
        yield None
        return
    driver = FeedDriver(edge, edge.event)
    driver.open_all()
    driver.start()
    yield driver
    driver.stop()


@pytest.fixture
def feed(feed_session: FeedDriver | None) -> FeedDriver:
    """The session's feed driver (prices refreshed). Skips when the server runs on embedded stores: the
    feed mapping is read from Redis when the server starts, nothing can load it into another process."""
    if feed_session is None:
        pytest.skip("needs the real stack (.stack/env): the feed mapping lives in Redis")
    feed_session.refresh()
    return feed_session


@pytest.fixture
def artifacts() -> Path:
    path = ROOT / "tests" / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path
