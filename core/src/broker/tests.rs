//! Broker behaviour without sockets: one or two cores driven by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use robustmq_protocol::mqtt::{
    Connect, Disconnect, LastWill, Packet, Properties, PropertyValues, ProtocolVersion, PubReply,
    Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use super::*;
use crate::acl::{AclAction, AclRule, Permission};

struct Harness {
    cores: Vec<CoreBroker>,
    now: Instant,
}

impl Harness {
    fn new(cores: usize, config: MqttConfig) -> Harness {
        let acl = Arc::new(Acl::new(&config.acl, config.acl_no_match).unwrap());
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new(cores));
        let now = Instant::now();
        let cores = (0..cores)
            .map(|core| {
                CoreBroker::new(
                    BrokerContext {
                        node_id: 7,
                        core,
                        cores,
                        config: config.clone(),
                        acl: acl.clone(),
                        metrics: metrics.clone(),
                        started: now,
                    },
                    now,
                )
            })
            .collect();
        Harness { cores, now }
    }

    /// Exchanges cross-core messages until none are left.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.cores.len() {
                for (to, msgs) in self.cores[from].take_core_messages() {
                    moved = true;
                    for m in msgs {
                        self.cores[to].on_core_message(from, m, self.now);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn owner(&self, client: &str) -> usize {
        owner_core(client, self.cores.len())
    }

    /// The core that holds a client's session: its owner, unless the
    /// owner knows it moved (as the runtime routes a CONNECT).
    fn holder(&self, client: &str) -> usize {
        let owner = self.owner(client);
        self.cores[owner].session_away(client).unwrap_or(owner)
    }

    fn connect_with(&mut self, conn: ConnId, connect: Connect) -> Vec<Packet> {
        let core = self.holder(&connect.client_id);
        self.cores[core].on_connect(conn, Box::new(connect), false, None, self.now);
        self.settle();
        self.output(conn)
    }

    fn connect(&mut self, conn: ConnId, client: &str, version: ProtocolVersion) -> Vec<Packet> {
        self.connect_with(conn, connect(client, version))
    }

    fn send(&mut self, conn: ConnId, client: &str, packet: Packet) -> Vec<Packet> {
        let core = self.holder(client);
        self.cores[core].on_packet(conn, packet, self.now);
        self.settle();
        self.output(conn)
    }

    fn output(&mut self, conn: ConnId) -> Vec<Packet> {
        let mut all = Vec::new();
        for core in &mut self.cores {
            all.extend(core.take_output(conn).to_packets());
        }
        all
    }

    fn subscribe(&mut self, conn: ConnId, client: &str, filter: &str, qos: QoS) -> Vec<Packet> {
        self.send(
            conn,
            client,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: Properties::default(),
                filters: vec![SubscribeFilter {
                    filter: ByteString::from(filter),
                    options: SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                }],
            }),
        )
    }

    fn publish(&mut self, conn: ConnId, client: &str, topic: &str, payload: &'static [u8]) {
        self.send(
            conn,
            client,
            Packet::Publish(Publish {
                topic: ByteString::from(topic),
                payload: Bytes::from_static(payload),
                ..Default::default()
            }),
        );
    }

    /// Carries out the moves the cores chose at their last tick, as the
    /// runtime does (same connection ids: they are per core); returns
    /// them as (connection, from, to).
    fn move_publishers(&mut self) -> Vec<(ConnId, usize, usize)> {
        let mut done = Vec::new();
        for from in 0..self.cores.len() {
            for (conn, to) in self.cores[from].take_moves() {
                let moved = self.cores[from].move_out(conn, to).expect("movable");
                self.settle();
                self.cores[to].move_in(conn, moved, self.now).unwrap();
                done.push((conn, from, to));
            }
        }
        self.settle();
        done
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for core in &mut self.cores {
            core.tick(self.now);
        }
        self.settle();
    }
}

fn connect(client: &str, version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        client_id: ByteString::from(client),
        will: None,
        username: None,
        password: None,
    }
}

fn payloads(packets: &[Packet]) -> Vec<Bytes> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect()
}

fn suback_codes(packets: &[Packet]) -> Vec<ReasonCode> {
    packets
        .iter()
        .find_map(|p| match p {
            Packet::SubAck(s) => Some(s.reason_codes.clone()),
            _ => None,
        })
        .expect("a SUBACK")
}

#[test]
fn publish_crosses_cores_after_suback() {
    let mut h = Harness::new(2, MqttConfig::default());
    // Find two ids owned by different cores.
    let (a, b) = (
        "sub-0",
        (0..)
            .map(|i| format!("pub-{i}"))
            .find(|p| h.owner(p) != h.owner("sub-0"))
            .unwrap(),
    );
    h.connect(1, a, ProtocolVersion::V5);
    h.connect(2, &b, ProtocolVersion::V3_1_1);
    assert_eq!(
        suback_codes(&h.subscribe(1, a, "x/#", QoS::AtMostOnce)),
        [ReasonCode::GRANTED_QOS_0]
    );
    h.publish(2, &b, "x/y", b"over");
    assert_eq!(payloads(&h.output(1)), [Bytes::from_static(b"over")]);
}

