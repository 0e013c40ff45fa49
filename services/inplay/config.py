"""Settings from the environment (``INPLAY_*``), with defaults that suit the embedded demo.

``SETTINGS`` is the one table of every ``INPLAY_*`` variable the services read: its type, default, the
component that reads it and whether it is a secret. ``docs/configuration.md`` is generated from it
(``python -m inplay.config --markdown``) and ``./dev lint`` (scripts/lint/check_config.py) fails when the
doc is stale, when a module names an unregistered variable, or when a registered one is no longer read.

Modules read their variables through ``setting_int`` / ``setting_float`` / ``setting_str`` /
``setting_bool``, which raise on an unregistered name and fall back to the registry's default, so a
default lives in one place.
An empty value counts as unset everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["int", "float", "str", "bool"]
Default = int | float | str | bool

# Table order of docs/configuration.md.
COMPONENTS: tuple[str, ...] = (
    "server",
    "auth",
    "stack",
    "bets",
    "journal",
    "odds/feed",
    "settlement",
    "observability",
    "edge tooling",
    "demo",
)
AUTH_MODES = ("header", "jwt")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    kind: Kind
    # The value used when the variable is unset or empty (what the reading module uses today).
    default: Default
    description: str
    component: str
    # Modules (under services/inplay, without .py) that read it; lint checks each still does.
    read_by: tuple[str, ...]
    secret: bool = False
    # For defaults computed at run time (the accessor gets them from the caller): how the doc shows them.
    default_doc: str = ""


class UnknownSetting(KeyError):
    """A name that is not in SETTINGS: register it (and regenerate docs/configuration.md) first."""


def _s(
    name: str,
    kind: Kind,
    default: Default,
    component: str,
    read_by: str,
    description: str,
    *,
    secret: bool = False,
    default_doc: str = "",
) -> Setting:
    return Setting(name, kind, default, description, component, tuple(read_by.split()), secret, default_doc)


_ALL_ROLES = "bets,wallet,odds,feed,admin,settlement"

# One entry per line reads as a table: keep the formatter out of it.
# fmt: off
SETTINGS_LIST: tuple[Setting, ...] = (
    # ---- server
    _s("INPLAY_GRPC_PORT", "int", 50051, "server", "config inplay_edge/settings",
       "Port of the gRPC server (also the edge's default upstream port)."),
    _s("INPLAY_METRICS_PORT", "int", 0, "server", "config",
       "Port of the Prometheus metrics endpoint; 0 = no endpoint."),
    _s("INPLAY_GRPC_REUSEPORT", "bool", False, "server", "server",
       "1: several server processes share the gRPC port (SO_REUSEPORT), one journal shard each."),
    _s("INPLAY_SERVICES", "str", _ALL_ROLES, "server", "app",
       "Comma-separated roles this process serves (one image, one role per k8s Deployment)."),
    _s("INPLAY_PAGE_TOKEN_SECRET", "str", "", "server", "pagetoken",
       "HMAC key of list page tokens; set the same value on every replica (unset = a random key per "
       "process: a token only works on the process that issued it).",
       secret=True, default_doc="random per process"),
    # ---- server: admission control of the bet RPCs (servicers/admission.py, docs/reliability.md)
    _s("INPLAY_ADMISSION_MAX_IN_FLIGHT", "int", 256, "server", "servicers/admission",
       "PlaceBet/PlaceBets calls running at once per process; more wait (see the queue target) or are "
       "shed with RESOURCE_EXHAUSTED + RetryInfo before any work; 0 = admission control off."),
    _s("INPLAY_ADMISSION_QUEUE_TARGET_MS", "int", 100, "server", "servicers/admission",
       "Longest time a bet call waits for an admission slot before it is shed (CoDel-like queue-time "
       "target), ms."),
    _s("INPLAY_ADMISSION_MAX_WAITING", "int", 2000, "server", "servicers/admission",
       "Bet calls that may wait for an admission slot; beyond, new calls are shed at once."),
    _s("INPLAY_ADMISSION_RETRY_AFTER_MS", "int", 1000, "server", "servicers/admission",
       "Retry delay a shed call is told (google.rpc.RetryInfo, grpc-retry-pushback-ms), ms."),
    # ---- auth
    _s("INPLAY_AUTH_MODE", "str", "header", "auth", "config auth",
       "`header`: trust x-inplay-subject/x-inplay-roles set by Envoy after it verified the JWT (the service "
       "must be reachable only through Envoy); `jwt`: verify the bearer token in the service as well."),
    _s("INPLAY_JWT_PUBLIC_KEY_FILE", "str", "", "auth", "config auth",
       "PEM public key or JWKS file that verifies bearer tokens; required when INPLAY_AUTH_MODE=jwt."),
    _s("INPLAY_JWT_ISSUER", "str", "https://auth.inplay.local", "auth", "config inplay_edge/settings",
       "Expected `iss` of bearer tokens (service in jwt mode, and Envoy)."),
    _s("INPLAY_JWT_AUDIENCE", "str", "inplay", "auth", "config inplay_edge/settings",
       "Expected `aud` of bearer tokens (service in jwt mode, and Envoy)."),
    # ---- stack
    _s("INPLAY_REDIS_URL", "str", "", "stack", "config",
       "Redis URL (wallet, odds cache); empty = the embedded in-memory stores (demo, unit tests).",
       secret=True),
    _s("INPLAY_REDIS_PREFIX", "str", "inplay:", "stack", "config",
       "Prefix of every Redis key (isolates tests sharing one server)."),
    _s("INPLAY_REDIS_WAIT_REPLICAS", "int", 0, "stack", "config",
       "Replicas that must acknowledge every money write (Redis WAIT, per batch) before the journal commit "
       "relies on it; 0 = off (one node). With 1, a Sentinel failover loses no acknowledged debit, and bets "
       "wait while no replica answers."),
    _s("INPLAY_REDIS_WAIT_TIMEOUT_MS", "int", 250, "stack", "config",
       "How long one WAIT for the replicas may take before the write counts as not replicated, ms."),
    _s("INPLAY_CASSANDRA_HOSTS", "str", "", "stack", "config migrate",
       "Comma-separated Cassandra contact points; empty = no Cassandra (the migrations CLI then uses "
       "127.0.0.1)."),
    _s("INPLAY_CASSANDRA_PORT", "int", 9042, "stack", "config migrate", "Cassandra CQL port."),
    _s("INPLAY_KEYSPACE", "str", "inplay", "stack", "config migrate", "Cassandra keyspace."),
    _s("INPLAY_CASSANDRA_DC", "str", "", "stack", "adapters/cassandra_ledger",
       "Local data centre of the driver's DC-aware load balancing; empty = the driver picks (the DC of the "
       "first contact point).", default_doc="driver's choice"),
    _s("INPLAY_CASSANDRA_CONSISTENCY", "str", "LOCAL_ONE", "stack", "adapters/cassandra_ledger",
       "Consistency level of the default execution profile (LOCAL_QUORUM with RF 3 in production)."),
    _s("INPLAY_CASSANDRA_SPECULATIVE_DELAY_MS", "int", 250, "stack", "adapters/cassandra_ledger",
       "Idempotent statements only (the journal write): after this long without an answer the next replica "
       "coordinates a copy (speculative execution); 0 = off, ms."),
    _s("INPLAY_CASSANDRA_SPECULATIVE_ATTEMPTS", "int", 2, "stack", "adapters/cassandra_ledger",
       "Most speculative copies of one idempotent statement (besides the first attempt)."),
    _s("INPLAY_CASSANDRA_REPLICATION", "str", "", "stack", "adapters/migrations",
       "Keyspace replication made by the migrations: `dc1=3,dc2=3` (NetworkTopologyStrategy) or a CQL map; "
       "empty = SimpleStrategy RF 1 (dev)."),
    _s("INPLAY_KAFKA_BOOTSTRAP", "str", "", "stack", "config",
       "Kafka bootstrap servers; empty = the embedded in-memory bus."),
    _s("INPLAY_TOPIC_PREFIX", "str", "", "stack", "config domain/settlement/settings",
       "Prefix of every Kafka topic (isolates tests sharing one cluster)."),
    # ---- bets (BetRules)
    _s("INPLAY_TOLERANCE_BP", "int", 500, "bets", "config",
       "Accepted odds move against the bettor between quote and placement, basis points (500 = 5 %)."),
    _s("INPLAY_MIN_STAKE_MINOR", "int", 10, "bets", "config", "Smallest stake, minor units."),
    _s("INPLAY_MAX_STAKE_MINOR", "int", 1_000_000, "bets", "config", "Largest stake, minor units."),
    _s("INPLAY_MAX_PAYOUT_MINOR", "int", 50_000_000, "bets", "config",
       "Largest potential payout of a slip, minor units."),
    _s("INPLAY_LIABILITY_CAP_MINOR", "int", 0, "bets", "config",
       "Liability cap per selection, minor units; 0 = no cap."),
    _s("INPLAY_MAX_LEGS", "int", 20, "bets", "config", "Most legs on one slip (the core's hard cap is above it)."),
    _s("INPLAY_MAX_PRICE_AGE_PREMATCH_MS", "int", 30_000, "bets", "config",
       "Oldest cached pre-match price a bet is accepted at, ms."),
    _s("INPLAY_MAX_PRICE_AGE_INPLAY_MS", "int", 1_500, "bets", "config",
       "Oldest cached in-play price a bet is accepted at, ms."),
    _s("INPLAY_INPLAY_DELAY_MS", "int", 0, "bets", "config",
       "In-play acceptance delay (anti-courtsiding): the bet is re-checked after it, ms; 0 = none."),
    _s("INPLAY_CURRENCY", "str", "EUR", "bets", "config", "Currency of stakes and balances (ISO 4217)."),
    _s("INPLAY_BATCH_WINDOW_MS", "float", 1.0, "bets", "config",
       "Group commit: how long a unary PlaceBet waits for company before its batch is processed, ms."),
    _s("INPLAY_BATCH_MAX", "int", 512, "bets", "config", "Group commit: most bets in one placement batch."),
    _s("INPLAY_BATCH_MAX_IN_FLIGHT", "int", 2, "bets", "config",
       "Group commit: placement batches of unary calls processed at once; later calls form the next batch."),
    # ---- journal (JournalSettings)
    _s("INPLAY_JOURNAL_SHARDS", "int", 64, "journal", "config",
       "Writer shards of the bet journal: at most this many bet-accepting processes per deployment."),
    _s("INPLAY_JOURNAL_MAX_BATCH", "int", 1000, "journal", "config",
       "Slips per journal batch (one atomic single-partition write)."),
    _s("INPLAY_JOURNAL_MAX_QUEUE", "int", 20_000, "journal", "config",
       "Slips waiting for the writer beyond which new slips get OVERLOADED (RESOURCE_EXHAUSTED)."),
    _s("INPLAY_JOURNAL_COMMIT_TIMEOUT_S", "float", 20.0, "journal", "config",
       "How long a batch's outcome is retried before its slips get UNAVAILABLE (the intent is kept), s."),
    _s("INPLAY_JOURNAL_LEASE_TTL_MS", "int", 10_000, "journal", "config", "Writer shard lease TTL, ms."),
    _s("INPLAY_JOURNAL_ADOPT_PERIOD_S", "float", 2.0, "journal", "config",
       "How often a process looks for shards of dead writers to finish (intents, views), s."),
    _s("INPLAY_WRITER_ID", "str", "", "journal", "domain/commit",
       "This process's journal writer identity; a stable pod name lets a restart take its shard back at once.",
       default_doc="random `w-<pid>-<hex>`"),
    # ---- odds/feed (FeedRules and the mapping table)
    _s("INPLAY_FEED_LAG_INPLAY_MS", "int", 500, "odds/feed", "domain/feed/rules",
       "Feed lag (receive time - provider timestamp) above which an in-play market is suspended, ms."),
    _s("INPLAY_FEED_LAG_PREMATCH_MS", "int", 5_000, "odds/feed", "domain/feed/rules",
       "Feed lag above which a pre-match market is suspended, ms."),
    _s("INPLAY_FEED_JUMP_BAND_BP", "int", 1_500, "odds/feed", "domain/feed/rules",
       "A selection moving more than this (bp of decimal odds) within the jump window suspends the market."),
    _s("INPLAY_FEED_JUMP_WINDOW_MS", "int", 2_000, "odds/feed", "domain/feed/rules", "Price jump window, ms."),
    _s("INPLAY_FEED_MAX_FUTURE_MS", "int", 5_000, "odds/feed", "domain/feed/rules",
       "Provider timestamps further than this in the future are rejected (TIMESTAMP_FUTURE), ms."),
    _s("INPLAY_FEED_CLOCK_AHEAD_TOLERANCE_MS", "int", 100, "odds/feed", "domain/feed/rules",
       "A provider timestamp further ahead of the receive time is counted (TIMESTAMP_AHEAD) and clamped, ms."),
    _s("INPLAY_FEED_HEARTBEAT_TIMEOUT_MS", "int", 3_000, "odds/feed", "domain/feed/rules",
       "A provider silent this long is unhealthy, ms."),
    _s("INPLAY_FEED_FAILOVER_LAG_MS", "int", 1_000, "odds/feed", "domain/feed/rules",
       "Lag of the primary provider that fails over to the secondary, ms."),
    _s("INPLAY_FEED_GAP_WINDOW_MS", "int", 5_000, "odds/feed", "domain/feed/rules",
       "How long a sequence gap is remembered, ms."),
    _s("INPLAY_FEED_FAILBACK_AFTER_MS", "int", 3_000, "odds/feed", "domain/feed/rules",
       "How long the primary must be healthy again before failing back to it, ms."),
    _s("INPLAY_FEED_CHUNK_SIZE", "int", 500, "odds/feed", "domain/feed/rules",
       "Messages per processing chunk (one Lua call and one produce batch per chunk)."),
    _s("INPLAY_FEED_WATCHDOG_INTERVAL_MS", "int", 100, "odds/feed", "domain/feed/rules", "Watchdog period, ms."),
    _s("INPLAY_FEED_PRODUCER_DOWN_MS", "int", 10_000, "odds/feed", "domain/feed/rules",
       "A provider silent this long is DOWN: the markets it is the active source of are suspended PROVIDER_DOWN, ms."),
    _s("INPLAY_FEED_RECOVERY_RESEND_MS", "int", 30_000, "odds/feed", "domain/feed/rules",
       "A recovery snapshot not complete this long after the request is requested again (new request id), ms."),
    _s("INPLAY_FEED_MAX_ODDS", "int", 1000, "odds/feed", "domain/feed/rules",
       "Prices above these decimal odds are rejected as ODDS_INVALID (a first price included)."),
    _s("INPLAY_FEED_MAPPING_REFRESH_MS", "int", 5_000, "odds/feed", "domain/feed/rules",
       "How often the watchdog checks the stored provider mapping's version (reload when it moved), ms."),
    _s("INPLAY_FEED_CHANGE_LOG", "str", "inline", "odds/feed", "app",
       "Who writes the feed's market change log: inline (the ingest process, after each chunk) or kafka (the "
       "change-log writer, python -m inplay.worker changelog, derives it from the odds topics: off the hot path)."),
    _s("INPLAY_FEED_MAPPING_FILE", "str", "", "odds/feed", "app",
       "Provider id mapping document (JSON) loaded at start-up; empty = none."),
    # ---- settlement (SettlementConfig)
    _s("INPLAY_SETTLEMENT_PAGE_SIZE", "int", 5000, "settlement", "domain/settlement/settings",
       "Bets per page of a single-event settlement run."),
    _s("INPLAY_SETTLEMENT_WORKERS", "int", 4, "settlement", "domain/settlement/settings",
       "Workers per settlement run, each over a contiguous range of the event's buckets, under one lease."),
    _s("INPLAY_SETTLEMENT_MULTI_PAGE_SIZE", "int", 1000, "settlement", "domain/settlement/settings",
       "Bets per page of the multi-event (accumulator) phase."),
    _s("INPLAY_SETTLEMENT_LOCK_TTL_MS", "int", 15_000, "settlement", "domain/settlement/settings",
       "TTL of the event (and multi-event) settlement lease, ms."),
    _s("INPLAY_SETTLEMENT_LOCK_WAIT_MS", "int", 10_000, "settlement", "domain/settlement/settings",
       "How long a request waits for the event lock before giving up, ms."),
    _s("INPLAY_SETTLEMENT_MULTI_LOCK_WAIT_MS", "int", 600_000, "settlement", "domain/settlement/settings",
       "How long a request waits for the multi-event lock before giving up, ms."),
    _s("INPLAY_SETTLEMENT_HISTORY_CONCURRENCY", "int", 64, "settlement", "domain/settlement/settings",
       "Concurrent bet history writes of a page."),
    _s("INPLAY_SETTLEMENT_COMMIT_CONCURRENCY", "int", 2, "settlement", "domain/settlement/settings",
       "Pages whose writes are in flight at once (while the next page is read and evaluated)."),
    # ---- observability
    _s("INPLAY_OTLP_ENDPOINT", "str", "", "observability", "tracing",
       "OTLP/gRPC endpoint that spans are exported to; empty = no tracing."),
    _s("INPLAY_LOG_LEVEL", "str", "INFO", "observability", "logs", "Root log level (JSON logs on stderr)."),
    # ---- edge tooling (python -m inplay_edge: Envoy config, dev keys, web build)
    _s("INPLAY_ROOT", "str", "", "edge tooling", "inplay_edge/settings",
       "The checkout (gateway/, .stack/).", default_doc="the tree of the module, else the working directory"),
    _s("INPLAY_ENVOY_BIN", "str", "", "edge tooling", "inplay_edge/envoy",
       "Envoy binary.", default_doc="`envoy` beside the Python interpreter, else on PATH"),
    _s("INPLAY_EDGE_ADDRESS", "str", "127.0.0.1", "edge tooling", "inplay_edge/settings", "Envoy listen address."),
    _s("INPLAY_EDGE_PORT", "int", 18080, "edge tooling", "inplay_edge/settings", "Envoy listen port."),
    _s("INPLAY_EDGE_ADMIN_PORT", "int", 19901, "edge tooling", "inplay_edge/settings", "Envoy admin port."),
    _s("INPLAY_EDGE_UPSTREAM", "str", "", "edge tooling", "inplay_edge/settings",
       "`host:port` of the gRPC service behind Envoy.", default_doc="`127.0.0.1:<INPLAY_GRPC_PORT>`"),
    _s("INPLAY_EDGE_WEB_ORIGINS", "str", "", "edge tooling", "inplay_edge/settings",
       "Comma-separated browser origins allowed by CORS.",
       default_doc="localhost and 127.0.0.1 on the edge port, localhost:5173"),
    _s("INPLAY_EDGE_JWT_MAX_LIFETIME_S", "int", 86_400, "edge tooling", "inplay_edge/settings",
       "Longest JWT lifetime Envoy accepts, s."),
    _s("INPLAY_EDGE_JWKS_FILE", "str", "", "edge tooling", "inplay_edge/settings",
       "The identity provider's JWKS for Envoy; empty = the dev key pair under INPLAY_EDGE_KEYS_DIR."),
    _s("INPLAY_EDGE_KEYS_DIR", "str", "", "edge tooling", "inplay_edge/settings",
       "Directory of the dev ES256 key pair and JWKS.", default_doc="`<root>/.stack/keys`"),
    _s("INPLAY_EDGE_BET_RATE_PER_USER", "int", 20, "edge tooling", "inplay_edge/settings",
       "Bet placement calls per second per verified subject (token bucket)."),
    _s("INPLAY_EDGE_BET_BURST_PER_USER", "int", 20, "edge tooling", "inplay_edge/settings",
       "Burst of the per-subject bucket.", default_doc="INPLAY_EDGE_BET_RATE_PER_USER"),
    _s("INPLAY_EDGE_BET_RATE_GLOBAL", "int", 2000, "edge tooling", "inplay_edge/settings",
       "Bet placement calls per second over all subjects."),
    _s("INPLAY_EDGE_BET_BURST_GLOBAL", "int", 4000, "edge tooling", "inplay_edge/settings",
       "Burst of the global bucket.", default_doc="2 x INPLAY_EDGE_BET_RATE_GLOBAL"),
    _s("INPLAY_EDGE_BET_MAX_USERS", "int", 100_000, "edge tooling", "inplay_edge/settings",
       "Most per-subject buckets Envoy keeps."),
    _s("INPLAY_EDGE_BET_MAX_IN_FLIGHT", "int", 256, "edge tooling", "inplay_edge/settings",
       "Bet calls Envoy lets run on the upstream cluster at once (circuit breaker; all hosts together); "
       "more are answered RESOURCE_EXHAUSTED + RetryInfo at the edge."),
    _s("INPLAY_EDGE_BET_RETRY_AFTER_MS", "int", 1000, "edge tooling", "inplay_edge/settings",
       "Retry delay of the edge's shed answers (RetryInfo, grpc-retry-pushback-ms), ms."),
    _s("INPLAY_EDGE_STREAM_IDLE_TIMEOUT_S", "int", 300, "edge tooling", "inplay_edge/settings",
       "Idle timeout of streams through Envoy, s."),
    _s("INPLAY_EDGE_HEALTH_INTERVAL_S", "int", 5, "edge tooling", "inplay_edge/settings",
       "Envoy's health check period of the upstream, s."),
    _s("INPLAY_EDGE_MAX_CONNECTIONS", "int", 50_000, "edge tooling", "inplay_edge/settings",
       "Most downstream connections Envoy accepts."),
    _s("INPLAY_EDGE_ACCESS_LOG", "str", "/dev/stdout", "edge tooling", "inplay_edge/settings",
       "Envoy access log path."),
    _s("INPLAY_EDGE_WEB_DIST", "str", "", "edge tooling", "inplay_edge/settings",
       "Built web bet slip served by Envoy.", default_doc="`<root>/gateway/web/dist`"),
    _s("INPLAY_EDGE_DEV_TOKENS", "bool", False, "edge tooling", "inplay_edge/settings",
       "Serve /dev/tokens.json (bettor tokens of the demo users). Dev only."),
    _s("INPLAY_EDGE_DEMO_EVENT", "str", "", "edge tooling", "inplay_edge/settings",
       "Event id /dev/tokens.json hands to the web bet slip; empty = none."),
    # ---- demo
    _s("INPLAY_DEMO_SEED", "int", 7, "demo", "demo", "Seed of the demo's match simulator."),
)
# fmt: on
SETTINGS: dict[str, Setting] = {s.name: s for s in SETTINGS_LIST}


def setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise UnknownSetting(f"{name} is not in inplay.config.SETTINGS") from None


def _raw(name: str, kind: Kind) -> tuple[Setting, str | None]:
    entry = setting(name)
    if entry.kind != kind:
        raise TypeError(f"{name} is a {entry.kind} setting, not {kind}")
    raw = os.environ.get(name)
    return entry, (None if raw is None or raw == "" else raw)


def _bad(name: str, raw: str, what: str) -> ValueError:
    return ValueError(f"{name}={raw!r}: expected {what}")


def setting_int(name: str, default: int | None = None) -> int:
    """``name`` as an int; unset/empty -> ``default`` (for computed defaults) or the registry's."""
    entry, raw = _raw(name, "int")
    if raw is None:
        return int(entry.default) if default is None else default
    try:
        return int(raw)
    except ValueError:
        raise _bad(name, raw, "an integer") from None


