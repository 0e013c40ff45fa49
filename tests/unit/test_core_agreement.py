"""The Rust core and the pure-Python reference agree on thousands of random inputs (hypothesis).

Each property runs ``EXAMPLES`` cases; the reference (``tests/reference/betting_math.py``, fractions.Fraction)
is written from docs/betting-math.md alone.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inplay import _core
from inplay.core import (
    AcceptancePolicy,
    ArithmeticOverflow,
    BetState,
    InvalidOdds,
    LegOutcome,
    Odds,
    Quote,
    QuoteResult,
    SettleLeg,
    check_quotes,
    potential_return,
    potential_returns,
    settle_bets,
)
from tests.reference import betting_math as ref

EXAMPLES = 2000
fast = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Raw parts, mostly around the validity boundaries (tiny, 1e6 denominators, 1e4 ratios, beyond i64).
odds_parts = st.tuples(
    st.one_of(st.integers(-5, 2_000_000), st.integers(1, 2**64 - 1), st.integers(9_990_000, 10_010_000)),
    st.one_of(st.integers(-5, 2_000_000), st.integers(1, 2**64 - 1), st.integers(999, 1001)),
)


def _odds_pool(seed: int, size: int) -> list[Odds]:
    """A fixed pool of valid odds of every kind, simplest first (hypothesis shrinks towards the front).
    Drawing one pool index is a single choice, which keeps batches of legs cheap to generate."""
    rng = random.Random(seed)
    makers = [
        lambda: Odds.of(rng.randint(101, 5_000), 100),  # 2 places
        lambda: Odds.of(rng.randint(1001, 100_000), 1000),  # 3 places
        lambda: Odds.of(rng.randint(1_000_001, 20_000_000), 1_000_000),  # 6 places
        lambda: Odds.from_american(rng.randint(100, 50_000)),
        lambda: Odds.from_american(-rng.randint(100, 50_000)),
        lambda: Odds.from_fractional(rng.randint(1, 200), rng.randint(1, 200)),
    ]
    edges = [
        Odds.of(2, 1),
        Odds.of(3, 2),
        Odds.of(1_000_001, 1_000_000),
        Odds.of(10_000, 1),
        Odds.of(9_999_999_999, 1_000_000),
    ]
    pool = {*edges, *(rng.choice(makers)() for _ in range(size))}
    return sorted(pool, key=lambda o: (o.den, o.num))


POOL = _odds_pool(20261122, 8000)
valid_odds = st.sampled_from(POOL)
# Dead-heat factors n/d in (0, 1], d <= 8.
DEAD_HEATS = sorted({(n, d) for d in range(1, 9) for n in range(1, d + 1)}, key=lambda f: (f[1], f[0]))
# One choice per leg outcome: the seven plain results, or DEAD_HEAT with one of the factors.
OUTCOMES = [(o, (1, 1)) for o in LegOutcome if o != LegOutcome.DEAD_HEAT] + [
    (LegOutcome.DEAD_HEAT, f) for f in DEAD_HEATS
]
outcomes = st.sampled_from(OUTCOMES)
settled = st.sampled_from([oc for oc in OUTCOMES if oc[0] != LegOutcome.OPEN])
stakes = st.one_of(st.integers(1, 10_000_000), st.integers(1, 2**63 - 1))


def frac(o: Odds) -> Fraction:
    return Fraction(o.num, o.den)


@fast
@given(odds_parts)
def test_validation_agrees(parts: tuple[int, int]) -> None:
    expected = ref.odds(*parts)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.of(*parts)
    else:
        assert Odds.of(*parts) == Odds(expected.numerator, expected.denominator)


decimal_texts = st.one_of(
    st.from_regex(r"\A[0-9]{1,7}(\.[0-9]{0,7})?\Z"),
    st.builds(
        lambda n, p: f"{n // 10**p}.{n % 10**p:0{p}d}" if p else str(n), st.integers(0, 10**10), st.integers(0, 6)
    ),
    st.text(alphabet="0123456789.-+eE naNInf_", max_size=10),
)


@fast
@given(decimal_texts)
def test_decimal_strings_agree(text: str) -> None:
    expected = ref.from_decimal(text)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.from_decimal(text)
    else:
        o = Odds.from_decimal(text)
        assert frac(o) == expected
        # decimal → display with as many places → the same odds
        places = len(text.partition(".")[2])
        assert Odds.from_decimal(o.decimal_str(places)) == o


@fast
@given(st.one_of(st.integers(-100_000, 100_000), st.integers(-(2**63), 2**63 - 1)))
def test_american_agrees(american: int) -> None:
    expected = ref.from_american(american)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.from_american(american)
    else:
        o = Odds.from_american(american)
        assert frac(o) == expected
        canonical = 100 if american == -100 else american  # -100 and +100 are both evens (2.0)
        assert Fraction(*o.american_exact()) == ref.to_american(expected) == canonical
        assert o.american() == canonical


i64s = st.one_of(st.integers(-5, 1_000_000), st.integers(-(2**63), 2**63 - 1))


@fast
@given(i64s, i64s)
def test_fractional_agrees(n: int, d: int) -> None:
    expected = ref.from_fractional(n, d)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.from_fractional(n, d)
    else:
        assert frac(Odds.from_fractional(n, d)) == expected


@fast
@given(valid_odds, st.integers(0, 18))
def test_conversions_and_display_agree(o: Odds, places: int) -> None:
    d = frac(o)
    assert o.decimal_str(places) == ref.decimal_display(d, places)
    assert o.american() == ref.american_display(d)
    assert o.implied_probability_ppm() == ref.implied_probability_ppm(d)
    # decimal → fractional → decimal, exactly
    n, m = o.fractional()
    assert Fraction(n, m) == ref.to_fractional(d) and Fraction(n, m).denominator == m
    assert Odds.from_fractional(n, m) == o
    # decimal → American (exact rational) → decimal, exactly
    a = Fraction(*o.american_exact())
    back = 1 + a / 100 if a > 0 else 1 + 100 / -a
    assert back == d


policies = st.sampled_from([AcceptancePolicy.ANY, AcceptancePolicy.HIGHER, AcceptancePolicy.NONE])


@fast
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(-10, 5000),
            st.integers(-10, 5000),
            valid_odds,
            valid_odds,
            policies,
            st.integers(0, 3000),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_quote_checks_agree(rows: list[tuple[bool, int, int, Odds, Odds, AcceptancePolicy, int]]) -> None:
    quotes = [Quote(s, age, max_age, seen, cur, pol, tol) for s, age, max_age, seen, cur, pol, tol in rows]
    expected = [
        QuoteResult(
            ref.check_quote(
                q.suspended, q.age_ms, q.max_age_ms, frac(q.seen), frac(q.current), q.policy, q.tolerance_bp
            )
        )
        for q in quotes
    ]
    assert check_quotes(quotes) == expected


@fast
@given(st.integers(200, 20_000), st.integers(0, 3000), st.integers(0, 3000), policies)
def test_tolerance_is_symmetric(seen_cents: int, k_bp: int, tol: int, policy: AcceptancePolicy) -> None:
    """A rise of k bp and a drop of k bp are judged alike by NONE (inclusive at k == tolerance); HIGHER takes
    every rise and judges drops like NONE; ANY takes both."""
    seen = Odds.of(seen_cents, 100)  # 2.00 .. 200.00: seen · (1 ± k) stays valid odds
    up = ref.odds(seen.num * (10_000 + k_bp), seen.den * 10_000)
    down = ref.odds(seen.num * (10_000 - k_bp), seen.den * 10_000)
    assert up is not None and down is not None
    q = [Quote(False, 0, 0, seen, Odds.of(x.numerator, x.denominator), policy, tol) for x in (up, down)]
    within = QuoteResult.ACCEPTED if k_bp <= tol else QuoteResult.ODDS_CHANGED
    expected = {
        AcceptancePolicy.ANY: [QuoteResult.ACCEPTED, QuoteResult.ACCEPTED],
        AcceptancePolicy.HIGHER: [QuoteResult.ACCEPTED, within],
        AcceptancePolicy.NONE: [within, within],
    }[policy]
    assert check_quotes(q) == expected


def settle_ref(stake: int, legs: list[tuple[Odds, tuple[LegOutcome, tuple[int, int]]]]) -> tuple[int, int] | None:
    """The reference's answer, or None when it does not fit an i64."""
    try:
        return ref.settle(stake, [(frac(o), int(out), Fraction(*dh)) for o, (out, dh) in legs])
    except OverflowError:
        return None


