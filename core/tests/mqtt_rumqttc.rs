//! The broker driven by the `rumqttc` crate, MQTT 3.1.1 (`rumqttc::`) and
//! 5.0 (`rumqttc::v5::`), over TCP, one broker process per test, 2 cores.

mod mqtt_support;

use std::collections::HashSet;
use std::time::Duration;

use mqtt_support::*;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, DisconnectReasonCode, Packet as P5, SubscribeReasonCode as Sub5,
};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{ConnectReturnCode, LastWill, Packet as P3, QoS as Q3, SubscribeReasonCode as Sub3};

fn q5(q: u8) -> Q5 {
    match q {
        0 => Q5::AtMostOnce,
        1 => Q5::AtLeastOnce,
        _ => Q5::ExactlyOnce,
    }
}

fn q3(q: u8) -> Q3 {
    match q {
        0 => Q3::AtMostOnce,
        1 => Q3::AtLeastOnce,
        _ => Q3::ExactlyOnce,
    }
}

fn session(expiry: u32) -> ConnectProperties {
    let mut p = ConnectProperties::new();
    p.session_expiry_interval = Some(expiry);
    p
}

/// QoS 0/1/2 both ways, publisher and subscriber on different cores, the
/// delivered QoS being the lower of published and granted, in order.
#[test]
fn v3_qos_levels_across_cores() {
    let b = Broker::start();
    let sub_id = id_on_core("v3-sub", 0, 2);
    let low_id = id_on_core("v3-low", 1, 2);
    let pub_id = id_on_core("v3-pub", 1, 2);
    let (mut sub, ack) = v3_connect(b.port, &sub_id, |_| {});
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert_eq!(
        sub.sub("q/#", Q3::ExactlyOnce),
        vec![Sub3::Success(Q3::ExactlyOnce)]
    );
    let (mut low, _) = v3_connect(b.port, &low_id, |_| {});
    assert_eq!(
        low.sub("q/#", Q3::AtLeastOnce),
        vec![Sub3::Success(Q3::AtLeastOnce)]
    );
    let (mut publ, _) = v3_connect(b.port, &pub_id, |_| {});
    for q in 0..3u8 {
        publ.publ(&format!("q/{q}"), q3(q), false, format!("m{q}").as_bytes());
        let got = sub.recv_publish();
        assert_eq!(
            (got.topic.as_str(), got.qos),
            (format!("q/{q}").as_str(), q3(q))
        );
        assert_eq!(&got.payload[..], format!("m{q}").as_bytes());
        let got = low.recv_publish();
        assert_eq!(got.qos, q3(q.min(1)), "granted QoS 1 caps delivery");
    }
    // In order, per topic, at QoS 1 and 2.
    for q in [1u8, 2] {
        for i in 0..20 {
            publ.client
                .try_publish("q/order", q3(q), false, format!("{i}"))
                .unwrap();
        }
        for i in 0..20 {
            let got = sub.recv_publish();
            assert_eq!(&got.payload[..], format!("{i}").as_bytes(), "QoS {q} order");
        }
    }
}

