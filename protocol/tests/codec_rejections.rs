//! Every rejection case of the codec: the typed error and the 5.0 reason
//! code the broker answers with.

mod common;

use bytes::BytesMut;
use common::decode;
use robustmq_protocol::mqtt::*;
use robustmq_protocol::topic::TopicError;

use ProtocolVersion::{V3_1_1, V5};

fn rejects(version: Option<ProtocolVersion>, bytes: &[u8], error: DecodeError, reason: u8) {
    let got = decode(version, bytes).expect_err("must be rejected");
    assert_eq!(got, error, "bytes {bytes:02x?}");
    assert_eq!(got.reason_code(), ReasonCode(reason), "reason for {got}");
}

const V311: Option<ProtocolVersion> = Some(V3_1_1);
const V50: Option<ProtocolVersion> = Some(V5);

#[test]
fn remaining_length_over_four_bytes() {
    rejects(
        V311,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        DecodeError::MalformedRemainingLength,
        0x81,
    );
}

/// [MQTT-1.5.5-1]: a variable byte integer uses the fewest bytes its
/// value needs. PINGREQ with its remaining length 0 written in two bytes,
/// and a 5.0 PUBLISH whose property length 0 is written in two.
#[test]
fn non_minimal_variable_byte_integers() {
    rejects(
        V311,
        &[0xC0, 0x80, 0x00],
        DecodeError::MalformedRemainingLength,
        0x81,
    );
    rejects(
        V50,
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x80, 0x00],
        DecodeError::MalformedVariableInteger,
        0x81,
    );
}

#[test]
fn too_large_is_refused_from_the_fixed_header_alone() {
    let mut decoder = Decoder::with_version(V3_1_1, 100);
    // 1000 bytes announced, only the fixed header buffered.
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 1003,
            max: 100
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    // Exactly at the limit is fine.
    let mut decoder = Decoder::with_version(V3_1_1, 9);
    let mut buf = BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'][..]);
    assert!(decoder.decode(&mut buf).unwrap().is_some());
}

#[test]
fn reserved_packet_types() {
    rejects(V311, &[0x00, 0], DecodeError::ReservedPacketType(0), 0x81);
    // AUTH does not exist in 3.x.
    rejects(V311, &[0xF0, 0], DecodeError::ReservedPacketType(15), 0x81);
}

#[test]
fn reserved_flag_bits() {
    let flags = |packet_type, flags| DecodeError::InvalidFlags { packet_type, flags };
    rejects(V311, &[0x60, 2, 0, 1], flags(PacketType::PubRel, 0), 0x81);
    rejects(V311, &[0x41, 2, 0, 1], flags(PacketType::PubAck, 1), 0x81);
    rejects(
        V311,
        &[0x80, 6, 0, 1, 0, 1, b'a', 0],
        flags(PacketType::Subscribe, 0),
        0x81,
    );
    rejects(
        V311,
        &[0xA0, 5, 0, 1, 0, 1, b'a'],
        flags(PacketType::Unsubscribe, 0),
        0x81,
    );
    rejects(V311, &[0xC1, 0], flags(PacketType::PingReq, 1), 0x81);
    rejects(V50, &[0xE2, 0], flags(PacketType::Disconnect, 2), 0x81);
    // DUP on a QoS 0 PUBLISH.
    rejects(
        V311,
        &[0x38, 3, 0, 1, b't'],
        flags(PacketType::Publish, 0x08),
        0x81,
    );
}

#[test]
fn qos_3() {
    rejects(
        V311,
        &[0x36, 5, 0, 1, b't', 0, 1],
        DecodeError::InvalidQoS,
        0x81,
    );
    // Will QoS 3 in CONNECT.
    let connect = [
        0x10, 0x13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1C, 0, 60, 0, 1, b'c', 0, 1, b'w', 0, 1,
        b'x',
    ];
    rejects(None, &connect, DecodeError::InvalidQoS, 0x81);
    // Subscription QoS 3.
    rejects(
        V311,
        &[0x82, 6, 0, 1, 0, 1, b'a', 3],
        DecodeError::InvalidQoS,
        0x81,
    );
}

