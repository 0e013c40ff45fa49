"""H8 on real Kafka: the worker is stopped (SIGTERM) while the first of two results of one event settles;
the second result is not committed, and the next worker settles it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from inplay.domain.settlement.consumer import ResultsConsumer
from inplay.domain.settlement.messages import result_message
from inplay.model import BetState
from inplay.ports import TOPIC_RESULTS, BusMessage
from tests.support.ledger_checks import assert_money_invariants
from tests.support.settlement import SettleEnv, open_senv, source_factory

pytestmark = pytest.mark.integration


@pytest.fixture
async def senv(
    ledger: Any,
    wallet: Any,
    bus: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[SettleEnv]:
    async with open_senv(ledger, wallet, bus, topic_prefix, kafka_bootstrap, redis_url, redis_prefix, unique_id) as env:
        yield env


class StoppingService:
    """The settlement service, stopping the consumer while a chosen request settles (as SIGTERM would)."""

    def __init__(self, inner: Any, request_id: str) -> None:
        self.inner, self.request_id = inner, request_id
        self.consumer: ResultsConsumer | None = None

    async def settle_event(self, event_id: str, results: Any, request_id: str, **kwargs: Any) -> Any:
        if request_id == self.request_id and self.consumer is not None:
            self.consumer.stop()
        return await self.inner.settle_event(event_id, results, request_id, **kwargs)


async def consume(consumer: ResultsConsumer, until: Callable[[], bool], timeout_s: float = 30.0) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(int(timeout_s / 0.1)):
            if until() or task.done():
                break
            await asyncio.sleep(0.1)
    finally:
        consumer.stop()
        await task


async def test_sigterm_with_two_results_queued_for_one_event(senv: SettleEnv) -> None:
    acc = await senv.account()
    ev = senv.unique_id("ev")
    ht = await senv.bet(acc, [(ev, "ht", "h", "2.00")])
    ft = await senv.bet(acc, [(ev, "ft", "h", "3.00")])
    topic = senv.topic_prefix + TOPIC_RESULTS
    await senv.bus.publish(
        [
            BusMessage(topic, ev, result_message(ev, "ht", [("ht", "h", "WIN")])),
            BusMessage(topic, ev, result_message(ev, "ft", [("ft", "h", "WIN")])),
        ]
    )
    await senv.bus.flush()
    group = senv.unique_id("group")
    stopping = StoppingService(senv.service, "ht")
    first = ResultsConsumer(stopping, source_factory(senv.kafka_bootstrap, group, topic), topic, bus=senv.bus)  # type: ignore[arg-type]
    stopping.consumer = first
    await consume(first, lambda: False)
    assert await senv.settled(ht) == (BetState.WON, 2000)
    assert await senv.settled(ft) == (BetState.OPEN, 0)
    second = ResultsConsumer(senv.service, source_factory(senv.kafka_bootstrap, group, topic), topic, bus=senv.bus)
    await consume(second, lambda: second.processed >= 1)
    assert await senv.settled(ft) == (BetState.WON, 3000)
    runs = [r.run_id for r in (await senv.service.status(ev)).history]
    assert runs == [f"{ev}.s.ht", f"{ev}.s.ft"]
    await assert_money_invariants(senv.ledger, senv.wallet, senv.accounts, deposits=senv.deposits)
