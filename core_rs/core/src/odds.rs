//! Exact odds and their conversions.

use std::fmt;
use std::str::FromStr;

use crate::error::{CoreError, Result};
use crate::gcd;

/// Largest decimal odds accepted.
pub const MAX_DECIMAL: u64 = 10_000;
/// Largest denominator after reduction (keeps products of 30 legs inside u128 after reduction).
pub const MAX_DENOMINATOR: u64 = 1_000_000;
/// Most fractional digits in a decimal odds string.
pub const MAX_DECIMAL_PLACES: usize = 6;
/// Most places [`Odds::decimal_display`] accepts.
pub const MAX_DISPLAY_PLACES: u32 = 18;

/// Decimal odds `num/den`, reduced, with `1 < num/den <= 10_000` and `den <= 1_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Odds {
    num: u64,
    den: u64,
}

impl Odds {
    /// Validates and reduces.
    pub fn new(num: u64, den: u64) -> Result<Self> {
        if den == 0 {
            return Err(CoreError::InvalidOdds("zero denominator".into()));
        }
        let g = gcd(num as u128, den as u128) as u64;
        let (num, den) = (num / g, den / g);
        if num <= den {
            return Err(CoreError::InvalidOdds(format!("{num}/{den} is not above 1.0")));
        }
        if den > MAX_DENOMINATOR {
            return Err(CoreError::InvalidOdds(format!("denominator {den} above {MAX_DENOMINATOR}")));
        }
        if num > MAX_DECIMAL.saturating_mul(den) {
            return Err(CoreError::InvalidOdds(format!("{num}/{den} above {MAX_DECIMAL}")));
        }
        Ok(Odds { num, den })
    }

    /// From signed inputs (as they come over FFI or the wire).
    pub fn from_i64(num: i64, den: i64) -> Result<Self> {
        if num <= 0 || den <= 0 {
            return Err(CoreError::InvalidOdds(format!("{num}/{den}: parts must be positive")));
        }
        Odds::new(num as u64, den as u64)
    }

    pub fn num(&self) -> u64 {
        self.num
    }

    pub fn den(&self) -> u64 {
        self.den
    }

    /// Parses "2.5", "2.50", "1.909" (at most 6 fractional digits; no sign, exponent or spaces).
    pub fn from_decimal_str(text: &str) -> Result<Self> {
        let bad = || CoreError::InvalidOdds(format!("{text:?} is not a decimal price"));
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int_part.is_empty() || int_part.len() > 6 || frac_part.len() > MAX_DECIMAL_PLACES {
            return Err(bad());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if text.ends_with('.') {
            return Err(bad());
        }
        let scale = 10u64.pow(frac_part.len() as u32);
        let int_value: u64 = int_part.parse().map_err(|_| bad())?;
        let frac_value: u64 = if frac_part.is_empty() { 0 } else { frac_part.parse().map_err(|_| bad())? };
        let num = int_value.checked_mul(scale).and_then(|v| v.checked_add(frac_value)).ok_or_else(bad)?;
        Odds::new(num, scale)
    }

    /// American odds: +150 → 5/2, −110 → 21/11. −99..=+99 are not American odds.
    pub fn from_american(american: i64) -> Result<Self> {
        if american >= 100 {
            Odds::new(american as u64 + 100, 100)
        } else if american <= -100 {
            let a = american.unsigned_abs();
            Odds::new(a + 100, a)
        } else {
            Err(CoreError::InvalidOdds(format!("American odds {american} must be >= +100 or <= -100")))
        }
    }

    /// Fractional odds n/d (profit per stake): 6/4 → decimal 5/2.
    pub fn from_fractional(n: i64, d: i64) -> Result<Self> {
        if n <= 0 || d <= 0 {
            return Err(CoreError::InvalidOdds(format!("fractional {n}/{d}: parts must be positive")));
        }
        let (n, d) = (n as u64, d as u64);
        let num = n.checked_add(d).ok_or(CoreError::Overflow)?;
        Odds::new(num, d)
    }

    /// Exact American odds as a fraction (sign on the numerator), reduced.
    pub fn to_american(&self) -> (i64, i64) {
        let (n, d) = (self.num as i128, self.den as i128);
        // profit p = (n - d)/d ; p >= 1 → +100p ; p < 1 → -100/p
        let (an, ad) = if n - d >= d { (100 * (n - d), d) } else { (-100 * d, n - d) };
        let g = gcd(an.unsigned_abs(), ad.unsigned_abs()) as i128;
        ((an / g) as i64, (ad / g) as i64)
    }

    /// American odds for display: rounded half away from zero.
    pub fn american_display(&self) -> i64 {
        let (n, d) = self.to_american();
        let (n, d) = (n as i128, d as i128);
        let q = (2 * n.abs() + d) / (2 * d);
        (if n < 0 { -q } else { q }) as i64
    }

    /// Fractional odds (profit per stake), reduced.
    pub fn to_fractional(&self) -> (u64, u64) {
        let n = self.num - self.den;
        let g = gcd(n as u128, self.den as u128) as u64;
        (n / g, self.den / g)
    }

    /// Decimal odds for display with `places` digits (at most [`MAX_DISPLAY_PLACES`]; more are clamped),
    /// rounded half up. Display only, never money.
    pub fn decimal_display(&self, places: u32) -> String {
        let places = places.min(MAX_DISPLAY_PLACES);
        let scale = 10u128.pow(places);
        let scaled = (2 * self.num as u128 * scale + self.den as u128) / (2 * self.den as u128);
        if places == 0 {
            return scaled.to_string();
        }
        format!("{}.{:0width$}", scaled / scale, scaled % scale, width = places as usize)
    }

    /// Implied probability in parts per million, floored: 1e6 · den / num.
    pub fn implied_probability_ppm(&self) -> u64 {
        ((1_000_000u128 * self.den as u128) / self.num as u128) as u64
    }
}

impl FromStr for Odds {
    type Err = CoreError;