#[test]
fn v5_qos_levels_across_cores() {
    let b = Broker::start();
    let sub_id = id_on_core("v5-sub", 1, 2);
    let pub_id = id_on_core("v5-pub", 0, 2);
    let (mut sub, ack) = v5_connect(b.port, &sub_id, |_| {});
    assert_eq!(
        ack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    assert_eq!(
        sub.sub("q/#", Q5::ExactlyOnce),
        vec![Sub5::Success(Q5::ExactlyOnce)]
    );
    let (mut publ, _) = v5_connect(b.port, &pub_id, |_| {});
    for q in 0..3u8 {
        publ.publ(&format!("q/{q}"), q5(q), false, format!("m{q}").as_bytes());
        let got = sub.recv_publish();
        assert_eq!(&got.topic[..], format!("q/{q}").as_bytes());
        assert_eq!(got.qos, q5(q));
        assert_eq!(&got.payload[..], format!("m{q}").as_bytes());
    }
    for i in 0..30 {
        publ.client
            .try_publish("q/order", Q5::ExactlyOnce, false, format!("{i}"))
            .unwrap();
    }
    for i in 0..30 {
        assert_eq!(&sub.recv_publish().payload[..], format!("{i}").as_bytes());
    }
}

/// A persistent 3.1.1 session keeps its subscription and queues QoS 1
/// messages while offline; a clean session then discards it all.
#[test]
fn v3_persistent_then_clean_session() {
    let b = Broker::start();
    let id = id_on_core("v3-persist", 0, 2);
    let (mut sub, ack) = v3_connect(b.port, &id, |o| {
        o.set_clean_session(false);
    });
    assert!(!ack.session_present);
    sub.sub("persist/#", Q3::AtLeastOnce);
    sub.disconnect();
    // On the subscriber's core: a PUBACK then means the message reached the
    // offline session (across cores it could still be on its way when the
    // subscriber reconnects, and the QoS 0 one would arrive online).
    let (mut publ, _) = v3_connect(b.port, &id_on_core("v3-persist-pub", 0, 2), |_| {});
    for i in 0..3 {
        publ.publ(
            "persist/a",
            Q3::AtLeastOnce,
            false,
            format!("{i}").as_bytes(),
        );
    }
    publ.publ("persist/a", Q3::AtMostOnce, false, b"qos0-offline");
    // The same connection's next PUBACK says the QoS 0 one was routed
    // (dropped: QoS 0 is not queued for offline sessions by default).
    publ.publ("persist/a", Q3::AtLeastOnce, false, b"3");
    let (mut sub, ack) = v3_connect(b.port, &id, |o| {
        o.set_clean_session(false);
    });
    assert!(ack.session_present, "the session is still there");
    for i in 0..4 {
        let got = sub.recv_publish();
        assert_eq!(&got.payload[..], format!("{i}").as_bytes());
        assert_eq!(got.qos, Q3::AtLeastOnce);
    }
    // The subscription survived: no new SUBSCRIBE needed.
    publ.publ("persist/a", Q3::AtLeastOnce, false, b"online");
    assert_eq!(&sub.recv_publish().payload[..], b"online");
    sub.kill();
    // Clean session: no session present, nothing queued, no subscription.
    publ.publ("persist/a", Q3::AtLeastOnce, false, b"lost");
    let (mut sub, ack) = v3_connect(b.port, &id, |o| {
        o.set_clean_session(true);
    });
    assert!(!ack.session_present);
    publ.publ("persist/a", Q3::AtLeastOnce, false, b"after-clean");
    sub.no_publish(QUIET);
}

/// 5.0: clean start false with a session expiry keeps the session and its
/// queue; clean start true drops them.
#[test]
fn v5_persistent_then_clean_start() {
    let b = Broker::start();
    let id = id_on_core("v5-persist", 1, 2);
    let (mut sub, ack) = v5_connect(b.port, &id, |o| {
        o.set_clean_start(false);
        o.set_connect_properties(session(60));
    });
    assert!(!ack.session_present);
    sub.sub("persist/#", Q5::ExactlyOnce);
    sub.disconnect();
    let (mut publ, _) = v5_connect(b.port, &id_on_core("v5-persist-pub", 1, 2), |_| {});
    publ.publ("persist/a", Q5::AtLeastOnce, false, b"one");
    publ.publ("persist/a", Q5::ExactlyOnce, false, b"two");
    let (mut sub, ack) = v5_connect(b.port, &id, |o| {
        o.set_clean_start(false);
        o.set_connect_properties(session(60));
    });
    assert!(ack.session_present);
    let (a, bb) = (sub.recv_publish(), sub.recv_publish());
    assert_eq!((&a.payload[..], a.qos), (&b"one"[..], Q5::AtLeastOnce));
    assert_eq!((&bb.payload[..], bb.qos), (&b"two"[..], Q5::ExactlyOnce));
    sub.disconnect();
    publ.publ(
        "persist/a",
        Q5::AtLeastOnce,
        false,
        b"dropped by clean start",
    );
    let (mut sub, ack) = v5_connect(b.port, &id, |o| {
        o.set_clean_start(true);
    });
    assert!(!ack.session_present);
    publ.publ("persist/a", Q5::AtLeastOnce, false, b"no subscription");
    sub.no_publish(QUIET);
}

/// The will is published when the connection drops (socket closed without
/// DISCONNECT), and not after a normal DISCONNECT.
#[test]
fn v3_will_on_lost_connection_only() {
    let b = Broker::start();
    let (mut watcher, _) = v3_connect(b.port, &id_on_core("v3-watch", 0, 2), |_| {});
    watcher.sub("will/#", Q3::AtLeastOnce);
    let (c, _) = v3_connect(b.port, &id_on_core("v3-willer", 1, 2), |o| {
        o.set_last_will(LastWill::new("will/v3", "gone", Q3::AtLeastOnce, false));
    });
    c.kill();
    let got = watcher.recv_publish();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("will/v3", &b"gone"[..])
    );
    let (c, _) = v3_connect(b.port, &id_on_core("v3-polite", 1, 2), |o| {
        o.set_last_will(LastWill::new("will/v3", "never", Q3::AtLeastOnce, false));
    });
    c.disconnect();
    watcher.no_publish(QUIET);
}

