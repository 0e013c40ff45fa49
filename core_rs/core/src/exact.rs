//! `floor(stake × Π nᵢ/dᵢ)`, exactly, as `i64` minor units.
//!
//! Fast path: a `u128` fraction reduced by gcd after every multiplication (cross-reduced first). That
//! covers every realistic single and short accumulator. A long accumulator of 3-decimal prices does not fit
//! (1.909 = 1909/1000 is already reduced, so 13 legs need a 10³⁹ denominator), even though its *result* is
//! an ordinary amount; then the same product is recomputed with arbitrary-precision integers. Only a
//! result that does not fit an `i64` is `Overflow`.

use std::cmp::Ordering;

use crate::error::{CoreError, Result};
use crate::gcd;

/// One factor of the product: `num/den`, `den > 0` (not necessarily reduced).
pub(crate) type Factor = (u64, u64);

/// `floor(stake × Π factors)`. `stake` must already be validated (> 0).
pub(crate) fn floor_product<I>(stake: u64, factors: I) -> Result<i64>
where
    I: Iterator<Item = Factor> + Clone,
{
    match fast(stake, factors.clone()) {
        Some(result) => result,
        None => slow(stake, factors),
    }
}

/// `None` when an intermediate value leaves `u128`; otherwise the exact answer.
fn fast<I: Iterator<Item = Factor>>(stake: u64, factors: I) -> Option<Result<i64>> {
    let (mut num, mut den) = (1u128, 1u128);
    for (n, d) in factors {
        if n == 0 {
            return Some(Ok(0));
        }
        let (n, d) = (n as u128, d as u128);
        let g = gcd(n, d);
        let (n, d) = (n / g, d / g);
        let g1 = gcd(num, d);
        let g2 = gcd(n, den);
        num = (num / g1).checked_mul(n / g2)?;
        den = (den / g2).checked_mul(d / g1)?;
    }
    // floor(stake · num / den) = stake · q + floor(stake · r / den), with num = q · den + r.
    let (q, r) = (num / den, num % den);
    let whole = (stake as u128).checked_mul(q)?;
    let part = (stake as u128).checked_mul(r)? / den;
    let value = whole.checked_add(part)?;
    Some(i64::try_from(value).map_err(|_| CoreError::Overflow))
}

fn slow<I: Iterator<Item = Factor>>(stake: u64, factors: I) -> Result<i64> {
    let mut num = Big::from(stake);
    let mut den = Big::from(1);
    for (n, d) in factors {
        if n == 0 {
            return Ok(0);
        }
        num.mul(n);
        den.mul(d);
    }
    // The result fits an i64 iff num < den · 2^63.
    let mut limit = den.clone();
    limit.mul(1 << 63);
    if num.cmp(&limit) != Ordering::Less {
        return Err(CoreError::Overflow);
    }
    // Largest q < 2^63 with q · den <= num, one bit at a time.
    let mut q = 0u64;
    for bit in (0..63).rev() {
        let candidate = q | (1u64 << bit);
        let mut t = den.clone();
        t.mul(candidate);
        if t.cmp(&num) != Ordering::Greater {
            q = candidate;
        }
    }
    Ok(q as i64)
}

/// A non-negative integer as little-endian 64-bit limbs; only what `slow` needs.
#[derive(Debug, Clone)]
struct Big(Vec<u64>);

impl From<u64> for Big {
    fn from(v: u64) -> Self {
        Big(vec![v])
    }
}

impl Big {
    fn mul(&mut self, m: u64) {
        let mut carry = 0u128;
        for limb in &mut self.0 {
            let t = (*limb as u128) * (m as u128) + carry;
            *limb = t as u64;
            carry = t >> 64;
        }
        if carry != 0 {
            self.0.push(carry as u64);
        }
    }

    fn significant(&self) -> &[u64] {
        let mut len = self.0.len();
        while len > 0 && self.0[len - 1] == 0 {
            len -= 1;
        }
        &self.0[..len]
    }

    fn cmp(&self, other: &Big) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.iter().rev().cmp(b.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_accumulators_of_three_decimal_prices_do_not_overflow() {
        // 1.909^30 ≈ 2.6e8: the exact denominator is 1000^30, far beyond u128.
        let legs = vec![(1909u64, 1000u64); 30];
        assert!(fast(100, legs.iter().copied()).is_none());
        let value = floor_product(100, legs.iter().copied()).unwrap();
        assert_eq!(value, 26_556_928_958); // floor(100 · 1.909^30), checked with Python's Fraction
    }

    #[test]
    fn overflow_only_when_the_result_does_not_fit() {
        assert_eq!(floor_product(i64::MAX as u64, [(2u64, 1u64)].into_iter()), Err(CoreError::Overflow));
        assert_eq!(floor_product(i64::MAX as u64, [(1u64, 1u64)].into_iter()), Ok(i64::MAX));
        let huge = vec![(10_000u64, 1u64); 30];
        assert_eq!(floor_product(1, huge.iter().copied()), Err(CoreError::Overflow));
        assert_eq!(slow(1, huge.iter().copied()), Err(CoreError::Overflow));
        assert_eq!(slow(i64::MAX as u64, [(1u64, 1u64)].into_iter()), Ok(i64::MAX));
        assert_eq!(slow(5, [(0u64, 1u64)].into_iter()), Ok(0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whenever the fast path answers, the big-integer path gives the same answer.
        #[test]
        fn slow_path_agrees_with_fast_path(
            stake in 1u64..=i64::MAX as u64,
            factors in prop::collection::vec((1u64..2_000_000_000, 1u64..2_000_000), 0..8),
        ) {
            if let Some(expected) = fast(stake, factors.iter().copied()) {
                prop_assert_eq!(slow(stake, factors.iter().copied()), expected);
            }
        }
    }
}
