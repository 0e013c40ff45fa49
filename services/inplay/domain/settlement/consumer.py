"""The results consumer: settles the result messages of ``inplay.results.v1`` (docs/settlement.md).

The Kafka client is behind the :class:`ResultsSource` port (``adapters/kafka_results.py``; a fake in the
unit tests): this module only decides what is processed, parked and committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inplay.domain.settlement.consumer_metrics import (
    CONSUMER_LAG,
    CONSUMER_LAST_POLL,
    CONSUMER_RESTARTS,
    CONSUMER_UP,
    DEAD_LETTERED,
)
from inplay.domain.settlement.messages import ResultMessage, parse_result_message
from inplay.domain.settlement.model import RunView
from inplay.domain.settlement.ports import ResultRecord, ResultsSource
from inplay.domain.settlement.service import SettlementService
from inplay.errors import Aborted, DomainError, FailedPrecondition, InvalidArgument, NotFound
from inplay.ports import BusMessage, EventBus

log = logging.getLogger("inplay.settlement.worker")


async def handle_result(service: SettlementService, message: ResultMessage) -> RunView:
    if message.correction:
        _, run = await service.resettle(
            message.event_id, message.results, message.request_id, reason=message.reason, wait=True
        )
        return run
    return await service.settle_event(
        message.event_id, message.results, message.request_id, reason=message.reason, wait=True
    )


DEAD_LETTER_SUFFIX = ".dlq"


@dataclass(frozen=True)
class ConsumerConfig:
    # Transient failures of one message before it is parked in the dead-letter topic.
    max_attempts: int = 8
    # How long a message waits for a busy event (another run of it in progress) before it is parked.
    busy_timeout_s: float = 900.0
    retry_delay_s: float = 0.5
    max_retry_delay_s: float = 10.0
    restart_delay_s: float = 1.0


@dataclass
class _Item:
    msg: ResultRecord
    parsed: ResultMessage | None
    error: str = ""
    done: bool = False


class ResultsConsumer:
    """Consumes ``inplay.results.v1``: events of a polled batch settle in parallel, each event's messages
    in order. Guarantees:

    * an offset is committed only once its message was processed (its run completed, or the message was
      parked in the dead-letter topic): per partition, the contiguous processed prefix; a stop
      (SIGTERM) leaves the rest uncommitted, so it is redelivered;
    * a message that keeps failing (or cannot be parsed, or is rejected) is parked in
      ``<topic>.dlq`` with the reason, so it blocks nobody;
    * a consume/commit error (a rebalance, a broker restart) restarts the consumer (a new member of the
      group, resuming from the committed offsets); ``health()`` and the ``inplay_results_consumer_*``
      metrics tell whether it is alive.
    """

    def __init__(
        self,
        service: SettlementService,
        source_factory: Callable[[], ResultsSource],
        topic: str,
        *,
        bus: EventBus | None = None,
        config: ConsumerConfig | None = None,
    ) -> None:
        self._service = service
        self.topic = topic
        self._bus = bus
        self._config = config or ConsumerConfig()
        self.dead_letter_topic = topic + DEAD_LETTER_SUFFIX
        self._factory = source_factory
        self._stop = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.restarts = 0
        self.last_poll_at = 0.0
        self.polling = False

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, object]:
        """Alive = polling now, and polled within the last 30 s (a run in progress delays polling)."""
        age = time.time() - self.last_poll_at if self.last_poll_at else None
        return {
            "polling": self.polling,
            "last_poll_age_s": age,
            "restarts": self.restarts,
            "processed": self.processed,
            "dead_lettered": self.dead_lettered,
        }

    async def run(self) -> None:
        """Consumes until ``stop()``; restarts the Kafka consumer after any error."""
        while not self._stop.is_set():
            try:
                consumer = await asyncio.to_thread(self._factory)
            except Exception:
                log.exception("results consumer: cannot create the Kafka consumer; retrying")
                await self._pause(self._config.restart_delay_s)
                continue
            try:
                await self._consume(consumer)
            except Exception:
                self.restarts += 1
                CONSUMER_RESTARTS.inc()
                log.exception("results consumer failed; restarting it (uncommitted messages are redelivered)")
            finally:
                self.polling = False
                CONSUMER_UP.set(0)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(consumer.close)
            if not self._stop.is_set():
                await self._pause(self._config.restart_delay_s)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _consume(self, consumer: ResultsSource) -> None:
        while not self._stop.is_set():
            messages = await asyncio.to_thread(consumer.consume, 100, 0.5)
            self.polling = True
            self.last_poll_at = time.time()
            CONSUMER_UP.set(1)
            CONSUMER_LAST_POLL.set(self.last_poll_at)
            items = self._parse(messages)
            if not items:
                continue
            by_event: dict[str, list[_Item]] = {}
            for item in items:
                key = item.parsed.event_id if item.parsed is not None else ""
                by_event.setdefault(key, []).append(item)
            await asyncio.gather(*(self._event(group) for group in by_event.values()))
            offsets = processed_offsets([(i.msg.topic(), i.msg.partition(), i.msg.offset(), i.done) for i in items])
            if offsets:
                await asyncio.to_thread(consumer.commit, offsets)
            lag = await asyncio.to_thread(consumer.lag)
            if lag is not None:
                CONSUMER_LAG.set(lag)

    def _parse(self, messages: Sequence[ResultRecord]) -> list[_Item]:
        items = []
        for msg in messages:
            fallback = f"kafka-{msg.topic()}-{msg.partition()}-{msg.offset()}"
            try:
                items.append(_Item(msg, parse_result_message(msg.value() or b"", fallback)))
            except InvalidArgument as exc:
                items.append(_Item(msg, None, f"unparseable: {exc}"))
        return items

    async def _event(self, items: list[_Item]) -> None:
        """One event's messages, in order; stops (leaving the rest unprocessed) on stop()."""
        for item in items:
            if self._stop.is_set():
                return
            if item.parsed is None:
                await self._dead_letter(item, item.error, 0)
                continue
            await self._process(item, item.parsed)

    async def _process(self, item: _Item, message: ResultMessage) -> None:
        delay = self._config.retry_delay_s
        attempts = 0
        loop = asyncio.get_running_loop()
        busy_until = loop.time() + self._config.busy_timeout_s
        while not self._stop.is_set():
            try:
                run = await handle_result(self._service, message)
                log.info("result %s of %s: run %s %s", message.request_id, message.event_id, run.run_id, run.state.name)
                self.processed += 1
                item.done = True
                return
            except (FailedPrecondition, InvalidArgument, NotFound) as exc:
                log.error("result %s of %s rejected: %s", message.request_id, message.event_id, exc)
                await self._dead_letter(item, f"rejected: {type(exc).__name__}: {exc}", attempts + 1)
                return
            except Exception as exc:  # transient (busy event, store down): retry, then park it
                busy = isinstance(exc, Aborted)
                attempts += 0 if busy else 1
                if (busy and loop.time() >= busy_until) or attempts >= self._config.max_attempts:
                    await self._dead_letter(item, f"gave up: {type(exc).__name__}: {exc}", attempts)
                    return
                if not isinstance(exc, DomainError):
                    log.warning("settling %s failed (attempt %d); retrying", message.event_id, attempts, exc_info=True)
                await self._pause(delay)
                delay = min(delay * 2, self._config.max_retry_delay_s)

    async def _dead_letter(self, item: _Item, reason: str, attempts: int) -> None:
        """Parks the message (raises if it cannot: the message then stays uncommitted)."""
        msg = item.msg
        if self._bus is None:
            raise RuntimeError(f"no dead-letter producer: cannot park the message at offset {msg.offset()}")
        envelope = {
            "reason": reason[:1000],
            "attempts": attempts,
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "value": (msg.value() or b"").decode("utf-8", "replace"),
        }
        key = item.parsed.event_id if item.parsed is not None else f"{msg.partition()}:{msg.offset()}"
        body = json.dumps(envelope, separators=(",", ":")).encode()
        await self._bus.publish([BusMessage(self.dead_letter_topic, key, body)])
        await self._bus.flush()
        log.error(
            "result message at %s/%s parked in %s: %s", msg.partition(), msg.offset(), self.dead_letter_topic, reason
        )
        self.dead_lettered += 1
        DEAD_LETTERED.inc()
        item.done = True


def processed_offsets(items: Sequence[tuple[str, int, int, bool]]) -> list[tuple[str, int, int]]:
    """(topic, partition, offset to commit) per partition: one past the contiguous processed prefix of the
    batch's messages (in offset order); partitions whose first message is unprocessed are left out."""
    by_partition: dict[tuple[str, int], list[tuple[int, bool]]] = {}
    for topic, partition, offset, done in items:
        by_partition.setdefault((topic, partition), []).append((offset, done))
    out = []
    for (topic, partition), rows in sorted(by_partition.items()):
        last = None
        for offset, done in sorted(rows):
            if not done:
                break
            last = offset
        if last is not None:
            out.append((topic, partition, last + 1))
    return out
