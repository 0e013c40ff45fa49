"""Metrics of the results consumer, in a module of their own: the consumer's module can be imported under
two names (as a module and through the worker), and a metric registered twice would be a duplicate."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONSUMER_UP = Gauge("inplay_results_consumer_up", "1 while the results consumer polls, 0 while it restarts")
CONSUMER_LAST_POLL = Gauge(
    "inplay_results_consumer_last_poll_timestamp_seconds", "When the results consumer last polled Kafka"
)
CONSUMER_LAG = Gauge("inplay_results_consumer_lag", "Result messages not yet committed (assigned partitions)")
CONSUMER_RESTARTS = Counter("inplay_results_consumer_restarts_total", "Results consumer restarts after an error")
DEAD_LETTERED = Counter("inplay_results_dead_lettered_total", "Result messages parked in the dead-letter topic")