/// The same topic from the same publisher, again and again, while the
/// subscriptions change: every message goes where the subscriptions are
/// when it is published (the remembered match and route must not outlive
/// a subscribe or unsubscribe, on the publisher's core or another).
#[test]
fn a_topic_published_again_follows_the_subscriptions_of_the_moment() {
    let mut h = Harness::new(2, MqttConfig::default());
    let publisher = "pub-0";
    let same = (0..)
        .map(|i| format!("same-{i}"))
        .find(|c| h.owner(c) == h.owner(publisher))
        .unwrap();
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|c| h.owner(c) != h.owner(publisher))
        .unwrap();
    h.connect(1, publisher, ProtocolVersion::V5);
    h.connect(2, &same, ProtocolVersion::V5);
    h.connect(3, &other, ProtocolVersion::V5);
    let unsubscribe = |filter: &str| {
        Packet::Unsubscribe(robustmq_protocol::mqtt::Unsubscribe {
            packet_id: 9,
            properties: Properties::default(),
            filters: vec![ByteString::from(filter.to_string())],
        })
    };

    let (mut same_got, mut other_got) = (Vec::new(), Vec::new());
    let mut publish = |h: &mut Harness, payload: &'static [u8]| {
        h.publish(1, publisher, "t/1", payload);
        same_got.extend(payloads(&h.output(2)));
        other_got.extend(payloads(&h.output(3)));
    };
    publish(&mut h, b"nobody");
    h.subscribe(2, &same, "t/+", QoS::AtMostOnce);
    publish(&mut h, b"same");
    h.subscribe(3, &other, "t/#", QoS::AtMostOnce);
    publish(&mut h, b"both");
    // The UNSUBACKs come with what the output held: none of it a PUBLISH.
    h.send(2, &same, unsubscribe("t/+"));
    publish(&mut h, b"other");
    h.send(3, &other, unsubscribe("t/#"));
    publish(&mut h, b"nobody again");
    let b = Bytes::from_static;
    assert_eq!(same_got, [b(b"same"), b(b"both")]);
    assert_eq!(other_got, [b(b"both"), b(b"other")]);
}

/// No Local is decided per publisher: a topic remembered for one client's
/// message is matched again for another's.
#[test]
fn no_local_holds_for_the_same_topic_from_two_publishers() {
    let mut h = Harness::new(1, MqttConfig::default());
    h.connect(1, "a", ProtocolVersion::V5);
    h.connect(2, "b", ProtocolVersion::V5);
    h.send(
        1,
        "a",
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: ByteString::from_static("t"),
                options: SubscriptionOptions {
                    no_local: true,
                    ..Default::default()
                },
            }],
        }),
    );
    let publish = |payload: &'static [u8]| {
        Packet::Publish(Publish {
            topic: ByteString::from_static("t"),
            payload: Bytes::from_static(payload),
            ..Default::default()
        })
    };
    let mut got = payloads(&h.send(1, "a", publish(b"own")));
    h.send(2, "b", publish(b"from b"));
    got.extend(payloads(&h.output(1)));
    got.extend(payloads(&h.send(1, "a", publish(b"own again"))));
    assert_eq!(got, [Bytes::from_static(b"from b")]);
}

/// What the runtime does: take the dirty connections, then their output.
/// A connection with output is in the dirty set however its session
/// came by it: after a flush, and after a takeover that left the old
/// connection's mark behind.
#[test]
fn a_connection_with_output_is_always_in_the_dirty_set() {
    let mut h = Harness::new(1, MqttConfig::default());
    // A 3.1.1 session without clean session outlives its connection.
    let mut sub = connect("sub", ProtocolVersion::V3_1_1);
    sub.clean_start = false;
    h.connect_with(1, sub.clone());
    h.connect(2, "pub", ProtocolVersion::V5);
    h.subscribe(1, "sub", "t", QoS::AtMostOnce);
    let publish = Packet::Publish(Publish {
        topic: ByteString::from_static("t"),
        payload: Bytes::from_static(b"m"),
        ..Default::default()
    });
    let flush = |h: &mut Harness| -> Vec<(ConnId, usize)> {
        let core = &mut h.cores[0];
        let dirty = core.take_dirty();
        dirty
            .into_iter()
            .map(|conn| (conn, core.take_output(conn).packets.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    flush(&mut h);
    for round in 0..3 {
        h.cores[0].on_packet(2, publish.clone(), h.now);
        h.cores[0].on_packet(2, publish.clone(), h.now);
        assert_eq!(flush(&mut h), [(1, 2)], "round {round}");
    }
    // Delivered but not flushed; then the subscriber comes back on
    // connection 3 (the old one is told and closed).
    h.cores[0].on_packet(2, publish.clone(), h.now);
    h.cores[0].on_connect(3, Box::new(sub), false, None, h.now);
    let flushed = flush(&mut h);
    assert!(flushed.iter().any(|(c, _)| *c == 3), "CONNACK: {flushed:?}");
    h.cores[0].on_packet(2, publish.clone(), h.now);
    assert_eq!(flush(&mut h), [(3, 1)]);
}

#[test]
fn suback_waits_for_the_other_cores() {
    let mut h = Harness::new(2, MqttConfig::default());
    h.connect(1, "s", ProtocolVersion::V5);
    let core = h.owner("s");
    h.cores[core].on_packet(
        1,
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: ByteString::from_static("new/filter"),
                options: SubscriptionOptions::default(),
            }],
        }),
        h.now,
    );
    assert!(h.cores[core].take_output(1).packets.is_empty(), "held back");
    h.settle();
    assert_eq!(
        suback_codes(&h.output(1)).len(),
        1,
        "released once acknowledged"
    );
}

