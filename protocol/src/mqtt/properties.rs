//! MQTT 5.0 properties (section 2.2.2): identifiers, types, the packets
//! each may appear in, and their decoding and encoding.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::encode::EncodeError;
use super::error::DecodeError;
use super::primitives::{put_binary, put_string, put_varint, varint_len, Reader};
use super::version::PacketType;
use super::MAX_SUBSCRIPTION_IDENTIFIER;

/// Every 5.0 property identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// Where a property list appears: a packet, or the will properties of
/// CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// The properties of this packet's variable header.
    Packet(PacketType),
    /// The will properties in the CONNECT payload.
    Will,
}

impl PropertyContext {
    fn bit(self) -> u32 {
        match self {
            PropertyContext::Packet(t) => 1 << (t as u8),
            PropertyContext::Will => 1 << 16,
        }
    }

    fn name(self) -> &'static str {
        use PacketType::*;
        match self {
            PropertyContext::Will => "will properties",
            PropertyContext::Packet(t) => match t {
                Connect => "CONNECT",
                ConnAck => "CONNACK",
                Publish => "PUBLISH",
                PubAck => "PUBACK",
                PubRec => "PUBREC",
                PubRel => "PUBREL",
                PubComp => "PUBCOMP",
                Subscribe => "SUBSCRIBE",
                SubAck => "SUBACK",
                Unsubscribe => "UNSUBSCRIBE",
                UnsubAck => "UNSUBACK",
                PingReq => "PINGREQ",
                PingResp => "PINGRESP",
                Disconnect => "DISCONNECT",
                Auth => "AUTH",
            },
        }
    }
}

const fn bits(types: &[u8]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < types.len() {
        mask |= 1 << types[i];
        i += 1;
    }
    mask
}

const WILL: u8 = 16;
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const SUBSCRIBE: u8 = 8;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

impl PropertyId {
    /// The property for an identifier, if it exists.
    pub fn from_u32(id: u32) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The packets (and will properties) this property may appear in,
    /// as a bit set over packet type numbers, bit 16 for the will
    /// (specification table 2-4).
    fn allowed_mask(self) -> u32 {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => bits(&[PUBLISH, WILL]),
            SubscriptionIdentifier => bits(&[PUBLISH, SUBSCRIBE]),
            SessionExpiryInterval => bits(&[CONNECT, CONNACK, DISCONNECT]),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => bits(&[CONNACK]),
            AuthenticationMethod | AuthenticationData => bits(&[CONNECT, CONNACK, AUTH]),
            RequestProblemInformation | RequestResponseInformation => bits(&[CONNECT]),
            WillDelayInterval => bits(&[WILL]),
            ServerReference => bits(&[CONNACK, DISCONNECT]),
            ReasonString => bits(&[CONNACK, 4, 5, 6, 7, 9, 11, DISCONNECT, AUTH]),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => bits(&[CONNECT, CONNACK]),
            TopicAlias => bits(&[PUBLISH]),
            UserProperty => bits(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, WILL]),
        }
    }

    /// Whether this property may appear in that context.
    pub fn is_allowed_in(self, context: PropertyContext) -> bool {
        self.allowed_mask() & context.bit() != 0
    }

    /// Whether it may appear more than once there.
    fn is_repeatable_in(self, context: PropertyContext) -> bool {
        match self {
            PropertyId::UserProperty => true,
            PropertyId::SubscriptionIdentifier => {
                context == PropertyContext::Packet(PacketType::Publish)
            }
            _ => false,
        }
    }
}

/// The PUBLISH properties a broker sets for each subscriber; the encoder
/// takes them from here instead of from the message's [`Properties`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOverrides<'a> {
    /// Seconds left of the message's life.
    pub message_expiry_interval: Option<u32>,
    /// The identifiers of the subscriptions the message matched.
    pub subscription_identifiers: &'a [u32],
    /// The topic alias used for this subscriber.
    pub topic_alias: Option<u16>,
}

