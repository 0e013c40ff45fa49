"""Smoke test of the real stack run by ``scripts/stack/stack.sh up``: each server answers its own protocol and
each tool runs. It reads the ``INPLAY_*`` variables (``.stack/env``, which ``up`` writes, when they are not set in
the environment) and never skips: a missing server is a failure."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from cassandra.cluster import Cluster
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = (
    "INPLAY_REDIS_URL",
    "INPLAY_CASSANDRA_HOSTS",
    "INPLAY_CASSANDRA_PORT",
    "INPLAY_KAFKA_BOOTSTRAP",
    "INPLAY_ENVOY_BIN",
    "INPLAY_GHZ_BIN",
)


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    env = {name: os.environ.get(name, "") for name in NAMES}
    missing = [name for name, value in env.items() if not value]
    env_file = Path(os.environ.get("INPLAY_STACK_DIR", ROOT / ".stack")) / "env"
    if missing and env_file.is_file():
        for line in env_file.read_text().splitlines():
            m = re.fullmatch(r"export (INPLAY_\w+)=(.*)", line.strip())
            if m and m.group(1) in missing:
                env[m.group(1)] = m.group(2)
    missing = [name for name, value in env.items() if not value]
    assert not missing, f"{missing} not set and not in {env_file}: run scripts/stack/stack.sh up and source .stack/env"
    return env


def test_redis_answers_ping(stack_env: dict[str, str]) -> None:
    client = redis.Redis.from_url(stack_env["INPLAY_REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_cassandra_answers_cql(stack_env: dict[str, str]) -> None:
    cluster = Cluster(
        stack_env["INPLAY_CASSANDRA_HOSTS"].split(","),
        port=int(stack_env["INPLAY_CASSANDRA_PORT"]),
        connect_timeout=10,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        assert row is not None and re.fullmatch(r"\d+\.\d+\.\d+.*", row.release_version), row
    finally:
        cluster.shutdown()


def test_kafka_produces_and_consumes_one_message(stack_env: dict[str, str]) -> None:
    bootstrap = stack_env["INPLAY_KAFKA_BOOTSTRAP"]
    topic = f"inplay.stack-smoke.{uuid.uuid4().hex[:12]}"
    payload = uuid.uuid4().bytes
    delivered: list[KafkaError | None] = []

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"smoke", value=payload, on_delivery=lambda err, _msg: delivered.append(err))
    assert producer.flush(30) == 0, "message not delivered within 30 s"
    assert delivered == [None], delivered

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"stack-smoke-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: bytes | None = None
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got = msg.value()
    finally:
        consumer.close()
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([topic], operation_timeout=10)
    assert got == payload


def _version_of(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True)
    return (out.stdout + out.stderr).strip()


def test_envoy_runs(stack_env: dict[str, str]) -> None:
    version = _version_of(stack_env["INPLAY_ENVOY_BIN"])
    assert re.search(r"/\d+\.\d+\.\d+/Clean/RELEASE/", version), version


def test_ghz_runs(stack_env: dict[str, str]) -> None:
    version = _version_of(stack_env["INPLAY_GHZ_BIN"])
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", version), version