#[test]
fn packet_identifier_zero() {
    use PacketType::*;
    rejects(
        V311,
        &[0x32, 5, 0, 1, b't', 0, 0],
        DecodeError::ZeroPacketId(Publish),
        0x82,
    );
    rejects(
        V311,
        &[0x40, 2, 0, 0],
        DecodeError::ZeroPacketId(PubAck),
        0x82,
    );
    rejects(
        V311,
        &[0x62, 2, 0, 0],
        DecodeError::ZeroPacketId(PubRel),
        0x82,
    );
    rejects(
        V311,
        &[0x82, 6, 0, 0, 0, 1, b'a', 0],
        DecodeError::ZeroPacketId(Subscribe),
        0x82,
    );
    rejects(
        V311,
        &[0xA2, 5, 0, 0, 0, 1, b'a'],
        DecodeError::ZeroPacketId(Unsubscribe),
        0x82,
    );
}

#[test]
fn invalid_utf8_and_null_in_strings() {
    rejects(
        V311,
        &[0x30, 4, 0, 2, 0xC3, 0x28],
        DecodeError::InvalidUtf8,
        0x81,
    );
    rejects(
        V311,
        &[0x30, 4, 0, 2, b'a', 0],
        DecodeError::NullInString,
        0x81,
    );
    // In a client identifier too.
    let connect = [
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, 0xFF, 0xFE,
    ];
    rejects(None, &connect, DecodeError::InvalidUtf8, 0x81);
}

#[test]
fn wildcards_in_a_topic_name() {
    rejects(
        V311,
        &[0x30, 5, 0, 3, b'a', b'/', b'+'],
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
        0x90,
    );
    rejects(
        V311,
        &[0x30, 3, 0, 1, b'#'],
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
        0x90,
    );
    // Empty topic without a topic alias.
    rejects(
        V50,
        &[0x30, 3, 0, 0, 0],
        DecodeError::InvalidTopicName(TopicError::Empty),
        0x90,
    );
    rejects(
        V311,
        &[0x30, 2, 0, 0],
        DecodeError::InvalidTopicName(TopicError::Empty),
        0x90,
    );
}

fn subscribe_v3(filter: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x82, (5 + filter.len()) as u8, 0, 1, 0, filter.len() as u8];
    bytes.extend_from_slice(filter);
    bytes.push(0);
    bytes
}

#[test]
fn malformed_topic_filters() {
    use TopicError::*;
    for (filter, err) in [
        (&b"a/#/b"[..], MisplacedMultiLevelWildcard),
        (b"a+", MisplacedSingleLevelWildcard),
        (b"#/a", MisplacedMultiLevelWildcard),
        (b"a#", MisplacedMultiLevelWildcard),
        (b"", Empty),
        (b"$share/g", MissingShareFilter),
        (b"$share//a", InvalidShareGroup),
    ] {
        rejects(
            V311,
            &subscribe_v3(filter),
            DecodeError::InvalidTopicFilter(err),
            0x8F,
        );
    }
    rejects(
        V311,
        &[0xA2, 6, 0, 1, 0, 2, b'a', b'+'],
        DecodeError::InvalidTopicFilter(MisplacedSingleLevelWildcard),
        0x8F,
    );
}

#[test]
fn subscribe_and_unsubscribe_without_filters() {
    rejects(
        V311,
        &[0x82, 2, 0, 1],
        DecodeError::NoTopicFilter(PacketType::Subscribe),
        0x82,
    );
    rejects(
        V50,
        &[0x82, 3, 0, 1, 0],
        DecodeError::NoTopicFilter(PacketType::Subscribe),
        0x82,
    );
    rejects(
        V311,
        &[0xA2, 2, 0, 1],
        DecodeError::NoTopicFilter(PacketType::Unsubscribe),
        0x82,
    );
}

#[test]
fn repeated_property() {
    // Two message expiry intervals in a PUBLISH.
    rejects(
        V50,
        &[0x30, 14, 0, 1, b't', 10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 2, b'x'],
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval),
        0x82,
    );
    // Two subscription identifiers in a SUBSCRIBE.
    rejects(
        V50,
        &[0x82, 10, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0],
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier),
        0x82,
    );
    // But user properties may repeat.
    assert!(decode(
        V50,
        &[0x30, 17, 0, 1, b't', 12, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0, b'x']
    )
    .is_ok());
}

