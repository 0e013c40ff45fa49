//! Inplay's betting math, exact and integer-only.
//!
//! * Odds are decimal odds held as a reduced fraction `num/den` (> 1): American −110 is 21/11 and
//!   fractional 6/4 is 5/2, both exact.
//! * Money is `i64` minor units. A return is `floor(stake × Π multipliers)`: one rounding, at the end, down
//!   to the minor unit (the house never pays a fraction of a cent it does not owe). Products are exact:
//!   `u128` with gcd reduction, and arbitrary precision when a long accumulator leaves `u128`.
//! * The rules are written down in `docs/betting-math.md`.

pub mod band;
pub mod error;
mod exact;
pub mod feed;
pub mod fxhash;
pub mod json_out;
pub mod odds;
pub mod odds_record;
pub mod payout;
pub mod price_items;
pub mod quote;
pub mod settle;

pub use error::{CoreError, Result};
pub use odds::Odds;
pub use payout::potential_return;
pub use quote::{check_quote, Policy, QuoteCheck, QuoteInput};
pub use settle::{settle_bet, BetStatus, LegOutcome, SettleLeg};

/// Most legs an accumulator may have.
pub const MAX_LEGS: usize = 30;

pub(crate) fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}