def setting_float(name: str, default: float | None = None) -> float:
    entry, raw = _raw(name, "float")
    if raw is None:
        return float(entry.default) if default is None else default
    try:
        return float(raw)
    except ValueError:
        raise _bad(name, raw, "a number") from None


def setting_str(name: str, default: str | None = None) -> str:
    entry, raw = _raw(name, "str")
    if raw is None:
        return str(entry.default) if default is None else default
    return raw


def setting_bool(name: str, default: bool | None = None) -> bool:
    """Anything but 0/false/no (any case) is true, as the edge tooling has always read it."""
    entry, raw = _raw(name, "bool")
    if raw is None:
        return bool(entry.default) if default is None else default
    return raw.strip().lower() not in _FALSE


# ------------------------------------------------------------------------------------------ typed groups


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
    batch_max_in_flight: int = 2

    @classmethod
    def from_env(cls) -> BetRules:
        return cls(
            tolerance_bp=setting_int("INPLAY_TOLERANCE_BP"),
            min_stake_minor=setting_int("INPLAY_MIN_STAKE_MINOR"),
            max_stake_minor=setting_int("INPLAY_MAX_STAKE_MINOR"),
            max_payout_minor=setting_int("INPLAY_MAX_PAYOUT_MINOR"),
            liability_cap_minor=setting_int("INPLAY_LIABILITY_CAP_MINOR"),
            max_legs=setting_int("INPLAY_MAX_LEGS"),
            max_price_age_prematch_ms=setting_int("INPLAY_MAX_PRICE_AGE_PREMATCH_MS"),
            max_price_age_inplay_ms=setting_int("INPLAY_MAX_PRICE_AGE_INPLAY_MS"),
            inplay_delay_ms=setting_int("INPLAY_INPLAY_DELAY_MS"),
            currency=setting_str("INPLAY_CURRENCY"),
            batch_window_ms=setting_float("INPLAY_BATCH_WINDOW_MS"),
            batch_max=setting_int("INPLAY_BATCH_MAX"),
            batch_max_in_flight=setting_int("INPLAY_BATCH_MAX_IN_FLIGHT"),
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
    # Redis WAIT after every money write (docs/reliability.md, "A partial Redis loss after a failover").
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 250

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @classmethod
    def from_env(cls) -> StackSettings:
        hosts = tuple(h for h in setting_str("INPLAY_CASSANDRA_HOSTS").split(",") if h)
        return cls(
            redis_url=setting_str("INPLAY_REDIS_URL"),
            cassandra_hosts=hosts,
            cassandra_port=setting_int("INPLAY_CASSANDRA_PORT"),
            keyspace=setting_str("INPLAY_KEYSPACE"),
            kafka_bootstrap=setting_str("INPLAY_KAFKA_BOOTSTRAP"),
            redis_prefix=setting_str("INPLAY_REDIS_PREFIX"),
            topic_prefix=setting_str("INPLAY_TOPIC_PREFIX"),
            redis_wait_replicas=setting_int("INPLAY_REDIS_WAIT_REPLICAS"),
            redis_wait_timeout_ms=setting_int("INPLAY_REDIS_WAIT_TIMEOUT_MS"),
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
            shards=setting_int("INPLAY_JOURNAL_SHARDS"),
            max_batch=setting_int("INPLAY_JOURNAL_MAX_BATCH"),
            max_queue=setting_int("INPLAY_JOURNAL_MAX_QUEUE"),
            commit_timeout_s=setting_float("INPLAY_JOURNAL_COMMIT_TIMEOUT_S"),
            lease_ttl_ms=setting_int("INPLAY_JOURNAL_LEASE_TTL_MS"),
            adopt_period_s=setting_float("INPLAY_JOURNAL_ADOPT_PERIOD_S"),
        )


@dataclass(frozen=True)
class Settings:
    stack: StackSettings = field(default_factory=StackSettings)
    bets: BetRules = field(default_factory=BetRules)
    journal: JournalSettings = field(default_factory=JournalSettings)
    grpc_port: int = 50051
    metrics_port: int = 0
    # Identity: "header" trusts the x-inplay-subject/x-inplay-roles headers that Envoy sets after verifying
    # the JWT (the service must then be reachable only through Envoy); "jwt" verifies the bearer token here
    # (inplay.auth), for deployments without Envoy in front or without enforced NetworkPolicy.
    auth_mode: str = "header"
    jwt_public_key_file: str = ""
    jwt_issuer: str = "https://auth.inplay.local"
    jwt_audience: str = "inplay"

    @classmethod
    def from_env(cls) -> Settings:
        settings = cls(
            stack=StackSettings.from_env(),
            bets=BetRules.from_env(),
            journal=JournalSettings.from_env(),
            grpc_port=setting_int("INPLAY_GRPC_PORT"),
            metrics_port=setting_int("INPLAY_METRICS_PORT"),
            auth_mode=setting_str("INPLAY_AUTH_MODE"),
            jwt_public_key_file=setting_str("INPLAY_JWT_PUBLIC_KEY_FILE"),
            jwt_issuer=setting_str("INPLAY_JWT_ISSUER"),
            jwt_audience=setting_str("INPLAY_JWT_AUDIENCE"),
        )
        settings.check_auth()
        return settings

    def check_auth(self) -> None:
        """Fails at start-up (not on the first call) on an auth setting that would lock everyone out or,
        worse, silently fall back to trusting headers."""
        if self.auth_mode not in AUTH_MODES:
            raise ValueError(f"INPLAY_AUTH_MODE={self.auth_mode!r}: expected one of {', '.join(AUTH_MODES)}")
        if self.auth_mode == "jwt" and not os.path.isfile(self.jwt_public_key_file):
            raise ValueError(
                f"INPLAY_AUTH_MODE=jwt needs INPLAY_JWT_PUBLIC_KEY_FILE (a PEM public key or a JWKS file); "
                f"got {self.jwt_public_key_file!r}"
            )


# ------------------------------------------------------------------------------- docs/configuration.md


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(entry: Setting) -> str:
    if entry.default_doc:
        return entry.default_doc
    if entry.kind == "bool":
        return f"`{'1' if entry.default else '0'}`"
    if entry.default == "":
        return "(empty)"
    return f"`{entry.default}`"


def _table(entries: Iterable[Setting]) -> list[str]:
    lines = ["| Name | Type | Default | Description | Read by |", "|---|---|---|---|---|"]
    for e in entries:
        description = e.description + (" **Secret.**" if e.secret else "")
        readers = ", ".join(f"`{m}`" for m in e.read_by)
        lines.append(f"| `{e.name}` | {e.kind} | {_cell(_default_cell(e))} | {_cell(description)} | {readers} |")
    return lines


def markdown() -> str:
    """docs/configuration.md, generated from SETTINGS (do not edit the file by hand)."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m inplay.config --markdown > docs/configuration.md` from",
        "     services/inplay/config.py (SETTINGS). Do not edit: ./dev lint fails when this file is stale. -->",
        "",
        "Every `INPLAY_*` environment variable the services read. An empty value counts as unset.",
        "Secrets are marked: keep them out of ConfigMaps (k8s Secrets) and logs.",
        "",
    ]
    for component in COMPONENTS:
        entries = sorted((e for e in SETTINGS_LIST if e.component == component), key=lambda e: e.name)
        out += [f"## {component}", "", *_table(entries), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        print("usage: python -m inplay.config --markdown > docs/configuration.md", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
