//! The hash maps of the broker: std's maps with aHash, keyed per process
//! (client ids and topics come from clients, so the hasher must resist
//! flooding) and much cheaper than SipHash on the short keys of the hot
//! path.
//!
//! Two kinds. [`HashMap`] and [`HashSet`] carry aHash's `RandomState`
//! (32 bytes) in each map: for the per-core maps of the hot path. The
//! maps of every session use [`SessionMap`] and [`SessionSet`], whose
//! keys live once in the process: a session has two maps (its
//! subscriptions and its inbound QoS 2 ids), 64 of the 850-940 bytes an
//! idle connection cost; the shared keys cost a check of a `OnceLock`
//! per hash (1% more instructions per message when the hot maps used
//! them too, measured).

use std::hash::BuildHasher;
use std::sync::OnceLock;

/// aHash with the process's keys; a map holding it holds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessKeyed;

static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();

impl BuildHasher for ProcessKeyed {
    type Hasher = ahash::AHasher;

    #[inline]
    fn build_hasher(&self) -> ahash::AHasher {
        KEYS.get_or_init(ahash::RandomState::new).build_hasher()
    }
}

/// A `HashMap` with aHash, its keys in the map.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A `HashSet` with aHash, its keys in the set.
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;

/// A `HashMap` with aHash and the process's keys: one per session.
pub type SessionMap<K, V> = std::collections::HashMap<K, V, ProcessKeyed>;

/// A `HashSet` with aHash and the process's keys: one per session.
pub type SessionSet<K> = std::collections::HashSet<K, ProcessKeyed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_carry_no_hasher_state_and_hash_alike() {
        assert_eq!(std::mem::size_of::<ProcessKeyed>(), 0);
        assert_eq!(
            std::mem::size_of::<SessionMap<u64, u64>>(),
            std::mem::size_of::<hashbrown_like::Table>()
        );
        assert_eq!(
            std::mem::size_of::<SessionSet<u16>>(),
            std::mem::size_of::<hashbrown_like::Table>()
        );
        let (a, b) = (ProcessKeyed, ProcessKeyed);
        assert_eq!(a.hash_one("client-1"), b.hash_one("client-1"));
        assert_ne!(a.hash_one("client-1"), a.hash_one("client-2"));
        let mut m: SessionMap<String, u32> = SessionMap::default();
        m.insert("x".into(), 1);
        assert_eq!(m.get("x"), Some(&1));
    }

    /// What a std map is without its hasher: the table's four words.
    mod hashbrown_like {
        pub struct Table(#[allow(dead_code)] [usize; 4]);
    }
}