#[test]
fn will_is_published_after_its_delay_and_cancelled_by_reconnect() {
    let mut h = Harness::new(1, MqttConfig::default());
    h.connect(1, "watcher", ProtocolVersion::V5);
    h.subscribe(1, "watcher", "wills/#", QoS::AtMostOnce);
    let with_will = |delay: u32| {
        let mut c = connect("dying", ProtocolVersion::V5);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        c.will = Some(LastWill {
            topic: ByteString::from_static("wills/dying"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: PropertyValues {
                will_delay_interval: Some(delay),
                ..Default::default()
            }
            .into(),
        });
        c
    };
    // Lost connection, delay 5 s: nothing at 4 s, the will at 5 s.
    h.connect_with(2, with_will(5));
    h.cores[0].on_connection_lost(2, h.now);
    h.advance(Duration::from_secs(4));
    assert!(payloads(&h.output(1)).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads(&h.output(1)), [Bytes::from_static(b"gone")]);
    // Lost, then back within the delay: never published.
    h.connect_with(3, with_will(5));
    h.cores[0].on_connection_lost(3, h.now);
    h.advance(Duration::from_secs(2));
    h.connect_with(4, with_will(5));
    h.advance(Duration::from_secs(10));
    assert!(payloads(&h.output(1)).is_empty());
    // A normal DISCONNECT discards it; 0x04 publishes it.
    h.send(4, "dying", Packet::Disconnect(Disconnect::default()));
    h.advance(Duration::from_secs(10));
    assert!(payloads(&h.output(1)).is_empty());
    h.connect_with(5, with_will(0));
    h.send(
        5,
        "dying",
        Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)),
    );
    assert_eq!(payloads(&h.output(1)), [Bytes::from_static(b"gone")]);
}

#[test]
fn session_expires_and_takes_its_subscriptions_along() {
    let mut h = Harness::new(1, MqttConfig::default());
    let mut c = connect("p", ProtocolVersion::V5);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(2);
    h.connect_with(1, c.clone());
    h.subscribe(1, "p", "a", QoS::AtLeastOnce);
    h.cores[0].on_connection_lost(1, h.now);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.cores[0].session_count(), 1);
    let Packet::ConnAck(ack) = &h.connect_with(2, c.clone())[0] else {
        panic!("CONNACK first")
    };
    assert!(ack.session_present);
    h.cores[0].on_connection_lost(2, h.now);
    h.advance(Duration::from_millis(2100));
    assert_eq!(h.cores[0].session_count(), 0);
    assert_eq!(h.cores[0].trie.filter_count(), 0);
    let Packet::ConnAck(ack) = &h.connect_with(3, c)[0] else {
        panic!("CONNACK first")
    };
    assert!(!ack.session_present);
}

#[test]
fn a_session_that_came_back_expires_at_its_last_disconnect() {
    let mut h = Harness::new(1, MqttConfig::default());
    let mut c = connect("flap", ProtocolVersion::V5);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(2);
    h.connect_with(1, c.clone());
    h.cores[0].on_connection_lost(1, h.now);
    h.advance(Duration::from_secs(1));
    h.connect_with(2, c);
    h.advance(Duration::from_millis(500));
    h.cores[0].on_connection_lost(2, h.now);
    // The first disconnect's expiry (2 s) has passed: superseded.
    h.advance(Duration::from_millis(600));
    assert_eq!(h.cores[0].session_count(), 1, "the old deadline is void");
    h.advance(Duration::from_millis(1300));
    assert_eq!(
        h.cores[0].session_count(),
        1,
        "1.9 s after the last disconnect"
    );
    h.advance(Duration::from_millis(200));
    assert_eq!(
        h.cores[0].session_count(),
        0,
        "2.1 s after the last disconnect"
    );
}

#[test]
fn keep_alive_closes_the_silent_and_spares_those_heard_from() {
    let mut h = Harness::new(1, MqttConfig::default());
    for (conn, client) in [(1, "talks"), (2, "silent")] {
        let mut c = connect(client, ProtocolVersion::V5);
        c.keep_alive = 2;
        h.connect_with(conn, c);
    }
    let open = |h: &Harness, conn| h.cores[0].connection_version(conn).is_some();
    // 1.5 x 2 s = 3 s of silence at most.
    for _ in 0..5 {
        h.advance(Duration::from_millis(1000));
        h.send(1, "talks", Packet::PingReq);
    }
    assert!(open(&h, 1), "heard from every second");
    assert!(!open(&h, 2), "silent for 5 s");
    let closed = h.cores[0].take_output(2);
    assert!(closed.close);
    assert!(
        matches!(closed.to_packets().last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::KEEP_ALIVE_TIMEOUT)
    );
    h.advance(Duration::from_millis(2900));
    assert!(open(&h, 1), "2.9 s after its last PINGREQ");
    h.advance(Duration::from_millis(200));
    assert!(!open(&h, 1), "3.1 s after its last PINGREQ");
}

