//! Settlement evaluation of singles and accumulators.
//!
//! Each leg contributes a multiplier: WIN = d, LOSE = 0, VOID = PUSH = 1, HALF_WIN = (d + 1)/2,
//! HALF_LOSE = 1/2, DEAD_HEAT(f) = d · f. Return = floor(stake × Π multipliers). A LOSE leg loses the bet
//! even while other legs are open; otherwise an OPEN leg keeps the bet open.

use crate::error::{CoreError, Result};
use crate::odds::Odds;
use crate::payout::{check_legs, check_stake, Ratio};

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
    pub fn from_code(code: i64, dh_num: i64, dh_den: i64) -> Result<Self> {
        Ok(match code {
            0 => LegOutcome::Open,
            1 => LegOutcome::Win,
            2 => LegOutcome::Lose,
            3 => LegOutcome::Void,
            4 => LegOutcome::Push,
            5 => LegOutcome::HalfWin,
            6 => LegOutcome::HalfLose,
            7 => {
                if dh_num <= 0 || dh_den <= 0 || dh_num > dh_den {
                    return Err(CoreError::InvalidOutcome(format!("dead-heat factor {dh_num}/{dh_den} not in (0, 1]")));
                }
                LegOutcome::DeadHeat(dh_num as u64, dh_den as u64)
            }
            other => return Err(CoreError::InvalidOutcome(format!("unknown outcome code {other}"))),
        })
    }

    fn multiplier(self, odds: Odds) -> Result<Option<Ratio>> {
        let d = Ratio::of_odds(odds);
        Ok(Some(match self {
            LegOutcome::Open => return Ok(None),
            LegOutcome::Win => d,
            LegOutcome::Lose => Ratio::ZERO,
            LegOutcome::Void | LegOutcome::Push => Ratio::ONE,
            LegOutcome::HalfWin => d.add(Ratio::ONE)?.mul(Ratio::new(1, 2)?)?,
            LegOutcome::HalfLose => Ratio::new(1, 2)?,
            LegOutcome::DeadHeat(n, m) => d.mul(Ratio::new(n as u128, m as u128)?)?,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleLeg {
    pub odds: Odds,
    pub outcome: LegOutcome,
}

/// Codes match `inplay.bets.v1.BetStatus` minus one (OPEN = 0 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetStatus {
    Open = 0,
    Won = 1,
    Lost = 2,
    Refunded = 3,
    Partial = 4,
}

/// (status, return in minor units). An open bet returns 0 (nothing is paid yet).
pub fn settle_bet(stake: i64, legs: &[SettleLeg]) -> Result<(BetStatus, i64)> {
    check_stake(stake)?;
    check_legs(legs.len())?;
    if legs.iter().any(|l| l.outcome == LegOutcome::Lose) {
        return Ok((BetStatus::Lost, 0));
    }
    let mut product = Ratio::ONE;
    let mut open = false;
    for leg in legs {
        match leg.outcome.multiplier(leg.odds)? {
            None => open = true,
            Some(m) => product = product.mul(m)?,
        }
    }
    if open {
        return Ok((BetStatus::Open, 0));
    }
    let value = product.apply_floor(stake)?;
    // The status follows the exact multiplier, not the floored amount: a tiny winning bet whose winnings
    // round to zero cents is still WON.
    let status = if product.num == 0 {
        BetStatus::Lost
    } else if product.num > product.den {
        BetStatus::Won
    } else if product.num == product.den {
        BetStatus::Refunded
    } else {
        BetStatus::Partial
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
        assert!(LegOutcome::from_code(7, 3, 2).is_err());
        assert!(LegOutcome::from_code(9, 1, 1).is_err());
    }
}
