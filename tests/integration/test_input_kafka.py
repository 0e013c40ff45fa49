"""Issue 13, oversized feed message: a too-large Kafka message fails alone, at produce time, and never
poisons the shared producer (real broker)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from inplay import limits
from inplay.adapters.kafka_bus import PRODUCER_DEFAULTS, KafkaEventBus, MessageTooLarge, ensure_topics
from inplay.ports import TOPIC_FEED_RAW, BusMessage

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def own_prefix(kafka_bootstrap: str) -> str:
    """A topic of these tests only: their non-JSON test messages must not reach other tests' consumers of the
    session topics."""
    prefix = f"t{uuid.uuid4().hex[:8]}.input."
    await ensure_topics(kafka_bootstrap, {prefix + TOPIC_FEED_RAW: 1})
    return prefix


async def test_too_large_message_fails_alone_and_the_producer_stays_healthy(
    kafka_bootstrap: str, own_prefix: str
) -> None:
    """Before: produce() raised MSG_SIZE_TOO_LARGE after the message's delivery future was registered, so
    every later flush of anyone waited for it and failed ("Kafka deliveries not acknowledged within 10 s")."""
    bus = KafkaEventBus(kafka_bootstrap, topic_prefix=own_prefix)
    topic = bus.topic(TOPIC_FEED_RAW)
    try:
        ok = BusMessage(topic, "k", b"small")
        huge = BusMessage(topic, "k", b"x" * 1_100_000)
        with pytest.raises(MessageTooLarge):
            await bus.publish([ok, huge])
        t0 = time.perf_counter()
        await bus.publish([BusMessage(topic, "k", b"after")])
        await bus.flush(timeout_s=10)  # the small messages (before and after) are delivered; no failure
        assert time.perf_counter() - t0 < 5
    finally:
        await bus.close()


async def test_producer_limit_is_below_the_broker_limit(kafka_bootstrap: str) -> None:
    """The producer refuses what the broker would refuse (so a big message never fails inside a shared
    batch), and the feed payload limit leaves room for JSON escaping below the producer's limit."""
    producer_max = int(PRODUCER_DEFAULTS["message.max.bytes"])
    template = (ROOT / "scripts" / "stack" / "kafka" / "server.properties.in").read_text(encoding="utf-8")
    configured = re.search(r"^message\.max\.bytes=(\d+)$", template, flags=re.MULTILINE)
    assert configured is not None, "server.properties.in must state message.max.bytes"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    futures = admin.describe_configs([resource])
    configs = await asyncio.to_thread(futures[resource].result, 30)
    live = int(configs["message.max.bytes"].value)
    assert producer_max < live and producer_max < int(configured.group(1))
    payload_max = limits.FIELD_MAX_BYTES["inplay.feed.v1.IngestOddsRequest.payload"]
    # The raw topic carries the payload JSON-escaped (a control byte becomes \u00XX: at most 6x) or base64.
    assert payload_max * 6 + 4096 < producer_max


async def test_a_poisoned_producer_is_replaced(kafka_bootstrap: str, own_prefix: str) -> None:
    """A fatal librdkafka error makes every later produce fail (_FATAL). The bus detects it (error_cb) and
    replaces the producer on the next publish, so the next callers are served. The fatal error is injected
    through the callback librdkafka calls (the Python client cannot make a real broker cause one)."""
    from confluent_kafka import KafkaError

    from inplay.adapters.kafka_bus import PRODUCER_RECREATED

    bus = KafkaEventBus(kafka_bootstrap, topic_prefix=own_prefix)
    topic = bus.topic(TOPIC_FEED_RAW)
    try:
        await bus.publish([BusMessage(topic, "k", b"before")])
        await bus.flush(timeout_s=10)
        poisoned = bus._producer
        recreated = PRODUCER_RECREATED._value.get()
        bus._on_error(KafkaError(KafkaError._FATAL, "injected fatal error", fatal=True))
        await bus.publish([BusMessage(topic, "k", b"after")])
        await bus.flush(timeout_s=10)
        assert bus._producer is not poisoned
        assert PRODUCER_RECREATED._value.get() == recreated + 1
    finally:
        await bus.close()
