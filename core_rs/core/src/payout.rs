//! Potential returns. One rounding rule: floor(stake × Π odds), at the end, to the minor unit.

use crate::error::{CoreError, Result};
use crate::exact::floor_product;
use crate::odds::Odds;
use crate::MAX_LEGS;

pub(crate) fn check_stake(stake: i64) -> Result<u64> {
    if stake <= 0 {
        return Err(CoreError::InvalidStake(format!("{stake} is not positive")));
    }
    Ok(stake as u64)
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

/// floor(stake × Π odds): what the bet returns if every leg wins. `Overflow` only when that amount does
/// not fit an `i64`.
pub fn potential_return(stake: i64, legs: &[Odds]) -> Result<i64> {
    let stake = check_stake(stake)?;
    check_legs(legs.len())?;
    floor_product(stake, legs.iter().map(|o| (o.num(), o.den())))
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
        assert_eq!(potential_return(0, &[o("2.0")]), Err(CoreError::InvalidStake("0 is not positive".into())));
        assert!(matches!(potential_return(-5, &[o("2.0")]), Err(CoreError::InvalidStake(_))));
        assert!(matches!(potential_return(10, &[]), Err(CoreError::InvalidOutcome(_))));
        assert_eq!(potential_return(10, &[o("2.0"); 31]), Err(CoreError::TooManyLegs(31)));
        assert_eq!(potential_return(i64::MAX, &[o("10000")]), Err(CoreError::Overflow));
    }

    #[test]
    fn thirty_legs_of_three_decimal_prices() {
        let legs = [Odds::from_decimal_str("1.909").unwrap(); 30];
        assert_eq!(potential_return(100, &legs).unwrap(), 26_556_928_958);
    }
}