    /// Same as [`Odds::from_decimal_str`].
    fn from_str(text: &str) -> Result<Self> {
        Odds::from_decimal_str(text)
    }
}

impl fmt::Display for Odds {
    /// Decimal odds with 2 places (display only), or as many as the formatter's precision asks for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places = f.precision().unwrap_or(2).min(MAX_DISPLAY_PLACES as usize) as u32;
        f.write_str(&self.decimal_display(places))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reduces() {
        assert_eq!(Odds::from_decimal_str("2.50").unwrap(), Odds::new(5, 2).unwrap());
        assert_eq!(Odds::from_decimal_str("2").unwrap(), Odds::new(2, 1).unwrap());
        assert_eq!(Odds::from_decimal_str("1.909").unwrap(), Odds::new(1909, 1000).unwrap());
        for bad in ["", "1.0", "0.5", "-2.0", "2.", ".5", "1e3", "2.1234567", " 2.0", "abc", "NaN", "1"] {
            assert!(Odds::from_decimal_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn american_and_fractional() {
        assert_eq!(Odds::from_american(150).unwrap(), Odds::new(5, 2).unwrap());
        assert_eq!(Odds::from_american(-110).unwrap(), Odds::new(21, 11).unwrap());
        assert_eq!(Odds::from_american(100).unwrap(), Odds::new(2, 1).unwrap());
        assert!(Odds::from_american(99).is_err());
        assert!(Odds::from_american(-50).is_err());
        assert_eq!(Odds::from_fractional(6, 4).unwrap(), Odds::new(5, 2).unwrap());
        assert_eq!(Odds::new(21, 11).unwrap().to_american(), (-110, 1));
        assert_eq!(Odds::new(5, 2).unwrap().to_american(), (150, 1));
        assert_eq!(Odds::new(5, 2).unwrap().to_fractional(), (3, 2));
        assert_eq!(Odds::new(5, 2).unwrap().american_display(), 150);
        assert_eq!(Odds::from_decimal_str("1.909").unwrap().american_display(), -110);
        assert_eq!(Odds::new(4, 3).unwrap().decimal_display(2), "1.33");
        assert_eq!(Odds::new(5, 2).unwrap().decimal_display(2), "2.50");
        assert_eq!(Odds::from_decimal_str("2.005").unwrap().decimal_display(2), "2.01");
        assert_eq!(Odds::new(2, 1).unwrap().implied_probability_ppm(), 500_000);
        assert_eq!(Odds::new(3, 1).unwrap().implied_probability_ppm(), 333_333);
        assert_eq!(Odds::new(21, 11).unwrap().decimal_display(0), "2");
        assert_eq!(Odds::new(21, 11).unwrap().decimal_display(6), "1.909091");
        assert_eq!(format!("{}", Odds::new(21, 11).unwrap()), "1.91");
        assert_eq!(format!("{:.4}", Odds::new(21, 11).unwrap()), "1.9091");
        assert_eq!("2.5".parse::<Odds>().unwrap(), Odds::new(5, 2).unwrap());
        assert_eq!(Odds::new(10_000_000_000, 1_000_000).unwrap().decimal_display(18), "10000.000000000000000000");
        // American display rounds half away from zero: 1 + 100/150.5 → -150.5 → -151; 2.005 → +100.5 → +101.
        assert_eq!(Odds::new(2505, 1505).unwrap().to_american(), (-301, 2));
        assert_eq!(Odds::new(2505, 1505).unwrap().american_display(), -151);
        assert_eq!(Odds::from_decimal_str("2.005").unwrap().american_display(), 101);
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(Odds::new(1, 1).is_err());
        assert!(Odds::new(1, 2).is_err());
        assert!(Odds::new(10_001, 1).is_err());
        assert!(Odds::new(2_000_003, 1_000_001).is_err());
        assert!(Odds::from_i64(-3, -2).is_err());
    }
}
