"""The Rust core and the pure-Python reference agree on thousands of random inputs (hypothesis)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inplay import _core
from inplay.core import (
    AcceptancePolicy,
    ArithmeticOverflow,
    BetStatus,
    InvalidArgument,
    InvalidOdds,
    InvalidStake,
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

EXAMPLES = 3000

odds_parts = st.tuples(st.integers(1, 2_000_000), st.integers(1, 2_000_000))
valid_odds = st.one_of(
    st.integers(1001, 500_000).map(lambda n: Odds.of(n, 1000)),
    st.integers(100, 50_000).map(Odds.from_american),
    st.integers(-50_000, -100).map(Odds.from_american),
    st.tuples(st.integers(1, 200), st.integers(1, 200)).map(lambda t: Odds.from_fractional(*t)),
)


def frac(o: Odds) -> Fraction:
    return Fraction(o.num, o.den)


@settings(max_examples=EXAMPLES)
@given(odds_parts)
def test_validation_agrees(parts: tuple[int, int]) -> None:
    expected = ref.odds(*parts)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.of(*parts)
    else:
        o = Odds.of(*parts)
        assert Fraction(o.num, o.den) == expected
        assert (o.num, o.den) == (expected.numerator, expected.denominator)


@settings(max_examples=EXAMPLES)
@given(st.integers(-100_000, 100_000))
def test_american_agrees(american: int) -> None:
    expected = ref.from_american(american)
    if expected is None:
        with pytest.raises(InvalidOdds):
            Odds.from_american(american)
    else:
        o = Odds.from_american(american)
        assert frac(o) == expected
        n, d = o.american_exact()
        assert Fraction(n, d) == ref.to_american(expected)
        assert o.american() == ref.american_display(expected)


@settings(max_examples=EXAMPLES)
@given(valid_odds, st.integers(0, 6))
def test_display_agrees(o: Odds, places: int) -> None:
    assert o.decimal_str(places) == ref.decimal_display(frac(o), places)
    n, d = o.fractional()
    assert Fraction(n, d) == frac(o) - 1
    assert o.implied_probability_ppm() == (1_000_000 * o.den) // o.num


@settings(max_examples=EXAMPLES)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 5000),
            st.integers(0, 5000),
            valid_odds,
            valid_odds,
            st.sampled_from([AcceptancePolicy.ANY, AcceptancePolicy.HIGHER, AcceptancePolicy.NONE]),
            st.integers(0, 3000),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_quote_checks_agree(rows: list[tuple[bool, int, int, Odds, Odds, AcceptancePolicy, int]]) -> None:
    quotes = [Quote(s, age, max_age, seen, cur, pol, tol) for s, age, max_age, seen, cur, pol, tol in rows]
    got = check_quotes(quotes)
    expected = [
        QuoteResult(
            ref.check_quote(
                q.suspended, q.age_ms, q.max_age_ms, frac(q.seen), frac(q.current), q.policy, q.tolerance_bp
            )
        )
        for q in quotes
    ]
    assert got == expected


outcomes = st.one_of(
    st.sampled_from([o for o in LegOutcome if o != LegOutcome.DEAD_HEAT]).map(lambda o: (o, (1, 1))),
    st.tuples(st.integers(1, 8), st.integers(1, 8))
    .filter(lambda t: t[0] <= t[1])
    .map(lambda t: (LegOutcome.DEAD_HEAT, t)),
)


@settings(max_examples=EXAMPLES)
@given(
    st.lists(
        st.tuples(st.integers(1, 10_000_000), st.lists(st.tuples(valid_odds, outcomes), min_size=1, max_size=6)),
        min_size=1,
        max_size=10,
    )
)
def test_settlement_agrees(bets: list[tuple[int, list[tuple[Odds, tuple[LegOutcome, tuple[int, int]]]]]]) -> None:
    batch = [(stake, [SettleLeg(o, out, dh) for o, (out, dh) in legs]) for stake, legs in bets]
    expected = [
        ref.settle(stake, [(frac(o), int(out), Fraction(*dh)) for o, (out, dh) in legs]) for stake, legs in bets
    ]
    try:
        got = settle_bets(batch)
    except ArithmeticOverflow:
        # Only when an exact value cannot fit: the reference's value is then beyond i64.
        assert any(v >= 2**63 for _, v in expected)
        return
    assert [(int(s), v) for s, v in got] == expected


@settings(max_examples=EXAMPLES)
@given(st.integers(1, 10_000_000), st.lists(valid_odds, min_size=1, max_size=5))
def test_potential_return_agrees(stake: int, legs: list[Odds]) -> None:
    expected = ref.potential_return(stake, [frac(o) for o in legs])
    if expected >= 2**63:
        with pytest.raises(ArithmeticOverflow):
            potential_return(stake, legs)
        return
    assert potential_return(stake, legs) == expected
    assert potential_returns([(stake, legs)]) == [expected]


def test_examples_and_errors() -> None:
    assert Odds.from_decimal("2.50") == Odds(5, 2)
    assert Odds.from_american(-110) == Odds(21, 11)
    assert Odds.from_fractional(6, 4) == Odds(5, 2)
    assert Odds(21, 11).american() == -110 and Odds(5, 2).american() == 150
    assert Odds(4, 3).decimal_str() == "1.33"
    assert potential_return(333, [Odds.from_decimal("1.5")]) == 499  # 499.5 rounds down
    assert settle_bets([(1000, [SettleLeg(Odds.from_decimal("1.90"), LegOutcome.HALF_WIN)])]) == [(BetStatus.WON, 1450)]
    assert settle_bets([(1000, [SettleLeg(Odds.from_decimal("1.90"), LegOutcome.HALF_LOSE)])]) == [
        (BetStatus.PARTIAL, 500)
    ]
    for bad in ["1.0", "0.99", "-2", "2.", "abc", "1e2", "2.1234567"]:
        with pytest.raises(InvalidOdds):
            Odds.from_decimal(bad)
    with pytest.raises(InvalidStake):
        potential_return(0, [Odds(2, 1)])
    with pytest.raises(InvalidArgument):
        potential_return(10, [])
    with pytest.raises(InvalidArgument):
        check_quotes([Quote(False, 0, 1, Odds(2, 1), Odds(2, 1), AcceptancePolicy.UNSPECIFIED)])
    with pytest.raises(InvalidArgument, match="item 1"):
        _core.settle_bets([(10, [(2, 1, 1, 1, 1)]), (10, [(2, 1, 7, 3, 2)])])
    assert isinstance(InvalidOdds("x"), ValueError)
