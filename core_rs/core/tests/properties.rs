//! Invariants of the betting math, on random inputs (proptest).

use inplay_core::*;
use proptest::prelude::*;

fn odds() -> impl Strategy<Value = Odds> {
    // Decimal odds with up to 3 and up to 6 places, American-derived and fractional ones.
    prop_oneof![
        (1001u64..1_000_000).prop_map(|n| Odds::new(n, 1000).unwrap()),
        (1_000_001u64..50_000_000).prop_map(|n| Odds::new(n, 1_000_000).unwrap()),
        (100i64..20_000).prop_map(|a| Odds::from_american(a).unwrap()),
        (-20_000i64..=-100).prop_map(|a| Odds::from_american(a).unwrap()),
        (1i64..100, 1i64..100).prop_map(|(n, d)| Odds::from_fractional(n, d).unwrap()),
    ]
}

fn settled_outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![
        Just(LegOutcome::Win),
        Just(LegOutcome::Lose),
        Just(LegOutcome::Void),
        Just(LegOutcome::Push),
        Just(LegOutcome::HalfWin),
        Just(LegOutcome::HalfLose),
        dead_heat_factor().prop_map(|(n, d)| LegOutcome::dead_heat(n, d).unwrap()),
    ]
}

/// A dead-heat factor n/d in (0, 1].
fn dead_heat_factor() -> impl Strategy<Value = (i64, i64)> {
    (1i64..=8).prop_flat_map(|d| (1..=d, Just(d)))
}

fn plain_outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![
        Just(LegOutcome::Win),
        Just(LegOutcome::HalfWin),
        Just(LegOutcome::Void),
        Just(LegOutcome::Push),
        Just(LegOutcome::HalfLose),
        Just(LegOutcome::Lose),
    ]
}

fn outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![4 => settled_outcome(), 1 => Just(LegOutcome::Open)]
}

/// The multiplier order that holds for every leg with d > 1: WIN ≥ HALF_WIN ≥ VOID = PUSH ≥ HALF_LOSE ≥ LOSE,
/// and WIN ≥ DEAD_HEAT(f) ≥ LOSE. Rank: a higher rank never has a smaller multiplier.
fn rank(o: LegOutcome) -> u8 {
    match o {
        LegOutcome::Lose => 0,
        LegOutcome::HalfLose => 1,
        LegOutcome::Void | LegOutcome::Push => 2,
        LegOutcome::HalfWin => 3,
        LegOutcome::Win => 4,
        LegOutcome::DeadHeat(..) | LegOutcome::Open => unreachable!(),
    }
}

