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

use crate::acl::{Acl, AclRule, Permission};
use crate::session::{DropPolicy, SessionConfig};

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

/// How a shared subscription group picks the member for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member while it stays in the group.
    Sticky,
    /// A member chosen by a hash of the publisher's client id.
    HashClientId,
}

/// The `[mqtt]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The MQTT TCP listener.
    pub addr: SocketAddr,
    /// How many cores run the broker; 0 means every core of the machine.
    pub cores: usize,
    /// The longest keep-alive granted, in seconds; a longer (or zero) one
    /// from a 5.0 client is answered with this as Server Keep Alive.
    pub max_keepalive: u16,
    /// The most client connections at once.
    pub max_connections: usize,
    /// The largest packet accepted, in bytes, fixed header included.
    pub max_packet_size: u32,
    /// The most QoS 1/2 messages in flight to one client.
    pub max_inflight: u16,
    /// The most messages queued for one session behind its inflight window.
    pub max_queued_messages: usize,
    /// What a full session queue drops: `drop_oldest` or `drop_newest`.
    pub queue_drop_policy: DropPolicy,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// The most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// The most subscriptions one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// The receive maximum announced to clients (QoS 2 messages a client
    /// may have unreleased).
    pub receive_maximum: u16,
    /// The topic alias maximum announced to clients.
    pub topic_alias_maximum: u16,
    /// The longest session expiry granted, in seconds.
    pub max_session_expiry_secs: u32,
    /// The most retained topics.
    pub max_retained_messages: usize,
    /// Bytes waiting to be written to one client before QoS 0 messages to
    /// it are dropped (QoS 1/2 wait in the session queue instead).
    pub max_outbound_buffer_bytes: usize,
    /// Back-pressure: bytes waiting to be written to a subscriber beyond
    /// which the publishers sending to it are held (their sockets are not
    /// read) until it drains to a quarter of this; a queue holding a
    /// quarter of `max_queued_messages` holds them too. 0 turns it off.
    pub backpressure_bytes: usize,
    /// Milliseconds a subscriber may stay congested before it counts as
    /// slow: it then holds nobody until it has drained, and its messages
    /// meet the buffer and queue limits instead.
    pub slow_subscriber_ms: u64,
    /// Whether a QoS 0 publisher whose messages all go to subscribers of
    /// one other core moves there (its session and socket), saving them
    /// the hop between cores.
    pub move_publishers: bool,
    /// How shared subscription groups pick a member.
    pub shared_subscription_strategy: SharedStrategy,
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub sys_interval_secs: u64,
    /// What happens when no ACL rule matches.
    pub acl_no_match: Permission,
    /// ACL rules, first match wins.
    pub acl: Vec<AclRule>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
            cores: 0,
            max_keepalive: 300,
            max_connections: 1_000_000,
            max_packet_size: 1024 * 1024,
            max_inflight: 256,
            max_queued_messages: 1000,
            queue_drop_policy: DropPolicy::DropOldest,
            queue_qos0_offline: false,
            max_topic_levels: 128,
            max_subscriptions_per_client: 100,
            connect_timeout_secs: 10,
            receive_maximum: 32,
            topic_alias_maximum: 64,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_retained_messages: 1_000_000,
            max_outbound_buffer_bytes: 4 * 1024 * 1024,
            backpressure_bytes: 256 * 1024,
            slow_subscriber_ms: 2000,
            move_publishers: true,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            sys_interval_secs: 5,
            acl_no_match: Permission::Allow,
            acl: Vec::new(),
        }
    }
}

impl MqttConfig {
    /// The limits of one session.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_inflight: self.max_inflight,
            max_queued: self.max_queued_messages,
            drop_policy: self.queue_drop_policy,
            receive_maximum: self.receive_maximum,
            topic_alias_maximum: self.topic_alias_maximum,
            queue_qos0_offline: self.queue_qos0_offline,
        }
    }

    /// The compiled ACL.
    pub fn acl(&self) -> Result<Acl, ConfigError> {
        Acl::new(&self.acl, self.acl_no_match)
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("mqtt.max_inflight", u64::from(self.max_inflight)),
            ("mqtt.max_packet_size", u64::from(self.max_packet_size)),
            ("mqtt.max_connections", self.max_connections as u64),
            ("mqtt.max_topic_levels", self.max_topic_levels as u64),
            ("mqtt.receive_maximum", u64::from(self.receive_maximum)),
            ("mqtt.connect_timeout_secs", self.connect_timeout_secs),
            ("mqtt.slow_subscriber_ms", self.slow_subscriber_ms),
            (
                "mqtt.max_outbound_buffer_bytes",
                self.max_outbound_buffer_bytes as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key: key.to_string(),
                    problem: "must be greater than 0".into(),
                });
            }
        }
        if self.max_packet_size > 268_435_460 {
            return Err(ConfigError::Invalid {
                key: "mqtt.max_packet_size".into(),
                problem: "MQTT packets cannot exceed 268435460 bytes".into(),
            });
        }
        self.acl().map(|_| ())
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
        key: String,
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
                key: "roles".into(),
                problem: "at least one role is needed".into(),
            });
        }
        self.mqtt.validate()
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
    fn the_documented_acl_example_parses() {
        let text = r#"
            [mqtt]
            max_keepalive = 60
            [[mqtt.acl]]
            permission = "deny"
            action = "subscribe"
            topic = "test/nosubscribe"
        "#;
        let c = ServerConfig::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.mqtt.max_keepalive, 60);
        assert_eq!(c.mqtt.acl.len(), 1);
    }

    #[test]
    fn zero_limits_and_bad_acl_rules_are_named() {
        let err = ServerConfig::from_toml("[mqtt]\nmax_inflight = 0\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.max_inflight"), "{err}");
        let text = "[[mqtt.acl]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"a/#/b\"\n";
        let err = ServerConfig::from_toml(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.acl[0].topic"), "{err}");
        let text = "[[mqtt.acl]]\npermission = \"maybe\"\naction = \"all\"\ntopic = \"a\"\n";
        let err = ServerConfig::from_toml(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("maybe"), "{err}");
    }

    #[test]
    #[cfg(all(feature = "journal", feature = "placement"))]
    fn the_deploy_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/robustmq.toml");
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.mqtt.max_keepalive, 60);
        assert_eq!(c.mqtt.acl.len(), 2);
    }

    #[test]
    fn empty_roles_are_refused() {
        let err = ServerConfig::from_toml("roles = []\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("roles"), "{err}");
    }
}
