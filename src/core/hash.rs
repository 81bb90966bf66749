//! A fast, deterministic hasher for the index's lookup tables.
//!
//! The index looks up an event id and a stream id on every append. The standard library's
//! SipHash spends more time on those keys than the rest of the check; this hasher mixes
//! eight bytes per step with one 64 × 64 → 128-bit multiply, folded (the high half XORed
//! into the low), which spreads every input bit over the whole output — hashbrown takes
//! its bucket from the low bits and its tag from the top seven.
//!
//! It has fixed keys: the core draws no random numbers, and the tables using it are only
//! looked up, never iterated, so no order can leak. The price is that it is not
//! flood-resistant: someone who can choose many event or stream ids and knows these
//! constants could make the lookups slow (never wrong). Both kinds of id come from
//! authenticated writers of the store.

use std::hash::{BuildHasher, Hasher};

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
const FINISH: u64 = 0xb7e1_5162_8aed_2a6b;

/// Multiplies and folds the 128-bit product into 64 bits.
#[inline]
fn fold_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct FoldHasher {
    state: u64,
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            self.write_u64(word);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length in the top byte keeps "a" and "a\0" apart.
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = fold_multiply(self.state ^ value, MULTIPLIER);
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        self.write_u64(value as u64);
        self.write_u64((value >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_multiply(self.state, FINISH)
    }
}

/// Builds [`FoldHasher`]s; use as the `S` of a `HashMap`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FoldHash;

impl BuildHasher for FoldHash {
    type Hasher = FoldHasher;

    #[inline]
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: SEED }
    }
}

/// A `HashMap` keyed through [`FoldHash`]. Never iterate one where order could matter.
pub type FoldHashMap<K, V> = std::collections::HashMap<K, V, FoldHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{EventId, StreamId};

    fn hash<T: std::hash::Hash>(value: &T) -> u64 {
        FoldHash.hash_one(value)
    }

    const PINNED: u64 = 0x5781_148f_bfc1_6441;

    /// Same input, same hash — across hashers and runs (no per-process keys).
    #[test]
    fn hashing_is_deterministic() {
        let id = EventId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(hash(&id), hash(&id));
        assert_eq!(
            hash(&id),
            PINNED,
            "the hash of a fixed id changed: keys are not fixed"
        );
        let stream = StreamId::new("station-CP001").expect("valid");
        assert_eq!(hash(&stream), hash(&stream.clone()));
    }

    /// Sequential ids (what the benches and many clients produce) and ids that differ only
    /// in their high half must spread over buckets: the low 10 bits of 4,096 consecutive
    /// ids' hashes hit most of the 1,024 buckets, and so do the top 7 bits' 128 tags.
    #[test]
    fn close_keys_spread_over_low_and_high_bits() {
        for shift in [0u32, 64] {
            let hashes: Vec<u64> = (0..4096u128).map(|n| hash(&EventId(n << shift))).collect();
            let buckets: std::collections::BTreeSet<u64> =
                hashes.iter().map(|h| h & 1023).collect();
            let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            assert!(
                buckets.len() > 900,
                "shift {shift}: {} buckets",
                buckets.len()
            );
            assert_eq!(tags.len(), 128, "shift {shift}");
        }
    }

    /// Strings that differ only in length or a trailing zero byte hash apart.
    #[test]
    fn lengths_and_trailing_zeros_are_distinguished() {
        let a: &[u8] = b"a";
        let a0: &[u8] = b"a\0";
        let eight: &[u8] = b"abcdefgh";
        let nine: &[u8] = b"abcdefgh\0";
        let write = |bytes: &[u8]| {
            let mut hasher = FoldHash.build_hasher();
            hasher.write(bytes);
            hasher.finish()
        };
        assert_ne!(write(a), write(a0));
        assert_ne!(write(eight), write(nine));
        assert_ne!(write(b""), write(b"\0"));
    }
}
