//! Streaming decoding: fixed header first, then one whole packet at a time.

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::*;
use super::primitives::Reader;
use super::properties::{Properties, PropertyContext};
use super::reason::ReasonCode;
use super::version::{PacketType, ProtocolVersion, QoS};
use crate::topic;

/// The fixed header of a packet: its first byte and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (high nibble) and flags (low nibble).
    pub first_byte: u8,
    /// The remaining length: variable header plus payload.
    pub remaining_length: usize,
    /// The size of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

impl FixedHeader {
    /// The size of the whole packet.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }
}

/// Reads a fixed header from the start of `buf`. `Ok(None)` means more
/// bytes are needed. A packet larger than `max_packet_size` (counted whole,
/// as 5.0 counts it) is refused here, before its body is buffered.
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    if first_byte >> 4 == 0 {
        return Err(DecodeError::ReservedPacketType(0));
    }
    let mut remaining_length = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_length |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation: more bytes than the
            // value needs [MQTT-1.5.5-1].
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedRemainingLength);
            }
            let header = FixedHeader {
                first_byte,
                remaining_length,
                header_len: 2 + i,
            };
            if header.packet_len() > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size: header.packet_len(),
                    max: max_packet_size,
                });
            }
            return Ok(Some(header));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Decodes the packets of one connection from a byte stream.
///
/// A server-side decoder starts with no version: the first packet must be
/// CONNECT, and its protocol level decides how every later packet is read.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
}

impl Decoder {
    /// A decoder for the server side of a connection: expects CONNECT first.
    pub fn new(max_packet_size: usize) -> Self {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// A decoder for a connection whose version is known (a client's).
    pub fn with_version(version: ProtocolVersion, max_packet_size: usize) -> Self {
        Decoder {
            version: Some(version),
            max_packet_size,
        }
    }

    /// The version learnt from CONNECT, or given.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The largest packet accepted, fixed header included.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Changes the largest packet accepted.
    pub fn set_max_packet_size(&mut self, max: usize) {
        self.max_packet_size = max;
    }

    /// Decodes the next packet from the front of `buf`, removing its bytes.
    /// `Ok(None)` means incomplete: `buf` holds less than one packet and is
    /// left as it is. After an error the connection must be closed.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        if let Some(ack) = self.short_puback(buf) {
            return ack.map(Some);
        }
        let Some(header) = parse_fixed_header(buf, self.max_packet_size)? else {
            return Ok(None);
        };
        if buf.len() < header.packet_len() {
            return Ok(None);
        }
        // Skipping the fixed header in place, rather than splitting the
        // whole frame and then the body off it, spares a reference count
        // increment and decrement per packet.
        buf.advance(header.header_len);
        let body = buf.split_to(header.remaining_length).freeze();
        if self.version.is_some() {
            // Returned as built: inspecting the packet first would cost a
            // copy of it (hundreds of bytes, a measured fifth of the
            // decoding time of a small PUBLISH).
            return decode_packet(header.first_byte, body, self.version);
        }
        let packet = decode_packet(header.first_byte, body, None)?;
        if let Some(Packet::Connect(connect)) = &packet {
            self.version = Some(connect.protocol);
        }
        Ok(packet)
    }
}

impl Decoder {
    /// A PUBACK with only a packet identifier (`40 02 id id`: every 3.x
    /// PUBACK, and a 5.0 one for a success), read in place: a subscriber
    /// sends one per QoS 1 message, and the general path's split of the
    /// buffer, reference count and dispatch were a tenth of its decoding.
    /// `None`: not such a packet, or not whole yet (the general path
    /// decides).
    #[inline]
    fn short_puback(&self, buf: &mut BytesMut) -> Option<Result<Packet, DecodeError>> {
        match buf.get(..4) {
            Some(&[0x40, 0x02, hi, lo]) if self.version.is_some() => {
                buf.advance(4);
                Some(match u16::from_be_bytes([hi, lo]) {
                    0 => Err(DecodeError::ZeroPacketId(PacketType::PubAck)),
                    packet_id => Ok(Packet::PubAck(PubReply {
                        packet_id,
                        reason_code: ReasonCode::SUCCESS,
                        properties: Properties::default(),
                    })),
                })
            }
            _ => None,
        }
    }
}

