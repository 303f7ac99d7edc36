//! Encoding into the caller's buffer, with no intermediate allocation.
//!
//! [`Packet::encoded_len`] computes the exact size first; [`Packet::encode`]
//! reserves it once and writes. Fields a version does not have are left
//! out (properties in 3.x), and 5.0 reason codes are mapped to 3.x return
//! codes where 3.x has them.

use bytes::{BufMut, BytesMut};

use super::packet::*;
use super::primitives::{put_binary, put_string, put_varint, varint_len};
use super::properties::{Properties, PublishOverrides};
use super::reason::ReasonCode;
use super::version::{PacketType, ProtocolVersion, QoS};
use super::MAX_REMAINING_LENGTH;

/// Why a packet could not be encoded. Nothing is left in the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet is larger than a remaining length can express.
    #[error("packet body of {0} bytes exceeds the protocol maximum")]
    PacketTooLarge(usize),
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field of {0} bytes exceeds 65535 bytes")]
    FieldTooLong(usize),
    /// The packet does not exist in this version (AUTH in 3.x).
    #[error("{0:?} does not exist in {1:?}")]
    NotInVersion(PacketType, ProtocolVersion),
}

fn props_len(props: &Properties, v5: bool) -> usize {
    if v5 {
        props.encoded_len_with_prefix()
    } else {
        0
    }
}

/// The tail of PUBACK/PUBREC/PUBREL/PUBCOMP/DISCONNECT/AUTH in 5.0:
/// left out entirely for success with no properties, the reason code alone
/// when there are no properties.
fn reason_tail_len(reason: ReasonCode, props: &Properties, v5: bool) -> usize {
    if !v5 {
        return 0;
    }
    let props = props.encoded_len();
    match (reason == ReasonCode::SUCCESS, props) {
        (true, 0) => 0,
        (false, 0) => 1,
        _ => 1 + varint_len(props) + props,
    }
}