#[test]
fn takeover_tells_the_old_connection() {
    let mut h = Harness::new(1, MqttConfig::default());
    h.connect(1, "same", ProtocolVersion::V5);
    let mut c = connect("same", ProtocolVersion::V5);
    c.clean_start = false;
    h.connect_with(2, c);
    let old = h.cores[0].take_output(1);
    assert!(old.close);
    assert!(
        matches!(old.to_packets().last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
    );
}

#[test]
fn shared_group_spreads_over_members_on_both_cores() {
    let mut h = Harness::new(2, MqttConfig::default());
    let m0 = (0..)
        .map(|i| format!("m{i}"))
        .find(|m| h.owner(m) == 0)
        .unwrap();
    let m1 = (0..)
        .map(|i| format!("m{i}"))
        .find(|m| h.owner(m) == 1)
        .unwrap();
    h.connect(1, &m0, ProtocolVersion::V5);
    h.connect(2, &m1, ProtocolVersion::V5);
    h.connect(3, "pub", ProtocolVersion::V5);
    assert_eq!(
        suback_codes(&h.subscribe(1, &m0, "$share/g/s/#", QoS::AtMostOnce)).len(),
        1
    );
    assert_eq!(
        suback_codes(&h.subscribe(2, &m1, "$share/g/s/#", QoS::AtMostOnce)).len(),
        1
    );
    for _ in 0..10 {
        h.publish(3, "pub", "s/1", b"m");
    }
    let (a, b) = (payloads(&h.output(1)).len(), payloads(&h.output(2)).len());
    assert_eq!((a, b), (5, 5), "round robin, each message once");
}

#[test]
fn acl_refusals_answer_with_reason_codes() {
    let config = MqttConfig {
        acl: vec![AclRule {
            permission: Permission::Deny,
            action: AclAction::All,
            topic: "secret/#".into(),
            clientid: None,
            username: None,
            ipaddr: None,
        }],
        ..MqttConfig::default()
    };
    let mut h = Harness::new(1, config);
    h.connect(1, "c5", ProtocolVersion::V5);
    assert_eq!(
        suback_codes(&h.subscribe(1, "c5", "secret/x", QoS::AtMostOnce)),
        [ReasonCode::NOT_AUTHORIZED]
    );
    let out = h.send(
        1,
        "c5",
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 9,
            topic: ByteString::from_static("secret/x"),
            ..Default::default()
        }),
    );
    assert!(matches!(&out[..], [Packet::PubAck(r)]
        if r.reason_code == ReasonCode::NOT_AUTHORIZED
            && r.properties.reason_string.as_deref() == Some("not authorized")));
}

#[test]
fn limits_on_subscriptions_and_topic_levels() {
    let config = MqttConfig {
        max_subscriptions_per_client: 1,
        max_topic_levels: 3,
        ..MqttConfig::default()
    };
    let mut h = Harness::new(1, config);
    h.connect(1, "c", ProtocolVersion::V5);
    assert_eq!(
        suback_codes(&h.subscribe(1, "c", "a", QoS::AtMostOnce)),
        [ReasonCode::GRANTED_QOS_0]
    );
    assert_eq!(
        suback_codes(&h.subscribe(1, "c", "b", QoS::AtMostOnce)),
        [ReasonCode::QUOTA_EXCEEDED]
    );
    assert_eq!(
        suback_codes(&h.subscribe(1, "c", "a", QoS::AtLeastOnce)),
        [ReasonCode::GRANTED_QOS_1],
        "replacing is not a new one"
    );
    let deep = Publish {
        topic: ByteString::from_static("1/2/3/4"),
        ..Default::default()
    };
    h.cores[0].on_packet(1, Packet::Publish(deep), h.now);
    let closed = h.cores[0].take_output(1);
    assert!(closed.close);
    assert!(
        matches!(closed.to_packets().last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::TOPIC_NAME_INVALID)
    );
}

#[test]
fn sys_topics_are_published_retained() {
    let config = MqttConfig {
        sys_interval_secs: 1,
        ..MqttConfig::default()
    };
    let mut h = Harness::new(2, config);
    h.advance(Duration::from_secs(1));
    let c = (0..)
        .map(|i| format!("c{i}"))
        .find(|c| h.owner(c) == 1)
        .unwrap();
    h.connect(1, &c, ProtocolVersion::V3_1_1);
    let out = h.subscribe(1, &c, "$SYS/brokers/7/clients/connected", QoS::AtMostOnce);
    // Retained, and replicated to the subscriber's core (core 1).
    assert_eq!(payloads(&out), [Bytes::from_static(b"0")]);
    h.advance(Duration::from_secs(1));
    assert_eq!(payloads(&h.output(1)), [Bytes::from_static(b"1")]);
}

