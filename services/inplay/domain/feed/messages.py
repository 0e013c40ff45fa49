"""What the provider adapters produce (provider ids, exact odds) and the validation reasons."""

from __future__ import annotations

from inplay.core import Odds
from inplay.valuetype import value

# Validation reasons (IngestOddsResponse.rejected_by_reason keys, metric labels).
SCHEMA = "SCHEMA"
UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
TIMESTAMP_MISSING = "TIMESTAMP_MISSING"
TIMESTAMP_FUTURE = "TIMESTAMP_FUTURE"
DUPLICATE = "DUPLICATE"
STALE_VERSION = "STALE_VERSION"
MARKET_SETTLED = "MARKET_SETTLED"
ODDS_INVALID = "ODDS_INVALID"
UNMAPPED = "UNMAPPED"
# Valid, but from the standby provider of the event (only the active provider's prices are applied).
STANDBY = "STANDBY"
# Anomaly, not a rejection: the message is still applied when valid (see docs/odds-pipeline.md).
SEQUENCE_GAP = "SEQUENCE_GAP"

REJECTION_REASONS = (
    SCHEMA,
    UNKNOWN_PROVIDER,
    TIMESTAMP_MISSING,
    TIMESTAMP_FUTURE,
    DUPLICATE,
    STALE_VERSION,
    MARKET_SETTLED,
    ODDS_INVALID,
    UNMAPPED,
    STANDBY,
)

# Message kinds after parsing.
PRICES = "PRICES"
BET_STOP = "BET_STOP"
HEARTBEAT = "HEARTBEAT"
INCIDENT = "INCIDENT"
END = "END"
# The provider finished the recovery snapshot the pipeline asked for (``request_id``).
SNAPSHOT_COMPLETE = "SNAPSHOT_COMPLETE"


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        # The message's sequence number when it could be read (-1 otherwise): sequence tracking counts
        # rejected messages too, so a bad message is not mistaken for a gap.
        self.seq = -1


@value
class ProviderMarket:
    """One market of a provider message, in the provider's own ids."""

    ref: str
    prices: tuple[tuple[str, Odds], ...]  # (provider selection ref, exact odds)


@value
class ProviderMessage:
    provider: str
    seq: int
    ts_ms: int
    kind: str
    event_ref: str = ""
    markets: tuple[ProviderMarket, ...] = ()
    # BET_STOP: provider market refs concerned (empty = every market of the event).
    market_refs: tuple[str, ...] = ()
    # INCIDENT: GOAL | RED_CARD | VAR
    incident: str = ""
    correction: bool = False
    # SNAPSHOT_COMPLETE: the recovery request it answers.
    request_id: str = ""
