"""Example-based tests of every rule in docs/betting-math.md, through the typed facade ``inplay.core``."""

from __future__ import annotations

import pytest

from inplay import _core, core
from inplay.core import (
    MAX_LEGS,
    AcceptancePolicy,
    ArithmeticOverflow,
    BetState,
    CoreError,
    InvalidCoreInput,
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


def d(text: str) -> Odds:
    return Odds.from_decimal(text)


# ------------------------------------------------------------------------------------------- odds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.50", Odds(5, 2)),
        ("2.5", Odds(5, 2)),
        ("2", Odds(2, 1)),
        ("1.909", Odds(1909, 1000)),
        ("1.000001", Odds(1_000_001, 1_000_000)),
        ("10000", Odds(10_000, 1)),
        ("10000.000000", Odds(10_000, 1)),
        ("0002.50", Odds(5, 2)),
    ],
)
def test_from_decimal(text: str, expected: Odds) -> None:
    assert Odds.from_decimal(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.0", "1.000000", "0.99", "-2.0", "+2.0", "2.", ".5", "1e3", "2E1", "NaN", "inf", " 2.0", "2.0 ",
     "2,5", "2.1234567", "10000.000001", "1_000", "\u0662.\u0665", "1234567.0"],
)  # fmt: skip
def test_from_decimal_rejects(text: str) -> None:
    with pytest.raises(InvalidOdds):
        Odds.from_decimal(text)


def test_from_american_and_fractional() -> None:
    assert Odds.from_american(150) == Odds(5, 2)
    assert Odds.from_american(100) == Odds.from_american(-100) == Odds(2, 1)
    assert Odds.from_american(-110) == Odds(21, 11)
    assert Odds.from_american(-200) == Odds(3, 2)
    assert Odds.from_american(999_900) == Odds(10_000, 1)
    for bad in (99, -99, 0, 1, -1, 999_901, 2**63 - 1, -(2**63), 2**70):
        with pytest.raises(InvalidOdds):
            Odds.from_american(bad)
    assert Odds.from_fractional(6, 4) == Odds(5, 2)
    assert Odds.from_fractional(1, 1) == Odds(2, 1)
    assert Odds.from_fractional(10, 11) == Odds(21, 11)
    for n, m in ((0, 1), (1, 0), (-1, 2), (2, -1), (10_000, 1), (1, 1_000_001), (2**70, 1)):
        with pytest.raises(InvalidOdds):
            Odds.from_fractional(n, m)


def test_of_validates_and_reduces() -> None:
    assert Odds.of(10, 4) == Odds(5, 2)
    assert Odds.of(2_000_000, 1_000_000) == Odds(2, 1)
    assert Odds.of(2 * (2**63 - 1), 2**63 - 1) == Odds(2, 1)  # unreduced parts may exceed i64
    assert Odds.of(10_000_000_000, 1_000_000) == Odds(10_000, 1)
    for n, m in [(1, 1), (1, 2), (0, 1), (2, 0), (-3, -2), (10_001, 1), (2_000_001, 1_000_001), (2**64, 1)]:
        with pytest.raises(InvalidOdds):
            Odds.of(n, m)
    with pytest.raises(TypeError):
        Odds.of(2.5, 1)  # type: ignore[arg-type]  # no floats on the money path


def test_back_conversions_and_display() -> None:
    assert Odds(21, 11).american_exact() == (-110, 1)
    assert Odds(5, 2).american_exact() == (150, 1)
    assert Odds(2, 1).american_exact() == (100, 1)
    assert Odds(501, 301).american_exact() == (-301, 2)  # exactly -150.5 ...
    assert Odds(501, 301).american() == -151  # ... displayed half away from zero
    assert d("2.005").american() == 101  # +100.5 → +101
    assert d("1.909").american() == -110  # -110.011 → -110
    assert Odds(21, 11).american() == -110
    assert Odds(5, 2).fractional() == (3, 2)
    assert Odds(21, 11).fractional() == (10, 11)
    assert Odds(4, 3).decimal_str() == "1.33"
    assert Odds(5, 3).decimal_str() == "1.67"
    assert d("2.005").decimal_str() == "2.01"  # half up
    assert d("2.004").decimal_str() == "2.00"
    assert Odds(21, 11).decimal_str(0) == "2"
    assert Odds(21, 11).decimal_str(6) == "1.909091"
    assert str(Odds(5, 2)) == "2.50"
    assert Odds(2, 1).implied_probability_ppm() == 500_000
    assert Odds(3, 1).implied_probability_ppm() == 333_333  # floored
    assert Odds(21, 11).implied_probability_ppm() == 523_809
    with pytest.raises(InvalidCoreInput):
        Odds(5, 2).decimal_str(19)
    with pytest.raises(InvalidCoreInput):
        Odds(5, 2).decimal_str(-1)


