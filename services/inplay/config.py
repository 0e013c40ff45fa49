"""Settings from the environment (``INPLAY_*``), with defaults that suit the embedded demo."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _str(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class BetRules:
    """Acceptance rules. Amounts in minor units; durations in milliseconds."""

    tolerance_bp: int = 500  # 5 %
    min_stake_minor: int = 10
    max_stake_minor: int = 1_000_000
    max_payout_minor: int = 50_000_000
    liability_cap_minor: int = 0  # per selection, 0 = no cap
    max_legs: int = 20
    # Freshness windows of the cached price.
    max_price_age_prematch_ms: int = 30_000
    max_price_age_inplay_ms: int = 1_500
    # In-play acceptance delay (anti-courtsiding): the bet is re-checked after it.
    inplay_delay_ms: int = 0
    currency: str = "EUR"
    # Group commit: a unary PlaceBet waits at most this long for company before its batch is processed.
    batch_window_ms: float = 1.0
    batch_max: int = 512

    @classmethod
    def from_env(cls) -> BetRules:
        return cls(
            tolerance_bp=_int("INPLAY_TOLERANCE_BP", 500),
            min_stake_minor=_int("INPLAY_MIN_STAKE_MINOR", 10),
            max_stake_minor=_int("INPLAY_MAX_STAKE_MINOR", 1_000_000),
            max_payout_minor=_int("INPLAY_MAX_PAYOUT_MINOR", 50_000_000),
            liability_cap_minor=_int("INPLAY_LIABILITY_CAP_MINOR", 0),
            max_legs=_int("INPLAY_MAX_LEGS", 20),
            max_price_age_prematch_ms=_int("INPLAY_MAX_PRICE_AGE_PREMATCH_MS", 30_000),
            max_price_age_inplay_ms=_int("INPLAY_MAX_PRICE_AGE_INPLAY_MS", 1_500),
            inplay_delay_ms=_int("INPLAY_INPLAY_DELAY_MS", 0),
            currency=_str("INPLAY_CURRENCY", "EUR"),
            batch_window_ms=float(_str("INPLAY_BATCH_WINDOW_MS", "1.0")),
            batch_max=_int("INPLAY_BATCH_MAX", 512),
        )


@dataclass(frozen=True)
class StackSettings:
    """Where the real engines are (empty = use the embedded in-memory stores)."""

    redis_url: str = ""
    cassandra_hosts: tuple[str, ...] = ()
    cassandra_port: int = 9042
    keyspace: str = "inplay"
    kafka_bootstrap: str = ""
    # Prefixes isolate tests sharing one server.
    redis_prefix: str = "inplay:"
    topic_prefix: str = ""

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @classmethod
    def from_env(cls) -> StackSettings:
        hosts = tuple(h for h in _str("INPLAY_CASSANDRA_HOSTS", "").split(",") if h)
        return cls(
            redis_url=_str("INPLAY_REDIS_URL", ""),
            cassandra_hosts=hosts,
            cassandra_port=_int("INPLAY_CASSANDRA_PORT", 9042),
            keyspace=_str("INPLAY_KEYSPACE", "inplay"),
            kafka_bootstrap=_str("INPLAY_KAFKA_BOOTSTRAP", ""),
            redis_prefix=_str("INPLAY_REDIS_PREFIX", "inplay:"),
            topic_prefix=_str("INPLAY_TOPIC_PREFIX", ""),
        )


@dataclass(frozen=True)
class JournalSettings:
    """The bet journal's writer (inplay.domain.commit, docs/ledger.md)."""

    # Writer shards of the journal: at most this many bet-accepting processes per deployment.
    shards: int = 64
    # Slips per journal batch (one atomic single-partition write).
    max_batch: int = 1000
    # Slips waiting for the writer beyond which new slips get OVERLOADED (RESOURCE_EXHAUSTED).
    max_queue: int = 20_000
    # How long a batch's outcome is retried before the slips get UNAVAILABLE (the intent is kept).
    commit_timeout_s: float = 20.0
    lease_ttl_ms: int = 10_000
    # How often a process looks for shards of dead writers to finish (intents, views).
    adopt_period_s: float = 2.0

    @classmethod
    def from_env(cls) -> JournalSettings:
        return cls(
            shards=_int("INPLAY_JOURNAL_SHARDS", 64),
            max_batch=_int("INPLAY_JOURNAL_MAX_BATCH", 1000),
            max_queue=_int("INPLAY_JOURNAL_MAX_QUEUE", 20_000),
            commit_timeout_s=float(_str("INPLAY_JOURNAL_COMMIT_TIMEOUT_S", "20")),
            lease_ttl_ms=_int("INPLAY_JOURNAL_LEASE_TTL_MS", 10_000),
            adopt_period_s=float(_str("INPLAY_JOURNAL_ADOPT_PERIOD_S", "2")),
        )


@dataclass(frozen=True)
class Settings:
    stack: StackSettings = field(default_factory=StackSettings)
    bets: BetRules = field(default_factory=BetRules)
    journal: JournalSettings = field(default_factory=JournalSettings)
    grpc_port: int = 50051
    metrics_port: int = 0
    # Identity: "header" trusts the x-inplay-subject/x-inplay-roles headers that Envoy sets after verifying
    # the JWT (the service must then be reachable only through Envoy); "jwt" verifies the bearer token here.
    auth_mode: str = "header"
    jwt_public_key_file: str = ""
    jwt_issuer: str = "https://auth.inplay.local"
    jwt_audience: str = "inplay"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            stack=StackSettings.from_env(),
            bets=BetRules.from_env(),
            journal=JournalSettings.from_env(),
            grpc_port=_int("INPLAY_GRPC_PORT", 50051),
            metrics_port=_int("INPLAY_METRICS_PORT", 0),
            auth_mode=_str("INPLAY_AUTH_MODE", "header"),
            jwt_public_key_file=_str("INPLAY_JWT_PUBLIC_KEY_FILE", ""),
            jwt_issuer=_str("INPLAY_JWT_ISSUER", "https://auth.inplay.local"),
            jwt_audience=_str("INPLAY_JWT_AUDIENCE", "inplay"),
        )
