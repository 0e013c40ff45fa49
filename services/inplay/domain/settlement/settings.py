"""Settings of a settlement run (``INPLAY_SETTLEMENT_*``, read through the ``inplay.config`` registry)."""

from __future__ import annotations

from dataclasses import dataclass

from inplay.config import setting_int, setting_str


@dataclass(frozen=True)
class SettlementConfig:
    page_size: int = 5000
    multi_page_size: int = 1000
    lock_ttl_ms: int = 15_000
    # How long a request waits for the event lock (or the multi-event lock) before giving up.
    lock_wait_ms: int = 10_000
    multi_lock_wait_ms: int = 600_000
    history_concurrency: int = 64
    # Pages whose writes are in flight at once (while the next page is read and evaluated).
    commit_concurrency: int = 2
    # Workers of one run, each over a contiguous range of the event's by-event buckets (asyncio tasks of
    # the process holding the event lease; see RunExecutor._run_workers).
    workers: int = 4
    topic_prefix: str = ""

    @classmethod
    def from_env(cls, topic_prefix: str = "") -> SettlementConfig:
        return cls(
            page_size=setting_int("INPLAY_SETTLEMENT_PAGE_SIZE"),
            multi_page_size=setting_int("INPLAY_SETTLEMENT_MULTI_PAGE_SIZE"),
            lock_ttl_ms=setting_int("INPLAY_SETTLEMENT_LOCK_TTL_MS"),
            lock_wait_ms=setting_int("INPLAY_SETTLEMENT_LOCK_WAIT_MS"),
            multi_lock_wait_ms=setting_int("INPLAY_SETTLEMENT_MULTI_LOCK_WAIT_MS"),
            history_concurrency=setting_int("INPLAY_SETTLEMENT_HISTORY_CONCURRENCY"),
            commit_concurrency=setting_int("INPLAY_SETTLEMENT_COMMIT_CONCURRENCY"),
            workers=setting_int("INPLAY_SETTLEMENT_WORKERS"),
            topic_prefix=topic_prefix or setting_str("INPLAY_TOPIC_PREFIX"),
        )
