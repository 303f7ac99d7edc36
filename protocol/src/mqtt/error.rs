//! Decoding errors, each mapped to the 5.0 reason code the receiver sends
//! before closing the connection.

use super::properties::PropertyId;
use super::reason::ReasonCode;
use super::version::PacketType;
use crate::topic::TopicError;

/// Why a packet could not be decoded. Every variant names the problem; the
/// reason code to answer with is [`DecodeError::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length runs past four bytes, or takes more bytes
    /// than its value needs.
    #[error("malformed remaining length: more than 4 bytes, or more than its value needs")]
    MalformedRemainingLength,
    /// A variable byte integer inside the packet runs past four bytes, or
    /// takes more bytes than its value needs.
    #[error("malformed variable byte integer: more than 4 bytes, or more than its value needs")]
    MalformedVariableInteger,
    /// The packet is larger than the receiver accepts.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The whole packet's size, fixed header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Packet type 0, or AUTH (15) in MQTT 3.x.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The flag bits of the fixed header are not the ones required.
    #[error("invalid fixed header flags {flags:#06b} for {packet_type:?}")]
    InvalidFlags {
        /// The packet.
        packet_type: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A QoS of 3 in PUBLISH, a will or a subscription.
    #[error("QoS 3 is not a QoS")]
    InvalidQoS,
    /// A packet identifier of 0 where one is required.
    #[error("packet identifier 0 in {0:?}")]
    ZeroPacketId(PacketType),
    /// The remaining length ends before a field.
    #[error("packet ends before its {0}")]
    Truncated(&'static str),
    /// Bytes after the last field of a packet.
    #[error("{0} unexpected bytes at the end of the packet")]
    TrailingBytes(usize),
    /// A string that is not well-formed UTF-8.
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string containing U+0000.
    #[error("string contains the null character U+0000")]
    NullInString,
    /// CONNECT with a protocol name other than `MQTT` / `MQIsdp`.
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT with a protocol level we do not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// The protocol name does not match the level (`MQIsdp` must be level 3).
    #[error("protocol name does not match protocol level {0}")]
    ProtocolNameMismatch(u8),
    /// A packet other than CONNECT before CONNECT.
    #[error("expected CONNECT as the first packet, got {0:?}")]
    ExpectedConnect(PacketType),
    /// The reserved bit 0 of the CONNECT flags is set.
    #[error("reserved bit set in CONNECT flags")]
    ConnectReservedFlag,
    /// Will QoS or will retain set without the will flag.
    #[error("will QoS or will retain set without the will flag")]
    InvalidWillFlags,
    /// A password without a user name (forbidden in 3.1.1).
    #[error("password flag set without user name flag")]
    PasswordWithoutUsername,
    /// Reserved bits set in the CONNACK acknowledge flags.
    #[error("reserved bits set in CONNACK flags")]
    ConnAckReservedFlags,
    /// A topic name that is empty or holds wildcards.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A topic filter that breaks the wildcard rules.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter.
    #[error("{0:?} carries no topic filter")]
    NoTopicFilter(PacketType),
    /// SUBACK or UNSUBACK with no reason code.
    #[error("{0:?} carries no reason code")]
    NoReasonCode(PacketType),
    /// Reserved bits set in subscription options.
    #[error("reserved bits set in subscription options")]
    InvalidSubscriptionOptions,
    /// Retain handling 3.
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// No Local on a shared subscription.
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A property identifier that does not exist.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// A property that may appear once, repeated.
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property that the packet may not carry.
    #[error("property {property:?} is not allowed in {context}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Where it appeared.
        context: &'static str,
    },
    /// A property value outside its range (receive maximum 0, ...).
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// A topic alias of 0.
    #[error("topic alias 0 is not allowed")]
    ZeroTopicAlias,
    /// A reason code that the packet may not carry.
    #[error("reason code {code:#04x} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// The code.
        code: u8,
        /// The packet.
        packet: PacketType,
    },
    /// A payload marked as UTF-8 (payload format indicator 1) that is not.
    #[error("payload format indicator says UTF-8 but the payload is not")]
    PayloadFormatInvalid,
}

impl DecodeError {
    /// The 5.0 reason code to send (in DISCONNECT, or CONNACK during
    /// connect) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolVersion(_) | InvalidProtocolName | ProtocolNameMismatch(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            InvalidTopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
            ZeroTopicAlias => ReasonCode::TOPIC_ALIAS_INVALID,
            // The specification calls these "Protocol Error": the packet
            // parses, but what it says is not allowed.
            ZeroPacketId(_)
            | ExpectedConnect(_)
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | NoTopicFilter(_)
            | NoReasonCode(_)
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | PasswordWithoutUsername => ReasonCode::PROTOCOL_ERROR,
            MalformedRemainingLength
            | MalformedVariableInteger
            | ReservedPacketType(_)
            | InvalidFlags { .. }
            | InvalidQoS
            | Truncated(_)
            | TrailingBytes(_)
            | InvalidUtf8
            | NullInString
            | ConnectReservedFlag
            | InvalidWillFlags
            | ConnAckReservedFlags
            | InvalidSubscriptionOptions
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidReasonCode { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}
