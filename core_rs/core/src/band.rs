//! The price-jump band of the odds feed (docs/odds-pipeline.md, "Suspension"): a market update whose price
//! for some selection moved beyond `band_bp` against any price of that selection in the last `window_ms`
//! is a jump, and the market is suspended (PRICE_JUMP) until an update within band confirms the new level.
//!
//! Guarantees (the same as the pure-Python reference `inplay.domain.feed.band.JumpBandReference`, which the
//! property tests run beside this one):
//! * exact: a move is beyond the band when `|new/old − 1| > band_bp / 10_000`, cross-multiplied in `u128`;
//! * the window is the committed history (updates that were applied, at most `max_history`, none older than
//!   `window_ms` before the new update) plus the same market's earlier updates of the current chunk; after a
//!   jump inside the chunk only the updates from that jump on count (the band restarts at the new level);
//! * the history takes an update only when it is committed (its cache write was applied), in commit order;
//!   a jump clears it first, an update equal to the newest entry replaces it (its time refreshed);
//! * `forget` (a suspension of the market) drops its history and its pending updates: the next prices start a
//!   new band.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::fxhash::FxBuild;

/// A market's prices at one update: (selection key, decimal odds numerator, denominator), sorted by key, the
/// keys interned by the band (so equality is set equality, and equal keys are mostly one pointer, which
/// `Arc`'s equality checks before the text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PriceSet(Vec<(Arc<str>, u64, u64)>);

impl PriceSet {
    fn get(&self, key: &Arc<str>) -> Option<(u64, u64)> {
        // A market has a handful of selections: a linear scan beats a binary search here.
        self.0.iter().find(|(k, _, _)| k == key).map(|(_, n, d)| (*n, *d))
    }
}

/// `|new/old − 1| > band_bp / 10_000`, exactly: `|nn·od − on·nd| · 10_000 > band_bp · on · nd`.
pub fn moved_beyond(old: (u64, u64), new: (u64, u64), band_bp: u64) -> bool {
    let (on, od) = (old.0 as u128, old.1 as u128);
    let (nn, nd) = (new.0 as u128, new.1 as u128);
    let diff = (nn * od).abs_diff(on * nd);
    // band_bp · on · nd may leave u128 only for absurd bands: saturate (nothing is beyond an infinite band).
    let bound = (band_bp as u128).saturating_mul(on).saturating_mul(nd);
    diff.saturating_mul(10_000) > bound
}

fn beyond_any<'a>(prices: &PriceSet, window: impl Iterator<Item = &'a PriceSet> + Clone, band_bp: u64) -> bool {
    prices.0.iter().any(|(key, nn, nd)| {
        window.clone().any(|past| past.get(key).is_some_and(|old| moved_beyond(old, (*nn, *nd), band_bp)))
    })
}

struct Pending {
    market: Arc<str>,
    ts: i64,
    prices: Arc<PriceSet>,
    jumped: bool,
}

/// A market's committed prices in the window, oldest first, each with its provider time.
type Window = VecDeque<(i64, Arc<PriceSet>)>;

/// Price-jump state of every market a feed pipeline serves. Not thread-safe (one pipeline owns it).
pub struct JumpBand {
    band_bp: u64,
    window_ms: i64,
    max_history: usize,
    // Keyed by the book's market and selection ids (never provider text): FxHash (crate::fxhash).
    history: HashMap<Arc<str>, Window, FxBuild>,
    /// This chunk's updates in check order (a token is an index); per market, its tokens still in the window
    /// of the chunk (a `forget` drops the market's list, not the updates: a later commit still takes them).
    chunk: Vec<Pending>,
    by_market: HashMap<Arc<str>, Vec<usize>, FxBuild>,
    /// Selection keys seen (interned: one allocation per distinct key, not per update).
    keys: HashSet<Arc<str>, FxBuild>,
}

/// Distinct selection keys kept interned before the set is started again.
const MAX_KEYS: usize = 100_000;

impl JumpBand {
    pub fn new(band_bp: u64, window_ms: i64, max_history: usize) -> Self {
        JumpBand {
            band_bp,
            window_ms,
            max_history: max_history.max(1),
            history: HashMap::default(),
            chunk: Vec::new(),
            by_market: HashMap::default(),
            keys: HashSet::default(),
        }
    }

    /// Whether `prices` (selection, num, den) of `market` at provider time `ts` jumped, and the update's token
    /// for [`Self::commit`]. A selection named twice counts once (its last price).
    pub fn check(&mut self, market: &str, ts: i64, prices: &[(&str, u64, u64)]) -> (bool, usize) {
        let prices = self.price_set(prices);
        let floor = ts.saturating_sub(self.window_ms);
        let history = self.history.get(market);
        let committed = || history.into_iter().flatten().filter(move |(t, _)| *t >= floor).map(|(_, p)| &**p);
        let jumped = match self.by_market.get(market) {
            None => beyond_any(&prices, committed(), self.band_bp),
            Some(tokens) => {
                let earlier: Vec<&Pending> = tokens.iter().map(|&i| &self.chunk[i]).collect();
                // The updates since the chunk's last jump (all of them if none jumped), within the window;
                // the committed history counts only while none of them jumped.
                let restart = earlier.iter().rposition(|p| p.jumped);
                let since = &earlier[restart.unwrap_or(0)..];
                let in_chunk = since.iter().filter(|p| p.ts >= floor).map(|p| &*p.prices);
                if restart.is_some() {
                    beyond_any(&prices, in_chunk, self.band_bp)
                } else {
                    beyond_any(&prices, committed().chain(in_chunk), self.band_bp)
                }
            }
        };
        let (key, token) = (self.key(market), self.chunk.len());
        self.chunk.push(Pending { market: key.clone(), ts, prices: Arc::new(prices), jumped });
        self.by_market.entry(key).or_default().push(token);
        (jumped, token)
    }