#[test]
fn property_not_allowed_in_packet() {
    // Session expiry in a PUBLISH.
    rejects(
        V50,
        &[0x30, 9, 0, 1, b't', 5, 0x11, 0, 0, 0, 1, b'x'],
        DecodeError::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            context: "PUBLISH",
        },
        0x81,
    );
    // Topic alias in a SUBSCRIBE.
    rejects(
        V50,
        &[0x82, 10, 0, 1, 3, 0x23, 0, 1, 0, 1, b'a', 0],
        DecodeError::PropertyNotAllowed {
            property: PropertyId::TopicAlias,
            context: "SUBSCRIBE",
        },
        0x81,
    );
    // An identifier that does not exist.
    rejects(
        V50,
        &[0x30, 6, 0, 1, b't', 2, 0x7F, 0],
        DecodeError::UnknownProperty(0x7F),
        0x81,
    );
}

#[test]
fn property_values_out_of_range() {
    rejects(
        V50,
        &[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0],
        DecodeError::ZeroTopicAlias,
        0x94,
    );
    rejects(
        V50,
        &[0x30, 6, 0, 1, b't', 2, 0x01, 2],
        DecodeError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
        0x82,
    );
    let connect_receive_max_0 = [
        0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x21, 0, 0, 0, 0,
    ];
    rejects(
        None,
        &connect_receive_max_0,
        DecodeError::InvalidPropertyValue(PropertyId::ReceiveMaximum),
        0x82,
    );
}

#[test]
fn bytes_left_over() {
    rejects(
        V311,
        &[0x40, 3, 0, 1, 0],
        DecodeError::TrailingBytes(1),
        0x81,
    );
    rejects(V311, &[0xC0, 1, 0], DecodeError::TrailingBytes(1), 0x81);
    rejects(V311, &[0xE0, 1, 0], DecodeError::TrailingBytes(1), 0x81);
    let connect = [
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c', 9,
    ];
    rejects(None, &connect, DecodeError::TrailingBytes(1), 0x81);
}

#[test]
fn truncated_body() {
    rejects(
        V311,
        &[0x40, 1, 0],
        DecodeError::Truncated("packet identifier"),
        0x81,
    );
    rejects(
        V311,
        &[0x30, 3, 0, 5, b'a'],
        DecodeError::Truncated("topic name"),
        0x81,
    );
}

#[test]
fn connect_rules() {
    let connect = |name: &[u8], level: u8, flags: u8| {
        let mut bytes = vec![0x10, 0, 0, name.len() as u8];
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&[level, flags, 0, 60, 0, 1, b'c']);
        bytes[1] = (bytes.len() - 2) as u8;
        bytes
    };
    rejects(
        None,
        &connect(b"MQTT", 6, 2),
        DecodeError::UnsupportedProtocolVersion(6),
        0x84,
    );
    rejects(
        None,
        &connect(b"MQTX", 4, 2),
        DecodeError::InvalidProtocolName,
        0x84,
    );
    rejects(
        None,
        &connect(b"MQIsdp", 4, 2),
        DecodeError::ProtocolNameMismatch(4),
        0x84,
    );
    rejects(
        None,
        &connect(b"MQTT", 4, 3),
        DecodeError::ConnectReservedFlag,
        0x81,
    );
    // Will retain without the will flag.
    rejects(
        None,
        &connect(b"MQTT", 4, 0x22),
        DecodeError::InvalidWillFlags,
        0x81,
    );
    // Password without user name: an error in 3.1.1 only.
    let mut with_password = connect(b"MQTT", 4, 0x42);
    with_password.extend_from_slice(&[0, 1, b'p']);
    with_password[1] += 3;
    rejects(
        None,
        &with_password,
        DecodeError::PasswordWithoutUsername,
        0x82,
    );
}

#[test]
fn first_packet_must_be_connect() {
    rejects(
        None,
        &[0x30, 3, 0, 1, b't'],
        DecodeError::ExpectedConnect(PacketType::Publish),
        0x82,
    );
    rejects(
        None,
        &[0xC0, 0],
        DecodeError::ExpectedConnect(PacketType::PingReq),
        0x82,
    );
}