# ------------------------------------------------------------------------------------------- quotes


def quote(
    seen: str,
    current: str,
    policy: AcceptancePolicy = AcceptancePolicy.NONE,
    tolerance_bp: int = 500,
    *,
    suspended: bool = False,
    age_ms: int = 0,
    max_age_ms: int = 1000,
) -> QuoteResult:
    [result] = check_quotes([Quote(suspended, age_ms, max_age_ms, d(seen), d(current), policy, tolerance_bp)])
    return result


def test_tolerance_is_inclusive_and_relative_to_the_seen_price() -> None:
    assert quote("2.00", "2.10") == QuoteResult.ACCEPTED  # +5 % exactly
    assert quote("2.00", "2.100001") == QuoteResult.ODDS_CHANGED
    assert quote("2.00", "1.90") == QuoteResult.ACCEPTED  # -5 % exactly
    assert quote("2.00", "1.899999") == QuoteResult.ODDS_CHANGED
    assert quote("2.00", "2.02", tolerance_bp=100) == QuoteResult.ACCEPTED
    assert quote("2.00", "2.03", tolerance_bp=100) == QuoteResult.ODDS_CHANGED
    assert quote("2.00", "2.00", tolerance_bp=0) == QuoteResult.ACCEPTED
    assert quote("2.00", "2.001", tolerance_bp=0) == QuoteResult.ODDS_CHANGED
    # Default tolerance is 500 bp.
    assert Quote(False, 0, 1, d("2"), d("2"), AcceptancePolicy.NONE).tolerance_bp == 500


def test_policies() -> None:
    any_, higher, none = AcceptancePolicy.ANY, AcceptancePolicy.HIGHER, AcceptancePolicy.NONE
    assert quote("2.00", "50.0", any_) == QuoteResult.ACCEPTED
    assert quote("2.00", "1.01", any_) == QuoteResult.ACCEPTED
    assert quote("2.00", "50.0", higher) == QuoteResult.ACCEPTED  # any rise
    assert quote("2.00", "1.90", higher) == QuoteResult.ACCEPTED  # a drop within tolerance
    assert quote("2.00", "1.89", higher) == QuoteResult.ODDS_CHANGED
    assert quote("2.00", "2.11", none) == QuoteResult.ODDS_CHANGED  # a rise beyond tolerance
    assert quote("2.00", "1.89", none) == QuoteResult.ODDS_CHANGED
    with pytest.raises(InvalidCoreInput, match="item 0"):
        quote("2.00", "2.00", AcceptancePolicy.UNSPECIFIED)
    with pytest.raises(InvalidCoreInput):
        quote("2.00", "2.00", tolerance_bp=-1)


def test_check_order_suspended_then_stale_then_tolerance() -> None:
    assert quote("2.0", "9.0", suspended=True, age_ms=5000) == QuoteResult.SUSPENDED
    assert quote("2.0", "9.0", age_ms=5000) == QuoteResult.STALE
    assert quote("2.0", "9.0", age_ms=1000) == QuoteResult.ODDS_CHANGED  # age == max is fresh
    assert quote("2.0", "9.0", age_ms=1001) == QuoteResult.STALE
    assert quote("2.0", "2.0", age_ms=1001) == QuoteResult.STALE
    assert quote("2.0", "2.0", suspended=True) == QuoteResult.SUSPENDED


def test_batch_of_quotes_keeps_order() -> None:
    quotes = [
        Quote(False, 0, 10, d("2"), d("2"), AcceptancePolicy.NONE),
        Quote(True, 0, 10, d("2"), d("2"), AcceptancePolicy.NONE),
        Quote(False, 11, 10, d("2"), d("2"), AcceptancePolicy.NONE),
        Quote(False, 0, 10, d("2"), d("3"), AcceptancePolicy.NONE),
    ]
    assert check_quotes(quotes) == [
        QuoteResult.ACCEPTED,
        QuoteResult.SUSPENDED,
        QuoteResult.STALE,
        QuoteResult.ODDS_CHANGED,
    ]
    assert check_quotes([]) == []
    with pytest.raises(InvalidCoreInput, match="item 2:"):
        check_quotes([*quotes[:2], Quote(False, 0, 10, d("2"), d("2"), AcceptancePolicy.UNSPECIFIED)])


# ------------------------------------------------------------------------------------------- returns


