//! Where each kind of metadata lives in the state machine's key space, and
//! the records stored there.
//!
//! User KV keys are stored under `k/`, so no user key can touch internal
//! metadata. Records the placement center itself interprets (members, nodes,
//! shards, segments) are JSON; MQTT and connector metadata are stored as the
//! flatbuffers the client sent (validated on the way in).

use serde::{Deserialize, Serialize};

/// User KV pairs.
pub const KV: &[u8] = b"k/";
/// Raft members' addresses: `m/<id, 20 digits>`.
pub const MEMBERS: &[u8] = b"m/";
/// Registered broker and journal nodes: `n/<id, 20 digits>`.
pub const NODES: &[u8] = b"n/";
/// Journal shards: `s/<name>`.
pub const SHARDS: &[u8] = b"s/";
/// Journal segments: `g/<shard>/<seq, 10 digits>`.
pub const SEGMENTS: &[u8] = b"g/";

/// A key under a prefix.
pub fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

/// The key of a numbered record (member or node).
pub fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    key(prefix, format!("{id:020}").as_bytes())
}

/// The id of a numbered record's key.
pub fn id_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(prefix)?)
        .ok()?
        .parse()
        .ok()
}

/// The key of a shard.
pub fn shard_key(name: &str) -> Vec<u8> {
    key(SHARDS, name.as_bytes())
}

/// The prefix of a shard's segments.
pub fn segment_prefix(shard: &str) -> Vec<u8> {
    key(SEGMENTS, format!("{shard}/").as_bytes())
}

/// The key of one segment.
pub fn segment_key(shard: &str, seq: u32) -> Vec<u8> {
    key(SEGMENTS, format!("{shard}/{seq:010}").as_bytes())
}

/// The prefix of one kind of MQTT/connector metadata.
pub fn meta_prefix(kind: u8) -> Vec<u8> {
    format!("x{kind}/").into_bytes()
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its id.
    pub node_id: u64,
    /// Where it serves.
    pub addr: String,
    /// The roles it runs.
    pub roles: Vec<String>,
    /// When the leader registered it (ms since the epoch).
    pub registered_ms: u64,
    /// False once the controller saw its heartbeats stop.
    pub alive: bool,
}

/// A journal shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Its name.
    pub name: String,
    /// Replica count.
    pub replicas: u32,
    /// The segment being written.
    pub active_segment: u32,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
}

/// The lifecycle of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentState {
    /// Appended to.
    Write,
    /// The journal asked to seal it.
    SealRequested,
    /// Read-only.
    Sealed,
}

/// A journal segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Its shard.
    pub shard: String,
    /// Sequence number within the shard.
    pub seq: u32,
    /// Where it is in its lifecycle.
    pub status: SegmentState,
    /// First offset.
    pub start_offset: u64,
    /// Last offset, once sealing is requested.
    pub end_offset: u64,
}

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record; `None` if it does not parse.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_sort_numerically_and_parse_back() {
        assert!(id_key(NODES, 9) < id_key(NODES, 10));
        assert_eq!(id_of(NODES, &id_key(NODES, 42)), Some(42));
        assert_eq!(id_of(NODES, b"n/x"), None);
    }

    #[test]
    fn segment_keys_sort_by_seq_within_a_shard() {
        assert!(segment_key("a", 2) < segment_key("a", 10));
        assert!(segment_key("a", 0).starts_with(&segment_prefix("a")));
        assert!(!segment_key("ab", 0).starts_with(&segment_prefix("a")));
    }
}
