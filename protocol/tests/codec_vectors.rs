//! Byte vectors worked out by hand from the MQTT 3.1, 3.1.1 and 5.0
//! specifications, each decoded and encoded both ways.

mod common;

use bytes::Bytes;
use bytestring::ByteString;
use common::vector;
use robustmq_protocol::mqtt::*;

use ProtocolVersion::{V3_1, V3_1_1, V5};

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

fn b(v: &'static [u8]) -> Bytes {
    Bytes::from_static(v)
}

fn simple_connect(protocol: ProtocolVersion) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: s("abc"),
        will: None,
        username: None,
        password: None,
    }))
}

#[test]
fn connect_v3_1_1() {
    let bytes = [
        0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 3, b'a', b'b', b'c',
    ];
    vector(V3_1_1, &bytes, simple_connect(V3_1_1));
}

#[test]
fn connect_v3_1_uses_mqisdp() {
    let bytes = [
        0x10, 0x11, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 3, b'a', b'b',
        b'c',
    ];
    vector(V3_1, &bytes, simple_connect(V3_1));
}

#[test]
fn connect_v5_with_will_user_and_properties() {
    let bytes = [
        0x10, 0x2C, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xEE, 0, 60, // header
        8, 0x11, 0, 0, 0x0E, 0x10, 0x21, 0, 20, // session expiry 3600, receive max 20
        0, 3, b'a', b'b', b'c', // client id
        5, 0x18, 0, 0, 0, 5, // will delay 5
        0, 1, b'w', 0, 3, b'b', b'y', b'e', // will topic, payload
        0, 1, b'u', 0, 1, b'p', // user name, password
    ];
    let packet = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        properties: PropertyValues {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            ..Default::default()
        }
        .into(),
        client_id: s("abc"),
        will: Some(LastWill {
            topic: s("w"),
            payload: b(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PropertyValues {
                will_delay_interval: Some(5),
                ..Default::default()
            }
            .into(),
        }),
        username: Some(s("u")),
        password: Some(b(b"p")),
    }));
    vector(V5, &bytes, packet);
}

#[test]
fn connack_v3_maps_return_codes() {
    vector(
        V3_1_1,
        &[0x20, 2, 0, 0],
        Packet::ConnAck(ConnAck::default()),
    );
    vector(
        V3_1_1,
        &[0x20, 2, 0, 5],
        Packet::ConnAck(ConnAck {
            reason_code: ReasonCode::NOT_AUTHORIZED,
            ..Default::default()
        }),
    );
    vector(
        V3_1_1,
        &[0x20, 2, 1, 0],
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..Default::default()
        }),
    );
}

#[test]
fn connack_v5_with_properties() {
    vector(V5, &[0x20, 3, 0, 0, 0], Packet::ConnAck(ConnAck::default()));
    vector(
        V5,
        &[0x20, 7, 0, 0, 4, 0x12, 0, 1, b'x'],
        Packet::ConnAck(ConnAck {
            properties: PropertyValues {
                assigned_client_identifier: Some(s("x")),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        }),
    );
    vector(
        V5,
        &[0x20, 3, 0, 0x86, 0],
        Packet::ConnAck(ConnAck {
            reason_code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ..Default::default()
        }),
    );
}

#[test]
fn publish_qos0_v3() {
    vector(
        V3_1_1,
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(Publish {
            topic: s("a/b"),
            payload: b(b"hi"),
            ..Default::default()
        }),
    );
}

#[test]
fn publish_qos1_dup_retain_v3() {
    vector(
        V3_1_1,
        &[0x3B, 6, 0, 1, b't', 0, 10, b'x'],
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: s("t"),
            packet_id: 10,
            payload: b(b"x"),
            ..Default::default()
        }),
    );
}

#[test]
fn publish_qos2_v5_with_properties() {
    let bytes = [
        0x34, 0x12, 0, 1, b't', 0x01, 0x02, // topic, packet id 258
        10, 0x01, 1, 0x02, 0, 0, 0, 30, 0x23, 0, 5, // format 1, expiry 30, alias 5
        b'o', b'k',
    ];
    vector(
        V5,
        &bytes,
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: s("t"),
            packet_id: 258,
            properties: PropertyValues {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(30),
                topic_alias: Some(5),
                ..Default::default()
            }
            .into(),
            payload: b(b"ok"),
            ..Default::default()
        }),
    );
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    let bytes = [0x30, 8, 0, 0, 3, 0x23, 0, 7, b'h', b'i'];
    vector(
        V5,
        &bytes,
        Packet::Publish(Publish {
            properties: PropertyValues {
                topic_alias: Some(7),
                ..Default::default()
            }
            .into(),
            payload: b(b"hi"),
            ..Default::default()
        }),
    );
}

