"""Kafka (confluent-kafka / librdkafka) behind :class:`inplay.ports.EventBus`, topic creation, and a small
consumer loop for services and tests.

Producer: idempotent (``enable.idempotence``, ``acks=all``): a retried send is not duplicated and, per
partition, not reordered, so per-key order holds (same key -> same partition). ``linger.ms=2`` and lz4
batch messages of concurrent publishers. librdkafka reports deliveries from ``poll()``; a background thread
polls and resolves one asyncio future per message with ``loop.call_soon_threadsafe``, so ``publish`` never
blocks the event loop and ``flush`` awaits exactly the acknowledgements of what was enqueued, raising if any
delivery failed (e.g. ``message.timeout.ms`` elapsed because no broker answers).

Size: the producer's ``message.max.bytes`` (1 000 000) is below the broker's (1 048 588, stated in
scripts/stack/kafka/server.properties.in), so a too-large message is refused by librdkafka at ``produce()``,
alone: ``publish`` raises :class:`MessageTooLarge` (RESOURCE_EXHAUSTED for a caller, counted in
``inplay_kafka_produce_rejected_total``) and nothing of it stays pending, so other callers' flushes are not
affected. (A message refused by the broker instead would fail inside a shared batch and be reported by
whichever flush comes next.) Request limits (inplay.limits) keep every message far below that size.

Poisoning: a fatal librdkafka error (reported through ``error_cb``; with idempotence, e.g. a lost sequence)
leaves the producer unusable for good. It is detected and the producer replaced on the next publish; the old
one's undelivered messages are purged and reported as failed by the next flush (never silently lost).

Topics: a ``BusMessage`` carries the full topic name. Services build it as ``topic_prefix + ports.TOPIC_*``
(the prefix isolates tests and demos on one cluster); :meth:`KafkaEventBus.topic` does the same.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client import Counter

from inplay.errors import ResourceExhausted
from inplay.ports import BusMessage

log = logging.getLogger("inplay.kafka")

PRODUCE_REJECTED = Counter(
    "inplay_kafka_produce_rejected_total", "Messages the producer refused at produce time, by error", ["error"]
)

PRODUCER_RECREATED = Counter(
    "inplay_kafka_producer_recreated_total", "Producers replaced after a fatal error (a poisoned producer)"
)

# Below the broker's message.max.bytes (1048588, scripts/stack/kafka/server.properties.in): see the module doc.
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000

PRODUCER_DEFAULTS: dict[str, Any] = {
    "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "compression.type": "lz4",
    # An undeliverable message fails after this (flush then raises) instead of waiting forever.
    "message.timeout.ms": 30_000,
    "queue.buffering.max.messages": 1_000_000,
}


@dataclass
class MessageTooLarge(ResourceExhausted):
    """librdkafka refused one message at produce time (too large for ``message.max.bytes``)."""

    reason: str = "MESSAGE_TOO_LARGE"


class KafkaEventBus:
    def __init__(self, bootstrap: str, topic_prefix: str = "", *, config: Mapping[str, Any] | None = None) -> None:
        """``config``: librdkafka settings over the defaults (e.g. ``{"message.timeout.ms": 2000}``)."""
        self.topic_prefix = topic_prefix
        self._config: dict[str, Any] = {"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **(config or {})}
        # A fatal error (reported on librdkafka's thread) poisons the producer for good: every later produce
        # fails. It is recorded here and the producer replaced on the next publish (see _recover).
        self._fatal: KafkaError | None = None
        self._producer = self._new_producer()
        # Deliveries not yet reported by a flush: successes leave on completion, failures stay until a
        # flush reports them (a failure is never lost between flushes).
        self._pending: set[asyncio.Future[None]] = set()
        self._closed = False
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _new_producer(self) -> Producer:
        return Producer({**self._config, "error_cb": self._on_error})

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (its own thread). Non-fatal errors (a broker down, a reconnect) are
        retried by librdkafka itself and logged by it; a fatal one is kept for ``publish`` to act on."""
        if error.fatal():
            self._fatal = error
        else:
            log.debug("Kafka producer error (retried by librdkafka): %s", error)

    async def _recover(self) -> None:
        """Replaces a producer that reported a fatal error (e.g. the idempotent producer lost its sequence
        state). Its undelivered messages are purged: their deliveries fail, and the next flush reports them."""
        old, error = self._producer, self._fatal
        self._producer = self._new_producer()  # the poll thread picks it up on its next turn
        self._fatal = None
        PRODUCER_RECREATED.inc()
        log.error("Kafka producer fatal error; producer recreated", extra={"error": str(error)})

        def drain() -> None:
            old.purge(in_queue=True, in_flight=True)
            old.flush(0)  # serves the purged messages' delivery reports

        await asyncio.to_thread(drain)

    def topic(self, name: str) -> str:
        """The full topic name of ``ports.TOPIC_*`` ``name``."""
        return self.topic_prefix + name

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        if self._closed:
            raise RuntimeError("KafkaEventBus is closed")
        loop = asyncio.get_running_loop()
        if self._fatal is not None:
            await self._recover()
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.add(future)
            future.add_done_callback(self._forget_success)
            report = _delivery_report(loop, future)
            try:
                await self._produce(message, report)
            except BaseException:
                # Never enqueued, so never reported by librdkafka: a future left pending would make every
                # later flush (of any caller) wait for it and time out. The failure goes to this publisher
                # only; for a flush that already waits on the future it is simply no longer outstanding.
                self._pending.discard(future)
                if not future.done():
                    future.set_result(None)
                raise

    async def _produce(self, message: BusMessage, report: Any) -> None:
        recovered = False
        while True:
            try:
                self._producer.produce(message.topic, value=message.value, key=message.key, on_delivery=report)
                return
            except BufferError:  # the local queue is full: let the poll thread drain deliveries
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code == KafkaError._FATAL and not recovered:  # poisoned since the last publish began
                    self._fatal = self._fatal or error
                    await self._recover()
                    recovered = True
                    continue
                PRODUCE_REJECTED.labels(error.name() if isinstance(error, KafkaError) else "UNKNOWN").inc()
                if code == KafkaError.MSG_SIZE_TOO_LARGE:
                    size = len(message.value or b"") + len(message.key or "")
                    raise MessageTooLarge(
                        f"Kafka message of {size} bytes on {message.topic} is above {PRODUCER_MAX_MESSAGE_BYTES}"
                    ) from exc
                raise

    async def deliver(self, messages: Sequence[BusMessage], timeout_s: float = 10.0) -> None:
        """Enqueues ``messages`` and waits for exactly their acknowledgements (not other publishers'):
        raises KafkaException with the first failure of THESE messages, TimeoutError if some are still
        unacknowledged after ``timeout_s``. One wake-up of the loop per call, not one per message: the
        delivery reports are counted on the poll thread."""
        if not messages:
            return
        if self._closed:
            raise RuntimeError("KafkaEventBus is closed")
        if self._fatal is not None:
            await self._recover()
        batch = _BatchDelivery(asyncio.get_running_loop(), len(messages))
        for i, message in enumerate(messages):
            try:
                await self._produce(message, batch.report)
            except BaseException:
                batch.abandon(len(messages) - i)  # never enqueued: never reported
                raise
        await asyncio.wait_for(asyncio.shield(batch.done), timeout_s)

    def _forget_success(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._pending.discard(future)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Waits for every message enqueued so far. Raises ``KafkaException`` if any delivery failed (each
        failure is reported once) and ``TimeoutError`` if some are still unacknowledged after ``timeout_s``
        (those stay pending: a later flush waits for them again)."""
        waiting = list(self._pending)
        if not waiting:
            return
        _, not_done = await asyncio.wait(waiting, timeout=timeout_s)
        failed = [f for f in waiting if f.done() and not f.cancelled() and f.exception() is not None]
        for f in failed:
            self._pending.discard(f)
        if failed:
            first = failed[0].exception()
            raise KafkaException(f"{len(failed)} of {len(waiting)} Kafka deliveries failed; first: {first}") from first
        if not_done:
            raise TimeoutError(f"{len(not_done)} Kafka deliveries not acknowledged within {timeout_s} s")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush(timeout_s=10.0)
        except Exception:  # closing goes on; the failure was logged by whoever flushed, or is logged here
            log.exception("Kafka deliveries lost while closing")
        finally:
            self._running = False
            await asyncio.to_thread(self._poller.join, 2.0)
            await asyncio.to_thread(self._producer.flush, 1.0)


class _BatchDelivery:
    """Delivery reports of one ``deliver`` call, counted on librdkafka's poll thread; the loop is woken
    once, when the last report arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._remaining = count
        self._error: KafkaError | None = None
        self.done: asyncio.Future[None] = loop.create_future()

    def report(self, err: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            if err is not None and self._error is None:
                self._error = err
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            try:
                self._loop.call_soon_threadsafe(self._settle)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def abandon(self, count: int) -> None:
        """``count`` messages were never enqueued (the caller raises): they will never be reported."""
        with self._lock:
            self._remaining -= count

    def _settle(self) -> None:
        if self.done.done():
            return
        if self._error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(KafkaException(self._error))


def _delivery_report(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Any:
    def settle(err: KafkaError | None) -> None:
        if future.done():
            return
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaException(err))

    def report(err: KafkaError | None, _msg: Any) -> None:
        # Called on the poll thread: hop to the loop's thread.
        try:
            loop.call_soon_threadsafe(settle, err)
        except RuntimeError:  # the loop is closed: nobody is waiting any more (and the thread must live)
            pass

    return report


async def ensure_topics(bootstrap: str, topics: dict[str, int], replication: int = 1, timeout_s: float = 30.0) -> None:
    """Creates the missing topics (name -> partitions) and waits until their metadata is visible.
    Idempotent: existing topics are left alone (also when another process creates them concurrently)."""

    def create() -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        existing = set(admin.list_topics(timeout=timeout_s).topics)
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if not wanted:
            return
        for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"could not create Kafka topic {name}: {exc}") from exc
        # Creation is acknowledged by the controller before every broker knows the topic's leaders.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            meta = admin.list_topics(timeout=timeout_s).topics
            if all(t.topic in meta and meta[t.topic].error is None and meta[t.topic].partitions for t in wanted):
                return
            time.sleep(0.1)
        raise RuntimeError(f"Kafka topics not ready after {timeout_s} s: {[t.topic for t in wanted]}")

    await asyncio.to_thread(create)


class KafkaConsumerLoop:
    """``async for key, value in loop:`` over a consumer group's messages, in partition order.

    Offsets are committed after processing (at least once): a message counts as processed when the
    iteration asks for the next one; processed offsets are committed after each fetched batch and on
    ``close``. Fetches run in a worker thread (librdkafka calls block)."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        *,
        from_beginning: bool = True,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
                **(config or {}),
            }
        )
        self._consumer.subscribe(list(topics))
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        # (topic, partition) -> next offset to commit
        self._processed: dict[tuple[str, int], int] = {}
        # One librdkafka call at a time (close must not race a fetch running in a thread).
        self._lock = asyncio.Lock()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        return self._messages()

    async def _fetch(self) -> list[tuple[tuple[str, bytes], tuple[str, int, int] | None]] | None:
        """One fetch: (key, value) and (topic, partition, next offset) per message; None once closed.
        Partition-EOF events are dropped; any other error is raised."""
        async with self._lock:
            if self.closed:
                return None
            fetched: list[Message] = await asyncio.to_thread(
                self._consumer.consume, self._batch_size, self._poll_timeout_s
            )
        out: list[tuple[tuple[str, bytes], tuple[str, int, int] | None]] = []
        for message in fetched:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            key = message.key()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            mark = (
                (topic, partition, offset + 1)
                if topic is not None and partition is not None and offset is not None
                else None
            )
            out.append((((key.decode() if key else ""), message.value() or b""), mark))
        return out

    def _mark(self, mark: tuple[str, int, int] | None) -> None:
        if mark is not None:
            self._processed[(mark[0], mark[1])] = mark[2]

    async def _messages(self) -> AsyncIterator[tuple[str, bytes]]:
        while (fetched := await self._fetch()) is not None:
            for item, mark in fetched:
                yield item
                self._mark(mark)
            await self.commit()

    async def batches(self) -> AsyncIterator[list[tuple[str, bytes]]]:
        """``async for batch in loop.batches():`` one list of (key, value) per fetch. A batch counts as
        processed, and its offsets are committed, when the iteration asks for the next one: a consumer that
        stops (or dies) inside a batch leaves the whole batch to be delivered again."""
        while (fetched := await self._fetch()) is not None:
            if fetched:
                yield [item for item, _ in fetched]
            for _, mark in fetched:
                self._mark(mark)
            await self.commit()

    async def commit(self) -> None:
        """Commits the offsets of the messages processed so far (synchronously)."""
        if not self._processed or self.closed:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._processed.items()]
        self._processed.clear()
        async with self._lock:
            await asyncio.to_thread(self._commit, offsets)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        self._consumer.commit(offsets=offsets, asynchronous=False)

    async def close(self) -> None:
        if self.closed:
            return
        await self.commit()
        self.closed = True
        async with self._lock:
            await asyncio.to_thread(self._consumer.close)


__all__ = [
    "PRODUCER_DEFAULTS",
    "PRODUCER_MAX_MESSAGE_BYTES",
    "KafkaConsumerLoop",
    "KafkaEventBus",
    "MessageTooLarge",
    "ensure_topics",
]
