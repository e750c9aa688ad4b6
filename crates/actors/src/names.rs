//! A map keyed by module name, hashed with FNV-1a: names are short, so a
//! simple multiply-xor hash beats SipHash on the router's per-message lookup.
//! The keys are this node's own module names, not attacker-chosen input.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64-bit.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A `HashMap` keyed by names, with [`Fnv`].
pub(crate) type NameMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