#[test]
fn max_connections_refuses_with_quota_exceeded() {
    let config = MqttConfig {
        max_connections: 1,
        ..MqttConfig::default()
    };
    let mut h = Harness::new(1, config);
    h.connect(1, "a", ProtocolVersion::V5);
    let out = h.cores[0].take_output(1);
    assert!(!out.close);
    h.cores[0].on_connect(
        2,
        Box::new(connect("b", ProtocolVersion::V5)),
        false,
        None,
        h.now,
    );
    let refused = h.cores[0].take_output(2);
    assert!(refused.close);
    assert!(
        matches!(&refused.to_packets()[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::QUOTA_EXCEEDED)
    );
}

/// Back-pressure: two publishers, one on the subscriber's core and one on
/// the other, and a QoS 1 subscriber that does not acknowledge.
struct HoldSetup {
    h: Harness,
    sub: (ConnId, String),
    local_pub: (ConnId, String),
    remote_pub: (ConnId, String),
    next_id: u16,
}

impl HoldSetup {
    fn new(config: MqttConfig) -> HoldSetup {
        let mut h = Harness::new(2, config);
        let sub = "sub-0".to_string();
        let core = h.owner(&sub);
        let local = (0..)
            .map(|i| format!("pub-{i}"))
            .find(|p| h.owner(p) == core)
            .unwrap();
        let remote = (0..)
            .map(|i| format!("pub-{i}"))
            .find(|p| h.owner(p) != core)
            .unwrap();
        h.connect(1, &sub, ProtocolVersion::V3_1_1);
        h.connect(2, &local, ProtocolVersion::V3_1_1);
        h.connect(3, &remote, ProtocolVersion::V3_1_1);
        h.subscribe(1, &sub, "t/#", QoS::AtLeastOnce);
        HoldSetup {
            h,
            sub: (1, sub),
            local_pub: (2, local),
            remote_pub: (3, remote),
            next_id: 1,
        }
    }

    /// The next QoS 1 PUBLISH to `t/x`.
    fn next_publish(&mut self) -> Packet {
        self.next_id += 1;
        Packet::Publish(Publish {
            topic: ByteString::from_static("t/x"),
            payload: Bytes::from_static(b"m"),
            qos: QoS::AtLeastOnce,
            packet_id: self.next_id,
            ..Default::default()
        })
    }

    fn publish(&mut self, (conn, client): (ConnId, String)) {
        let packet = self.next_publish();
        self.h.send(conn, &client, packet);
    }

    fn held(&self, (conn, client): &(ConnId, String)) -> bool {
        self.h.cores[self.h.owner(client)].is_held(*conn)
    }

    /// Acknowledges everything the subscriber has received, and what that
    /// releases, until nothing more comes.
    fn ack_all(&mut self) -> usize {
        let (conn, client) = self.sub.clone();
        let mut acked = 0;
        let mut out = self.h.output(conn);
        loop {
            let ids: Vec<u16> = out
                .iter()
                .filter_map(|p| match p {
                    Packet::Publish(p) => Some(p.packet_id),
                    _ => None,
                })
                .collect();
            if ids.is_empty() {
                return acked;
            }
            out.clear();
            for id in ids {
                acked += 1;
                out.extend(
                    self.h
                        .send(conn, &client, Packet::PubAck(PubReply::new(id))),
                );
            }
        }
    }
}

fn small_queue_config() -> MqttConfig {
    MqttConfig {
        max_inflight: 1,
        max_queued_messages: 8,
        ..MqttConfig::default()
    }
}

#[test]
fn congested_subscriber_holds_publishers_on_both_cores_until_it_drains() {
    let mut s = HoldSetup::new(small_queue_config());
    // One in flight, then the queue: a quarter of 8 congests it.
    for _ in 0..2 {
        s.publish(s.local_pub.clone());
    }
    assert!(!s.held(&s.local_pub) && !s.held(&s.remote_pub));
    s.publish(s.local_pub.clone());
    s.publish(s.remote_pub.clone());
    assert!(s.held(&s.local_pub), "the local publisher is held");
    assert!(s.held(&s.remote_pub), "the remote publisher is held");
    let metrics = s.h.cores[0].context().metrics.clone();
    assert_eq!(metrics.snapshot().publishers_held, 2);
    let core = s.h.owner(&s.local_pub.1);
    assert!(s.h.cores[core]
        .take_hold_changes()
        .contains(&(s.local_pub.0, true)));
    // Nothing was dropped: every message arrives once acknowledged.
    assert_eq!(s.ack_all(), 4);
    assert!(!s.held(&s.local_pub) && !s.held(&s.remote_pub));
    assert!(s.h.cores[core]
        .take_hold_changes()
        .contains(&(s.local_pub.0, false)));
    assert_eq!(metrics.snapshot().publishers_held, 0);
}

impl Harness {
    /// Moves the cross-core messages `from` has queued to where they go,
    /// once: one hop of [`Harness::settle`].
    fn hop(&mut self, from: usize) -> usize {
        let mut moved = 0;
        for (to, msgs) in self.cores[from].take_core_messages() {
            for m in msgs {
                moved += 1;
                self.cores[to].on_core_message(from, m, self.now);
            }
        }
        moved
    }
}

impl HoldSetup {
    /// The remote publisher sends four QoS 1 messages, and its core routes
    /// them; nothing crosses cores yet.
    fn publish_remote_unsettled(&mut self) -> (usize, usize) {
        let sub_core = self.h.owner(&self.sub.1);
        let pub_core = self.h.owner(&self.remote_pub.1);
        for _ in 0..4 {
            let packet = self.next_publish();
            self.h.cores[pub_core].on_packet(self.remote_pub.0, packet, self.h.now);
        }
        (sub_core, pub_core)
    }
}

#[test]
fn a_hold_sent_to_another_core_is_unconfirmed_until_that_core_applied_it() {
    let mut s = HoldSetup::new(small_queue_config());
    let (sub_core, pub_core) = s.publish_remote_unsettled();
    assert!(!s.h.cores[sub_core].holds_unconfirmed());
    // The messages reach the subscriber's core, which congests and sends
    // a hold: from now on, what it receives keeps its mesh window.
    assert!(s.h.hop(pub_core) > 0);
    assert!(s.h.cores[sub_core].holds_unconfirmed());
    assert!(!s.held(&s.remote_pub), "the hold is on its way");
    // The hold lands: the publisher is held, the confirmation on its way.
    assert!(s.h.hop(sub_core) > 0);
    assert!(s.held(&s.remote_pub));
    assert!(s.h.cores[sub_core].holds_unconfirmed());
    assert!(s.h.hop(pub_core) > 0);
    assert!(!s.h.cores[sub_core].holds_unconfirmed());
    assert_eq!(s.ack_all(), 4);
}

#[test]
fn a_hold_for_a_connection_gone_is_confirmed_too() {
    let mut s = HoldSetup::new(small_queue_config());
    let (sub_core, pub_core) = s.publish_remote_unsettled();
    assert!(s.h.hop(pub_core) > 0);
    assert!(s.h.cores[sub_core].holds_unconfirmed());
    // The publisher leaves before the hold lands: no hold stays, and the
    // subscriber's core does not keep the mesh windows for good.
    s.h.cores[pub_core].on_connection_lost(s.remote_pub.0, s.h.now);
    s.h.settle();
    assert!(!s.held(&s.remote_pub));
    assert!(!s.h.cores[sub_core].holds_unconfirmed());
    assert_eq!(s.ack_all(), 4);
}

#[test]
fn held_publishers_overshoot_the_queue_without_loss_until_the_subscriber_is_slow() {
    let mut s = HoldSetup::new(small_queue_config());
    // Messages already on their way when the holds land: beyond the
    // queue's 8, within the slack.
    for _ in 0..20 {
        s.publish(s.remote_pub.clone());
    }
    assert!(s.held(&s.remote_pub));
    let advance = Duration::from_millis(MqttConfig::default().slow_subscriber_ms + 200);
    s.h.advance(advance);
    assert!(!s.held(&s.remote_pub), "a slow subscriber holds nobody");
    // Slow: no more holds, and the queue limit applies again.
    for _ in 0..20 {
        s.publish(s.remote_pub.clone());
    }
    assert!(!s.held(&s.remote_pub));
    // Drop oldest: the queue keeps its 19, the 20 older ones go.
    assert_eq!(s.ack_all(), 20);
    let totals = s.h.cores[0].context().metrics.snapshot();
    assert_eq!(totals.messages_dropped, 20);
    assert_eq!(totals.slow_subscribers, 1);
}

#[test]
fn a_full_write_buffer_holds_publishers_and_a_disconnect_releases_them() {
    let mut s = HoldSetup::new(MqttConfig::default());
    let core = s.h.owner(&s.sub.1);
    let now = s.h.now;
    s.h.cores[core].on_write_buffer(s.sub.0, true, now);
    s.publish(s.local_pub.clone());
    s.publish(s.remote_pub.clone());
    assert!(s.held(&s.local_pub) && s.held(&s.remote_pub));
    s.h.cores[core].on_write_buffer(s.sub.0, false, now);
    s.h.settle();
    assert!(!s.held(&s.local_pub) && !s.held(&s.remote_pub));
    s.h.cores[core].on_write_buffer(s.sub.0, true, now);
    s.publish(s.remote_pub.clone());
    assert!(s.held(&s.remote_pub));
    let (conn, client) = s.sub.clone();
    s.h.send(conn, &client, Packet::Disconnect(Disconnect::default()));
    assert!(!s.held(&s.remote_pub), "a subscriber gone holds nobody");
}

#[test]
fn held_publishers_are_not_timed_out_by_keep_alive() {
    let mut s = HoldSetup::new(small_queue_config());
    let mut c = connect("ka-pub", ProtocolVersion::V3_1_1);
    c.keep_alive = 1;
    let core = s.h.owner(&s.sub.1);
    let client = (0..)
        .map(|i| format!("ka-pub-{i}"))
        .find(|p| s.h.owner(p) == core)
        .unwrap();
    c.client_id = ByteString::from(client.clone());
    s.h.connect_with(9, c);
    for _ in 0..6 {
        s.publish((9, client.clone()));
    }
    assert!(s.held(&(9, client.clone())));
    s.h.advance(Duration::from_millis(1600));
    assert!(
        s.h.cores[core].connection_version(9).is_some(),
        "still connected"
    );
}

#[test]
fn a_subscriber_that_keeps_acknowledging_is_not_slow_and_keeps_its_publishers_held() {
    fn ids(packets: &[Packet]) -> Vec<u16> {
        packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.packet_id),
                _ => None,
            })
            .collect()
    }
    let mut s = HoldSetup::new(small_queue_config());
    for _ in 0..6 {
        s.publish(s.remote_pub.clone());
    }
    assert!(s.held(&s.remote_pub));
    let (conn, client) = s.sub.clone();
    let mut inflight = ids(&s.h.output(conn));
    let window = Duration::from_millis(MqttConfig::default().slow_subscriber_ms);
    // Each window the subscriber acknowledges one message (the queue's low
    // mark, 8 / 16, rounds up to one acknowledgement) and more arrive.
    for _ in 0..3 {
        let id = inflight.remove(0);
        let out = s.h.send(conn, &client, Packet::PubAck(PubReply::new(id)));
        inflight.extend(ids(&out));
        s.publish(s.remote_pub.clone());
        inflight.extend(ids(&s.h.output(conn)));
        s.h.advance(window + Duration::from_millis(200));
        assert!(s.held(&s.remote_pub), "progress keeps the hold");
    }
    let totals = s.h.cores[0].context().metrics.snapshot();
    assert_eq!(totals.slow_subscribers, 0);
    assert_eq!(totals.messages_dropped, 0);
}

