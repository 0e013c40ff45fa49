"""Typed facade over the Rust core (``inplay._core``): exact odds, price checks, payouts, settlement.

Everything on the money path is an ``int`` (minor units) or an exact :class:`Odds` fraction; there are no
floats anywhere here. Batch functions make one call into Rust per batch, and Rust releases the GIL while
it computes. The rules are written down in ``docs/betting-math.md``.

Errors are the extension's own classes, re-exported: :class:`CoreError` (base), :class:`InvalidOdds`,
:class:`InvalidStake` and :class:`InvalidCoreInput` (also ``ValueError``), :class:`ArithmeticOverflow` (also
``OverflowError``). A batch error names the failing item (``"item 3: ..."``). These are the core's own names:
the API's error for a bad request is ``inplay.errors.InvalidArgument``, and :func:`reason_of` is the one
place where a core exception becomes a stable API reason code (``errors.from_exception`` maps with it).

Bet states have one numbering, :class:`BetState` (the API's ``inplay.bets.v1.BetStatus``); the core's own
status codes are mapped to it once, in :func:`settle_bets`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from inplay import _core
from inplay._core import ArithmeticOverflow, CoreError, InvalidCoreInput, InvalidOdds, InvalidStake, JumpBand
from inplay.valuetype import value

__all__ = [
    "MAX_LEGS",
    "AcceptancePolicy",
    "ArithmeticOverflow",
    "BetState",
    "CoreError",
    "InvalidCoreInput",
    "InvalidOdds",
    "InvalidStake",
    "JumpBand",
    "LegOutcome",
    "Odds",
    "Quote",
    "QuoteResult",
    "SettleLeg",
    "check_quotes",
    "encode_odds_records",
    "encode_price_items",
    "potential_return",
    "potential_returns",
    "read_alpha_prices",
    "reason_of",
    "settle_bets",
]

#: Most legs one bet may have.
MAX_LEGS: int = _core.MAX_LEGS


@value
class Odds:
    """Decimal odds ``num/den``: reduced, ``1 < num/den <= 10_000``, ``den <= 1_000_000``.

    Build with the classmethods, which validate through the core. The plain constructor does not validate:
    use it only for values that already came out of the core (e.g. read back from storage).
    """

    num: int
    den: int

    @classmethod
    def of(cls, num: int, den: int) -> Odds:
        """Validates and reduces: ``Odds.of(10, 4) == Odds(5, 2)``. Raises :class:`InvalidOdds`."""
        n, d = _core.odds_normalize(num, den)
        return cls(n, d)

    @classmethod
    def from_decimal(cls, text: str) -> Odds:
        """``"2.50"`` → 5/2. At most 6 places; no sign, exponent, spaces or NaN."""
        n, d = _core.odds_from_decimal(text)
        return cls(n, d)

    @classmethod
    def from_american(cls, american: int) -> Odds:
        """``+150`` → 5/2, ``-110`` → 21/11. ``-99..+99`` are invalid."""
        n, d = _core.odds_from_american(american)
        return cls(n, d)

    @classmethod
    def from_fractional(cls, numerator: int, denominator: int) -> Odds:
        """Fractional ``6/4`` (profit per unit staked) → decimal 5/2."""
        n, d = _core.odds_from_fractional(numerator, denominator)
        return cls(n, d)

    def american(self) -> int:
        """American odds for display, rounded half away from zero (21/11 → -110)."""
        return _core.odds_american_display(self.num, self.den)

    def american_exact(self) -> tuple[int, int]:
        """American odds as an exact reduced fraction, sign on the numerator (501/301 → (-301, 2))."""
        return _core.odds_to_american(self.num, self.den)

    def fractional(self) -> tuple[int, int]:
        """Fractional odds ``decimal - 1``, reduced (5/2 → (3, 2))."""
        return _core.odds_to_fractional(self.num, self.den)

    def decimal_str(self, places: int = 2) -> str:
        """Decimal odds for display with ``places`` (0..18) digits, rounded half up. Never used for money."""
        return _core.odds_decimal_display(self.num, self.den, places)

    def implied_probability_ppm(self) -> int:
        """Implied probability in parts per million, ``floor(1e6 * den / num)``."""
        return _core.implied_probability_ppm(self.num, self.den)

    def __str__(self) -> str:
        return self.decimal_str()


class AcceptancePolicy(enum.IntEnum):
    """What the bettor accepts when the price moved. Matches ``inplay.bets.v1.AcceptancePolicy``."""

    UNSPECIFIED = 0
    #: Whatever the move.
    ANY = 1
    #: Any rise; a drop only within tolerance.
    HIGHER = 2
    #: Only a move within tolerance, either way.
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


class BetState(enum.IntEnum):
    """The one numbering of bet states: the API's ``inplay.bets.v1.BetStatus`` (a unit test compares them).

    Settled states are decided by the return R against the stake S once no leg is open (or any leg lost).
    """

    UNSPECIFIED = 0
    OPEN = 1
    #: R > S
    WON = 2
    #: R == 0
    LOST = 3
    #: R == S
    REFUNDED = 4
    #: 0 < R < S
    PARTIAL = 5


# The Rust core's status codes (core_rs: 0 open, 1 won, 2 lost, 3 refunded, 4 partial), mapped once here.
_STATE_OF_CORE_CODE = (BetState.OPEN, BetState.WON, BetState.LOST, BetState.REFUNDED, BetState.PARTIAL)

# Stable API reason codes of the core's exceptions (never derived from class names), most specific first.
_CORE_REASONS: tuple[tuple[type[CoreError], str], ...] = (
    (ArithmeticOverflow, "ARITHMETIC_OVERFLOW"),
    (InvalidOdds, "INVALID_ODDS"),
    (InvalidStake, "INVALID_STAKE"),
    (InvalidCoreInput, "INVALID_ARGUMENT"),
)


def reason_of(exc: CoreError) -> str:
    """The API reason code of a core exception (the request is then ``INVALID_ARGUMENT`` on the wire)."""
    for cls, reason in _CORE_REASONS:
        if isinstance(exc, cls):
            return reason
    return "CORE_ERROR"


@value
class Quote:
    """One leg's price check at acceptance: suspended → stale (``age_ms > max_age_ms``) → tolerance.

    ``tolerance_bp`` is the tolerated relative move of the decimal odds in basis points (500 = 5 %,
    inclusive). An accepted bet is placed at ``current``.
    """

    suspended: bool
    age_ms: int
    max_age_ms: int
    seen: Odds
    current: Odds
    policy: AcceptancePolicy
    tolerance_bp: int = 500


def check_quotes(quotes: Sequence[Quote]) -> list[QuoteResult]:
    """One :class:`QuoteResult` per quote, in one Rust call.

    Raises :class:`InvalidCoreInput` for an UNSPECIFIED policy or a tolerance outside 0..1,000,000.
    """
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
    """``floor(stake * prod(odds))`` in minor units: what the bet returns if every leg wins (1..30 legs).

    Raises :class:`InvalidStake` (stake <= 0), :class:`InvalidCoreInput` (leg count),
    :class:`ArithmeticOverflow` (the amount does not fit an i64).
    """
    return _core.potential_return(stake_minor, [(o.num, o.den) for o in legs])


def potential_returns(bets: Sequence[tuple[int, Sequence[Odds]]]) -> list[int]:
    """:func:`potential_return` for each ``(stake_minor, legs)``, in one Rust call."""
    return _core.potential_returns([(stake, [(o.num, o.den) for o in legs]) for stake, legs in bets])


@value
class SettleLeg:
    """A leg's odds and result. ``dead_heat`` (num, den) in (0, 1] is read only for DEAD_HEAT."""

    odds: Odds
    outcome: LegOutcome
    dead_heat: tuple[int, int] = (1, 1)


