"""The event bus contract (inplay.ports.EventBus): publish + flush / deliver, and what a consumer reads
back (per-key order kept), the same over ``MemoryEventBus`` and ``KafkaEventBus``. The port has no consume
side: each adapter's harness reads its topic the way its consumers do (the memory bus's list, a Kafka
consumer group)."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from inplay.ports import TOPIC_BETS, TOPIC_SETTLEMENTS, BusMessage, EventBus


class BusHarness(Protocol):
    bus: EventBus

    def topic(self, name: str) -> str:
        """The session's name of a ``ports.TOPIC_*``."""
        ...

    async def read(
        self, topic: str, want: Callable[[dict[str, object]], bool], n: int
    ) -> list[tuple[str, dict[str, object]]]:
        """(key, JSON value) of the first ``n`` messages of ``topic`` that ``want`` accepts, in read order."""
        ...


class BusContract:
    async def test_keyed_messages_come_back_in_per_key_order(self, bus_harness: BusHarness) -> None:
        run = uuid.uuid4().hex
        topic = bus_harness.topic(TOPIC_BETS)
        keys = [f"ev-{run[:6]}-{k}" for k in range(7)]
        messages = [BusMessage(topic, keys[i % 7], json.dumps({"run": run, "seq": i}).encode()) for i in range(140)]
        # Published in several calls, as concurrent batches would be; one flush confirms them all.
        for start in range(0, len(messages), 20):
            await bus_harness.bus.publish(messages[start : start + 20])
        await bus_harness.bus.flush(timeout_s=30)
        got = await bus_harness.read(topic, lambda p: p.get("run") == run, 140)
        per_key: dict[str, list[object]] = defaultdict(list)
        for key, payload in got:
            per_key[key].append(payload["seq"])
        assert set(per_key) == set(keys)
        for k, key in enumerate(keys):
            assert per_key[key] == list(range(k, 140, 7)), key  # in publish order within the key

    async def test_delivered_messages_are_readable(self, bus_harness: BusHarness) -> None:
        run = uuid.uuid4().hex
        topic = bus_harness.topic(TOPIC_SETTLEMENTS)
        messages = [BusMessage(topic, f"ev-{i % 3}", json.dumps({"run": run, "n": i}).encode()) for i in range(9)]
        await bus_harness.bus.deliver(messages, timeout_s=30)  # returns once these are acknowledged
        await bus_harness.bus.deliver([], timeout_s=30)
        got = await bus_harness.read(topic, lambda p: p.get("run") == run, 9)
        assert sorted(int(str(p["n"])) for _, p in got) == list(range(9))
        assert {k for k, _ in got} == {"ev-0", "ev-1", "ev-2"}