/// The properties of one packet, usually none: one pointer, to a
/// [`PropertyValues`] only when some are present. Packets are moved from
/// the decoder to the broker several times each, and the values inline
/// made every packet, a PUBACK included, 400 bytes larger.
///
/// Reads go through `Deref` (an empty value when absent); a write through
/// `DerefMut` allocates the values if they were absent.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyValues>>);

/// What [`Properties`] reads as when absent.
static NO_PROPERTIES: PropertyValues = PropertyValues::EMPTY;

impl std::ops::Deref for Properties {
    type Target = PropertyValues;
    fn deref(&self) -> &PropertyValues {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyValues {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertyValues> for Properties {
    fn from(values: PropertyValues) -> Self {
        if values.is_empty() {
            Properties(None)
        } else {
            Properties(Some(Box::new(values)))
        }
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Properties {
    /// Decodes a property length and the properties after it (see
    /// [`PropertyValues`]); nothing is allocated when there are none.
    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, DecodeError> {
        Ok(PropertyValues::decode(r, ctx)?.into())
    }

    /// Whether no property is present.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|v| v.is_empty())
    }

    /// The size of the properties, without their length prefix.
    pub fn encoded_len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.encoded_len())
    }

    /// The values, moved out (empty when absent).
    pub fn into_values(self) -> PropertyValues {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

/// The values of the properties of one packet. Absent properties are
/// `None` or empty; the encoder writes only what is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PropertyValues {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    /// One in SUBSCRIBE; in PUBLISH from the server, one per matching
    /// subscription.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteString>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteString>,
    pub server_reference: Option<ByteString>,
    pub reason_string: Option<ByteString>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// In order, duplicates allowed.
    pub user_properties: Vec<(ByteString, ByteString)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

fn flag(v: u8, id: PropertyId) -> Result<u8, DecodeError> {
    if v > 1 {
        Err(DecodeError::InvalidPropertyValue(id))
    } else {
        Ok(v)
    }
}

fn nonzero_u16(v: u16, id: PropertyId) -> Result<u16, DecodeError> {
    if v == 0 {
        Err(DecodeError::InvalidPropertyValue(id))
    } else {
        Ok(v)
    }
}

impl PropertyValues {
    /// No property.
    pub const EMPTY: PropertyValues = PropertyValues {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    /// Decodes a property length and the properties after it, checking
    /// that each is known, allowed here, not repeated unless it may be,
    /// and within its range.
    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint("property length")? as usize;
        let mut r = r.sub(len, "properties")?;
        let mut props = PropertyValues::default();
        let mut seen: u64 = 0;
        while r.remaining() > 0 {
            let raw = r.varint("property identifier")?;
            let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(raw))?;
            if !id.is_allowed_in(ctx) {
                return Err(DecodeError::PropertyNotAllowed {
                    property: id,
                    context: ctx.name(),
                });
            }
            let bit = 1u64 << (id as u8);
            if seen & bit != 0 && !id.is_repeatable_in(ctx) {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            props.decode_one(id, &mut r)?;
        }
        Ok(props)
    }

    fn decode_one(&mut self, id: PropertyId, r: &mut Reader) -> Result<(), DecodeError> {
        use PropertyId::*;
        const W: &str = "property value";
        match id {
            PayloadFormatIndicator => self.payload_format_indicator = Some(flag(r.u8(W)?, id)?),
            MessageExpiryInterval => self.message_expiry_interval = Some(r.u32(W)?),
            ContentType => self.content_type = Some(r.string(W)?),
            ResponseTopic => {
                let topic = r.string(W)?;
                crate::topic::validate_topic_name(&topic)
                    .map_err(|_| DecodeError::InvalidPropertyValue(id))?;
                self.response_topic = Some(topic);
            }
            CorrelationData => self.correlation_data = Some(r.binary(W)?),
            SubscriptionIdentifier => {
                let v = r.varint(W)?;
                if v == 0 || v > MAX_SUBSCRIPTION_IDENTIFIER {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                self.subscription_identifiers.push(v);
            }
            SessionExpiryInterval => self.session_expiry_interval = Some(r.u32(W)?),
            AssignedClientIdentifier => self.assigned_client_identifier = Some(r.string(W)?),
            ServerKeepAlive => self.server_keep_alive = Some(r.u16(W)?),
            AuthenticationMethod => self.authentication_method = Some(r.string(W)?),
            AuthenticationData => self.authentication_data = Some(r.binary(W)?),
            RequestProblemInformation => {
                self.request_problem_information = Some(flag(r.u8(W)?, id)?)
            }
            WillDelayInterval => self.will_delay_interval = Some(r.u32(W)?),
            RequestResponseInformation => {
                self.request_response_information = Some(flag(r.u8(W)?, id)?)
            }
            ResponseInformation => self.response_information = Some(r.string(W)?),
            ServerReference => self.server_reference = Some(r.string(W)?),
            ReasonString => self.reason_string = Some(r.string(W)?),
            ReceiveMaximum => self.receive_maximum = Some(nonzero_u16(r.u16(W)?, id)?),
            TopicAliasMaximum => self.topic_alias_maximum = Some(r.u16(W)?),
            TopicAlias => {
                let alias = r.u16(W)?;
                if alias == 0 {
                    return Err(DecodeError::ZeroTopicAlias);
                }
                self.topic_alias = Some(alias);
            }
            MaximumQoS => self.maximum_qos = Some(flag(r.u8(W)?, id)?),
            RetainAvailable => self.retain_available = Some(flag(r.u8(W)?, id)?),
            UserProperty => {
                let key = r.string(W)?;
                let value = r.string(W)?;
                self.user_properties.push((key, value));
            }
            MaximumPacketSize => {
                let v = r.u32(W)?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                self.maximum_packet_size = Some(v);
            }
            WildcardSubscriptionAvailable => {
                self.wildcard_subscription_available = Some(flag(r.u8(W)?, id)?)
            }
            SubscriptionIdentifierAvailable => {
                self.subscription_identifier_available = Some(flag(r.u8(W)?, id)?)
            }
            SharedSubscriptionAvailable => {
                self.shared_subscription_available = Some(flag(r.u8(W)?, id)?)
            }
        }
        Ok(())
    }

    /// The size of the properties, without their length prefix.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_with(self.own_overrides())
    }

    /// The three properties a broker sets per subscriber, as this value
    /// has them.
    fn own_overrides(&self) -> PublishOverrides<'_> {
        PublishOverrides {
            message_expiry_interval: self.message_expiry_interval,
            subscription_identifiers: &self.subscription_identifiers,
            topic_alias: self.topic_alias,
        }
    }

    /// [`Properties::encoded_len`] with `o`'s values in place of this
    /// value's.
    pub(crate) fn encoded_len_with(&self, o: PublishOverrides<'_>) -> usize {
        fn fixed<T>(v: &Option<T>, size: usize) -> usize {
            v.as_ref().map_or(0, |_| 1 + size)
        }
        fn data<T: AsRef<[u8]>>(v: &Option<T>) -> usize {
            v.as_ref().map_or(0, |s| 3 + s.as_ref().len())
        }
        fixed(&self.payload_format_indicator, 1)
            + fixed(&o.message_expiry_interval, 4)
            + data(&self.content_type)
            + data(&self.response_topic)
            + data(&self.correlation_data)
            + o.subscription_identifiers
                .iter()
                .map(|&v| 1 + varint_len(v as usize))
                .sum::<usize>()
            + fixed(&self.session_expiry_interval, 4)
            + data(&self.assigned_client_identifier)
            + fixed(&self.server_keep_alive, 2)
            + data(&self.authentication_method)
            + data(&self.authentication_data)
            + fixed(&self.request_problem_information, 1)
            + fixed(&self.will_delay_interval, 4)
            + fixed(&self.request_response_information, 1)
            + data(&self.response_information)
            + data(&self.server_reference)
            + data(&self.reason_string)
            + fixed(&self.receive_maximum, 2)
            + fixed(&self.topic_alias_maximum, 2)
            + fixed(&o.topic_alias, 2)
            + fixed(&self.maximum_qos, 1)
            + fixed(&self.retain_available, 1)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 5 + k.len() + v.len())
                .sum::<usize>()
            + fixed(&self.maximum_packet_size, 4)
            + fixed(&self.wildcard_subscription_available, 1)
            + fixed(&self.subscription_identifier_available, 1)
            + fixed(&self.shared_subscription_available, 1)
    }

    /// The size with the length prefix.
    pub(crate) fn encoded_len_with_prefix(&self) -> usize {
        let len = self.encoded_len();
        varint_len(len) + len
    }

    /// Whether no property is present.
    pub fn is_empty(&self) -> bool {
        self.encoded_len() == 0
    }

    /// Writes the property length and the properties, in identifier order.
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_with(self.own_overrides(), buf)
    }

    /// [`Properties::encode`] with `o`'s values in place of this value's.
    pub(crate) fn encode_with(
        &self,
        o: PublishOverrides<'_>,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        use PropertyId::*;
        put_varint(buf, self.encoded_len_with(o));
        let u8s = |buf: &mut BytesMut, id: PropertyId, v: Option<u8>| {
            if let Some(v) = v {
                buf.put_u8(id as u8);
                buf.put_u8(v);
            }
        };
        let u16s = |buf: &mut BytesMut, id: PropertyId, v: Option<u16>| {
            if let Some(v) = v {
                buf.put_u8(id as u8);
                buf.put_u16(v);
            }
        };
        let u32s = |buf: &mut BytesMut, id: PropertyId, v: Option<u32>| {
            if let Some(v) = v {
                buf.put_u8(id as u8);
                buf.put_u32(v);
            }
        };
        fn bin<T: AsRef<[u8]>>(
            buf: &mut BytesMut,
            id: PropertyId,
            v: &Option<T>,
        ) -> Result<(), EncodeError> {
            if let Some(v) = v {
                buf.put_u8(id as u8);
                put_binary(buf, v.as_ref())?;
            }
            Ok(())
        }
        u8s(buf, PayloadFormatIndicator, self.payload_format_indicator);
        u32s(buf, MessageExpiryInterval, o.message_expiry_interval);
        bin(buf, ContentType, &self.content_type)?;
        bin(buf, ResponseTopic, &self.response_topic)?;
        bin(buf, CorrelationData, &self.correlation_data)?;
        for &id in o.subscription_identifiers {
            buf.put_u8(SubscriptionIdentifier as u8);
            put_varint(buf, id as usize);
        }
        u32s(buf, SessionExpiryInterval, self.session_expiry_interval);
        bin(
            buf,
            AssignedClientIdentifier,
            &self.assigned_client_identifier,
        )?;
        u16s(buf, ServerKeepAlive, self.server_keep_alive);
        bin(buf, AuthenticationMethod, &self.authentication_method)?;
        bin(buf, AuthenticationData, &self.authentication_data)?;
        u8s(
            buf,
            RequestProblemInformation,
            self.request_problem_information,
        );
        u32s(buf, WillDelayInterval, self.will_delay_interval);
        u8s(
            buf,
            RequestResponseInformation,
            self.request_response_information,
        );
        bin(buf, ResponseInformation, &self.response_information)?;
        bin(buf, ServerReference, &self.server_reference)?;
        bin(buf, ReasonString, &self.reason_string)?;
        u16s(buf, ReceiveMaximum, self.receive_maximum);
        u16s(buf, TopicAliasMaximum, self.topic_alias_maximum);
        u16s(buf, TopicAlias, o.topic_alias);
        u8s(buf, MaximumQoS, self.maximum_qos);
        u8s(buf, RetainAvailable, self.retain_available);
        for (k, v) in &self.user_properties {
            buf.put_u8(UserProperty as u8);
            put_string(buf, k)?;
            put_string(buf, v)?;
        }
        u32s(buf, MaximumPacketSize, self.maximum_packet_size);
        u8s(
            buf,
            WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        u8s(
            buf,
            SubscriptionIdentifierAvailable,
            self.subscription_identifier_available,
        );
        u8s(
            buf,
            SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        Ok(())
    }
}
