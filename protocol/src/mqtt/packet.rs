//! The control packets. One type per packet serves every protocol version.

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;
use super::reason::ReasonCode;
use super::version::{PacketType, ProtocolVersion, QoS};

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubReply),
    PubRec(PubReply),
    PubRel(PubReply),
    PubComp(PubReply),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: a client asks to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The version the client speaks; it decides how the rest of the
    /// connection is decoded.
    pub protocol: ProtocolVersion,
    /// Clean session (3.x) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0).
    pub properties: Properties,
    /// The client identifier; may be empty.
    pub client_id: ByteString,
    /// The will message.
    pub will: Option<LastWill>,
    /// The user name.
    pub username: Option<ByteString>,
    /// The password (binary data).
    pub password: Option<Bytes>,
}

/// The will message of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server had a session for this client.
    pub session_present: bool,
    /// Success or why the connection is refused (mapped to 3.x return
    /// codes on the wire for 3.x clients).
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery of an earlier attempt.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retained message.
    pub retain: bool,
    /// Topic name; empty in 5.0 when a topic alias stands for it.
    pub topic: ByteString,
    /// Packet identifier; non-zero for QoS 1 and 2, ignored for QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
    /// The payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP: a packet identifier, a reason code
/// and properties (both 5.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubReply {
    /// The packet identifier of the PUBLISH.
    pub packet_id: u16,
    /// The result (5.0).
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties,
}

impl PubReply {
    /// A success reply with no properties.
    pub fn new(packet_id: u16) -> Self {
        PubReply {
            packet_id,
            ..Default::default()
        }
    }
}

/// What to do with retained messages when a subscription is made (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist.
    SendAtSubscribeIfNew = 1,
    /// Never send them.
    DoNotSend = 2,
}

/// Subscription options (the byte after each filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// Do not send the client its own messages (5.0).
    pub no_local: bool,
    /// Keep the retain flag as published (5.0).
    pub retain_as_published: bool,
    /// Retained messages at subscribe (5.0).
    pub retain_handling: RetainHandling,
}

/// One filter of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter (may be `$share/group/filter`).
    pub filter: ByteString,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0): subscription identifier, user properties.
    pub properties: Properties,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One per filter: the granted QoS or a failure.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// At least one filter.
    pub filters: Vec<ByteString>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One per filter (5.0); empty in 3.x.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Why (5.0).
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Disconnect {
            reason_code,
            properties: Properties::default(),
        }
    }
}

/// AUTH (5.0 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue authentication or re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties: authentication method and data.
    pub properties: Properties,
}