/// Decodes one packet's body, given its first byte. With `version` `None`
/// only CONNECT is accepted. Never `Ok(None)`: the `Option` is the one
/// [`Decoder::decode`] returns, so that the packet is built in place.
#[inline]
pub fn decode_packet(
    first_byte: u8,
    body: Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Option<Packet>, DecodeError> {
    let nibble = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let packet_type = PacketType::from_nibble(nibble).ok_or(DecodeError::ReservedPacketType(0))?;
    if packet_type == PacketType::Auth && version.is_some_and(|v| !v.is_v5()) {
        return Err(DecodeError::ReservedPacketType(nibble));
    }
    if packet_type != PacketType::Publish && flags != packet_type.fixed_flags() {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    let Some(version) = version else {
        if packet_type != PacketType::Connect {
            return Err(DecodeError::ExpectedConnect(packet_type));
        }
        return decode_connect(Reader::new(body)).map(|c| Some(Packet::Connect(Box::new(c))));
    };
    let v5 = version.is_v5();
    let mut r = Reader::new(body);
    let packet = match packet_type {
        PacketType::Connect => {
            return decode_connect(r).map(|c| Some(Packet::Connect(Box::new(c))))
        }
        PacketType::ConnAck => Packet::ConnAck(decode_connack(&mut r, v5)?),
        PacketType::Publish => return decode_publish(flags, r, v5),
        PacketType::PubAck => Packet::PubAck(decode_pub_reply(&mut r, packet_type, v5)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_reply(&mut r, packet_type, v5)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_reply(&mut r, packet_type, v5)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_reply(&mut r, packet_type, v5)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) = decode_reason_and_properties(&mut r, packet_type, v5)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            let (reason_code, properties) = decode_reason_and_properties(&mut r, packet_type, v5)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    };
    finish(&r)?;
    Ok(Some(packet))
}

fn finish(r: &Reader) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

fn packet_id(r: &mut Reader, packet_type: PacketType) -> Result<u16, DecodeError> {
    match r.u16("packet identifier")? {
        0 => Err(DecodeError::ZeroPacketId(packet_type)),
        id => Ok(id),
    }
}

#[inline]
fn properties(
    r: &mut Reader,
    packet_type: PacketType,
    v5: bool,
) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::decode(r, PropertyContext::Packet(packet_type))
    } else {
        Ok(Properties::default())
    }
}

fn reason(code: u8, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    let reason = ReasonCode(code);
    if reason.is_valid_for(packet) {
        Ok(reason)
    } else {
        Err(DecodeError::InvalidReasonCode { code, packet })
    }
}

fn check_payload_format(props: &Properties, payload: &Bytes) -> Result<(), DecodeError> {
    if props.payload_format_indicator == Some(1) && std::str::from_utf8(payload).is_err() {
        return Err(DecodeError::PayloadFormatInvalid);
    }
    Ok(())
}

fn decode_connect(mut r: Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = ProtocolVersion::from_level(level);
    match (&name[..], protocol) {
        (b"MQTT" | b"MQIsdp", None) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        (b"MQIsdp", Some(ProtocolVersion::V3_1)) => {}
        (b"MQTT", Some(ProtocolVersion::V3_1_1 | ProtocolVersion::V5)) => {}
        (b"MQTT" | b"MQIsdp", Some(_)) => return Err(DecodeError::ProtocolNameMismatch(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    }
    let protocol = protocol.expect("matched above");
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let has_will = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::InvalidQoS)?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::InvalidWillFlags);
    }
    if !protocol.is_v5() && has_password && !has_username {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = properties(&mut r, PacketType::Connect, protocol.is_v5())?;
    let client_id = r.string("client identifier")?;
    let will = if has_will {
        let properties = if protocol.is_v5() {
            Properties::decode(&mut r, PropertyContext::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string("will topic")?;
        topic::validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        let payload = r.binary("will payload")?;
        check_payload_format(&properties, &payload)?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary("password")?)
    } else {
        None
    };
    finish(&r)?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = r.u8("connect reason code")?;
    let reason_code = if v5 {
        reason(code, PacketType::ConnAck)?
    } else {
        ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            code,
            packet: PacketType::ConnAck,
        })?
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties: properties(r, PacketType::ConnAck, v5)?,
    })
}