/// Two client ids, the first owned by core 0 and the second by core 1.
fn split_pair(h: &Harness, a: &str, b: &str) -> (String, String) {
    let find = |prefix: &str, core: usize| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|c| h.owner(c) == core)
            .unwrap()
    };
    (find(a, 0), find(b, 1))
}

/// Publishes `n` QoS 0 messages `tag-k` to `topic`, then ends the window.
fn trickle(h: &mut Harness, conn: ConnId, client: &str, topic: &str, n: usize, tag: &str) {
    for k in 0..n {
        h.send(
            conn,
            client,
            Packet::Publish(Publish {
                topic: ByteString::from(topic),
                payload: Bytes::from(format!("{tag}-{k}")),
                ..Default::default()
            }),
        );
    }
    h.advance(Duration::from_millis(200));
}

/// Two cores; a subscriber (connection 1) to `t/1` on core 1, and a
/// publisher (connection 2) on core 0 that has sent it three windows of
/// messages: due to move.
fn three_windows_of_a_trickle() -> (Harness, String) {
    let mut h = Harness::new(2, MqttConfig::default());
    let (publisher, subscriber) = split_pair(&h, "pub", "sub");
    h.connect(1, &subscriber, ProtocolVersion::V3_1_1);
    h.subscribe(1, &subscriber, "t/1", QoS::AtMostOnce);
    h.connect(2, &publisher, ProtocolVersion::V3_1_1);
    for w in 0..3 {
        trickle(&mut h, 2, &publisher, "t/1", 15, &format!("{w}"));
    }
    (h, publisher)
}