# The reference numbers states as the Rust core does (0 open .. 4 partial); the facade answers BetState.
_REF_STATE_NAMES = ("OPEN", "WON", "LOST", "REFUNDED", "PARTIAL")


def _named(results: list[tuple[int, int]] | list[tuple[BetState, int]]) -> list[tuple[str, int]]:
    return [(s.name if isinstance(s, BetState) else _REF_STATE_NAMES[s], v) for s, v in results]


@fast
@given(
    st.lists(
        st.tuples(stakes, st.lists(st.tuples(valid_odds, outcomes), min_size=1, max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_settlement_agrees(bets: list[tuple[int, list[tuple[Odds, tuple[LegOutcome, tuple[int, int]]]]]]) -> None:
    batch = [(stake, [SettleLeg(o, out, dh) for o, (out, dh) in legs]) for stake, legs in bets]
    expected = [settle_ref(stake, legs) for stake, legs in bets]
    if None in expected:
        with pytest.raises(ArithmeticOverflow, match=f"item {expected.index(None)}:"):
            settle_bets(batch)
        return
    assert _named(settle_bets(batch)) == _named([e for e in expected if e is not None])


def _long_accumulator(seed: int) -> list[tuple[Odds, tuple[LegOutcome, tuple[int, int]]]]:
    """10..30 settled legs of short prices (1.001..3.000 and American -1000..-100), from a seed."""
    rng = random.Random(seed)
    plain = [LegOutcome.WIN, LegOutcome.VOID, LegOutcome.PUSH, LegOutcome.HALF_WIN, LegOutcome.HALF_LOSE]
    legs = []
    for _ in range(rng.randint(10, 30)):
        odds = (
            Odds.of(rng.randint(1001, 3000), 1000)
            if rng.random() < 0.7
            else Odds.from_american(-rng.randint(100, 1000))
        )
        roll = rng.random()
        outcome = (LegOutcome.DEAD_HEAT, rng.choice(DEAD_HEATS)) if roll < 0.1 else (rng.choice(plain), (1, 1))
        legs.append((odds, outcome))
    return legs


@fast
@given(st.integers(1, 10_000_000), st.integers(0, 2**64))
def test_long_accumulators_agree(stake: int, seed: int) -> None:
    """10..30 legs (built from a hypothesis-drawn seed): exact products far beyond u128 still settle to the
    reference's amount, and the potential return is the all-WIN settlement."""
    legs = _long_accumulator(seed)
    batch = [(stake, [SettleLeg(o, out, dh) for o, (out, dh) in legs])]
    expected = settle_ref(stake, legs)
    if expected is None:
        with pytest.raises(ArithmeticOverflow, match="item 0:"):
            settle_bets(batch)
    else:
        assert _named(settle_bets(batch)) == _named([expected])
    try:
        potential: int | None = ref.potential_return(stake, [frac(o) for o, _ in legs])
    except OverflowError:
        potential = None
    if potential is None:
        with pytest.raises(ArithmeticOverflow):
            potential_return(stake, [o for o, _ in legs])
    else:
        assert potential_return(stake, [o for o, _ in legs]) == potential


@fast
@given(stakes, st.lists(valid_odds, min_size=1, max_size=8))
def test_potential_return_agrees(stake: int, legs: list[Odds]) -> None:
    try:
        expected: int | None = ref.potential_return(stake, [frac(o) for o in legs])
    except OverflowError:
        expected = None
    if expected is None:
        with pytest.raises(ArithmeticOverflow):
            potential_return(stake, legs)
        with pytest.raises(ArithmeticOverflow, match="item 1:"):
            potential_returns([(1, legs[:1]), (stake, legs)])
        return
    assert potential_return(stake, legs) == expected
    assert potential_returns([(stake, legs), (stake, legs)]) == [expected, expected]
    # The potential return is what the bet pays when every leg wins.
    [(_, won)] = settle_bets([(stake, [SettleLeg(o, LegOutcome.WIN) for o in legs])])
    assert won == expected


@fast
@given(
    stakes,
    st.lists(st.tuples(valid_odds, settled), min_size=1, max_size=5),
    st.integers(0, 4),
    st.sampled_from(DEAD_HEATS),
)
def test_returns_are_monotone_in_each_leg(
    stake: int, legs: list[tuple[Odds, tuple[LegOutcome, tuple[int, int]]]], index: int, f: tuple[int, int]
) -> None:
    """WIN ≥ HALF_WIN ≥ VOID = PUSH ≥ HALF_LOSE ≥ LOSE, and WIN ≥ DEAD_HEAT(f) ≥ LOSE, for one leg of any bet."""
    i = index % len(legs)
    order = [LegOutcome.WIN, LegOutcome.HALF_WIN, LegOutcome.VOID, LegOutcome.PUSH, LegOutcome.HALF_LOSE]

    def with_leg(outcome: LegOutcome, dh: tuple[int, int] = (1, 1)) -> tuple[int, list[SettleLeg]]:
        changed = [SettleLeg(o, out, d) for o, (out, d) in legs]
        changed[i] = SettleLeg(legs[i][0], outcome, dh)
        return stake, changed

    batch = [with_leg(o) for o in [*order, LegOutcome.LOSE]] + [with_leg(LegOutcome.DEAD_HEAT, f)]
    try:
        values = [v for _, v in settle_bets(batch)]
    except ArithmeticOverflow:
        return
    win, half_win, void, push, half_lose, lose, dh = values
    assert win >= half_win >= void == push >= half_lose >= lose == 0
    assert win >= dh >= lose


def test_raw_batch_error_names_the_item() -> None:
    with pytest.raises(_core.InvalidCoreInput, match="item 1: leg 0:"):
        _core.settle_bets([(10, [(2, 1, 1, 1, 1)]), (10, [(2, 1, 7, 3, 2)])])
