"""Feed pipeline settings (``INPLAY_FEED_*``, read through the ``inplay.config`` registry). Durations in ms."""

from __future__ import annotations

from dataclasses import dataclass

from inplay.config import setting_int


@dataclass(frozen=True)
class FeedRules:
    # Feed lag (receive time - provider timestamp) above which a market is suspended (FEED_LAG).
    lag_inplay_ms: int = 500
    lag_prematch_ms: int = 5_000
    # Price jump band: a selection moving more than this (basis points of decimal odds) within the window
    # suspends the market (PRICE_JUMP) until a following update confirms the new level.
    jump_band_bp: int = 1_500
    jump_window_ms: int = 2_000
    # Provider timestamps further than this in the future are rejected (TIMESTAMP_FUTURE).
    max_future_ms: int = 5_000
    # A provider timestamp ahead of the receive time by more than this is counted (TIMESTAMP_AHEAD anomaly;
    # the gauge inplay_feed_clock_ahead_ms shows every skew). Such timestamps are clamped to the receive time.
    clock_ahead_tolerance_ms: int = 100
    # Provider health: heartbeat (any message) timeout, failover lag, sequence-gap memory, fail-back delay.
    heartbeat_timeout_ms: int = 3_000
    failover_lag_ms: int = 1_000
    gap_window_ms: int = 5_000
    failback_after_ms: int = 3_000
    # Messages per processing chunk (one Lua call and one produce batch per chunk).
    chunk_size: int = 500
    # Watchdog period.
    watchdog_interval_ms: int = 100
    # How often the watchdog checks the stored mapping's version (one small GET; reload only when it moved):
    # events added or changed (in-play flag at kick-off) by the mapping CLI reach running processes.
    mapping_refresh_ms: int = 5_000
    # Producer lifecycle: a provider silent this long is DOWN (the markets it is the active source of are
    # suspended PROVIDER_DOWN); its next valid message asks it for a recovery snapshot (RECOVERING), and those
    # markets reopen only once the snapshot is complete.
    producer_down_ms: int = 10_000
    # A recovery snapshot not complete this long after it was asked for is asked for again (a new request id:
    # the connector may have lost the request, or died while replaying); until then the markets stay down.
    recovery_resend_ms: int = 30_000
    # L5: a sanity bound on every price (decimal odds), first prices included (they have no jump reference):
    # above it the market of the message is unusable (ODDS_INVALID). 1000 is the exchanges' maximum.
    max_odds: int = 1_000

    @classmethod
    def from_env(cls) -> FeedRules:
        d = cls()
        return cls(
            lag_inplay_ms=setting_int("INPLAY_FEED_LAG_INPLAY_MS", d.lag_inplay_ms),
            lag_prematch_ms=setting_int("INPLAY_FEED_LAG_PREMATCH_MS", d.lag_prematch_ms),
            jump_band_bp=setting_int("INPLAY_FEED_JUMP_BAND_BP", d.jump_band_bp),
            jump_window_ms=setting_int("INPLAY_FEED_JUMP_WINDOW_MS", d.jump_window_ms),
            max_future_ms=setting_int("INPLAY_FEED_MAX_FUTURE_MS", d.max_future_ms),
            clock_ahead_tolerance_ms=setting_int("INPLAY_FEED_CLOCK_AHEAD_TOLERANCE_MS", d.clock_ahead_tolerance_ms),
            heartbeat_timeout_ms=setting_int("INPLAY_FEED_HEARTBEAT_TIMEOUT_MS", d.heartbeat_timeout_ms),
            failover_lag_ms=setting_int("INPLAY_FEED_FAILOVER_LAG_MS", d.failover_lag_ms),
            gap_window_ms=setting_int("INPLAY_FEED_GAP_WINDOW_MS", d.gap_window_ms),
            failback_after_ms=setting_int("INPLAY_FEED_FAILBACK_AFTER_MS", d.failback_after_ms),
            chunk_size=setting_int("INPLAY_FEED_CHUNK_SIZE", d.chunk_size),
            watchdog_interval_ms=setting_int("INPLAY_FEED_WATCHDOG_INTERVAL_MS", d.watchdog_interval_ms),
            mapping_refresh_ms=setting_int("INPLAY_FEED_MAPPING_REFRESH_MS", d.mapping_refresh_ms),
            producer_down_ms=setting_int("INPLAY_FEED_PRODUCER_DOWN_MS", d.producer_down_ms),
            recovery_resend_ms=setting_int("INPLAY_FEED_RECOVERY_RESEND_MS", d.recovery_resend_ms),
            max_odds=setting_int("INPLAY_FEED_MAX_ODDS", d.max_odds),
        )