/// Returns what [`Decoder::decode`] returns, so that the packet is built
/// where it is returned rather than copied there.
#[inline]
fn decode_publish(flags: u8, mut r: Reader, v5: bool) -> Result<Option<Packet>, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::InvalidFlags {
            packet_type: PacketType::Publish,
            flags,
        });
    }
    let topic = r.string("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(&mut r, PacketType::Publish)?
    };
    let retain = flags & 0x01 != 0;
    if !v5 {
        // No properties in 3.x: building the packet in one expression lets
        // the empty properties be written in place rather than copied in.
        topic::validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        return Ok(Some(Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties: Properties::default(),
            payload: r.rest(),
        })));
    }
    let properties = Properties::decode(&mut r, PropertyContext::Packet(PacketType::Publish))?;
    // 5.0 lets a topic alias stand for an empty topic name.
    if !(topic.is_empty() && properties.topic_alias.is_some()) {
        topic::validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
    }
    let payload = r.rest();
    check_payload_format(&properties, &payload)?;
    Ok(Some(Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })))
}

fn decode_pub_reply(
    r: &mut Reader,
    packet_type: PacketType,
    v5: bool,
) -> Result<PubReply, DecodeError> {
    let packet_id = packet_id(r, packet_type)?;
    let (reason_code, properties) = decode_reason_and_properties(r, packet_type, v5)?;
    Ok(PubReply {
        packet_id,
        reason_code,
        properties,
    })
}

/// The optional reason code and properties that end PUBACK, PUBREC,
/// PUBREL, PUBCOMP, DISCONNECT and AUTH in 5.0: both may be left out.
fn decode_reason_and_properties(
    r: &mut Reader,
    packet_type: PacketType,
    v5: bool,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let reason_code = reason(r.u8("reason code")?, packet_type)?;
    if r.remaining() == 0 {
        return Ok((reason_code, Properties::default()));
    }
    let properties = Properties::decode(r, PropertyContext::Packet(packet_type))?;
    Ok((reason_code, properties))
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Subscribe)?;
    let properties = properties(r, PacketType::Subscribe, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let options = decode_subscription_options(r.u8("subscription options")?, v5)?;
        let shared =
            topic::validate_subscription(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        if shared && options.no_local {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilter(PacketType::Subscribe));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::InvalidSubscriptionOptions);
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::InvalidQoS)?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::SubAck)?;
    let properties = properties(r, PacketType::SubAck, v5)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("reason code")?;
        let valid = if v5 {
            ReasonCode(code).is_valid_for(PacketType::SubAck)
        } else {
            matches!(code, 0 | 1 | 2 | 0x80)
        };
        if !valid {
            return Err(DecodeError::InvalidReasonCode {
                code,
                packet: PacketType::SubAck,
            });
        }
        reason_codes.push(ReasonCode(code));
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::NoReasonCode(PacketType::SubAck));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Unsubscribe)?;
    let properties = properties(r, PacketType::Unsubscribe, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        topic::validate_subscription(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilter(PacketType::Unsubscribe));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::UnsubAck)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = Properties::decode(r, PropertyContext::Packet(PacketType::UnsubAck))?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        reason_codes.push(reason(r.u8("reason code")?, PacketType::UnsubAck)?);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::NoReasonCode(PacketType::UnsubAck));
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}
