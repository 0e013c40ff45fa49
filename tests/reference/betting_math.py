"""A small pure-Python reference of the betting math (fractions.Fraction), written from the rules in
docs/betting-math.md without looking at the Rust code. The Rust core must agree with it on every input.

Invalid inputs return ``None`` (or raise ``ValueError`` where noted); nothing here is fast or clever on purpose.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DECIMAL = 10_000
MAX_DENOMINATOR = 1_000_000
MAX_LEGS = 30
I64_MAX = 2**63 - 1

# Result codes.
ACCEPTED, SUSPENDED, STALE, ODDS_CHANGED = 0, 1, 2, 3
# Leg outcome codes.
OPEN, WIN, LOSE, VOID, PUSH, HALF_WIN, HALF_LOSE, DEAD_HEAT = range(8)
# Bet status codes.
S_OPEN, S_WON, S_LOST, S_REFUNDED, S_PARTIAL = range(5)

_DECIMAL = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?", re.ASCII)


def odds(num: int, den: int) -> Fraction | None:
    """Valid decimal odds as a Fraction, or None."""
    if num <= 0 or den <= 0:
        return None
    value = Fraction(num, den)
    if value <= 1 or value > MAX_DECIMAL or value.denominator > MAX_DENOMINATOR:
        return None
    return value


def from_decimal(text: str) -> Fraction | None:
    """ "2.50" → 5/2: digits, an optional point and 1..6 more digits; nothing else."""
    if not _DECIMAL.fullmatch(text):
        return None
    whole, _, frac = text.partition(".")
    scale = 10 ** len(frac)
    return odds(int(whole) * scale + int(frac or "0"), scale)


def from_american(american: int) -> Fraction | None:
    if american >= 100:
        return odds(american + 100, 100)
    if american <= -100:
        return odds(-american + 100, -american)
    return None


def from_fractional(n: int, d: int) -> Fraction | None:
    if n <= 0 or d <= 0:
        return None
    return odds(n + d, d)


def to_american(d: Fraction) -> Fraction:
    profit = d - 1
    return 100 * profit if profit >= 1 else -100 / profit


def american_display(d: Fraction) -> int:
    exact = to_american(d)
    magnitude = abs(exact)
    rounded = (2 * magnitude.numerator + magnitude.denominator) // (2 * magnitude.denominator)
    return -rounded if exact < 0 else rounded


def to_fractional(d: Fraction) -> Fraction:
    return d - 1


def decimal_display(d: Fraction, places: int = 2) -> str:
    scale = 10**places
    scaled = (2 * d.numerator * scale + d.denominator) // (2 * d.denominator)
    if places == 0:
        return str(scaled)
    return f"{scaled // scale}.{scaled % scale:0{places}d}"


def implied_probability_ppm(d: Fraction) -> int:
    return (1_000_000 * d.denominator) // d.numerator


def check_quote(
    suspended: bool, age_ms: int, max_age_ms: int, seen: Fraction, current: Fraction, policy: int, tolerance_bp: int
) -> int:
    if policy not in (1, 2, 3):
        raise ValueError(f"policy {policy}")
    if suspended:
        return SUSPENDED
    if age_ms > max_age_ms:
        return STALE
    within = abs(current - seen) / seen <= Fraction(tolerance_bp, 10_000)
    if policy == 1:
        accepted = True
    elif policy == 2:
        accepted = current >= seen or within
    else:
        accepted = within
    return ACCEPTED if accepted else ODDS_CHANGED


def multiplier(d: Fraction, outcome: int, dead_heat: Fraction) -> Fraction | None:
    """None while the leg is open."""
    return {
        OPEN: None,
        WIN: d,
        LOSE: Fraction(0),
        VOID: Fraction(1),
        PUSH: Fraction(1),
        HALF_WIN: (d + 1) / 2,
        HALF_LOSE: Fraction(1, 2),
        DEAD_HEAT: d * dead_heat,
    }[outcome]


def settle(stake: int, legs: list[tuple[Fraction, int, Fraction]]) -> tuple[int, int]:
    """(status, return). Raises ValueError for a bad stake/leg count and OverflowError beyond i64."""
    if stake <= 0 or not 1 <= len(legs) <= MAX_LEGS:
        raise ValueError("stake or legs")
    if any(outcome == LOSE for _, outcome, _ in legs):
        return S_LOST, 0
    if any(outcome == OPEN for _, outcome, _ in legs):
        return S_OPEN, 0
    product = Fraction(1)
    for d, outcome, dh in legs:
        m = multiplier(d, outcome, dh)
        assert m is not None
        product *= m
    value = (stake * product.numerator) // product.denominator
    if value > I64_MAX:
        raise OverflowError(value)
    if value > stake:
        return S_WON, value
    if value == stake:
        return S_REFUNDED, value
    return (S_LOST if value == 0 else S_PARTIAL), value


def potential_return(stake: int, legs: list[Fraction]) -> int:
    """floor(stake · Π d). Raises ValueError for a bad stake/leg count and OverflowError beyond i64."""
    if stake <= 0 or not 1 <= len(legs) <= MAX_LEGS:
        raise ValueError("stake or legs")
    product = Fraction(1)
    for d in legs:
        product *= d
    value = (stake * product.numerator) // product.denominator
    if value > I64_MAX:
        raise OverflowError(value)
    return value