#[test]
fn publish_v5_user_properties_and_request_response() {
    let bytes = [
        0x30, 0x19, 0, 1, b't', // topic
        0x14, // properties length 20, in identifier order
        0x03, 0, 1, b'j', // content type
        0x08, 0, 1, b'r', // response topic
        0x09, 0, 2, 1, 2, // correlation data
        0x26, 0, 1, b'k', 0, 1, b'v', // user property
        b'p',
    ];
    vector(
        V5,
        &bytes,
        Packet::Publish(Publish {
            topic: s("t"),
            properties: PropertyValues {
                content_type: Some(s("j")),
                response_topic: Some(s("r")),
                correlation_data: Some(b(&[1, 2])),
                user_properties: vec![(s("k"), s("v"))],
                ..Default::default()
            }
            .into(),
            payload: b(b"p"),
            ..Default::default()
        }),
    );
}

#[test]
fn pub_replies_v3() {
    vector(V3_1_1, &[0x40, 2, 0, 10], Packet::PubAck(PubReply::new(10)));
    vector(V3_1_1, &[0x50, 2, 0, 10], Packet::PubRec(PubReply::new(10)));
    vector(V3_1_1, &[0x62, 2, 0, 10], Packet::PubRel(PubReply::new(10)));
    vector(
        V3_1_1,
        &[0x70, 2, 0, 10],
        Packet::PubComp(PubReply::new(10)),
    );
}

#[test]
fn pub_replies_v5_short_and_long_forms() {
    vector(V5, &[0x40, 2, 0, 10], Packet::PubAck(PubReply::new(10)));
    vector(
        V5,
        &[0x40, 3, 0, 10, 0x10],
        Packet::PubAck(PubReply {
            packet_id: 10,
            reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..Default::default()
        }),
    );
    vector(
        V5,
        &[0x50, 8, 0, 10, 0x87, 4, 0x1F, 0, 1, b'r'],
        Packet::PubRec(PubReply {
            packet_id: 10,
            reason_code: ReasonCode::NOT_AUTHORIZED,
            properties: PropertyValues {
                reason_string: Some(s("r")),
                ..Default::default()
            }
            .into(),
        }),
    );
    vector(
        V5,
        &[0x62, 3, 0, 10, 0x92],
        Packet::PubRel(PubReply {
            packet_id: 10,
            reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            ..Default::default()
        }),
    );
    // A success code with an empty property list is accepted on decode.
    assert_eq!(
        common::decode(Some(V5), &[0x70, 4, 0, 10, 0, 0]).unwrap(),
        Packet::PubComp(PubReply::new(10))
    );
}

#[test]
fn subscribe_v3() {
    vector(
        V3_1_1,
        &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 1],
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: s("a/b"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            }],
        }),
    );
}

#[test]
fn subscribe_v5_with_options_and_identifier() {
    vector(
        V5,
        &[0x82, 11, 0, 1, 2, 0x0B, 7, 0, 3, b'a', b'/', b'b', 0x2E],
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: PropertyValues {
                subscription_identifiers: vec![7],
                ..Default::default()
            }
            .into(),
            filters: vec![SubscribeFilter {
                filter: s("a/b"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            }],
        }),
    );
}

#[test]
fn subscribe_shared_filter() {
    let bytes = [
        0x82, 15, 0, 1, 0, 10, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'#', 0,
    ];
    let Packet::Subscribe(sub) = common::decode(Some(V3_1_1), &bytes).unwrap() else {
        panic!("not a subscribe");
    };
    assert_eq!(&*sub.filters[0].filter, "$share/g/#");
}

#[test]
fn suback_both_versions() {
    vector(
        V3_1_1,
        &[0x90, 4, 0, 1, 1, 0x80],
        Packet::SubAck(SubAck {
            packet_id: 1,
            properties: Properties::default(),
            reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
        }),
    );
    vector(
        V5,
        &[0x90, 5, 0, 1, 0, 2, 0x87],
        Packet::SubAck(SubAck {
            packet_id: 1,
            properties: Properties::default(),
            reason_codes: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::NOT_AUTHORIZED],
        }),
    );
    // 5.0 refusals become 0x80 for a 3.1.1 client.
    let packet = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::NOT_AUTHORIZED],
    });
    assert_eq!(common::encode(V3_1_1, &packet), [0x90, 3, 0, 1, 0x80]);
}