#[test]
fn v5_will_on_lost_connection_only() {
    let b = Broker::start();
    let (mut watcher, _) = v5_connect(b.port, &id_on_core("v5-watch", 1, 2), |_| {});
    watcher.sub("will/#", Q5::AtLeastOnce);
    let (c, _) = v5_connect(b.port, &id_on_core("v5-willer", 0, 2), |o| {
        o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
            "will/v5",
            "gone",
            Q5::AtLeastOnce,
            false,
            None,
        ));
    });
    c.kill();
    let got = watcher.recv_publish();
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&b"will/v5"[..], &b"gone"[..])
    );
    let (c, _) = v5_connect(b.port, &id_on_core("v5-polite", 0, 2), |o| {
        o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
            "will/v5",
            "never",
            Q5::AtLeastOnce,
            false,
            None,
        ));
    });
    c.disconnect();
    watcher.no_publish(QUIET);
}

/// Retained messages: set, replace, clear with an empty payload; a new
/// subscriber on another core gets the current one with the retain flag.
#[test]
fn v3_retained_set_replace_clear() {
    let b = Broker::start();
    let (mut publ, _) = v3_connect(b.port, &id_on_core("v3-ret-pub", 0, 2), |_| {});
    publ.publ("ret/a", Q3::AtLeastOnce, true, b"first");
    let (mut s1, _) = v3_connect(b.port, &id_on_core("v3-ret-s1", 1, 2), |_| {});
    s1.sub("ret/#", Q3::AtLeastOnce);
    let got = s1.recv_publish();
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"first");
    // A live delivery of a retained publish has retain 0 in 3.1.1.
    publ.publ("ret/a", Q3::AtLeastOnce, true, b"second");
    let got = s1.recv_publish();
    assert_eq!(&got.payload[..], b"second");
    assert!(!got.retain, "live messages are not flagged retained");
    let (mut s2, _) = v3_connect(b.port, &id_on_core("v3-ret-s2", 0, 2), |_| {});
    s2.sub("ret/+", Q3::AtMostOnce);
    let got = s2.recv_publish();
    assert_eq!((&got.payload[..], got.retain), (&b"second"[..], true));
    publ.publ("ret/a", Q3::AtLeastOnce, true, b"");
    let (mut s3, _) = v3_connect(b.port, &id_on_core("v3-ret-s3", 1, 2), |_| {});
    s3.sub("ret/#", Q3::AtLeastOnce);
    s3.no_publish(QUIET);
}

