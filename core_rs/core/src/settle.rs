//! Settlement evaluation of singles and accumulators.
//!
//! Each leg contributes a multiplier: WIN = d, LOSE = 0, VOID = PUSH = 1, HALF_WIN = (d + 1)/2,
//! HALF_LOSE = 1/2, DEAD_HEAT(f) = d · f. Return = floor(stake × Π multipliers). A LOSE leg loses the bet
//! even while other legs are open; otherwise an OPEN leg keeps the bet open.

use crate::error::{CoreError, Result};
use crate::exact::{floor_product, Factor};
use crate::odds::Odds;
use crate::payout::{check_legs, check_stake};

/// Codes match the Python facade's `LegOutcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegOutcome {
    Open,
    Win,
    Lose,
    Void,
    Push,
    HalfWin,
    HalfLose,
    /// Dead heat with factor num/den in (0, 1].
    DeadHeat(u64, u64),
}

impl LegOutcome {
    /// From the wire code; the dead-heat factor is read only for code 7 (DEAD_HEAT).
    pub fn from_code(code: i64, dh_num: i64, dh_den: i64) -> Result<Self> {
        Ok(match code {
            0 => LegOutcome::Open,
            1 => LegOutcome::Win,
            2 => LegOutcome::Lose,
            3 => LegOutcome::Void,
            4 => LegOutcome::Push,
            5 => LegOutcome::HalfWin,
            6 => LegOutcome::HalfLose,
            7 => LegOutcome::dead_heat(dh_num, dh_den)?,
            other => return Err(CoreError::InvalidOutcome(format!("unknown outcome code {other}"))),
        })
    }

    /// A dead heat with factor `num/den`, which must be in (0, 1].
    pub fn dead_heat(num: i64, den: i64) -> Result<Self> {
        if num <= 0 || den <= 0 || num > den {
            return Err(CoreError::InvalidOutcome(format!("dead-heat factor {num}/{den} not in (0, 1]")));
        }
        Ok(LegOutcome::DeadHeat(num as u64, den as u64))
    }

    pub fn code(self) -> u8 {
        match self {
            LegOutcome::Open => 0,
            LegOutcome::Win => 1,
            LegOutcome::Lose => 2,
            LegOutcome::Void => 3,
            LegOutcome::Push => 4,
            LegOutcome::HalfWin => 5,
            LegOutcome::HalfLose => 6,
            LegOutcome::DeadHeat(..) => 7,
        }
    }

