//! Session state machine tests: a fake clock (an `Instant` moved by hand),
//! packets in, packets out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use robustmq_protocol::mqtt::{Packet, PropertyValues, ProtocolVersion, Publish, QoS, ReasonCode};

use super::*;
use crate::message::Message;

fn message(topic: &'static str, payload: &'static [u8], qos: QoS) -> SharedMessage {
    Arc::new(Message {
        topic: ByteString::from_static(topic),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        expires_at: None,
        properties: Default::default(),
        publisher: ByteString::from_static("pub"),
        origin: None,
    })
}

fn delivery(payload: &'static [u8], qos: QoS) -> Delivery {
    Delivery {
        message: message("t", payload, qos),
        qos,
        retain: false,
        subscription_ids: vec![],
    }
}

fn session(config: SessionConfig) -> Session {
    Session::new(ByteString::from_static("c"), config)
}

fn connect(s: &mut Session, params: LinkParams, now: Instant) {
    s.attach(params, now);
    s.resume(now);
}

fn v5(keep_alive: u16) -> LinkParams {
    LinkParams::new(ProtocolVersion::V5, keep_alive)
}

/// The packets the session has for its connection, as `Packet`s.
fn take(s: &mut Session) -> Vec<Packet> {
    s.take_packets().iter().map(Outgoing::to_packet).collect()
}

/// The PUBLISH packets sent: (packet id, dup, payload).
fn publishes(s: &mut Session) -> Vec<(u16, bool, Bytes)> {
    take(s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id, p.dup, p.payload)),
            _ => None,
        })
        .collect()
}

#[test]
fn qos1_outbound_flow_and_unknown_puback() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(0), now);
    s.deliver(delivery(b"a", QoS::AtLeastOnce), now);
    let sent = publishes(&mut s);
    assert_eq!(sent, vec![(1, false, Bytes::from_static(b"a"))]);
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(s.on_puback(1, now), Ok(()));
    assert_eq!(s.inflight_len(), 0);
    assert_eq!(s.on_puback(1, now), Err(ReasonCode::PROTOCOL_ERROR));
    assert_eq!(s.on_pubcomp(7, now), Err(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn qos2_outbound_survives_reconnect_at_each_step() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(0), now);
    s.deliver(delivery(b"x", QoS::ExactlyOnce), now);
    assert_eq!(
        publishes(&mut s),
        vec![(1, false, Bytes::from_static(b"x"))]
    );
    // Connection lost before PUBREC: PUBLISH again with DUP.
    s.detach();
    connect(&mut s, v5(0), now);
    assert_eq!(publishes(&mut s), vec![(1, true, Bytes::from_static(b"x"))]);
    s.on_pubrec(1, ReasonCode::SUCCESS, now).unwrap();
    assert!(matches!(take(&mut s)[..], [Packet::PubRel(ref r)] if r.packet_id == 1));
    // Lost after PUBREL: PUBREL again, not the message.
    s.detach();
    connect(&mut s, v5(0), now);
    assert!(matches!(take(&mut s)[..], [Packet::PubRel(ref r)] if r.packet_id == 1));
    s.on_pubcomp(1, now).unwrap();
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn pubrec_with_error_ends_the_exchange() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(0), now);
    s.deliver(delivery(b"x", QoS::ExactlyOnce), now);
    take(&mut s);
    s.on_pubrec(1, ReasonCode::QUOTA_EXCEEDED, now).unwrap();
    assert!(take(&mut s).is_empty(), "no PUBREL after a refusal");
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn inflight_window_holds_back_and_keeps_order() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        max_inflight: 2,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    for p in [&b"1"[..], b"2", b"3", b"4", b"5"] {
        let p: &'static [u8] = Box::leak(p.to_vec().into_boxed_slice());
        s.deliver(delivery(p, QoS::AtLeastOnce), now);
    }
    let sent = publishes(&mut s);
    assert_eq!(sent.len(), 2);
    assert_eq!(s.queued_len(), 3);
    s.on_puback(sent[0].0, now).unwrap();
    let next = publishes(&mut s);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].2, Bytes::from_static(b"3"));
    // The client's receive maximum narrows the window further.
    let mut params = v5(0);
    params.client_receive_maximum = 1;
    let mut s = session(SessionConfig::default());
    connect(&mut s, params, now);
    s.deliver(delivery(b"a", QoS::AtLeastOnce), now);
    s.deliver(delivery(b"b", QoS::AtLeastOnce), now);
    assert_eq!(publishes(&mut s).len(), 1);
}

#[test]
fn qos0_is_not_windowed() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        max_inflight: 1,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    for _ in 0..10 {
        s.deliver(delivery(b"z", QoS::AtMostOnce), now);
    }
    assert_eq!(publishes(&mut s).len(), 10);
}