/// Takeover: the same client id connects again (its connection may be
/// accepted on either core and handed to the owner): the old 5.0
/// connection gets DISCONNECT 0x8E, the session continues.
#[test]
fn v5_session_takeover() {
    let b = Broker::start();
    let id = "v5-takeover";
    let (mut old, _) = v5_connect(b.port, id, |o| {
        o.set_connect_properties(session(60));
    });
    old.sub("take/#", Q5::AtLeastOnce);
    let (mut new, ack) = v5_connect(b.port, id, |o| {
        o.set_clean_start(false);
        o.set_connect_properties(session(60));
    });
    assert!(ack.session_present);
    // rumqttc reports a DISCONNECT from the server as an error carrying
    // its reason code and reason string. (rumqttc 0.24 cannot parse a
    // DISCONNECT of remaining length 1, reason code without property length,
    // valid per MQTT 5.0 3.14.2.2.1; the broker's carries a reason string.)
    let (err, got) = old.wait_error(WAIT);
    assert!(
        err.contains(&format!("{:?}", DisconnectReasonCode::SessionTakenOver)),
        "old connection: {err}, {got:?}"
    );
    let (mut publ, _) = v5_connect(
        b.port,
        &id_on_core("v5-take-pub", 1 - owner_core(id, 2), 2),
        |_| {},
    );
    publ.publ("take/x", Q5::AtLeastOnce, false, b"to the new one");
    assert_eq!(&new.recv_publish().payload[..], b"to the new one");
}

#[test]
fn v3_session_takeover() {
    let b = Broker::start();
    let id = "v3-takeover";
    let (mut old, _) = v3_connect(b.port, id, |o| {
        o.set_clean_session(false);
    });
    old.sub("take/#", Q3::AtLeastOnce);
    let (mut new, ack) = v3_connect(b.port, id, |o| {
        o.set_clean_session(false);
    });
    assert!(ack.session_present);
    let (err, _) = old.wait_error(WAIT);
    assert!(!err.is_empty());
    let (mut publ, _) = v3_connect(
        b.port,
        &id_on_core("v3-take-pub", 1 - owner_core(id, 2), 2),
        |_| {},
    );
    publ.publ("take/x", Q3::AtLeastOnce, false, b"to the new one");
    assert_eq!(&new.recv_publish().payload[..], b"to the new one");
}

/// A shared subscription with members on both cores: round robin gives
/// every member some messages, none twice, none lost (QoS 1).
#[test]
fn shared_subscription_members_on_both_cores() {
    let b = Broker::start();
    let mut members = Vec::new();
    for (i, core) in [0, 1, 0, 1].into_iter().enumerate() {
        let id = id_on_core(&format!("share-m{i}"), core, 2);
        if i % 2 == 0 {
            let (mut m, _) = v5_connect(b.port, &id, |_| {});
            assert_eq!(
                m.sub("$share/g/sh/#", Q5::AtLeastOnce),
                vec![Sub5::Success(Q5::AtLeastOnce)]
            );
            members.push(Member::V5(m));
        } else {
            let (mut m, _) = v3_connect(b.port, &id, |_| {});
            assert_eq!(
                m.sub("$share/g/sh/#", Q3::AtLeastOnce),
                vec![Sub3::Success(Q3::AtLeastOnce)]
            );
            members.push(Member::V3(m));
        }
    }
    let (mut publ, _) = v5_connect(b.port, &id_on_core("share-pub", 1, 2), |_| {});
    let n = 40;
    for i in 0..n {
        publ.publ("sh/x", Q5::AtLeastOnce, false, format!("{i}").as_bytes());
    }
    let mut seen = HashSet::new();
    let mut counts = vec![0; members.len()];
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < n && std::time::Instant::now() < deadline {
        for (k, m) in members.iter_mut().enumerate() {
            while let Some(payload) = m.try_publish(Duration::from_millis(10)) {
                assert!(seen.insert(payload.clone()), "delivered twice: {payload}");
                counts[k] += 1;
            }
        }
    }
    assert_eq!(seen.len(), n, "lost messages; per member {counts:?}");
    assert!(
        counts.iter().all(|c| *c > 0),
        "a member got nothing: {counts:?}"
    );
    for m in members.iter_mut() {
        assert!(m.try_publish(QUIET / 2).is_none(), "extra delivery");
    }
}

enum Member {
    V3(V3),
    V5(V5),
}

impl Member {
    fn try_publish(&mut self, d: Duration) -> Option<String> {
        match self {
            Member::V3(c) => match c.next(d)? {
                Ok(P3::Publish(p)) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
                Ok(_) => None,
                Err(e) => panic!("member failed: {e}"),
            },
            Member::V5(c) => match c.next(d)? {
                Ok(P5::Publish(p)) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
                Ok(_) => None,
                Err(e) => panic!("member failed: {e}"),
            },
        }
    }
}