/// A publisher whose messages all go to a subscriber of the other core
/// moves there after three windows, keeps its messages in order and in
/// full, and is found through its owner: a new CONNECT takes the session
/// over where it is, and its end is told to the owner.
#[test]
fn a_trickle_publisher_moves_to_its_subscribers_core() {
    let mut h = Harness::new(2, MqttConfig::default());
    let (publisher, subscriber) = split_pair(&h, "pub", "sub");
    h.connect(1, &subscriber, ProtocolVersion::V3_1_1);
    h.subscribe(1, &subscriber, "t/1", QoS::AtMostOnce);
    h.output(1);
    h.connect(2, &publisher, ProtocolVersion::V5);
    h.output(2);
    let mut expected = Vec::new();
    for window in 0..3 {
        let tag = format!("w{window}");
        trickle(&mut h, 2, &publisher, "t/1", 20, &tag);
        expected.extend((0..20).map(|k| format!("{tag}-{k}")));
        let moves = h.move_publishers();
        if window < 2 {
            assert!(moves.is_empty(), "window {window}: too early");
        } else {
            assert_eq!(moves, [(2, 0, 1)]);
        }
    }
    assert!(h.cores[1].holds_session(&publisher));
    assert!(!h.cores[0].holds_session(&publisher));
    assert_eq!(h.cores[0].session_away(&publisher), Some(1));
    assert_eq!(h.cores[0].connection_count(), 0);
    assert_eq!(h.cores[1].connection_count(), 2);
    trickle(&mut h, 2, &publisher, "t/1", 5, "after");
    expected.extend((0..5).map(|k| format!("after-{k}")));
    let got: Vec<String> = payloads(&h.output(1))
        .iter()
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    assert_eq!(got, expected, "every message, in order, across the move");
    let m = h.cores[0].context().metrics.snapshot();
    assert_eq!((m.publishers_moved, m.connections), (1, 2));

    // A new connection of the client takes over where the session is.
    // Its session expiry was 0: the old session ends with its connection
    // and a new one starts there, which the owner must keep knowing.
    let mut again = connect(&publisher, ProtocolVersion::V5);
    again.clean_start = false;
    let ack = h.connect_with(3, again);
    assert!(
        matches!(ack.first(), Some(Packet::ConnAck(a)) if !a.session_present),
        "{ack:?}"
    );
    let old = h.cores[1].take_output(2);
    assert!(old.close);
    assert!(
        matches!(old.to_packets().last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(h.cores[1].holds_session(&publisher));
    assert_eq!(h.cores[0].session_away(&publisher), Some(1));
    // Its end reaches the owner, which serves the next CONNECT itself.
    h.send(
        3,
        &publisher,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    );
    assert!(!h.cores[1].holds_session(&publisher));
    assert_eq!(h.cores[0].session_away(&publisher), None);
    h.connect(4, &publisher, ProtocolVersion::V3_1_1);
    assert!(h.cores[0].holds_session(&publisher));
}

/// A clean start on the core that holds a moved session replaces it
/// there: the owner keeps pointing at that core.
#[test]
fn a_clean_start_keeps_a_moved_session_where_it_is() {
    let (mut h, publisher) = three_windows_of_a_trickle();
    assert_eq!(h.move_publishers(), [(2, 0, 1)]);
    h.connect(3, &publisher, ProtocolVersion::V3_1_1);
    assert!(h.cores[1].holds_session(&publisher));
    assert_eq!(h.cores[0].session_away(&publisher), Some(1));
    assert!(!h.cores[0].holds_session(&publisher));
}

/// A moved publisher whose messages then go to its owner's core moves
/// back, and the owner forgets it was away; with three cores it never
/// moves from one non-owner to another.
#[test]
fn a_moved_publisher_goes_home_but_never_to_a_third_core() {
    let mut h = Harness::new(3, MqttConfig::default());
    let find = |h: &Harness, prefix: &str, core: usize| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|c| h.owner(c) == core)
            .unwrap()
    };
    let publisher = find(&h, "pub", 0);
    let on_1 = find(&h, "one", 1);
    let on_2 = find(&h, "two", 2);
    let home = find(&h, "home", 0);
    h.connect(1, &on_1, ProtocolVersion::V3_1_1);
    h.subscribe(1, &on_1, "to/1", QoS::AtMostOnce);
    h.connect(2, &on_2, ProtocolVersion::V3_1_1);
    h.subscribe(2, &on_2, "to/2", QoS::AtMostOnce);
    h.connect(3, &home, ProtocolVersion::V3_1_1);
    h.subscribe(3, &home, "to/0", QoS::AtMostOnce);
    h.connect(4, &publisher, ProtocolVersion::V3_1_1);
    for w in 0..3 {
        trickle(&mut h, 4, &publisher, "to/1", 12, &format!("{w}"));
    }
    assert_eq!(h.move_publishers(), [(4, 0, 1)]);
    for w in 0..5 {
        trickle(&mut h, 4, &publisher, "to/2", 12, &format!("{w}"));
    }
    assert!(h.move_publishers().is_empty(), "not from core 1 to core 2");
    for w in 0..3 {
        trickle(&mut h, 4, &publisher, "to/0", 12, &format!("{w}"));
    }
    assert_eq!(h.move_publishers(), [(4, 1, 0)]);
    assert!(h.cores[0].holds_session(&publisher));
    assert_eq!(h.cores[0].session_away(&publisher), None);
    assert_eq!(payloads(&h.output(3)).len(), 36);
}