def settle_bets(bets: Sequence[tuple[int, Sequence[SettleLeg]]]) -> list[tuple[BetState, int]]:
    """``(status, return_minor)`` per ``(stake_minor, legs)``, in one Rust call.

    Return = ``floor(stake * prod(multipliers))``, rounded once at the end. Any LOSE leg → (LOST, 0), even
    with legs still open; otherwise any OPEN leg → (OPEN, 0).
    """
    raw = _core.settle_bets(
        [
            (
                stake,
                [(lg.odds.num, lg.odds.den, int(lg.outcome), lg.dead_heat[0], lg.dead_heat[1]) for lg in legs],
            )
            for stake, legs in bets
        ]
    )
    return [(_STATE_OF_CORE_CODE[status], value) for status, value in raw]


def read_alpha_prices(
    payloads: list[bytes],
) -> list[tuple[int, int, bool, str, str, list[tuple[str, int, int]]] | None]:
    """The alpha provider's price messages of a chunk, read by the core in one call (``inplay_core::feed``):
    per payload ``(seq, ts_ms, correction, event_ref, market_ref, [(selection, num, den), ...])`` with the
    odds exact and reduced, or None where the reader declines it (any other message, or one it is not sure
    of: the Python adapter reads those)."""
    return _core.read_alpha_prices(payloads)


def encode_price_items(writes: Sequence[object], held_versions: list[int]) -> str | None:
    """The odds cache's price-script items for a batch of ``PriceWrite`` (``inplay_core::price_items``), with
    each write's held version (0: none), in one call: byte for byte the text of the Python reference
    (``inplay.adapters.redis_odds``), or None when a number does not fit 64 bits (the reference encodes it)."""
    return _core.encode_price_items(writes, held_versions)


def encode_odds_records(
    states: Sequence[object], statuses: list[str], changes: Sequence[Sequence[object]]
) -> list[bytes] | None:
    """The ``inplay.odds.v1`` record of each applied ``MarketState`` with its status name and its
    ``MarketChange`` entries (``inplay_core::odds_record``), in one call: byte for byte the reference's
    (``inplay.domain.markets.odds_json``), or None when a number does not fit 64 bits (the reference encodes
    it)."""
    return _core.encode_odds_records(states, statuses, changes)