def test_potential_return_rounds_once_down() -> None:
    assert potential_return(1000, [d("2.50")]) == 2500
    assert potential_return(333, [d("1.5")]) == 499  # 499.5 floors
    assert potential_return(100, [Odds.from_american(-110)]) == 190  # 190.909...
    # One rounding at the end, not per leg: 5 x 1.5 x 1.5 = 11.25 → 11 (flooring per leg: 7 → 10).
    assert potential_return(5, [d("1.5")] * 2) == 11
    assert potential_return(10, [d("1.5")] * 3) == 33
    assert potential_returns([(1000, [d("2.5")]), (100, [d("2"), d("3")])]) == [2500, 600]
    assert potential_returns([]) == []


def test_thirty_legs() -> None:
    # 1.909^30: the exact denominator 1000^30 is beyond u128, the amount is not.
    assert potential_return(100, [d("1.909")] * MAX_LEGS) == 26_556_928_958
    with pytest.raises(InvalidCoreInput):
        potential_return(100, [d("1.909")] * (MAX_LEGS + 1))
    with pytest.raises(InvalidCoreInput):
        potential_return(100, [])


def test_potential_return_errors() -> None:
    with pytest.raises(InvalidStake):
        potential_return(0, [d("2")])
    with pytest.raises(InvalidStake):
        potential_return(-100, [d("2")])
    with pytest.raises(InvalidStake):
        potential_return(2**63, [d("2")])
    with pytest.raises(ArithmeticOverflow):
        potential_return(2**62, [d("2")])  # 2^63 does not fit an i64
    assert potential_return(2**62, [d("1.5")]) == 3 * 2**61
    with pytest.raises(ArithmeticOverflow, match="item 1:"):
        potential_returns([(10, [d("2")]), (2**62, [d("2")])])
    with pytest.raises(InvalidOdds, match="item 0:"):
        potential_returns([(10, [(Odds(1, 1))])])


# ------------------------------------------------------------------------------------------- settlement


def settle(stake: int, *legs: tuple[str, LegOutcome] | tuple[str, LegOutcome, tuple[int, int]]) -> tuple[BetState, int]:
    settle_legs = [SettleLeg(d(leg[0]), leg[1], *leg[2:]) for leg in legs]
    [result] = settle_bets([(stake, settle_legs)])
    return result


W, L, V, P, HW, HL, DH, OPEN = (
    LegOutcome.WIN,
    LegOutcome.LOSE,
    LegOutcome.VOID,
    LegOutcome.PUSH,
    LegOutcome.HALF_WIN,
    LegOutcome.HALF_LOSE,
    LegOutcome.DEAD_HEAT,
    LegOutcome.OPEN,
)


def test_every_leg_outcome() -> None:
    assert settle(1000, ("1.90", W)) == (BetState.WON, 1900)
    assert settle(1000, ("1.90", L)) == (BetState.LOST, 0)
    assert settle(1000, ("1.90", V)) == (BetState.REFUNDED, 1000)
    assert settle(1000, ("1.90", P)) == (BetState.REFUNDED, 1000)
    assert settle(1000, ("1.90", HW)) == (BetState.WON, 1450)  # (d + 1) / 2
    assert settle(1000, ("1.90", HL)) == (BetState.PARTIAL, 500)  # 1/2
    assert settle(1000, ("1.90", DH, (1, 2))) == (BetState.PARTIAL, 950)  # d · f, below evens
    assert settle(1000, ("5.00", DH, (1, 2))) == (BetState.WON, 2500)
    assert settle(1000, ("4.00", DH, (1, 4))) == (BetState.REFUNDED, 1000)
    assert settle(1000, ("5.00", DH, (1, 1))) == (BetState.WON, 5000)
    assert settle(1000, ("1.90", OPEN)) == (BetState.OPEN, 0)
    assert settle(1000, ("1.90", W, (7, 3))) == (BetState.WON, 1900)  # factor ignored unless DEAD_HEAT


def test_accumulators() -> None:
    assert settle(100, ("2.0", W), ("3.0", W)) == (BetState.WON, 600)
    assert settle(100, ("2.0", W), ("3.0", V)) == (BetState.WON, 200)  # a void leg drops out
    assert settle(100, ("2.0", V), ("3.0", P)) == (BetState.REFUNDED, 100)
    assert settle(100, ("2.0", HL), ("3.0", W)) == (BetState.WON, 150)
    assert settle(100, ("2.0", HL), ("3.0", HL)) == (BetState.PARTIAL, 25)
    assert settle(100, ("2.0", OPEN), ("3.0", L)) == (BetState.LOST, 0)  # a loss settles at once
    assert settle(100, ("2.0", OPEN), ("3.0", W)) == (BetState.OPEN, 0)  # otherwise an open leg waits
    assert settle(10, ("1.5", W), ("1.5", W), ("1.5", W)) == (BetState.WON, 33)  # one rounding: 33.75