/// Publishers that stay: to both cores, to its own core, to nobody, too
/// busy, too quiet, at QoS 1, with a subscription, or with moves off.
#[test]
fn publishers_that_spread_are_busy_or_subscribe_stay() {
    type Setup = fn(&mut Harness, &str, &str);
    fn stays(config: MqttConfig, setup: Setup, topic: &str, n: usize, qos: QoS) {
        let mut h = Harness::new(2, config);
        let (publisher, subscriber) = split_pair(&h, "pub", "sub");
        let (local, _) = split_pair(&h, "local", "unused");
        h.connect(1, &subscriber, ProtocolVersion::V3_1_1);
        h.subscribe(1, &subscriber, "t/#", QoS::AtLeastOnce);
        h.connect(2, &local, ProtocolVersion::V3_1_1);
        h.subscribe(2, &local, "both/#", QoS::AtMostOnce);
        h.connect(3, &publisher, ProtocolVersion::V3_1_1);
        setup(&mut h, &publisher, &subscriber);
        for _ in 0..4 {
            for k in 0..n {
                h.send(
                    3,
                    &publisher,
                    Packet::Publish(Publish {
                        topic: ByteString::from(topic),
                        payload: Bytes::from_static(b"m"),
                        qos,
                        packet_id: if qos == QoS::AtMostOnce {
                            0
                        } else {
                            k as u16 + 1
                        },
                        ..Default::default()
                    }),
                );
            }
            h.advance(Duration::from_millis(200));
            assert!(h.move_publishers().is_empty(), "{topic} x{n} {qos:?}");
        }
    }
    let none: Setup = |_, _, _| {};
    let default = MqttConfig::default;
    stays(default(), none, "t/1", 251, QoS::AtMostOnce);
    stays(default(), none, "t/1", 9, QoS::AtMostOnce);
    stays(default(), none, "t/1", 20, QoS::AtLeastOnce);
    stays(default(), none, "nobody", 20, QoS::AtMostOnce);
    stays(default(), none, "both/1", 20, QoS::AtMostOnce);
    let off = MqttConfig {
        move_publishers: false,
        ..MqttConfig::default()
    };
    stays(off, none, "t/1", 20, QoS::AtMostOnce);
    // Subscribed to its own topic: a delivery on its core too.
    let own: Setup = |h, p, _| {
        h.subscribe(3, p, "t/1", QoS::AtMostOnce);
    };
    stays(default(), own, "t/1", 20, QoS::AtMostOnce);
    // Subscribed elsewhere: it has state to keep.
    let other: Setup = |h, p, _| {
        h.subscribe(3, p, "elsewhere", QoS::AtMostOnce);
    };
    stays(default(), other, "t/1", 20, QoS::AtMostOnce);
    // Subscribers on both cores.
    let both: Setup = |h, _, s| {
        h.subscribe(1, s, "both/#", QoS::AtMostOnce);
    };
    stays(default(), both, "both/1", 20, QoS::AtMostOnce);
}

/// A move the runtime could not carry out (its socket had bytes to write,
/// its core messages unprocessed elsewhere) is chosen again at the next
/// window that agrees, not after three more.
#[test]
fn a_move_not_carried_out_is_chosen_again_at_the_next_window() {
    let (mut h, publisher) = three_windows_of_a_trickle();
    assert_eq!(h.cores[0].take_moves(), [(2, 1)], "chosen, and dropped");
    trickle(&mut h, 2, &publisher, "t/1", 15, "again");
    assert_eq!(h.move_publishers(), [(2, 0, 1)]);
}
