"""Typed facade over the Rust core (``inplay._core``): exact odds, price checks, payouts, settlement.

Everything on the money path is an ``int`` (minor units) or an exact :class:`Odds` fraction. Batch
functions make one call into Rust per batch; Rust releases the GIL while it computes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from inplay import _core
from inplay._core import ArithmeticOverflow, CoreError, InvalidArgument, InvalidOdds, InvalidStake

__all__ = [
    "AcceptancePolicy",
    "ArithmeticOverflow",
    "BetStatus",
    "CoreError",
    "InvalidArgument",
    "InvalidOdds",
    "InvalidStake",
    "LegOutcome",
    "Odds",
    "Quote",
    "QuoteResult",
    "SettleLeg",
    "check_quotes",
    "potential_return",
    "potential_returns",
    "settle_bets",
]


@dataclass(frozen=True, slots=True)
class Odds:
    """Decimal odds ``num/den`` (reduced, > 1). Build with the classmethods, which validate."""

    num: int
    den: int

    @classmethod
    def of(cls, num: int, den: int) -> Odds:
        n, d = _core.odds_normalize(num, den)
        return cls(n, d)

    @classmethod
    def from_decimal(cls, text: str) -> Odds:
        n, d = _core.odds_from_decimal(text)
        return cls(n, d)

    @classmethod
    def from_american(cls, american: int) -> Odds:
        n, d = _core.odds_from_american(american)
        return cls(n, d)

    @classmethod
    def from_fractional(cls, numerator: int, denominator: int) -> Odds:
        n, d = _core.odds_from_fractional(numerator, denominator)
        return cls(n, d)

    def american(self) -> int:
        """American odds for display (rounded half away from zero)."""
        return _core.odds_american_display(self.num, self.den)

    def american_exact(self) -> tuple[int, int]:
        return _core.odds_to_american(self.num, self.den)

    def fractional(self) -> tuple[int, int]:
        return _core.odds_to_fractional(self.num, self.den)

    def decimal_str(self, places: int = 2) -> str:
        """Decimal odds for display (rounded half up). Never used for money."""
        return _core.odds_decimal_display(self.num, self.den, places)

    def implied_probability_ppm(self) -> int:
        return _core.implied_probability_ppm(self.num, self.den)

    def __str__(self) -> str:
        return self.decimal_str()


class AcceptancePolicy(enum.IntEnum):
    """Matches ``inplay.bets.v1.AcceptancePolicy``."""

    UNSPECIFIED = 0
    ANY = 1
    HIGHER = 2
    NONE = 3


class QuoteResult(enum.IntEnum):
    ACCEPTED = 0
    SUSPENDED = 1
    STALE = 2
    ODDS_CHANGED = 3


class LegOutcome(enum.IntEnum):
    OPEN = 0
    WIN = 1
    LOSE = 2
    VOID = 3
    PUSH = 4
    HALF_WIN = 5
    HALF_LOSE = 6
    DEAD_HEAT = 7


class BetStatus(enum.IntEnum):
    OPEN = 0
    WON = 1
    LOST = 2
    REFUNDED = 3
    PARTIAL = 4


@dataclass(frozen=True, slots=True)
class Quote:
    suspended: bool
    age_ms: int
    max_age_ms: int
    seen: Odds
    current: Odds
    policy: AcceptancePolicy
    tolerance_bp: int = 500


def check_quotes(quotes: Sequence[Quote]) -> list[QuoteResult]:
    """Suspended → stale → tolerance for every quote, in one Rust call."""
    raw = _core.check_quotes(
        [
            (
                q.suspended,
                q.age_ms,
                q.max_age_ms,
                q.seen.num,
                q.seen.den,
                q.current.num,
                q.current.den,
                int(q.policy),
                q.tolerance_bp,
            )
            for q in quotes
        ]
    )
    return [QuoteResult(code) for code in raw]


def potential_return(stake_minor: int, legs: Sequence[Odds]) -> int:
    return _core.potential_return(stake_minor, [(o.num, o.den) for o in legs])


def potential_returns(bets: Sequence[tuple[int, Sequence[Odds]]]) -> list[int]:
    return _core.potential_returns([(stake, [(o.num, o.den) for o in legs]) for stake, legs in bets])


@dataclass(frozen=True, slots=True)
class SettleLeg:
    odds: Odds
    outcome: LegOutcome
    dead_heat: tuple[int, int] = (1, 1)


def settle_bets(bets: Sequence[tuple[int, Sequence[SettleLeg]]]) -> list[tuple[BetStatus, int]]:
    """(status, return in minor units) per bet, in one Rust call."""
    raw = _core.settle_bets(
        [
            (
                stake,
                [(lg.odds.num, lg.odds.den, int(lg.outcome), lg.dead_heat[0], lg.dead_heat[1]) for lg in legs],
            )
            for stake, legs in bets
        ]
    )
    return [(BetStatus(status), value) for status, value in raw]
