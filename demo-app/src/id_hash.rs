//! Hash sets and maps keyed by 64-bit integers that need no protection
//! against chosen keys: what a page's loads return (at most a page of ids,
//! so no client can make one long), and the verified tokens (keyed by a
//! hash that is already keyed at random). std's default, `SipHash` keyed at
//! random, costs about 140 instructions a key; one multiplication does here.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A set of ids.
pub type IdSet = HashSet<i64, BuildHasherDefault<IdHasher>>;

/// A map keyed by ids.
pub type IdMap<V> = HashMap<i64, V, BuildHasherDefault<IdHasher>>;

/// Multiplies each 64-bit word it is given into its state by 2^64 divided
/// by the golden ratio (Fibonacci hashing, as `FxHash` does): the table
/// takes its buckets from the low bits of the result, which differ for
/// keys that differ in their low bits, as consecutive ids do, and its tag
/// from the top seven, which the multiplication mixes from all of them.
#[derive(Default, Clone, Copy, Debug)]
pub struct IdHasher(u64);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(GOLDEN);
    }

    /// Anything else, a byte at a time; the keys of this module's types
    /// never come here.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_apart() {
        let ids: IdSet = (-500..500).chain([i64::MIN, i64::MAX]).collect();
        assert_eq!(ids.len(), 1002);
        assert!(ids.contains(&-500) && ids.contains(&499) && ids.contains(&i64::MIN) && !ids.contains(&500));
        let counts: IdMap<i64> = (1..=20).map(|id| (id, id * 2)).collect();
        assert_eq!(counts.get(&7), Some(&14));
        assert_eq!(counts.get(&21), None);
    }
}
