"""The results consumer's Kafka client (:class:`inplay.domain.settlement.ports.ResultsSource`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

log = logging.getLogger("inplay.settlement.worker")


class KafkaResultsSource:
    """One consumer-group member subscribed to the results topic; offsets are committed explicitly."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # A run may take minutes: the group must not evict a member busy settling.
                "max.poll.interval.ms": 3_600_000,
            }
        )
        self._consumer.subscribe([topic])

    def consume(self, max_messages: int, timeout_s: float) -> Sequence[Any]:
        return [m for m in self._consumer.consume(max_messages, timeout_s) if not _skippable(m)]

    def commit(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)

    def lag(self) -> int | None:
        try:
            lag = 0
            for tp in self._consumer.position(self._consumer.assignment()):
                _, high = self._consumer.get_watermark_offsets(tp, timeout=1.0, cached=True)
                if tp.offset >= 0 and high >= 0:
                    lag += max(0, high - tp.offset)
            return lag
        except Exception:  # best effort: a metric, never a reason to restart
            log.debug("could not compute the consumer lag", exc_info=True)
            return None

    def close(self) -> None:
        self._consumer.close()


def _skippable(msg: Any) -> bool:
    """Informational errors (end of partition) are skipped; any other consumer error raises (restart)."""
    err = msg.error()
    if err is None:
        return False
    if err.code() == KafkaError._PARTITION_EOF:
        return True
    if err.fatal() or not err.retriable():
        raise KafkaException(err)
    log.warning("kafka: %s", err)
    return True