#[test]
fn payload_format_invalid() {
    rejects(
        V50,
        &[0x30, 8, 0, 1, b't', 2, 0x01, 1, 0xFF, 0xFE],
        DecodeError::PayloadFormatInvalid,
        0x99,
    );
    // Not checked when the payload is not marked as UTF-8.
    assert!(decode(V50, &[0x30, 6, 0, 1, b't', 0, 0xFF, 0xFE]).is_ok());
}

#[test]
fn reason_codes_not_valid_for_the_packet() {
    rejects(
        V50,
        &[0x40, 3, 0, 1, 0x8E],
        DecodeError::InvalidReasonCode {
            code: 0x8E,
            packet: PacketType::PubAck,
        },
        0x81,
    );
    rejects(
        V311,
        &[0x20, 2, 0, 6],
        DecodeError::InvalidReasonCode {
            code: 6,
            packet: PacketType::ConnAck,
        },
        0x81,
    );
    rejects(
        V311,
        &[0x90, 3, 0, 1, 3],
        DecodeError::InvalidReasonCode {
            code: 3,
            packet: PacketType::SubAck,
        },
        0x81,
    );
}

#[test]
fn subscription_options() {
    // Reserved bits in 3.1.1 (no-local is a 5.0 option).
    rejects(
        V311,
        &[0x82, 6, 0, 1, 0, 1, b'a', 0x04],
        DecodeError::InvalidSubscriptionOptions,
        0x81,
    );
    // Reserved bits 6-7 in 5.0.
    rejects(
        V50,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40],
        DecodeError::InvalidSubscriptionOptions,
        0x81,
    );
    rejects(
        V50,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30],
        DecodeError::InvalidRetainHandling,
        0x82,
    );
    let mut shared_no_local = vec![0x82, 0, 0, 1, 0, 0, 8];
    shared_no_local.extend_from_slice(b"$share/g");
    shared_no_local.truncate(shared_no_local.len() - 8);
    shared_no_local.extend_from_slice(b"$share/g/a");
    shared_no_local[6] = 10;
    shared_no_local.push(0x04);
    shared_no_local[1] = (shared_no_local.len() - 2) as u8;
    rejects(
        V50,
        &shared_no_local,
        DecodeError::NoLocalOnSharedSubscription,
        0x82,
    );
}

#[test]
fn connack_reserved_flags() {
    rejects(
        V311,
        &[0x20, 2, 2, 0],
        DecodeError::ConnAckReservedFlags,
        0x81,
    );
}

/// The in-place PUBACK path (`40 02 id id`) decides nothing it should
/// not: before CONNECT it is refused like any other packet, a PUBACK
/// split over two reads waits for its last byte, and a 5.0 PUBACK with a
/// reason code takes the general path.
#[test]
fn short_puback_is_decoded_like_any_other_packet() {
    rejects(
        None,
        &[0x40, 2, 0, 1],
        DecodeError::ExpectedConnect(PacketType::PubAck),
        0x82,
    );
    let mut decoder = Decoder::with_version(V3_1_1, 100);
    let mut buf = BytesMut::from(&[0x40, 2, 0x12][..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 3, "left as it was");
    buf.extend_from_slice(&[0x34, 0x40, 2]);
    match decoder.decode(&mut buf).unwrap() {
        Some(Packet::PubAck(r)) => {
            assert_eq!(r.packet_id, 0x1234);
            assert_eq!(r.reason_code, ReasonCode::SUCCESS);
        }
        other => panic!("expected a PUBACK, got {other:?}"),
    }
    assert_eq!(&buf[..], &[0x40, 2], "the next packet's start is kept");
    let mut decoder = Decoder::with_version(V5, 100);
    let mut buf = BytesMut::from(&[0x40, 3, 0, 7, 0x10][..]);
    match decoder.decode(&mut buf).unwrap() {
        Some(Packet::PubAck(r)) => {
            assert_eq!(r.packet_id, 7);
            assert_eq!(r.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        }
        other => panic!("expected a PUBACK, got {other:?}"),
    }
}
