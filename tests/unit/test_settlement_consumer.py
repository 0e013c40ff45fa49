"""The results consumer (H8, M4, M5) over a fake Kafka consumer: only processed offsets are committed
(also when stopped mid-batch), consume/commit errors restart the consumer, a message that keeps failing
is parked in the dead-letter topic instead of blocking the others."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from inplay.adapters.memory import MemoryEventBus
from inplay.domain.settlement.consumer import ConsumerConfig, ResultsConsumer, processed_offsets
from inplay.domain.settlement.messages import result_message
from inplay.model import RunState

TOPIC = "inplay.results.v1"
FAST = ConsumerConfig(max_attempts=3, retry_delay_s=0.001, max_retry_delay_s=0.001, restart_delay_s=0.001)


@dataclass
class Msg:
    _partition: int
    _offset: int
    _value: bytes

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class FakeKafka:
    """Serves the messages after the last committed offset of each partition (as a group would)."""

    messages: list[Msg]
    committed: dict[int, int] = field(default_factory=dict)
    commits: list[list[tuple[str, int, int]]] = field(default_factory=list)
    fail_commits: int = 0
    instances: int = 0

    def factory(self) -> Any:
        self.instances += 1
        served = {"done": False}
        kafka = self

        class Consumer:
            def consume(self, n: int, timeout: float) -> list[Msg]:
                if served["done"]:
                    import time

                    time.sleep(0.01)
                    return []
                served["done"] = True
                return [m for m in kafka.messages if m._offset >= kafka.committed.get(m._partition, 0)]

            def commit(self, offsets: list[tuple[str, int, int]]) -> None:
                if kafka.fail_commits:
                    kafka.fail_commits -= 1
                    raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
                kafka.commits.append(list(offsets))
                for _, partition, offset in offsets:
                    kafka.committed[partition] = offset

            def lag(self) -> int | None:
                return None

            def close(self) -> None:
                pass

        return Consumer()


class FakeService:
    """Stands in for SettlementService: records requests; a hook per request id."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hooks: dict[str, Any] = {}

    async def settle_event(self, event_id: str, results: Any, request_id: str, **_: Any) -> Any:
        self.calls.append(request_id)
        hook = self.hooks.get(request_id)
        if hook is not None:
            await hook()
        return SimpleNamespace(run_id=f"{event_id}.s.{request_id}", state=RunState.COMPLETED)


def consumer_for(kafka: FakeKafka, service: FakeService, bus: MemoryEventBus) -> ResultsConsumer:
    return ResultsConsumer(
        service,  # type: ignore[arg-type]
        kafka.factory,
        TOPIC,
        bus=bus,
        config=FAST,
    )


async def run_until(consumer: ResultsConsumer, done: Any, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(int(timeout_s / 0.01)):
            if done():
                break
            await asyncio.sleep(0.01)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)


def msg(partition: int, offset: int, event: str, request: str) -> Msg:
    return Msg(partition, offset, result_message(event, request, [("m", "h", "WIN")]))


async def test_stop_mid_batch_commits_only_the_processed_messages() -> None:
    kafka = FakeKafka([msg(0, 0, "E", "ht"), msg(0, 1, "E", "ft")])
    service, bus = FakeService(), MemoryEventBus()
    consumer = consumer_for(kafka, service, bus)

    async def stop_during_ht() -> None:
        consumer.stop()  # SIGTERM while the half-time result settles

    service.hooks["ht"] = stop_during_ht
    await run_until(consumer, lambda: False, timeout_s=0.5)
    assert service.calls == ["ht"]
    assert kafka.commits == [[(TOPIC, 0, 1)]]  # ft (offset 1) stays uncommitted: redelivered
    # A new worker gets ft.
    again = consumer_for(kafka, service, bus)
    await run_until(again, lambda: service.calls == ["ht", "ft"])
    assert kafka.committed == {0: 2}


async def test_commit_error_restarts_the_consumer_and_redelivers() -> None:
    kafka = FakeKafka([msg(0, 0, "E", "r1"), msg(1, 0, "F", "r1")], fail_commits=1)
    service, bus = FakeService(), MemoryEventBus()
    consumer = consumer_for(kafka, service, bus)
    await run_until(consumer, lambda: kafka.committed == {0: 1, 1: 1})
    assert kafka.instances == 2 and consumer.restarts == 1
    assert sorted(service.calls) == ["r1", "r1", "r1", "r1"]  # redelivered once: idempotent runs
    assert consumer.health()["restarts"] == 1


async def test_a_failing_message_is_parked_and_blocks_nobody() -> None:
    poison = msg(0, 0, "P", "bad")
    kafka = FakeKafka([poison, msg(0, 1, "P", "next"), msg(1, 0, "Q", "ok"), Msg(1, 1, b"not json")])
    service, bus = FakeService(), MemoryEventBus()

    async def fail() -> None:
        raise ConnectionError("store down")

    service.hooks["bad"] = fail
    consumer = consumer_for(kafka, service, bus)
    await run_until(consumer, lambda: kafka.committed == {0: 2, 1: 2})
    assert service.calls.count("bad") == FAST.max_attempts
    assert "ok" in service.calls and "next" in service.calls
    parked = sorted(bus.decoded(TOPIC + ".dlq"), key=lambda p: (str(p["partition"]), str(p["offset"])))
    assert [(p["partition"], p["offset"]) for p in parked] == [(0, 0), (1, 1)]
    assert "gave up" in str(parked[0]["reason"]) and json.loads(str(parked[0]["value"]))["request_id"] == "bad"
    assert consumer.dead_lettered == 2


def test_processed_offsets_is_the_contiguous_prefix() -> None:
    rows = [("t", 0, 5, True), ("t", 0, 6, False), ("t", 0, 7, True), ("t", 1, 3, False), ("t", 2, 9, True)]
    assert processed_offsets(rows) == [("t", 0, 6), ("t", 2, 10)]


async def test_json_that_is_not_a_result_object_is_parked() -> None:
    """A JSON array, a string or outcomes that are not objects used to raise AttributeError out of the
    parser: the consumer restarted and got the same message again, forever (the partition blocked)."""
    odd = [Msg(0, 0, b"[]"), Msg(0, 1, b'"x"'), Msg(0, 2, b'{"event_id": "e", "outcomes": [1]}')]
    kafka = FakeKafka([*odd, msg(0, 3, "E", "ok")])
    service, bus = FakeService(), MemoryEventBus()
    consumer = consumer_for(kafka, service, bus)
    await run_until(consumer, lambda: kafka.committed == {0: 4})
    assert kafka.committed == {0: 4} and service.calls == ["ok"]
    assert [p["offset"] for p in bus.decoded(TOPIC + ".dlq")] == [0, 1, 2]
    assert consumer.restarts == 0
