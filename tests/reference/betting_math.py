"""A small pure-Python reference of the betting math (fractions.Fraction), written from the rules in
docs/betting-math.md without looking at the Rust code. The Rust core must agree with it on every input."""

from __future__ import annotations

from fractions import Fraction

MAX_DECIMAL = 10_000
MAX_DENOMINATOR = 1_000_000


def odds(num: int, den: int) -> Fraction | None:
    """Valid decimal odds as a Fraction, or None."""
    if num <= 0 or den <= 0:
        return None
    value = Fraction(num, den)
    if value <= 1 or value > MAX_DECIMAL or value.denominator > MAX_DENOMINATOR:
        return None
    return value


def from_american(american: int) -> Fraction | None:
    if american >= 100:
        return odds(american + 100, 100)
    if american <= -100:
        return odds(-american + 100, -american)
    return None


def to_american(d: Fraction) -> Fraction:
    profit = d - 1
    return 100 * profit if profit >= 1 else -100 / profit


def american_display(d: Fraction) -> int:
    exact = to_american(d)
    magnitude = abs(exact)
    rounded = (2 * magnitude.numerator + magnitude.denominator) // (2 * magnitude.denominator)
    return -rounded if exact < 0 else rounded


def decimal_display(d: Fraction, places: int = 2) -> str:
    scale = 10**places
    scaled = (2 * d.numerator * scale + d.denominator) // (2 * d.denominator)
    if places == 0:
        return str(scaled)
    return f"{scaled // scale}.{scaled % scale:0{places}d}"


def check_quote(
    suspended: bool, age_ms: int, max_age_ms: int, seen: Fraction, current: Fraction, policy: int, tolerance_bp: int
) -> int:
    if suspended:
        return 1
    if age_ms > max_age_ms:
        return 2
    within = abs(current - seen) / seen <= Fraction(tolerance_bp, 10_000)
    if policy == 1:
        accepted = True
    elif policy == 2:
        accepted = current >= seen or within
    elif policy == 3:
        accepted = within
    else:
        raise ValueError(f"policy {policy}")
    return 0 if accepted else 3


def multiplier(d: Fraction, outcome: int, dead_heat: Fraction) -> Fraction | None:
    return {
        0: None,
        1: d,
        2: Fraction(0),
        3: Fraction(1),
        4: Fraction(1),
        5: (d + 1) / 2,
        6: Fraction(1, 2),
        7: d * dead_heat,
    }[outcome]


def settle(stake: int, legs: list[tuple[Fraction, int, Fraction]]) -> tuple[int, int]:
    """(status, return): status 0 OPEN, 1 WON, 2 LOST, 3 REFUNDED, 4 PARTIAL."""
    if any(outcome == 2 for _, outcome, _ in legs):
        return 2, 0
    product = Fraction(1)
    for d, outcome, dh in legs:
        m = multiplier(d, outcome, dh)
        if m is None:
            return 0, 0
        product *= m
    value = (stake * product.numerator) // product.denominator
    if product == 0:
        status = 2
    elif product > 1:
        status = 1
    elif product == 1:
        status = 3
    else:
        status = 4
    return status, value


def potential_return(stake: int, legs: list[Fraction]) -> int:
    product = Fraction(1)
    for d in legs:
        product *= d
    return (stake * product.numerator) // product.denominator
