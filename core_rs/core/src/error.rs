use std::fmt;

/// Every way the core can refuse an input. Bindings map each variant to a Python exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    InvalidOdds(String),
    InvalidStake(String),
    InvalidPolicy(i64),
    InvalidOutcome(String),
    TooManyLegs(usize),
    Overflow,
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidOdds(why) => write!(f, "invalid odds: {why}"),
            CoreError::InvalidStake(why) => write!(f, "invalid stake: {why}"),
            CoreError::InvalidPolicy(code) => write!(f, "invalid acceptance policy {code}"),
            CoreError::InvalidOutcome(why) => write!(f, "invalid outcome: {why}"),
            CoreError::TooManyLegs(n) => write!(f, "{n} legs: at most {} allowed", crate::MAX_LEGS),
            CoreError::Overflow => write!(f, "arithmetic overflow"),
        }
    }
}

impl std::error::Error for CoreError {}

pub type Result<T> = std::result::Result<T, CoreError>;