    /// Commits the updates of `tokens` (of the current chunk), in that order, to their markets' history.
    /// An unknown token is refused whole (nothing committed).
    pub fn commit(&mut self, tokens: &[usize]) -> Result<(), usize> {
        if let Some(&bad) = tokens.iter().find(|&&t| t >= self.chunk.len()) {
            return Err(bad);
        }
        for &token in tokens {
            let p = &self.chunk[token];
            let history = self.history.entry(p.market.clone()).or_default();
            if p.jumped {
                history.clear();
            }
            let floor = p.ts.saturating_sub(self.window_ms);
            while history.front().is_some_and(|(t, _)| *t < floor) {
                history.pop_front();
            }
            if history.back().is_some_and(|(_, last)| **last == *p.prices) {
                history.pop_back(); // unchanged prices: one entry, its time refreshed
            }
            history.push_back((p.ts, p.prices.clone()));
            if history.len() > self.max_history {
                history.pop_front();
            }
        }
        Ok(())
    }

    /// The market was suspended: its next prices start a new band.
    pub fn forget(&mut self, market: &str) {
        self.history.remove(market);
        self.by_market.remove(market);
    }

    /// A new chunk: the previous chunk's tokens are void.
    pub fn clear_pending(&mut self) {
        self.chunk.clear();
        self.by_market.clear();
    }

    /// Markets with a committed history (for tests and metrics).
    pub fn markets(&self) -> usize {
        self.history.len()
    }

    fn price_set(&mut self, prices: &[(&str, u64, u64)]) -> PriceSet {
        if self.keys.len() > MAX_KEYS {
            // Selection keys of markets long gone. Entries still held keep their own Arc; keys compare by
            // text, so an entry's key still matches a new price's.
            self.keys.clear();
        }
        let mut out: Vec<(Arc<str>, u64, u64)> = Vec::with_capacity(prices.len());
        for &(key, num, den) in prices {
            let key = match self.keys.get(key) {
                Some(k) => k.clone(),
                None => {
                    let k: Arc<str> = Arc::from(key);
                    self.keys.insert(k.clone());
                    k
                }
            };
            match out.iter_mut().find(|(k, _, _)| *k == key) {
                Some(slot) => *slot = (key, num, den),
                None => out.push((key, num, den)),
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        PriceSet(out)
    }

    fn key(&self, market: &str) -> Arc<str> {
        match self.history.get_key_value(market) {
            Some((k, _)) => k.clone(),
            None => match self.by_market.get_key_value(market) {
                Some((k, _)) => k.clone(),
                None => Arc::from(market),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A band whose history of market "m" holds `prices` (each committed in its own chunk, 1 s from 1,000).
    fn committed(prices: &[(u64, u64)]) -> JumpBand {
        let mut band = JumpBand::new(1_500, 2_000, 8);
        for (i, &(num, den)) in prices.iter().enumerate() {
            band.clear_pending();
            let (_, token) = band.check("m", 1_000 + 500 * i as i64, &[("h", num, den)]);
            band.commit(&[token]).unwrap();
        }
        band.clear_pending();
        band
    }

    #[test]
    fn the_band_is_exact_at_its_edge() {
        // 2.00 → 2.30 is +15 %: not beyond a 15 % band; 2.31 is.
        assert!(!moved_beyond((2, 1), (23, 10), 1_500));
        assert!(moved_beyond((2, 1), (231, 100), 1_500));
        assert!(!moved_beyond((2, 1), (17, 10), 1_500));
        assert!(moved_beyond((2, 1), (169, 100), 1_500));
    }

    #[test]
    fn a_jump_is_judged_against_every_committed_price_of_the_window() {
        // Committed at 1,000 and 1,500. 2.45 is within 15 % of 2.20 but beyond it against 2.00, still in the
        // window.
        let mut band = committed(&[(2, 1), (22, 10)]);
        assert!(band.check("m", 2_000, &[("h", 245, 100)]).0);
        band.clear_pending();
        // Past the window of the 2.00 entry: only 2.20 counts.
        assert!(!band.check("m", 3_400, &[("h", 245, 100)]).0);
    }

    #[test]
    fn inside_a_chunk_the_band_restarts_at_a_jump() {
        let mut band = committed(&[(2, 1)]);
        assert!(band.check("m", 1_100, &[("h", 3, 1)]).0);
        // Within band of 3.00 (the jump), beyond it against the committed 2.00: the jump restarted the band.
        assert!(!band.check("m", 1_200, &[("h", 31, 10)]).0);
    }

    #[test]
    fn forget_starts_a_new_band_and_unknown_tokens_are_refused() {
        let mut band = committed(&[(2, 1)]);
        band.forget("m");
        assert_eq!(band.markets(), 0);
        assert!(!band.check("m", 1_100, &[("h", 5, 1)]).0);
        assert_eq!(band.commit(&[7]), Err(7));
    }
}
