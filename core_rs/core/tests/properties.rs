//! Invariants of the betting math, on random inputs.

use inplay_core::*;
use proptest::prelude::*;

fn odds() -> impl Strategy<Value = Odds> {
    // Decimal odds between 1.001 and 1000 with up to 3 decimal places, plus American-derived ones.
    prop_oneof![
        (1001u64..1_000_000).prop_map(|n| Odds::new(n, 1000).unwrap()),
        (100i64..20_000).prop_map(|a| Odds::from_american(a).unwrap()),
        (-20_000i64..=-100).prop_map(|a| Odds::from_american(a).unwrap()),
        (1i64..100, 1i64..100).prop_map(|(n, d)| Odds::from_fractional(n, d).unwrap()),
    ]
}

fn outcome() -> impl Strategy<Value = LegOutcome> {
    prop_oneof![
        Just(LegOutcome::Win),
        Just(LegOutcome::Lose),
        Just(LegOutcome::Void),
        Just(LegOutcome::Push),
        Just(LegOutcome::HalfWin),
        Just(LegOutcome::HalfLose),
        (1u64..=4, 1u64..=4).prop_filter("factor <= 1", |(n, d)| n <= d).prop_map(|(n, d)| LegOutcome::DeadHeat(n, d)),
        Just(LegOutcome::Open),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn american_round_trips(o in odds()) {
        let (an, ad) = o.to_american();
        // back to decimal: a >= 100 → 1 + a/100 ; a <= -100 → 1 + 100/|a|
        let back = if an > 0 {
            Odds::new((an as u64) + 100 * ad as u64, 100 * ad as u64).unwrap()
        } else {
            Odds::new(an.unsigned_abs() + 100 * ad as u64, an.unsigned_abs()).unwrap()
        };
        prop_assert_eq!(back, o);
    }

    #[test]
    fn fractional_round_trips(o in odds()) {
        let (n, d) = o.to_fractional();
        prop_assert_eq!(Odds::from_fractional(n as i64, d as i64).unwrap(), o);
    }

    #[test]
    fn decimal_display_round_trips_at_full_precision(n in 1001u64..1_000_000) {
        let o = Odds::new(n, 1000).unwrap();
        prop_assert_eq!(Odds::from_decimal_str(&o.decimal_display(3)).unwrap(), o);
    }

    #[test]
    fn returns_are_never_negative_and_void_returns_the_stake(
        stake in 1i64..10_000_000,
        legs in prop::collection::vec((odds(), outcome()), 1..6),
    ) {
        let settle: Vec<SettleLeg> = legs.iter().map(|(o, out)| SettleLeg { odds: *o, outcome: *out }).collect();
        let Ok((status, value)) = settle_bet(stake, &settle) else {
            return Ok(()); // only overflow can fail here, covered by its own test
        };
        prop_assert!(value >= 0);
        if status == BetStatus::Open { prop_assert_eq!(value, 0); }
        let voided: Vec<SettleLeg> = legs.iter().map(|(o, _)| SettleLeg { odds: *o, outcome: LegOutcome::Void }).collect();
        prop_assert_eq!(settle_bet(stake, &voided).unwrap(), (BetStatus::Refunded, stake));
    }

    #[test]
    fn all_won_equals_potential_return(stake in 1i64..10_000_000, legs in prop::collection::vec(odds(), 1..6)) {
        let settle: Vec<SettleLeg> = legs.iter().map(|o| SettleLeg { odds: *o, outcome: LegOutcome::Win }).collect();
        match (settle_bet(stake, &settle), potential_return(stake, &legs)) {
            (Ok((status, value)), Ok(expected)) => {
                prop_assert_eq!(value, expected);
                prop_assert_eq!(status, BetStatus::Won);
            }
            (Err(CoreError::Overflow), Err(CoreError::Overflow)) => {}
            (a, b) => prop_assert!(false, "settle {:?} vs potential {:?}", a, b),
        }
    }

    #[test]
    fn outcomes_are_ordered(stake in 1i64..10_000_000, o in odds()) {
        let v = |out| settle_bet(stake, &[SettleLeg { odds: o, outcome: out }]).unwrap().1;
        let (win, half_win, void, half_lose, lose) =
            (v(LegOutcome::Win), v(LegOutcome::HalfWin), v(LegOutcome::Void), v(LegOutcome::HalfLose), v(LegOutcome::Lose));
        prop_assert!(win >= half_win && half_win >= void && void >= half_lose && half_lose >= lose);
        prop_assert!(v(LegOutcome::DeadHeat(1, 2)) <= win);
    }

    #[test]
    fn tolerance_is_symmetric_for_none_and_any_accepts_all(a in odds(), b in odds(), tol in 0u32..3000) {
        let check = |seen, current, policy| check_quote(&QuoteInput {
            suspended: false, age_ms: 0, max_age_ms: 10, seen, current, policy, tolerance_bp: tol,
        });
        prop_assert_eq!(check(a, b, Policy::Any), QuoteCheck::Accepted);
        prop_assert_eq!(check(a, a, Policy::None), QuoteCheck::Accepted);
        // A rise accepted under NONE is accepted under HIGHER; any rise passes HIGHER.
        if check(a, b, Policy::None) == QuoteCheck::Accepted {
            prop_assert_eq!(check(a, b, Policy::Higher), QuoteCheck::Accepted);
        }
        if b.num() as u128 * a.den() as u128 >= a.num() as u128 * b.den() as u128 {
            prop_assert_eq!(check(a, b, Policy::Higher), QuoteCheck::Accepted);
        }
    }
}
