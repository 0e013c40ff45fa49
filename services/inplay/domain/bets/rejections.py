"""Results of a slip: why a slip was refused (reason codes), and the result type of a placement.

The reason names match ``inplay.bets.v1.RejectionReason`` without its prefix. Which reasons are stored
under the idempotency key (state-based ones) and which are not (input and transient ones) is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass

from inplay.core import AcceptancePolicy, Odds
from inplay.model import PlacedBet


class Reason:
    """Rejection reasons; the names match ``inplay.bets.v1.RejectionReason`` without its prefix."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    MARKET_NOT_FOUND = "MARKET_NOT_FOUND"
    SELECTION_NOT_FOUND = "SELECTION_NOT_FOUND"
    MARKET_SUSPENDED = "MARKET_SUSPENDED"
    MARKET_CLOSED = "MARKET_CLOSED"
    ODDS_STALE = "ODDS_STALE"
    ODDS_CHANGED = "ODDS_CHANGED"
    STAKE_TOO_LOW = "STAKE_TOO_LOW"
    STAKE_TOO_HIGH = "STAKE_TOO_HIGH"
    PAYOUT_TOO_HIGH = "PAYOUT_TOO_HIGH"
    LIABILITY_EXCEEDED = "LIABILITY_EXCEEDED"
    DAILY_STAKE_LIMIT = "DAILY_STAKE_LIMIT"
    SELF_EXCLUDED = "SELF_EXCLUDED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    UNAVAILABLE = "UNAVAILABLE"
    IN_PROGRESS = "IN_PROGRESS"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    OVERLOADED = "OVERLOADED"


# Reasons that are not a property of the slip but of a transient failure or of another call: never stored
# under the key, so a retry with the same key is evaluated afresh.
TRANSIENT_REASONS = frozenset(
    {Reason.UNAVAILABLE, Reason.IN_PROGRESS, Reason.OVERLOADED, Reason.IDEMPOTENCY_KEY_REUSED}
)
# Reasons found by input validation alone: nothing at all is written for them.
INPUT_REASONS = frozenset(
    {Reason.INVALID_ARGUMENT, Reason.STAKE_TOO_LOW, Reason.STAKE_TOO_HIGH, Reason.CURRENCY_MISMATCH}
)


@dataclass(frozen=True, slots=True)
class OddsChangedInfo:
    market_id: str
    selection_id: str
    seen: Odds
    current: Odds
    policy: AcceptancePolicy
    tolerance_bp: int


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    message: str
    field: str = ""
    odds_changed: OddsChangedInfo | None = None


@dataclass(frozen=True, slots=True)
class PlacementResult:
    bet: PlacedBet | None = None
    rejection: Rejection | None = None
    replayed: bool = False
    # Its record was stored by the journal writer with the batch (not again by the placement).
    committed_by_writer: bool = False

    @property
    def accepted(self) -> bool:
        return self.bet is not None


def rejected(reason: str, message: str, field: str = "") -> PlacementResult:
    return PlacementResult(rejection=Rejection(reason, message, field))


def storable(rejection: Rejection) -> bool:
    """Rejections worth replaying for the same key: state-based ones, not input or transient ones.

    Rejections after the debit step (funds, limits) are stored too: a retry must see the same answer,
    not a different one because a deposit happened in between.
    """
    return rejection.reason not in TRANSIENT_REASONS and rejection.reason not in INPUT_REASONS


# The wallet script's refusals (commit outcome statuses) and the reason each one is.
WALLET_REASONS = {
    "INSUFFICIENT_FUNDS": Reason.INSUFFICIENT_FUNDS,
    "DAILY_STAKE_LIMIT": Reason.DAILY_STAKE_LIMIT,
    "SELF_EXCLUDED": Reason.SELF_EXCLUDED,
    "LIABILITY_EXCEEDED": Reason.LIABILITY_EXCEEDED,
    "MARKET_CLOSED": Reason.MARKET_CLOSED,
    "MARKET_SUSPENDED": Reason.MARKET_SUSPENDED,
}


def debit_rejection(status: str, balance: int) -> Rejection:
    messages = {
        Reason.INSUFFICIENT_FUNDS: f"insufficient funds (balance {balance})",
        Reason.DAILY_STAKE_LIMIT: "the daily stake limit would be exceeded",
        Reason.SELF_EXCLUDED: "the account is self-excluded",
        Reason.LIABILITY_EXCEEDED: "the book's liability limit for this selection is reached",
        Reason.MARKET_CLOSED: "a market of the slip closed before the bet was committed",
        Reason.MARKET_SUSPENDED: "a market of the slip was suspended before the bet was committed",
    }
    return Rejection(status, messages.get(status, status.lower()))