#[test]
fn bounded_queue_drops_by_policy() {
    let now = Instant::now();
    for (policy, kept) in [
        (DropPolicy::DropOldest, Bytes::from_static(b"3")),
        (DropPolicy::DropNewest, Bytes::from_static(b"2")),
    ] {
        let mut s = session(SessionConfig {
            max_queued: 2,
            drop_policy: policy,
            ..Default::default()
        });
        // Offline: QoS 1 is queued.
        s.deliver(delivery(b"1", QoS::AtLeastOnce), now);
        s.deliver(delivery(b"2", QoS::AtLeastOnce), now);
        s.deliver(delivery(b"3", QoS::AtLeastOnce), now);
        assert_eq!(s.queued_len(), 2);
        assert_eq!(s.counters().dropped_queue_full, 1);
        connect(&mut s, v5(0), now);
        let sent = publishes(&mut s);
        assert_eq!(sent.last().unwrap().2, kept, "{policy:?}");
    }
}

#[test]
fn offline_qos0_is_dropped_and_qos1_kept() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    s.deliver(delivery(b"zero", QoS::AtMostOnce), now);
    s.deliver(delivery(b"one", QoS::AtLeastOnce), now);
    assert_eq!(s.counters().dropped_offline_qos0, 1);
    connect(&mut s, v5(0), now);
    let sent = publishes(&mut s);
    assert_eq!(sent, vec![(1, false, Bytes::from_static(b"one"))]);
}

#[test]
fn inbound_qos2_is_exactly_once_across_reconnects() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(0), now);
    let mut p = Publish {
        qos: QoS::ExactlyOnce,
        topic: ByteString::from_static("t"),
        packet_id: 9,
        ..Default::default()
    };
    assert_eq!(s.on_publish(&mut p, now), Ok(InboundPublish::New));
    s.ack_publish(QoS::ExactlyOnce, 9, ReasonCode::SUCCESS, Default::default());
    // The client did not see PUBREC and sends again, on a new connection.
    s.detach();
    connect(&mut s, v5(0), now);
    p.dup = true;
    assert_eq!(s.on_publish(&mut p, now), Ok(InboundPublish::Duplicate));
    s.on_pubrel(9, now);
    let packets = take(&mut s);
    assert!(
        matches!(packets.last(), Some(Packet::PubComp(r)) if r.reason_code == ReasonCode::SUCCESS)
    );
    // Released: the id is free for a new message.
    assert_eq!(s.on_publish(&mut p, now), Ok(InboundPublish::New));
    // PUBREL for an id never seen.
    s.on_pubrel(77, now);
    assert!(matches!(take(&mut s).last(), Some(Packet::PubComp(r))
        if r.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND));
}

