//! An application message as the broker routes it: decoded once, shared by
//! reference between every subscriber and every core.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use robustmq_protocol::mqtt::{Properties, PropertyValues, Publish, QoS};

/// A published message. Immutable once built; cores share it as
/// [`SharedMessage`], so a fan-out never copies the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name (an alias already resolved).
    pub topic: ByteString,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The retain flag it was published with.
    pub retain: bool,
    /// When it expires (5.0 message expiry interval), on the broker clock.
    pub expires_at: Option<Instant>,
    /// Properties passed through to subscribers: payload format, content
    /// type, response topic, correlation data, user properties; most
    /// messages have none (no allocation).
    pub properties: Properties,
    /// The client that published it, for No Local.
    pub publisher: ByteString,
    /// The connection it came from, for back-pressure (none for wills,
    /// `$SYS` and retained replicas).
    pub origin: Option<Origin>,
}

/// Where a message entered the broker: a connection of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The core that read it.
    pub core: usize,
    /// The connection on that core.
    pub conn: u64,
}

/// A message shared between subscribers and cores.
pub type SharedMessage = Arc<Message>;

impl Message {
    /// Builds a message from a PUBLISH whose topic alias is resolved.
    pub fn from_publish(publish: Publish, publisher: ByteString, now: Instant) -> Self {
        let p = &publish.properties;
        let expires_at = p
            .message_expiry_interval
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        let passed = p.payload_format_indicator.is_some()
            || p.content_type.is_some()
            || p.response_topic.is_some()
            || p.correlation_data.is_some()
            || !p.user_properties.is_empty();
        let properties = if passed {
            let p = publish.properties.into_values();
            PropertyValues {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                ..PropertyValues::default()
            }
            .into()
        } else {
            Properties::default()
        };
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            expires_at,
            properties,
            publisher,
            origin: None,
        }
    }

    /// The pass-through properties (empty when it has none).
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The message expiry interval left at `now`, rounded up, if it has one.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}
