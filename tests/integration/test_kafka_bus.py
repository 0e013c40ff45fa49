"""KafkaEventBus, ensure_topics and KafkaConsumerLoop against the real Kafka broker: what is Kafka's alone
(offsets, topics, failures). The EventBus contract (tests/support/contracts/bus.py: publish + consume in
per-key order, deliver) runs over this adapter in tests/integration/test_contract_real.py."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from inplay.adapters.kafka_bus import KafkaConsumerLoop, KafkaEventBus, ensure_topics
from inplay.ports import TOPIC_BETS, BusMessage

pytestmark = pytest.mark.integration


async def consume(
    bootstrap: str, group: str, topic: str, want: Callable[[dict[str, object]], bool], n: int, timeout_s: float = 30
) -> list[tuple[str, dict[str, object]]]:
    """Reads with a KafkaConsumerLoop until ``n`` messages match ``want`` (committing what it read)."""
    found: list[tuple[str, dict[str, object]]] = []
    loop = KafkaConsumerLoop(bootstrap, group, [topic])
    deadline = time.monotonic() + timeout_s
    try:
        async for key, value in loop:
            payload = json.loads(value)
            if want(payload):
                found.append((key, payload))
            if len(found) >= n or time.monotonic() > deadline:
                break
    finally:
        await loop.close()
    return found


async def test_consumer_loop_commits_what_it_processed(bus: KafkaEventBus, kafka_bootstrap: str) -> None:
    run, group = uuid.uuid4().hex, f"g-{uuid.uuid4().hex}"
    topic = bus.topic(TOPIC_BETS)

    async def send(batch: str, n: int) -> None:
        await bus.publish([BusMessage(topic, f"k{i}", json.dumps({"run": run, "b": batch}).encode()) for i in range(n)])
        await bus.flush()

    await send("first", 20)
    assert len(await consume(kafka_bootstrap, group, topic, lambda p: p.get("run") == run, 20)) == 20
    await send("second", 5)
    # Same group: it resumes after the committed offsets. At least once: the message the previous loop
    # stopped at (it broke out of the iteration before asking for the next one) may come again, nothing else.
    seen: list[object] = []
    loop = KafkaConsumerLoop(kafka_bootstrap, group, [topic])
    try:
        async for _, value in loop:
            payload = json.loads(value)
            if payload.get("run") == run:
                seen.append(payload["b"])
            if seen.count("second") == 5:
                break
    finally:
        await loop.close()
    assert seen.count("second") == 5
    assert seen.count("first") <= 1, seen


async def test_ensure_topics_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"t{uuid.uuid4().hex[:8]}.idempotent"
    await ensure_topics(kafka_bootstrap, {name: 4})
    await ensure_topics(kafka_bootstrap, {name: 4})  # exists: left alone
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(meta[name].partitions) == 4
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([name])  # our own topic


async def test_flush_raises_when_no_broker_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = KafkaEventBus(f"127.0.0.1:{port}", config={"message.timeout.ms": 1500})
    try:
        await bus.publish([BusMessage("nowhere", "k", b"v") for _ in range(3)])
        started = time.monotonic()
        with pytest.raises(KafkaException, match="3 of 3 Kafka deliveries failed"):
            await bus.flush(timeout_s=20)
        assert time.monotonic() - started < 15
        await bus.flush()  # a failure is reported once; nothing is left pending
    finally:
        await bus.close()


async def test_flush_times_out_while_deliveries_are_pending() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bus = KafkaEventBus(f"127.0.0.1:{port}", config={"message.timeout.ms": 3000})
    try:
        await bus.publish([BusMessage("nowhere", "k", b"v")])
        with pytest.raises(TimeoutError):
            await bus.flush(timeout_s=0.2)
        with pytest.raises(KafkaException):  # still pending after the timeout, then failed: reported
            await bus.flush(timeout_s=20)
    finally:
        await bus.close()


async def test_deliver_waits_for_and_reports_only_its_own_messages(
    bus: KafkaEventBus, topic_prefix: str, kafka_bootstrap: str
) -> None:
    """M2: a delivery failure goes to the caller whose message failed, never to a concurrent caller."""
    topic = f"{topic_prefix}deliver-{uuid.uuid4().hex[:6]}"  # its own topic: other tests read the real ones
    await ensure_topics(kafka_bootstrap, {topic: 1})
    good = [BusMessage(topic, f"k{i}", b"v") for i in range(200)]
    await bus.deliver(good, timeout_s=20)  # acknowledged: returns
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = KafkaEventBus(f"127.0.0.1:{port}", config={"message.timeout.ms": 1500})
    try:
        with pytest.raises(KafkaException):
            await dead.deliver([BusMessage("nowhere", "k", b"v") for _ in range(3)], timeout_s=20)
    finally:
        await dead.close()
    # Failures of an unrelated flush-style publisher on the same producer do not leak into deliver().
    await bus.publish([BusMessage(topic, "x", b"y")])
    await bus.deliver(good[:10], timeout_s=20)
    await bus.flush(timeout_s=20)
