//! What a session has for its connection, before encoding.
//!
//! Deliveries and acknowledgements are the bulk of the traffic; neither is
//! built as a `Packet` (472 bytes, a 400-byte `Properties` inside, copied
//! at every move). A delivery keeps the shared message and what differs
//! per subscriber, and is encoded from them straight into the connection's
//! buffer; an acknowledgement without properties is five bytes of state.
//! Other packets (CONNACK, SUBACK, ...) are boxed.

use bytes::BytesMut;
use bytestring::ByteString;
use robustmq_protocol::mqtt::{
    encode_reply, EncodeError, Packet, PacketType, ProtocolVersion, PubReply, Publish,
    PublishOverrides, PublishRef, QoS, ReasonCode,
};

use crate::message::SharedMessage;

/// One packet to send, in the order the session produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A message for the client.
    Publish(OutPublish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties.
    Reply {
        /// Which of the four.
        kind: PacketType,
        /// The packet identifier it answers.
        packet_id: u16,
        /// The reason code (5.0).
        reason: ReasonCode,
    },
    /// Any other packet.
    Packet(Box<Packet>),
}

/// A delivery of a shared message: what this copy of it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutPublish {
    /// The message.
    pub message: SharedMessage,
    /// Delivered QoS.
    pub qos: QoS,
    /// Retain flag as delivered.
    pub retain: bool,
    /// Sent before and not acknowledged.
    pub dup: bool,
    /// Packet identifier (0 for QoS 0).
    pub packet_id: u16,
    /// The seconds left of the message's expiry interval.
    pub expiry: Option<u32>,
    /// The identifiers of the subscriptions it matched.
    pub subscription_ids: Vec<u32>,
    /// The topic alias of this connection for the topic.
    pub topic_alias: Option<u16>,
    /// Whether the topic name is sent (not when a known alias stands for it).
    pub send_topic: bool,
}

impl OutPublish {
    /// The encoder's view of it.
    pub fn parts(&self) -> PublishRef<'_> {
        let m = &self.message;
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if self.send_topic { &m.topic } else { "" },
            packet_id: self.packet_id,
            properties: m.properties(),
            overrides: PublishOverrides {
                message_expiry_interval: self.expiry,
                subscription_identifiers: &self.subscription_ids,
                topic_alias: self.topic_alias,
            },
            payload: &m.payload,
        }
    }

    /// The same as a `Publish` (tests, logs).
    pub fn to_publish(&self) -> Publish {
        let m = &self.message;
        let mut properties = m.properties().clone();
        properties.message_expiry_interval = self.expiry;
        properties.subscription_identifiers = self.subscription_ids.clone();
        properties.topic_alias = self.topic_alias;
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if self.send_topic {
                m.topic.clone()
            } else {
                ByteString::new()
            },
            packet_id: self.packet_id,
            properties,
            payload: m.payload.clone(),
        }
    }
}

impl Outgoing {
    /// Appends the encoded packet to `buf`; on error `buf` is unchanged.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Outgoing::Publish(p) => p.parts().encode(version, buf),
            Outgoing::Reply {
                kind,
                packet_id,
                reason,
            } => {
                encode_reply(*kind, *packet_id, *reason, version, buf);
                Ok(())
            }
            Outgoing::Packet(p) => p.encode(version, buf),
        }
    }

    /// Its packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Outgoing::Publish(_) => PacketType::Publish,
            Outgoing::Reply { kind, .. } => *kind,
            Outgoing::Packet(p) => p.packet_type(),
        }
    }

    /// The QoS of a PUBLISH; `None` for other packets.
    pub fn publish_qos(&self) -> Option<QoS> {
        match self {
            Outgoing::Publish(p) => Some(p.qos),
            Outgoing::Packet(p) => match p.as_ref() {
                Packet::Publish(p) => Some(p.qos),
                _ => None,
            },
            Outgoing::Reply { .. } => None,
        }
    }

    /// The same as a `Packet` (tests, logs).
    pub fn to_packet(&self) -> Packet {
        match self {
            Outgoing::Publish(p) => Packet::Publish(p.to_publish()),
            Outgoing::Reply {
                kind,
                packet_id,
                reason,
            } => reply_packet(*kind, *packet_id, *reason),
            Outgoing::Packet(p) => (**p).clone(),
        }
    }
}

fn reply_packet(kind: PacketType, packet_id: u16, reason: ReasonCode) -> Packet {
    let r = PubReply {
        packet_id,
        reason_code: reason,
        properties: Default::default(),
    };
    match kind {
        PacketType::PubAck => Packet::PubAck(r),
        PacketType::PubRec => Packet::PubRec(r),
        PacketType::PubRel => Packet::PubRel(r),
        PacketType::PubComp => Packet::PubComp(r),
        other => unreachable!("{other:?} is not a reply"),
    }
}

impl From<Packet> for Outgoing {
    /// Acknowledgements without properties become [`Outgoing::Reply`].
    fn from(packet: Packet) -> Self {
        let kind = packet.packet_type();
        match packet {
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r)
                if r.properties.is_empty() =>
            {
                Outgoing::Reply {
                    kind,
                    packet_id: r.packet_id,
                    reason: r.reason_code,
                }
            }
            other => Outgoing::Packet(Box::new(other)),
        }
    }
}
