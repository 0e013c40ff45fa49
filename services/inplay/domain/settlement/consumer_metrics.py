"""Metrics of the results consumer (their own module: ``worker`` also runs as ``__main__``, and a metric
registered by both copies of that module would be a duplicate)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONSUMER_UP = Gauge("inplay_results_consumer_up", "1 while the results consumer polls, 0 while it restarts")
CONSUMER_LAST_POLL = Gauge(
    "inplay_results_consumer_last_poll_timestamp_seconds", "When the results consumer last polled Kafka"
)
CONSUMER_LAG = Gauge("inplay_results_consumer_lag", "Result messages not yet committed (assigned partitions)")
CONSUMER_RESTARTS = Counter("inplay_results_consumer_restarts_total", "Results consumer restarts after an error")
DEAD_LETTERED = Counter("inplay_results_dead_lettered_total", "Result messages parked in the dead-letter topic")
