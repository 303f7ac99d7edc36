//! Server configuration: one TOML file, with command-line overrides.
//!
//! Every key has a default, so a server with no file at all runs every role
//! on one node. An unknown key or a value of the wrong type is an error that
//! names the key, its line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[cfg(feature = "journal")]
use robustmq_journal::config::JournalConfig;
#[cfg(feature = "placement")]
use robustmq_placement::config::PlacementConfig;
use serde::Deserialize;

/// The roles one `robust-server` process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The MQTT broker.
    Mqtt,
    /// The storage engine.
    Journal,
    /// The metadata service.
    Placement,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// This node's id in the cluster.
    pub node_id: u64,
    /// The roles this process runs.
    pub roles: Vec<Role>,
    /// Where every role keeps its files.
    pub data_dir: PathBuf,
    /// The `[mqtt]` section.
    pub mqtt: MqttConfig,
    /// The `[journal]` section.
    #[cfg(feature = "journal")]
    pub journal: JournalConfig,
    /// The `[placement]` section.
    #[cfg(feature = "placement")]
    pub placement: PlacementConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            roles: vec![Role::Mqtt, Role::Journal, Role::Placement],
            data_dir: PathBuf::from("./data"),
            mqtt: MqttConfig::default(),
            #[cfg(feature = "journal")]
            journal: JournalConfig::default(),
            #[cfg(feature = "placement")]
            placement: PlacementConfig::default(),
        }
    }
}

/// The `[mqtt]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The MQTT TCP listener.
    pub addr: SocketAddr,
    /// How many cores run the broker; 0 means every core of the machine.
    pub cores: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
            cores: 0,
        }
    }
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key is unknown or of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("invalid config: `{key}`: {problem}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ServerConfig {
    /// Parses a configuration from TOML text; `path` is only used in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks the values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid {
                key: "roles",
                problem: "at least one role is needed".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = ServerConfig::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(c, ServerConfig::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ServerConfig::from_toml("[mqtt]\nadress = \"1.2.3.4:1\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = ServerConfig::from_toml("node_id = \"one\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_id"), "{err}");
    }

    #[test]
    fn empty_roles_are_refused() {
        let err = ServerConfig::from_toml("roles = []\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles"), "{err}");
    }
}
