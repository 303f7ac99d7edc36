//! The `[journal]` section of the server configuration.

use std::net::SocketAddr;

use serde::Deserialize;

/// Settings of the journal role. Every key has a default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The journal RPC listener (default `0.0.0.0:1778`).
    pub addr: SocketAddr,
    /// Executors (cores) running the journal; 0 means one per CPU.
    pub cores: usize,
    /// Pin journal executor `i` to CPU `i`.
    pub pin_cores: bool,
    /// How often retention looks for expired segments, in milliseconds.
    pub retention_check_ms: u64,
    /// Files of deleted segments kept for new segments to write over
    /// (0: deleted segments' files are removed).
    pub recycle_segments: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 1778)),
            cores: 0,
            pin_cores: false,
            retention_check_ms: 10_000,
            recycle_segments: crate::engine::DEFAULT_RECYCLE_SEGMENTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: JournalConfig = toml::from_str("").unwrap();
        assert_eq!(c, JournalConfig::default());
        assert_eq!(c.addr.port(), 1778);
        let c: JournalConfig = toml::from_str("addr = \"127.0.0.1:9\"\ncores = 2").unwrap();
        assert_eq!(c.cores, 2);
        assert!(toml::from_str::<JournalConfig>("adr = \"x\"").is_err());
    }
}
