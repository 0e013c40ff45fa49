//! FxHash, the multiply-rotate hasher of rustc: a few instructions per 8 bytes where std's SipHash-1-3
//! costs ~100 per short key. It is **not** resistant to hash flooding, so it keys only maps whose keys are
//! the book's own ids (market and selection ids out of the feed mapping), never text a client or a
//! provider chooses.

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher's state: one word.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.add(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap<K, V, FxBuild>`: a map keyed by the book's own ids.
pub type FxBuild = BuildHasherDefault<FxHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn distinct_short_ids_hash_apart_and_equal_ones_alike() {
        let build = FxBuild::default();
        let ids: Vec<String> = (0..10_000).map(|n| format!("m-{n}")).collect();
        let hashes: HashSet<u64> = ids.iter().map(|id| build.hash_one(id.as_str())).collect();
        assert_eq!(hashes.len(), ids.len());
        assert_eq!(build.hash_one("sel-1"), build.hash_one(String::from("sel-1").as_str()));
        // A tail shorter than a word is told apart from the same bytes with a zero after them.
        assert_ne!(build.hash_one(&b"ab"[..]), build.hash_one(&b"ab\0"[..]));
    }
}