impl Packet {
    /// The remaining length of this packet for `version`.
    pub fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let v5 = version.is_v5();
        match self {
            Packet::Connect(c) => connect_len(c),
            Packet::ConnAck(c) => 2 + props_len(&c.properties, v5),
            Packet::Publish(p) => PublishRef::from_publish(p).remaining_len(version),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                2 + reason_tail_len(r.reason_code, &r.properties, v5)
            }
            Packet::Subscribe(s) => {
                2 + props_len(&s.properties, v5)
                    + s.filters.iter().map(|f| 3 + f.filter.len()).sum::<usize>()
            }
            Packet::SubAck(s) => 2 + props_len(&s.properties, v5) + s.reason_codes.len(),
            Packet::Unsubscribe(u) => {
                2 + props_len(&u.properties, v5)
                    + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
            }
            Packet::UnsubAck(u) if v5 => 2 + props_len(&u.properties, v5) + u.reason_codes.len(),
            Packet::UnsubAck(_) => 2,
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => reason_tail_len(d.reason_code, &d.properties, v5),
            Packet::Auth(a) => reason_tail_len(a.reason_code, &a.properties, v5),
        }
    }

    /// The size of the whole encoded packet, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + varint_len(remaining) + remaining
    }

    /// Appends the packet to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        let result = self.encode_unchecked(version, buf);
        if result.is_err() {
            buf.truncate(start);
        }
        result
    }

    fn encode_unchecked(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let v5 = version.is_v5();
        if matches!(self, Packet::Auth(_)) && !v5 {
            return Err(EncodeError::NotInVersion(PacketType::Auth, version));
        }
        let remaining = self.remaining_len(version);
        if remaining > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        buf.reserve(1 + varint_len(remaining) + remaining);
        buf.put_u8(self.first_byte());
        put_varint(buf, remaining);
        let body_start = buf.len();
        match self {
            Packet::Connect(c) => encode_connect(c, buf)?,
            Packet::ConnAck(c) => {
                buf.put_u8(u8::from(c.session_present));
                buf.put_u8(if v5 {
                    c.reason_code.0
                } else {
                    c.reason_code.to_v3_connack()
                });
                encode_props(&c.properties, v5, buf)?;
            }
            Packet::Publish(p) => PublishRef::from_publish(p).encode_body(v5, buf)?,
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                buf.put_u16(r.packet_id);
                encode_reason_tail(r.reason_code, &r.properties, v5, buf)?;
            }
            Packet::Subscribe(s) => {
                buf.put_u16(s.packet_id);
                encode_props(&s.properties, v5, buf)?;
                for f in &s.filters {
                    put_string(buf, &f.filter)?;
                    buf.put_u8(options_byte(&f.options, v5));
                }
            }
            Packet::SubAck(s) => {
                buf.put_u16(s.packet_id);
                encode_props(&s.properties, v5, buf)?;
                for code in &s.reason_codes {
                    buf.put_u8(if v5 { code.0 } else { code.to_v3_suback() });
                }
            }
            Packet::Unsubscribe(u) => {
                buf.put_u16(u.packet_id);
                encode_props(&u.properties, v5, buf)?;
                for f in &u.filters {
                    put_string(buf, f)?;
                }
            }
            Packet::UnsubAck(u) => {
                buf.put_u16(u.packet_id);
                if v5 {
                    encode_props(&u.properties, v5, buf)?;
                    buf.extend(u.reason_codes.iter().map(|c| c.0));
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => encode_reason_tail(d.reason_code, &d.properties, v5, buf)?,
            Packet::Auth(a) => encode_reason_tail(a.reason_code, &a.properties, v5, buf)?,
        }
        debug_assert_eq!(
            buf.len() - body_start,
            remaining,
            "{:?}",
            self.packet_type()
        );
        Ok(())
    }

    fn first_byte(&self) -> u8 {
        let packet_type = self.packet_type();
        let flags = match self {
            Packet::Publish(p) => {
                (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
            }
            _ => packet_type.fixed_flags(),
        };
        ((packet_type as u8) << 4) | flags
    }
}

fn encode_props(props: &Properties, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if v5 {
        props.encode(buf)?;
    }
    Ok(())
}

fn encode_reason_tail(
    reason: ReasonCode,
    props: &Properties,
    v5: bool,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    match reason_tail_len(reason, props, v5) {
        0 => {}
        1 => buf.put_u8(reason.0),
        _ => {
            buf.put_u8(reason.0);
            props.encode(buf)?;
        }
    }
    Ok(())
}

fn connect_len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let mut len = 2 + c.protocol.protocol_name().len() + 1 + 1 + 2;
    len += props_len(&c.properties, v5);
    len += 2 + c.client_id.len();
    if let Some(w) = &c.will {
        len += props_len(&w.properties, v5) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    len += c.username.as_ref().map_or(0, |u| 2 + u.len());
    len += c.password.as_ref().map_or(0, |p| 2 + p.len());
    len
}

fn encode_connect(c: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    put_string(buf, c.protocol.protocol_name())?;
    buf.put_u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    encode_props(&c.properties, v5, buf)?;
    put_string(buf, &c.client_id)?;
    if let Some(w) = &c.will {
        encode_props(&w.properties, v5, buf)?;
        put_string(buf, &w.topic)?;
        put_binary(buf, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_string(buf, u)?;
    }
    if let Some(p) = &c.password {
        put_binary(buf, p)?;
    }
    Ok(())
}

/// A PUBLISH encoded from borrowed parts. A broker sends one message to
/// many subscribers, each with its own flags, packet identifier, topic
/// alias, expiry and subscription identifiers; this encodes each copy
/// straight from the shared message, with no `Publish` built per copy.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// Re-delivery of an earlier attempt.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retained message.
    pub retain: bool,
    /// Topic name; empty in 5.0 when `overrides.topic_alias` stands for it.
    pub topic: &'a str,
    /// Packet identifier; non-zero for QoS 1 and 2, ignored for QoS 0.
    pub packet_id: u16,
    /// The message's properties (5.0), except the three in `overrides`.
    pub properties: &'a Properties,
    /// Expiry, subscription identifiers and topic alias of this copy.
    pub overrides: PublishOverrides<'a>,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> PublishRef<'a> {
    /// The parts of a `Publish`, its own properties included.
    pub fn from_publish(p: &'a Publish) -> Self {
        PublishRef {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            properties: &p.properties,
            overrides: PublishOverrides {
                message_expiry_interval: p.properties.message_expiry_interval,
                subscription_identifiers: &p.properties.subscription_identifiers,
                topic_alias: p.properties.topic_alias,
            },
            payload: &p.payload,
        }
    }

    /// The remaining length for `version`.
    pub fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let id = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        let props = if version.is_v5() {
            let len = self.properties.encoded_len_with(self.overrides);
            varint_len(len) + len
        } else {
            0
        };
        2 + self.topic.len() + id + props + self.payload.len()
    }

    /// The size of the whole encoded packet.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + varint_len(remaining) + remaining
    }

    /// Appends the packet to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        if remaining > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        let start = buf.len();
        buf.reserve(1 + varint_len(remaining) + remaining);
        buf.put_u8(self.first_byte());
        put_varint(buf, remaining);
        let result = self.encode_body(version.is_v5(), buf);
        if result.is_err() {
            buf.truncate(start);
        }
        debug_assert!(result.is_err() || buf.len() - start == self.encoded_len(version));
        result
    }

    fn first_byte(&self) -> u8 {
        let flags = (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain);
        ((PacketType::Publish as u8) << 4) | flags
    }

    fn encode_body(&self, v5: bool, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_string(buf, self.topic)?;
        if self.qos != QoS::AtMostOnce {
            debug_assert_ne!(self.packet_id, 0, "QoS > 0 needs a packet identifier");
            buf.put_u16(self.packet_id);
        }
        if v5 {
            self.properties.encode_with(self.overrides, buf)?;
        }
        buf.put_slice(self.payload);
        Ok(())
    }
}

/// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP without properties: the
/// same bytes as the `Packet` with empty properties, without building one.
pub fn encode_reply(
    kind: PacketType,
    packet_id: u16,
    reason: ReasonCode,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) {
    debug_assert!(matches!(
        kind,
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp
    ));
    let with_reason = version.is_v5() && reason != ReasonCode::SUCCESS;
    buf.reserve(5);
    buf.put_u8(((kind as u8) << 4) | kind.fixed_flags());
    buf.put_u8(2 + u8::from(with_reason));
    buf.put_u16(packet_id);
    if with_reason {
        buf.put_u8(reason.0);
    }
}

fn options_byte(o: &SubscriptionOptions, v5: bool) -> u8 {
    let mut byte = o.qos as u8;
    if v5 {
        byte |= u8::from(o.no_local) << 2;
        byte |= u8::from(o.retain_as_published) << 3;
        byte |= (o.retain_handling as u8) << 4;
    }
    byte
}