#[test]
fn inbound_receive_maximum_is_enforced() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        receive_maximum: 2,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    for id in 1..=2 {
        let mut p = Publish {
            qos: QoS::ExactlyOnce,
            topic: ByteString::from_static("t"),
            packet_id: id,
            ..Default::default()
        };
        assert_eq!(s.on_publish(&mut p, now), Ok(InboundPublish::New));
    }
    let mut p = Publish {
        qos: QoS::ExactlyOnce,
        topic: ByteString::from_static("t"),
        packet_id: 3,
        ..Default::default()
    };
    assert_eq!(
        s.on_publish(&mut p, now),
        Err(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn keep_alive_with_a_fake_clock() {
    let start = Instant::now();
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(10), start);
    assert!(!s.keep_alive_expired(start + Duration::from_secs(15)));
    assert!(s.keep_alive_expired(start + Duration::from_millis(15_001)));
    s.touch(start + Duration::from_secs(14));
    assert!(!s.keep_alive_expired(start + Duration::from_secs(28)));
    assert!(s.keep_alive_expired(start + Duration::from_millis(29_001)));
    // Keep-alive 0 never expires.
    let mut s = session(SessionConfig::default());
    connect(&mut s, v5(0), start);
    assert!(!s.keep_alive_expired(start + Duration::from_secs(100_000)));
}

#[test]
fn inbound_topic_aliases() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        topic_alias_maximum: 5,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    let mut first = Publish {
        topic: ByteString::from_static("long/topic"),
        properties: PropertyValues {
            topic_alias: Some(3),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    s.on_publish(&mut first, now).unwrap();
    assert_eq!(first.properties.topic_alias, None, "alias consumed");
    let mut second = Publish {
        properties: PropertyValues {
            topic_alias: Some(3),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    s.on_publish(&mut second, now).unwrap();
    assert_eq!(&*second.topic, "long/topic");
    let mut unknown = Publish {
        properties: PropertyValues {
            topic_alias: Some(4),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    assert_eq!(
        s.on_publish(&mut unknown, now),
        Err(ReasonCode::PROTOCOL_ERROR)
    );
    let mut too_high = Publish {
        topic: ByteString::from_static("x"),
        properties: PropertyValues {
            topic_alias: Some(6),
            ..Default::default()
        }
        .into(),
        ..Default::default()
    };
    assert_eq!(
        s.on_publish(&mut too_high, now),
        Err(ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn outbound_topic_aliases() {
    let now = Instant::now();
    let mut params = v5(0);
    params.client_topic_alias_maximum = 1;
    let mut s = session(SessionConfig::default());
    connect(&mut s, params, now);
    let other = Delivery {
        message: message("other", b"o", QoS::AtMostOnce),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: vec![],
    };
    s.deliver(delivery(b"1", QoS::AtMostOnce), now);
    s.deliver(delivery(b"2", QoS::AtMostOnce), now);
    s.deliver(other, now);
    let sent: Vec<Publish> = take(&mut s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        (&*sent[0].topic, sent[0].properties.topic_alias),
        ("t", Some(1))
    );
    assert_eq!(
        (&*sent[1].topic, sent[1].properties.topic_alias),
        ("", Some(1))
    );
    // Aliases are used up: the new topic goes out in full.
    assert_eq!(
        (&*sent[2].topic, sent[2].properties.topic_alias),
        ("other", None)
    );
}

#[test]
fn message_expiry_is_enforced_and_forwarded() {
    let now = Instant::now();
    let mut s = session(SessionConfig::default());
    let mut m = (*message("t", b"e", QoS::AtLeastOnce)).clone();
    m.expires_at = Some(now + Duration::from_secs(10));
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![4],
    };
    // Queued while offline for 4 s: 6 s are left when it goes out.
    s.deliver(d.clone(), now);
    connect(&mut s, v5(0), now + Duration::from_secs(4));
    let packets = take(&mut s);
    let Some(Packet::Publish(p)) = packets.first() else {
        panic!("expected a PUBLISH")
    };
    assert_eq!(p.properties.message_expiry_interval, Some(6));
    assert_eq!(p.properties.subscription_identifiers, vec![4]);
    // Offline past its expiry: never delivered.
    let mut s = session(SessionConfig::default());
    s.deliver(d, now);
    connect(&mut s, v5(0), now + Duration::from_secs(11));
    assert!(take(&mut s).is_empty());
    assert_eq!(s.counters().dropped_expired, 1);
}

#[test]
fn packets_larger_than_the_client_accepts_are_dropped() {
    let now = Instant::now();
    let mut params = v5(0);
    params.client_maximum_packet_size = 20;
    let mut s = session(SessionConfig::default());
    connect(&mut s, params, now);
    s.deliver(delivery(b"small", QoS::AtLeastOnce), now);
    s.deliver(
        delivery(b"a payload that is far too large", QoS::AtLeastOnce),
        now,
    );
    assert_eq!(publishes(&mut s).len(), 1);
    assert_eq!(s.counters().dropped_too_large, 1);
    assert_eq!(s.inflight_len(), 1, "the dropped one holds no packet id");
}

#[test]
fn packet_ids_skip_those_in_use() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        max_inflight: 100,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    s.next_packet_id = u16::MAX;
    s.deliver(delivery(b"a", QoS::AtLeastOnce), now);
    s.deliver(delivery(b"b", QoS::AtLeastOnce), now);
    let ids: Vec<u16> = publishes(&mut s).iter().map(|p| p.0).collect();
    assert_eq!(ids, vec![u16::MAX, 1], "wraps past zero");
}

#[test]
fn packet_ids_stay_unique_when_acknowledged_out_of_order_across_wraps() {
    let now = Instant::now();
    let mut s = session(SessionConfig {
        max_inflight: 64,
        max_queued: 10_000,
        ..Default::default()
    });
    connect(&mut s, v5(0), now);
    let mut in_use: Vec<u16> = Vec::new();
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15;
    // 300,000 messages: more than four walks through the 65,535 ids, with
    // acknowledgements in a scrambled order so that old ids linger while
    // the walk comes round to them.
    for _ in 0..300_000 {
        s.deliver(delivery(b"m", QoS::AtLeastOnce), now);
        for (id, _, _) in publishes(&mut s) {
            assert!(!in_use.contains(&id), "packet id {id} given twice");
            in_use.push(id);
        }
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        if in_use.len() >= 64 || random % 3 == 0 {
            // Mostly a recent one; now and then the oldest.
            let i = if random % 17 == 0 {
                0
            } else {
                (random as usize / 17) % in_use.len()
            };
            let id = in_use.swap_remove(i);
            s.on_puback(id, now).unwrap();
        }
    }
}

#[test]
fn acknowledgements_together_send_what_one_by_one_would() {
    let now = Instant::now();
    let config = SessionConfig {
        max_inflight: 2,
        ..Default::default()
    };
    let (mut one, mut many) = (session(config.clone()), session(config));
    for s in [&mut one, &mut many] {
        connect(s, v5(0), now);
        for payload in [&b"a"[..], b"b", b"c", b"d", b"e"] {
            s.deliver(delivery(payload, QoS::AtLeastOnce), now);
        }
    }
    assert_eq!(publishes(&mut one), publishes(&mut many));
    one.on_puback(1, now).unwrap();
    one.on_puback(2, now).unwrap();
    many.on_pubacks(&[1, 2], now).unwrap();
    let sent = publishes(&mut many);
    assert_eq!(publishes(&mut one), sent);
    assert_eq!(sent.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 4]);
    // An unknown id ends the batch with an error; those before it count
    // and the window is refilled for them.
    assert_eq!(
        many.on_pubacks(&[3, 99, 4], now),
        Err(ReasonCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        publishes(&mut many).iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![5]
    );
    assert_eq!(many.inflight_len(), 2, "4 and 5 in flight");
}
