//! The hash maps of the broker: std's maps with aHash, keyed per process
//! (client ids and topics come from clients, so the hasher must resist
//! flooding) and much cheaper than SipHash on the short keys of the hot
//! path.

/// A `HashMap` with aHash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A `HashSet` with aHash.
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
