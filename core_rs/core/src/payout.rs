//! Potential returns. One rounding rule: floor(stake × Π odds), at the end, to the minor unit.

use crate::error::{CoreError, Result};
use crate::odds::Odds;
use crate::{gcd, MAX_LEGS};

/// An exact non-negative fraction kept reduced; the accumulator of products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ratio {
    pub num: u128,
    pub den: u128,
}

impl Ratio {
    pub const ONE: Ratio = Ratio { num: 1, den: 1 };
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };

    pub fn new(num: u128, den: u128) -> Result<Ratio> {
        if den == 0 {
            return Err(CoreError::InvalidOutcome("zero denominator".into()));
        }
        let g = gcd(num, den).max(1);
        Ok(Ratio { num: num / g, den: den / g })
    }

    /// Multiplies, reducing across first so intermediate values stay as small as possible.
    pub fn mul(self, other: Ratio) -> Result<Ratio> {
        if self.num == 0 || other.num == 0 {
            return Ok(Ratio::ZERO);
        }
        let g1 = gcd(self.num, other.den).max(1);
        let g2 = gcd(other.num, self.den).max(1);
        let num = (self.num / g1).checked_mul(other.num / g2).ok_or(CoreError::Overflow)?;
        let den = (self.den / g2).checked_mul(other.den / g1).ok_or(CoreError::Overflow)?;
        Ratio::new(num, den)
    }

    pub fn add(self, other: Ratio) -> Result<Ratio> {
        let num = self
            .num
            .checked_mul(other.den)
            .and_then(|a| other.num.checked_mul(self.den).and_then(|b| a.checked_add(b)))
            .ok_or(CoreError::Overflow)?;
        let den = self.den.checked_mul(other.den).ok_or(CoreError::Overflow)?;
        Ratio::new(num, den)
    }

    pub fn of_odds(odds: Odds) -> Ratio {
        Ratio { num: odds.num() as u128, den: odds.den() as u128 }
    }

    /// floor(stake × self), as minor units.
    pub fn apply_floor(self, stake: i64) -> Result<i64> {
        let product = (stake as u128).checked_mul(self.num).ok_or(CoreError::Overflow)?;
        let value = product / self.den;
        i64::try_from(value).map_err(|_| CoreError::Overflow)
    }
}

pub(crate) fn check_stake(stake: i64) -> Result<()> {
    if stake <= 0 {
        return Err(CoreError::InvalidStake(format!("{stake} is not positive")));
    }
    Ok(())
}

pub(crate) fn check_legs(count: usize) -> Result<()> {
    if count == 0 {
        return Err(CoreError::InvalidOutcome("a bet needs at least one leg".into()));
    }
    if count > MAX_LEGS {
        return Err(CoreError::TooManyLegs(count));
    }
    Ok(())
}

/// floor(stake × Π odds).
pub fn potential_return(stake: i64, legs: &[Odds]) -> Result<i64> {
    check_stake(stake)?;
    check_legs(legs.len())?;
    let mut product = Ratio::ONE;
    for odds in legs {
        product = product.mul(Ratio::of_odds(*odds))?;
    }
    product.apply_floor(stake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singles_and_accumulators() {
        let o = |s: &str| Odds::from_decimal_str(s).unwrap();
        assert_eq!(potential_return(1000, &[o("2.50")]).unwrap(), 2500);
        assert_eq!(potential_return(333, &[o("1.5")]).unwrap(), 499); // 499.5 floors
        assert_eq!(potential_return(100, &[o("2.0"), o("3.0")]).unwrap(), 600);
        assert_eq!(potential_return(100, &[Odds::from_american(-110).unwrap()]).unwrap(), 190); // 190.9
        assert!(potential_return(0, &[o("2.0")]).is_err());
        assert!(potential_return(10, &[]).is_err());
        assert_eq!(potential_return(i64::MAX, &[o("10000")]), Err(CoreError::Overflow));
    }
}