def test_status_follows_the_rounded_return() -> None:
    assert settle(1, ("1.50", W)) == (BetState.REFUNDED, 1)  # 1.5 → 1 == stake
    assert settle(2, ("1.50", W)) == (BetState.WON, 3)
    assert settle(1, ("1.50", HL)) == (BetState.LOST, 0)  # 0.5 → 0
    assert settle(3, ("1.50", HL)) == (BetState.PARTIAL, 1)


def test_settlement_errors_name_the_item() -> None:
    good = (10, [SettleLeg(d("2"), W)])
    with pytest.raises(InvalidCoreInput, match=r"item 1: leg 0: .*dead-heat factor 3/2"):
        settle_bets([good, (10, [SettleLeg(d("2"), DH, (3, 2))])])
    with pytest.raises(InvalidCoreInput, match="item 0: leg 0"):
        settle_bets([(10, [SettleLeg(d("2"), DH, (0, 1))])])
    with pytest.raises(InvalidCoreInput, match="item 1"):
        settle_bets([good, (10, [])])
    with pytest.raises(InvalidCoreInput, match="item 0"):
        settle_bets([(10, [SettleLeg(d("2"), W)] * 31)])
    with pytest.raises(InvalidStake, match="item 2"):
        settle_bets([good, good, (0, [SettleLeg(d("2"), W)])])
    with pytest.raises(ArithmeticOverflow, match="item 0"):
        settle_bets([(2**62, [SettleLeg(d("2"), W)])])
    with pytest.raises(InvalidOdds, match="item 0: leg 1"):
        settle_bets([(10, [SettleLeg(d("2"), W), SettleLeg(Odds(3, 4), W)])])
    with pytest.raises(InvalidCoreInput, match="unknown outcome code 8"):
        _core.settle_bets([(10, [(2, 1, 8, 1, 1)])])
    assert settle_bets([]) == []


# ------------------------------------------------------------------------------------------- surface


def test_exception_hierarchy() -> None:
    assert issubclass(CoreError, Exception) and not issubclass(CoreError, ValueError)
    for cls in (InvalidOdds, InvalidStake, InvalidCoreInput):
        assert issubclass(cls, CoreError) and issubclass(cls, ValueError)
    assert issubclass(ArithmeticOverflow, CoreError) and issubclass(ArithmeticOverflow, OverflowError)
    assert InvalidOdds.__module__ == "inplay._core"
    assert core.CoreError is _core.CoreError


def test_enum_codes_match_the_wire() -> None:
    assert [int(p) for p in AcceptancePolicy] == [0, 1, 2, 3]
    assert [q.name for q in QuoteResult] == ["ACCEPTED", "SUSPENDED", "STALE", "ODDS_CHANGED"]
    assert [int(q) for q in QuoteResult] == [0, 1, 2, 3]
    assert [o.name for o in LegOutcome] == [
        "OPEN", "WIN", "LOSE", "VOID", "PUSH", "HALF_WIN", "HALF_LOSE", "DEAD_HEAT"
    ]  # fmt: skip
    assert [int(o) for o in LegOutcome] == list(range(8))
    # One numbering of bet states, the API's (the core's own codes 0..4 are mapped once in core.settle_bets).
    assert [s.name for s in BetState] == ["UNSPECIFIED", "OPEN", "WON", "LOST", "REFUNDED", "PARTIAL"]
    assert [int(s) for s in BetState] == list(range(6))
    assert MAX_LEGS == 30


def test_raw_module_input_errors() -> None:
    with pytest.raises(TypeError, match="item 0: a quote must be a tuple of 9"):
        _core.check_quotes([(False, 0, 0)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a str"):
        _core.settle_bets("bets")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 0: stake must be an int"):
        _core.potential_returns([(10.0, [(2, 1)])])  # type: ignore[list-item]
    with pytest.raises(InvalidOdds, match=r"item 0: odds numerator .* out of range"):
        _core.check_quotes([(False, 0, 0, 2**64, 1, 2, 1, 1, 500)])
    with pytest.raises(InvalidCoreInput, match="item 0: age_ms"):
        _core.check_quotes([(False, 2**63, 0, 2, 1, 2, 1, 1, 500)])
    assert _core.check_quotes([(False, 0, 0, 2, 1, 2, 1, 1, 500)]) == [0]  # a list of ints, not bytes
    assert _core.settle_bets([(10, [(2, 1, 1, 1, 1)])]) == [(1, 20)]
