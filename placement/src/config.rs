//! The `[placement]` section of the server configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the placement role. Every key has a default; with none, the
/// member is node 1 alone on 127.0.0.1:1228.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// Where this member listens, for clients and for the other members.
    pub addr: SocketAddr,
    /// The initial members: node id -> address. Empty means this node alone
    /// at `addr`. A node that is not in a non-empty list starts empty and
    /// waits to be added with `member add`.
    pub peers: BTreeMap<String, SocketAddr>,
    /// Length of one Raft tick, in milliseconds.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomised up to
    /// twice this).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between two snapshots (log compaction).
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub log_keep_entries: u64,
    /// Default deadline of a call, in milliseconds.
    pub request_timeout_ms: u64,
    /// A registered node with no heartbeat for this long is marked dead.
    pub node_timeout_ms: u64,
    /// Allows the `FaultReq` test hook (isolating this member).
    pub fault_injection: bool,
    /// Threads of the control-plane runtime serving RPC and the transport
    /// (the Raft loop has its own thread).
    pub rpc_threads: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1228)),
            peers: BTreeMap::new(),
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries: 100_000,
            log_keep_entries: 1_000,
            request_timeout_ms: 5_000,
            node_timeout_ms: 10_000,
            fault_injection: false,
            rpc_threads: 2,
        }
    }
}

impl PlacementConfig {
    /// The initial members, parsed; this node alone when `peers` is empty.
    pub fn initial_members(&self, node_id: u64) -> Result<BTreeMap<u64, SocketAddr>, String> {
        if self.peers.is_empty() {
            return Ok(BTreeMap::from([(node_id, self.addr)]));
        }
        let mut members = BTreeMap::new();
        for (id, addr) in &self.peers {
            let id: u64 = id
                .parse()
                .map_err(|_| format!("`placement.peers`: `{id}` is not a node id"))?;
            if id == 0 {
                return Err("`placement.peers`: node id 0 is reserved".into());
            }
            members.insert(id, *addr);
        }
        Ok(members)
    }

    /// One election timeout (the shortest one).
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.tick_ms * self.election_ticks as u64)
    }

    /// Checks the values that parse but make no sense.
    pub fn validate(&self, node_id: u64) -> Result<(), String> {
        if node_id == 0 {
            return Err("`node_id` 0 is reserved".into());
        }
        if self.rpc_threads == 0 {
            return Err("`placement.rpc_threads` must be positive".into());
        }
        if self.tick_ms == 0 {
            return Err("`placement.tick_ms` must be positive".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(
                "`placement.election_ticks` must exceed `placement.heartbeat_ticks` (> 0)".into(),
            );
        }
        self.initial_members(node_id).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_one_member_on_1228() {
        let c = PlacementConfig::default();
        let m = c.initial_members(1).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[&1], "127.0.0.1:1228".parse().unwrap());
    }

    #[test]
    fn peers_parse_from_toml() {
        let c: PlacementConfig = toml::from_str(
            "addr = \"127.0.0.1:2228\"\npeers = { 1 = \"127.0.0.1:1228\", 2 = \"127.0.0.1:2228\" }\n",
        )
        .unwrap();
        let m = c.initial_members(2).unwrap();
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(c.validate(2).is_ok());
    }

    #[test]
    fn bad_peer_id_is_refused() {
        let c: PlacementConfig = toml::from_str("peers = { x = \"127.0.0.1:1\" }\n").unwrap();
        assert!(c.validate(1).unwrap_err().contains("x"));
    }
}
