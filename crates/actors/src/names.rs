//! Names on hot paths: a map keyed by module name, hashed with FNV-1a
//! (names are short, so a simple multiply-xor hash beats SipHash on the
//! router's per-message lookup; the keys are this node's own module names,
//! not attacker-chosen input), and the few names a link sees most, each
//! kept as one shared `Arc<str>`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

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

/// The names a link meets most — the senders it hears from, the modules
/// asked through it — each as one shared `Arc<str>`: a name met recently
/// costs no allocation, only a reference count.
#[derive(Default)]
pub(crate) struct RecentNames {
    recent: Vec<Arc<str>>,
}

impl RecentNames {
    /// How many names are kept.
    const KEPT: usize = 16;

    /// `name`, shared: the one kept, or a new one, kept in the last place
    /// (the least used one's, if there are too many), so that a run of
    /// names met once does not push out those met often.
    pub(crate) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(at) = self.recent.iter().position(|kept| &**kept == name) {
            let kept = self.recent[at].clone();
            if at > 0 {
                self.recent.swap(at, at - 1); // the busiest drift to the front
            }
            return kept;
        }
        let new: Arc<str> = Arc::from(name);
        if self.recent.len() == Self::KEPT {
            self.recent.pop();
        }
        self.recent.push(new.clone());
        new
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::RecentNames;

    #[test]
    fn a_name_met_again_is_the_one_kept_and_one_off_names_do_not_push_it_out() {
        let mut names = RecentNames::default();
        let motor = names.intern("robot/motor");
        assert!(Arc::ptr_eq(&motor, &names.intern("robot/motor")));
        for i in 0..100 {
            assert_eq!(&*names.intern(&format!("robot/m{i}")), format!("robot/m{i}"));
        }
        // The one-off names took turns in the last place; the name met
        // before them is still the one kept.
        assert!(Arc::ptr_eq(&motor, &names.intern("robot/motor")));
        assert_eq!(names.recent.len(), RecentNames::KEPT);
    }
}