fn quote(seen: Odds, current: Odds, policy: Policy, tolerance_bp: u32) -> QuoteCheck {
    check_quote(&QuoteInput { suspended: false, age_ms: 0, max_age_ms: 10, seen, current, policy, tolerance_bp })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn american_round_trips(o in odds()) {
        let (an, ad) = o.to_american();
        prop_assert!(ad > 0 && (an >= 100 * ad || an <= -100 * ad));
        // back to decimal: a >= 100 → 1 + a/100 ; a <= -100 → 1 + 100/|a|
        let back = if an > 0 {
            Odds::new((an as u64) + 100 * ad as u64, 100 * ad as u64).unwrap()
        } else {
            Odds::new(an.unsigned_abs() + 100 * ad as u64, an.unsigned_abs()).unwrap()
        };
        prop_assert_eq!(back, o);
        // Integer American odds round-trip through the display value too.
        if ad == 1 {
            prop_assert_eq!(o.american_display(), an);
            prop_assert_eq!(Odds::from_american(an).unwrap(), o);
        }
    }

    #[test]
    fn fractional_round_trips(o in odds()) {
        let (n, d) = o.to_fractional();
        prop_assert_eq!(Odds::from_fractional(n as i64, d as i64).unwrap(), o);
    }

    #[test]
    fn decimal_strings_round_trip(n in 1_000_001u64..=10_000_000_000) {
        let o = Odds::new(n, 1_000_000).unwrap();
        prop_assert_eq!(Odds::from_decimal_str(&o.decimal_display(6)).unwrap(), o);
        let text = format!("{}.{:06}", n / 1_000_000, n % 1_000_000);
        prop_assert_eq!(Odds::from_decimal_str(&text).unwrap(), o);
    }

    #[test]
    fn implied_probability_is_the_floor(o in odds()) {
        let p = o.implied_probability_ppm() as u128;
        let (n, d) = (o.num() as u128, o.den() as u128);
        prop_assert!(p * n <= 1_000_000 * d && 1_000_000 * d < (p + 1) * n);
        prop_assert!(p < 1_000_000);
    }

    #[test]
    fn returns_are_never_negative_and_void_returns_the_stake(
        stake in 1i64..10_000_000,
        legs in prop::collection::vec((odds(), outcome()), 1..8),
    ) {
        let settle: Vec<SettleLeg> = legs.iter().map(|(o, out)| SettleLeg { odds: *o, outcome: *out }).collect();
        let (status, value) = match settle_bet(stake, &settle) {
            Ok(result) => result,
            // Only a return beyond i64 may fail (covered by its own tests): an error, never a wrapped number.
            Err(e) => { prop_assert_eq!(e, CoreError::Overflow); return Ok(()); }
        };
        prop_assert!(value >= 0);
        let expected = if legs.iter().any(|(_, o)| *o == LegOutcome::Lose) {
            BetStatus::Lost
        } else if legs.iter().any(|(_, o)| *o == LegOutcome::Open) {
            BetStatus::Open
        } else if value > stake {
            BetStatus::Won
        } else if value == stake {
            BetStatus::Refunded
        } else if value == 0 {
            BetStatus::Lost
        } else {
            BetStatus::Partial
        };
        prop_assert_eq!(status, expected);
        if matches!(status, BetStatus::Open | BetStatus::Lost) { prop_assert_eq!(value, 0); }
        let voided: Vec<SettleLeg> = legs.iter().map(|(o, _)| SettleLeg { odds: *o, outcome: LegOutcome::Void }).collect();
        prop_assert_eq!(settle_bet(stake, &voided).unwrap(), (BetStatus::Refunded, stake));
    }

    #[test]
    fn all_won_equals_potential_return(stake in 1i64..10_000_000, legs in prop::collection::vec(odds(), 1..=30)) {
        let settle: Vec<SettleLeg> = legs.iter().map(|o| SettleLeg { odds: *o, outcome: LegOutcome::Win }).collect();
        match (settle_bet(stake, &settle), potential_return(stake, &legs)) {
            (Ok((status, value)), Ok(expected)) => {
                prop_assert_eq!(value, expected);
                prop_assert_eq!(status, if value > stake { BetStatus::Won } else { BetStatus::Refunded });
                prop_assert!(value >= stake);
            }
            (Err(CoreError::Overflow), Err(CoreError::Overflow)) => {}
            (a, b) => prop_assert!(false, "settle {:?} vs potential {:?}", a, b),
        }
    }

    #[test]
    fn potential_return_grows_with_every_leg(stake in 1i64..1_000_000, legs in prop::collection::vec(odds(), 1..=29), extra in odds()) {
        let Ok(base) = potential_return(stake, &legs) else { return Ok(()) };
        let mut more = legs.clone();
        more.push(extra);
        match potential_return(stake, &more) {
            Ok(v) => prop_assert!(v >= base),
            Err(e) => prop_assert_eq!(e, CoreError::Overflow),
        }
    }

    #[test]
    fn single_outcomes_are_ordered(stake in 1i64..10_000_000, o in odds(), f in dead_heat_factor()) {
        let v = |out| settle_bet(stake, &[SettleLeg { odds: o, outcome: out }]).unwrap().1;
        let (win, half_win, void, push, half_lose, lose) = (
            v(LegOutcome::Win), v(LegOutcome::HalfWin), v(LegOutcome::Void), v(LegOutcome::Push),
            v(LegOutcome::HalfLose), v(LegOutcome::Lose),
        );
        prop_assert!(win >= half_win && half_win >= void && void >= half_lose && half_lose >= lose);
        prop_assert_eq!(void, stake);
        prop_assert_eq!(push, stake);
        prop_assert_eq!(lose, 0);
        // A dead heat pays between nothing and a full win, and no more than a bigger dead-heat factor.
        let dh = v(LegOutcome::dead_heat(f.0, f.1).unwrap());
        prop_assert!(lose <= dh && dh <= win);
        if f.0 < f.1 {
            prop_assert!(dh <= v(LegOutcome::dead_heat(f.0 + 1, f.1).unwrap()));
        }
        prop_assert_eq!(v(LegOutcome::dead_heat(f.1, f.1).unwrap()), win);
    }

    /// Improving one leg's result never lowers an accumulator's return (all multipliers are ≥ 0).
    #[test]
    fn accumulator_returns_are_monotone_in_each_leg(
        stake in 1i64..10_000_000,
        legs in prop::collection::vec((odds(), settled_outcome()), 1..8),
        which in any::<prop::sample::Index>(),
        pair in (plain_outcome(), plain_outcome()),
    ) {
        let i = which.index(legs.len());
        let (worse, better) = if rank(pair.0) <= rank(pair.1) { pair } else { (pair.1, pair.0) };
        let settle = |out: LegOutcome| {
            let mut v: Vec<SettleLeg> = legs.iter().map(|(o, out)| SettleLeg { odds: *o, outcome: *out }).collect();
            v[i].outcome = out;
            settle_bet(stake, &v).map(|(_, amount)| amount)
        };
        match (settle(better), settle(worse)) {
            (Ok(b), Ok(w)) => prop_assert!(b >= w),
            // A return beyond i64 is an error, never a wrapped number; the better result may overflow first.
            (Err(CoreError::Overflow), _) => {}
            (b, w) => prop_assert!(false, "better {:?} vs worse {:?}", b, w),
        }
    }

    #[test]
    fn tolerance_properties(a in odds(), b in odds(), tol in 0u32..3000) {
        prop_assert_eq!(quote(a, b, Policy::Any, tol), QuoteCheck::Accepted);
        prop_assert_eq!(quote(a, a, Policy::None, tol), QuoteCheck::Accepted);
        prop_assert_eq!(quote(a, a, Policy::Higher, tol), QuoteCheck::Accepted);
        let none = quote(a, b, Policy::None, tol);
        let higher = quote(a, b, Policy::Higher, tol);
        // NONE ⊆ HIGHER ⊆ ANY; every rise passes HIGHER; a drop is treated the same by HIGHER and NONE.
        if none == QuoteCheck::Accepted { prop_assert_eq!(higher, QuoteCheck::Accepted); }
        let rise = b.num() as u128 * a.den() as u128 >= a.num() as u128 * b.den() as u128;
        if rise { prop_assert_eq!(higher, QuoteCheck::Accepted); } else { prop_assert_eq!(higher, none); }
        // A wider tolerance never rejects what a narrower one accepted.
        if none == QuoteCheck::Accepted { prop_assert_eq!(quote(a, b, Policy::None, tol + 1), QuoteCheck::Accepted); }
    }

    /// NONE is symmetric in the relative move: seen·(1 + k) is accepted iff seen·(1 − k) is, and exactly
    /// when k ≤ tolerance (inclusive).
    #[test]
    fn tolerance_is_symmetric(seen in (200u64..20_000).prop_map(|n| Odds::new(n, 100).unwrap()), k_bp in 0u64..3000, tol in 0u32..3000) {
        // seen in 2.00..200.00 with den <= 100, so seen · (1 ± k) is always valid odds.
        let (n, d) = (seen.num(), seen.den());
        let up = Odds::new(n * (10_000 + k_bp), d * 10_000).unwrap();
        let down = Odds::new(n * (10_000 - k_bp), d * 10_000).unwrap();
        let expected = if k_bp <= tol as u64 { QuoteCheck::Accepted } else { QuoteCheck::OddsChanged };
        prop_assert_eq!(quote(seen, up, Policy::None, tol), expected);
        prop_assert_eq!(quote(seen, down, Policy::None, tol), expected);
        prop_assert_eq!(quote(seen, down, Policy::Higher, tol), expected);
        prop_assert_eq!(quote(seen, up, Policy::Higher, tol), QuoteCheck::Accepted);
    }

    #[test]
    fn check_order_is_suspended_then_stale_then_tolerance(
        suspended in any::<bool>(), age in 0i64..3000, max_age in 0i64..3000, a in odds(), b in odds(),
        policy in prop_oneof![Just(Policy::Any), Just(Policy::Higher), Just(Policy::None)], tol in 0u32..3000,
    ) {
        let got = check_quote(&QuoteInput { suspended, age_ms: age, max_age_ms: max_age, seen: a, current: b, policy, tolerance_bp: tol });
        let expected = if suspended {
            QuoteCheck::Suspended
        } else if age > max_age {
            QuoteCheck::Stale
        } else {
            quote(a, b, policy, tol)
        };
        prop_assert_eq!(got, expected);
    }
}