#[test]
fn unsubscribe_and_unsuback() {
    vector(
        V3_1_1,
        &[0xA2, 5, 0, 2, 0, 1, b'a'],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            properties: Properties::default(),
            filters: vec![s("a")],
        }),
    );
    vector(
        V5,
        &[0xA2, 6, 0, 2, 0, 0, 1, b'a'],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            properties: Properties::default(),
            filters: vec![s("a")],
        }),
    );
    vector(
        V3_1_1,
        &[0xB0, 2, 0, 2],
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            properties: Properties::default(),
            reason_codes: vec![],
        }),
    );
    vector(
        V5,
        &[0xB0, 4, 0, 2, 0, 0x11],
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            properties: Properties::default(),
            reason_codes: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        }),
    );
}

#[test]
fn ping() {
    vector(V3_1_1, &[0xC0, 0], Packet::PingReq);
    vector(V5, &[0xD0, 0], Packet::PingResp);
}

#[test]
fn disconnect_both_versions() {
    vector(
        V3_1_1,
        &[0xE0, 0],
        Packet::Disconnect(Disconnect::default()),
    );
    vector(V5, &[0xE0, 0], Packet::Disconnect(Disconnect::default()));
    vector(
        V5,
        &[0xE0, 1, 0x8E],
        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
    );
    vector(
        V5,
        &[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 0],
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: PropertyValues {
                session_expiry_interval: Some(0),
                ..Default::default()
            }
            .into(),
        }),
    );
    // 5.0 reasons are dropped for a 3.x client: DISCONNECT is empty there.
    let packet = Packet::Disconnect(Disconnect::new(ReasonCode::SERVER_SHUTTING_DOWN));
    assert_eq!(common::encode(V3_1_1, &packet), [0xE0, 0]);
}

#[test]
fn auth_v5() {
    vector(V5, &[0xF0, 0], Packet::Auth(Auth::default()));
    vector(
        V5,
        &[0xF0, 6, 0x18, 4, 0x15, 0, 1, b'm'],
        Packet::Auth(Auth {
            reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: PropertyValues {
                authentication_method: Some(s("m")),
                ..Default::default()
            }
            .into(),
        }),
    );
    let mut buf = bytes::BytesMut::new();
    assert!(Packet::Auth(Auth::default())
        .encode(V3_1_1, &mut buf)
        .is_err());
    assert!(buf.is_empty());
}

#[test]
fn decoder_learns_the_version_from_connect() {
    let mut decoder = Decoder::new(1024);
    let mut buf = bytes::BytesMut::new();
    common::vector(
        V5,
        &common::encode(V5, &simple_connect(V5)),
        simple_connect(V5),
    );
    simple_connect(V5).encode(V5, &mut buf).unwrap();
    // A 5.0 PUBACK with a reason code follows in the same read.
    buf.extend_from_slice(&[0x40, 3, 0, 10, 0x10]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(decoder.version(), Some(V5));
    let Ok(Some(Packet::PubAck(ack))) = decoder.decode(&mut buf) else {
        panic!("expected a PUBACK");
    };
    assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    assert!(buf.is_empty());
}

#[test]
fn decoder_waits_for_a_whole_packet_byte_by_byte() {
    let bytes = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
    let mut decoder = Decoder::with_version(V3_1_1, 1024);
    let mut buf = bytes::BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let result = decoder.decode(&mut buf).unwrap();
        if i + 1 < bytes.len() {
            assert_eq!(result, None, "incomplete after {} bytes", i + 1);
            assert_eq!(buf.len(), i + 1, "nothing consumed");
        } else {
            assert!(matches!(result, Some(Packet::Publish(_))));
        }
    }
}

#[test]
fn publish_payload_is_a_slice_of_the_input() {
    let mut buf = bytes::BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'][..]);
    let base = buf.as_ptr() as usize;
    let mut decoder = Decoder::with_version(V3_1_1, 1024);
    let Some(Packet::Publish(p)) = decoder.decode(&mut buf).unwrap() else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(p.payload.as_ptr() as usize, base + 7, "payload not copied");
    assert_eq!(
        p.topic.as_bytes().as_ptr() as usize,
        base + 4,
        "topic not copied"
    );
}
