//! The connection-scoped part of a session: keep-alive, topic aliases, and
//! the limits the client announced in CONNECT.

use crate::hash::HashMap;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use robustmq_protocol::mqtt::{Packet, ProtocolVersion, Publish, ReasonCode};

/// What the broker learnt from CONNECT (and decided) for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParams {
    /// The protocol version.
    pub version: ProtocolVersion,
    /// The keep-alive granted, in seconds (0: none).
    pub keep_alive: u16,
    /// The client's receive maximum (65,535 when absent).
    pub client_receive_maximum: u16,
    /// The client's maximum packet size (unlimited when absent).
    pub client_maximum_packet_size: u32,
    /// The client's topic alias maximum (0 when absent).
    pub client_topic_alias_maximum: u16,
}

impl LinkParams {
    /// Parameters with the protocol's defaults for `version`.
    pub fn new(version: ProtocolVersion, keep_alive: u16) -> Self {
        LinkParams {
            version,
            keep_alive,
            client_receive_maximum: u16::MAX,
            client_maximum_packet_size: u32::MAX,
            client_topic_alias_maximum: 0,
        }
    }
}

/// The live connection of a session.
#[derive(Debug, Clone)]
pub struct Link {
    /// The protocol version.
    pub version: ProtocolVersion,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// When the client last sent a packet.
    pub last_activity: Instant,
    /// The client's receive maximum.
    pub client_receive_maximum: u16,
    max_packet_size: u32,
    alias_out_max: u16,
    /// Topic aliases, made on first use (most links never use one).
    aliases: Option<Box<Aliases>>,
}

/// The topic aliases of a link, both ways.
#[derive(Debug, Clone, Default)]
struct Aliases {
    outbound: HashMap<ByteString, u16>,
    inbound: HashMap<u16, ByteString>,
}

impl Link {
    pub(super) fn new(p: LinkParams, now: Instant) -> Self {
        Link {
            version: p.version,
            keep_alive: p.keep_alive,
            last_activity: now,
            client_receive_maximum: p.client_receive_maximum,
            max_packet_size: p.client_maximum_packet_size,
            alias_out_max: if p.version.is_v5() {
                p.client_topic_alias_maximum
            } else {
                0
            },
            aliases: None,
        }
    }

    /// Silence for more than 1.5 times the keep-alive (MQTT 3.1.2.10).
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        if self.keep_alive == 0 {
            return false;
        }
        let limit = Duration::from_millis(u64::from(self.keep_alive) * 1500);
        now.saturating_duration_since(self.last_activity) > limit
    }

    /// When the keep-alive runs out if nothing arrives.
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        (self.keep_alive > 0)
            .then(|| self.last_activity + Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// Whether a packet fits the client's maximum packet size.
    pub fn fits(&self, packet: &Packet) -> bool {
        packet.encoded_len(self.version) as u64 <= u64::from(self.max_packet_size)
    }

    /// Whether a PUBLISH fits even with a topic alias property added
    /// (3 bytes), so an alias is never assigned to a message then dropped.
    pub(super) fn fits_with_alias(
        &self,
        encoded_len: impl FnOnce(ProtocolVersion) -> usize,
    ) -> bool {
        // No limit from the client (every 3.x client, most 5.0 ones): a
        // packet the broker accepted always fits; skip measuring it.
        if self.max_packet_size == u32::MAX {
            return true;
        }
        let extra = if self.alias_out_max > 0 { 3 } else { 0 };
        (encoded_len(self.version) + extra) as u64 <= u64::from(self.max_packet_size)
    }

    /// Replaces an inbound topic alias by its topic, or records a new one.
    pub(super) fn resolve_inbound_alias(
        &mut self,
        publish: &mut Publish,
        max: u16,
    ) -> Result<(), ReasonCode> {
        // Read before taken: a write to absent properties would allocate.
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(());
        };
        publish.properties.topic_alias = None;
        if alias == 0 || alias > max {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        let aliases = self.aliases.get_or_insert_default();
        if publish.topic.is_empty() {
            publish.topic = aliases
                .inbound
                .get(&alias)
                .cloned()
                .ok_or(ReasonCode::PROTOCOL_ERROR)?;
        } else {
            aliases.inbound.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    /// Uses or assigns an outbound topic alias when the client allows them:
    /// a known topic goes out as an empty name and its alias, a new one as
    /// name and alias while aliases are left. Returns the alias and whether
    /// the topic name is sent.
    pub(super) fn outbound_alias(&mut self, topic: &ByteString) -> (Option<u16>, bool) {
        if self.alias_out_max == 0 {
            return (None, true);
        }
        let aliases = self.aliases.get_or_insert_default();
        if let Some(&alias) = aliases.outbound.get(topic) {
            return (Some(alias), false);
        }
        let next = aliases.outbound.len() + 1;
        if next > usize::from(self.alias_out_max) {
            return (None, true);
        }
        let alias = next as u16;
        aliases.outbound.insert(topic.clone(), alias);
        (Some(alias), true)
    }
}