    /// The leg's multiplier as (at most) two factors; `None` while the leg is open.
    /// WIN = d, LOSE = 0, VOID = PUSH = 1, HALF_WIN = (d + 1)/2, HALF_LOSE = 1/2, DEAD_HEAT(f) = d · f.
    fn factors(self, odds: Odds) -> Option<[Factor; 2]> {
        let (n, d) = (odds.num(), odds.den());
        const ONE: Factor = (1, 1);
        Some(match self {
            LegOutcome::Open => return None,
            LegOutcome::Win => [(n, d), ONE],
            LegOutcome::Lose => [(0, 1), ONE],
            LegOutcome::Void | LegOutcome::Push => [ONE, ONE],
            // n ≤ 10¹⁰ and d ≤ 10⁶ (odds invariants), so n + d and 2d cannot overflow.
            LegOutcome::HalfWin => [(n + d, 2 * d), ONE],
            LegOutcome::HalfLose => [(1, 2), ONE],
            LegOutcome::DeadHeat(fn_, fd) => [(n, d), (fn_, fd)],
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleLeg {
    pub odds: Odds,
    pub outcome: LegOutcome,
}

/// Bet status codes (stable across the FFI boundary), decided by the return amount R against the stake S.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetStatus {
    /// Some leg still open and none lost; R = 0 (nothing paid yet).
    Open = 0,
    /// R > S.
    Won = 1,
    /// R = 0.
    Lost = 2,
    /// R = S (e.g. every leg void or push).
    Refunded = 3,
    /// 0 < R < S (e.g. a half lose, or a dead heat below evens).
    Partial = 4,
}

/// (status, return in minor units). A LOSE leg loses the bet even while other legs are open; otherwise an
/// OPEN leg keeps it open. Return = floor(stake × Π multipliers), one rounding at the end.
pub fn settle_bet(stake: i64, legs: &[SettleLeg]) -> Result<(BetStatus, i64)> {
    let stake_u = check_stake(stake)?;
    check_legs(legs.len())?;
    if legs.iter().any(|l| l.outcome == LegOutcome::Lose) {
        return Ok((BetStatus::Lost, 0));
    }
    if legs.iter().any(|l| l.outcome == LegOutcome::Open) {
        return Ok((BetStatus::Open, 0));
    }
    let factors = legs.iter().flat_map(|l| l.outcome.factors(l.odds).into_iter().flatten());
    let value = floor_product(stake_u, factors)?;
    let status = match value.cmp(&stake) {
        std::cmp::Ordering::Greater => BetStatus::Won,
        std::cmp::Ordering::Equal => BetStatus::Refunded,
        std::cmp::Ordering::Less if value == 0 => BetStatus::Lost,
        std::cmp::Ordering::Less => BetStatus::Partial,
    };
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(odds: &str, outcome: LegOutcome) -> SettleLeg {
        SettleLeg { odds: Odds::from_decimal_str(odds).unwrap(), outcome }
    }

    #[test]
    fn every_outcome() {
        use LegOutcome::*;
        assert_eq!(settle_bet(1000, &[leg("2.50", Win)]).unwrap(), (BetStatus::Won, 2500));
        assert_eq!(settle_bet(1000, &[leg("2.50", Lose)]).unwrap(), (BetStatus::Lost, 0));
        assert_eq!(settle_bet(1000, &[leg("2.50", Void)]).unwrap(), (BetStatus::Refunded, 1000));
        assert_eq!(settle_bet(1000, &[leg("2.50", Push)]).unwrap(), (BetStatus::Refunded, 1000));
        assert_eq!(settle_bet(1000, &[leg("1.90", HalfWin)]).unwrap(), (BetStatus::Won, 1450));
        assert_eq!(settle_bet(1000, &[leg("1.90", HalfLose)]).unwrap(), (BetStatus::Partial, 500));
        assert_eq!(settle_bet(1000, &[leg("5.00", DeadHeat(1, 2))]).unwrap(), (BetStatus::Won, 2500));
        assert_eq!(settle_bet(1000, &[leg("1.50", DeadHeat(1, 2))]).unwrap(), (BetStatus::Partial, 750));
        assert_eq!(settle_bet(1000, &[leg("2.00", Open)]).unwrap(), (BetStatus::Open, 0));
    }

    #[test]
    fn accumulators() {
        use LegOutcome::*;
        assert_eq!(settle_bet(100, &[leg("2.0", Win), leg("3.0", Win)]).unwrap(), (BetStatus::Won, 600));
        assert_eq!(settle_bet(100, &[leg("2.0", Win), leg("3.0", Void)]).unwrap(), (BetStatus::Won, 200));
        assert_eq!(settle_bet(100, &[leg("2.0", Open), leg("3.0", Lose)]).unwrap(), (BetStatus::Lost, 0));
        assert_eq!(settle_bet(100, &[leg("2.0", Open), leg("3.0", Win)]).unwrap(), (BetStatus::Open, 0));
        assert_eq!(settle_bet(100, &[leg("2.0", HalfLose), leg("3.0", Win)]).unwrap(), (BetStatus::Won, 150));
        assert_eq!(settle_bet(100, &[leg("2.0", Void), leg("3.0", Push)]).unwrap(), (BetStatus::Refunded, 100));
        assert!(LegOutcome::from_code(7, 3, 2).is_err());
        assert!(LegOutcome::from_code(7, 0, 2).is_err());
        assert_eq!(LegOutcome::from_code(7, 1, 3).unwrap(), DeadHeat(1, 3));
        assert_eq!(LegOutcome::from_code(1, 9, 0).unwrap(), Win); // factor ignored unless DEAD_HEAT
        assert!(LegOutcome::from_code(9, 1, 1).is_err());
    }

    #[test]
    fn status_follows_the_amount() {
        use LegOutcome::*;
        // 1 cent at 1.50: 1.5 floors to 1 = the stake → REFUNDED, not WON.
        assert_eq!(settle_bet(1, &[leg("1.50", Win)]).unwrap(), (BetStatus::Refunded, 1));
        // Half lose of 1 cent: 0.5 floors to 0 → LOST.
        assert_eq!(settle_bet(1, &[leg("1.50", HalfLose)]).unwrap(), (BetStatus::Lost, 0));
        assert_eq!(settle_bet(3, &[leg("1.50", HalfLose)]).unwrap(), (BetStatus::Partial, 1));
        assert_eq!(settle_bet(2, &[leg("1.50", Win)]).unwrap(), (BetStatus::Won, 3));
    }

    #[test]
    fn errors() {
        assert!(matches!(settle_bet(0, &[leg("2.0", LegOutcome::Win)]), Err(CoreError::InvalidStake(_))));
        assert!(matches!(settle_bet(10, &[]), Err(CoreError::InvalidOutcome(_))));
        assert_eq!(settle_bet(10, &[leg("2.0", LegOutcome::Win); 31]), Err(CoreError::TooManyLegs(31)));
        assert_eq!(settle_bet(i64::MAX, &[leg("2.0", LegOutcome::Win)]), Err(CoreError::Overflow));
        assert_eq!(
            settle_bet(i64::MAX, &[leg("2.0", LegOutcome::HalfLose)]).unwrap(),
            (BetStatus::Partial, i64::MAX / 2)
        );
    }
}
