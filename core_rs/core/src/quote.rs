//! The price checks a bet passes at acceptance, in order: suspended → stale → tolerance.

use crate::error::{CoreError, Result};
use crate::odds::Odds;

/// The bettor's answer to a moved price. Codes match `inplay.bets.v1.AcceptancePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Accept whatever the move.
    Any = 1,
    /// Accept any rise; a drop only within tolerance.
    Higher = 2,
    /// Accept only a move within tolerance, either way.
    None = 3,
}

impl Policy {
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            1 => Ok(Policy::Any),
            2 => Ok(Policy::Higher),
            3 => Ok(Policy::None),
            other => Err(CoreError::InvalidPolicy(other)),
        }
    }
}

/// Result codes (stable across the FFI boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteCheck {
    Accepted = 0,
    Suspended = 1,
    Stale = 2,
    OddsChanged = 3,
}

#[derive(Debug, Clone, Copy)]
pub struct QuoteInput {
    pub suspended: bool,
    pub age_ms: i64,
    pub max_age_ms: i64,
    pub seen: Odds,
    pub current: Odds,
    pub policy: Policy,
    /// Tolerated relative move in basis points (500 = 5 %).
    pub tolerance_bp: u32,
}

/// |current − seen| / seen ≤ tolerance, exactly: |c·s_den − s·c_den| · 10_000 ≤ tol · s · c_den
/// (with s = seen.num/seen.den and c = current.num/current.den, cross-multiplied).
fn within_tolerance(seen: Odds, current: Odds, tolerance_bp: u32) -> bool {
    let (sn, sd) = (seen.num() as u128, seen.den() as u128);
    let (cn, cd) = (current.num() as u128, current.den() as u128);
    let lhs_a = cn * sd;
    let lhs_b = sn * cd;
    let diff = lhs_a.abs_diff(lhs_b);
    diff * 10_000 <= tolerance_bp as u128 * sn * cd
}

fn is_rise(seen: Odds, current: Odds) -> bool {
    (current.num() as u128) * (seen.den() as u128) >= (seen.num() as u128) * (current.den() as u128)
}

pub fn check_quote(q: &QuoteInput) -> QuoteCheck {
    if q.suspended {
        return QuoteCheck::Suspended;
    }
    if q.age_ms > q.max_age_ms {
        return QuoteCheck::Stale;
    }
    let accepted = match q.policy {
        Policy::Any => true,
        Policy::Higher => is_rise(q.seen, q.current) || within_tolerance(q.seen, q.current, q.tolerance_bp),
        Policy::None => within_tolerance(q.seen, q.current, q.tolerance_bp),
    };
    if accepted {
        QuoteCheck::Accepted
    } else {
        QuoteCheck::OddsChanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(seen: &str, current: &str, policy: Policy) -> QuoteCheck {
        check_quote(&QuoteInput {
            suspended: false,
            age_ms: 0,
            max_age_ms: 1000,
            seen: Odds::from_decimal_str(seen).unwrap(),
            current: Odds::from_decimal_str(current).unwrap(),
            policy,
            tolerance_bp: 500,
        })
    }

    #[test]
    fn tolerance_rules() {
        assert_eq!(q("2.00", "2.10", Policy::None), QuoteCheck::Accepted);
        assert_eq!(q("2.00", "2.11", Policy::None), QuoteCheck::OddsChanged);
        assert_eq!(q("2.00", "1.90", Policy::None), QuoteCheck::Accepted);
        assert_eq!(q("2.00", "1.89", Policy::None), QuoteCheck::OddsChanged);
        assert_eq!(q("2.00", "5.00", Policy::Higher), QuoteCheck::Accepted);
        assert_eq!(q("2.00", "1.89", Policy::Higher), QuoteCheck::OddsChanged);
        assert_eq!(q("2.00", "1.01", Policy::Any), QuoteCheck::Accepted);
    }

    #[test]
    fn order_of_checks() {
        let mut input = QuoteInput {
            suspended: true,
            age_ms: 5000,
            max_age_ms: 1000,
            seen: Odds::new(2, 1).unwrap(),
            current: Odds::new(9, 1).unwrap(),
            policy: Policy::None,
            tolerance_bp: 500,
        };
        assert_eq!(check_quote(&input), QuoteCheck::Suspended);
        input.suspended = false;
        assert_eq!(check_quote(&input), QuoteCheck::Stale);
        input.age_ms = 1000;
        assert_eq!(check_quote(&input), QuoteCheck::OddsChanged);
        assert!(Policy::from_code(0).is_err());
    }
}
