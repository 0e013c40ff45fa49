"""Kafka adapter (confluent-kafka / librdkafka): an idempotent producer behind the EventBus port, topic
creation, and a small consumer loop.

The producer keeps per-key order (same key -> same partition; idempotence forbids reordering on retries).
librdkafka's delivery reports arrive on a poll thread and resolve asyncio futures, so ``flush`` awaits the
acknowledgement of exactly the messages this process enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from inplay.ports import BusMessage


class KafkaEventBus:
    def __init__(self, bootstrap: str, topic_prefix: str = "", **overrides: Any) -> None:
        self.topic_prefix = topic_prefix
        config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": 30_000,
            "queue.buffering.max.messages": 1_000_000,
            **overrides,
        }
        self._producer = Producer(config)
        self._pending: set[asyncio.Future[None]] = set()
        self._lock = threading.Lock()
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        loop = asyncio.get_running_loop()
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.add(future)

            def report(err: KafkaError | None, _msg: Any, future: asyncio.Future[None] = future) -> None:
                def settle() -> None:
                    if future.done():
                        return
                    if err is not None:
                        future.set_exception(KafkaException(err))
                    else:
                        future.set_result(None)

                loop.call_soon_threadsafe(settle)

            while True:
                try:
                    self._producer.produce(message.topic, value=message.value, key=message.key, on_delivery=report)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.sleep(0.01)

    async def flush(self, timeout_s: float = 10.0) -> None:
        pending, self._pending = list(self._pending), set()
        if not pending:
            return
        done, not_done = await asyncio.wait(pending, timeout=timeout_s)
        for future in not_done:
            future.cancel()
        if not_done:
            raise TimeoutError(f"{len(not_done)} Kafka deliveries not acknowledged within {timeout_s} s")
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            raise KafkaException(f"{len(errors)} Kafka deliveries failed; first: {errors[0]!r}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush(timeout_s=10.0)
        self._running = False
        await asyncio.to_thread(self._producer.flush, 5)
        self._poller.join(timeout=1)


async def ensure_topics(bootstrap: str, topics: dict[str, int], replication: int = 1) -> None:
    """Creates missing topics (idempotent)."""

    def create() -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [NewTopic(name, num_partitions=p, replication_factor=replication) for name, p in topics.items()
                  if name not in existing]
        if not wanted:
            return
        for name, future in admin.create_topics(wanted, operation_timeout=15).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc

    await asyncio.to_thread(create)


class KafkaConsumerLoop:
    """Async iteration over (key, value) of a consumer group; offsets committed after processing."""

    def __init__(self, bootstrap: str, group_id: str, topics: Sequence[str], from_beginning: bool = True) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe(list(topics))
        self._last: Any = None
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        while not self.closed:
            if self._last is not None:
                await asyncio.to_thread(self._consumer.commit, self._last, asynchronous=False)
                self._last = None
            message = await asyncio.to_thread(self._consumer.poll, 0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(message.error())
            self._last = message
            key = message.key()
            yield (key.decode() if key else ""), message.value()

    async def close(self) -> None:
        self.closed = True
        await asyncio.to_thread(self._consumer.close)
