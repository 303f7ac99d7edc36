//! A publisher whose messages all go to a subscriber of the other core
//! moves there (`broker::affinity`): over real TCP, its messages arrive
//! all and in order across the move, `$SYS` counts the move, and the
//! client is still found by client id afterwards (takeover, will,
//! reconnect).

mod mqtt_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_support::*;
use robustmq_protocol::mqtt::{LastWill, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Publishes `n` QoS 0 messages `{tag}-{k}` to `topic`, one every 5 ms
/// (200 a second: a trickle, as the broker counts it).
fn trickle(publisher: &mut Raw, topic: &str, tag: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    (0..n)
        .map(|k| {
            let payload = format!("{tag}-{k}");
            publisher.publish(topic, QoS::AtMostOnce, 0, payload.as_bytes());
            let due = start + Duration::from_millis(5 * (k as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            payload
        })
        .collect()
}

/// The payloads of the next `n` PUBLISHes on `topic`.
fn receive(subscriber: &mut Raw, topic: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            subscriber.wait_for(WAIT, |p| match p {
                Packet::Publish(p) if p.topic == topic => {
                    Some(String::from_utf8_lossy(&p.payload).into_owned())
                }
                _ => None,
            })
        })
        .collect()
}

/// Waits until `$SYS` says `moved` publishers have moved.
fn wait_moved(monitor: &mut Raw, moved: u64) {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        assert!(Instant::now() < deadline, "no move counted in $SYS");
        if let Recv::Packet(Packet::Publish(p)) = monitor.recv(Duration::from_millis(300)) {
            if p.topic.ends_with("publishers/moved") && p.payload == moved.to_string().as_bytes() {
                return;
            }
        }
    }
}

fn broker() -> Broker {
    BrokerConfig::default()
        .cores(2)
        .mqtt("sys_interval_secs = 1")
        .start()
}

/// Moves, and loses and reorders nothing on the way; afterwards its will
/// is published when its connection drops, and its client id connects
/// again on its owner.
#[test]
fn a_trickle_publisher_moves_and_loses_nothing() {
    let b = broker();
    let mut subscriber = Raw::connected(b.port, V3, &id_on_core("aff-sub", 1, 2), true);
    assert_eq!(
        subscriber.subscribe(1, "aff/t", QoS::AtMostOnce),
        ReasonCode(0)
    );
    assert_eq!(
        subscriber.subscribe(2, "aff/will", QoS::AtMostOnce),
        ReasonCode(0)
    );
    let mut monitor = Raw::connected(b.port, V3, &id_on_core("aff-mon", 1, 2), true);
    monitor.subscribe(1, "$SYS/brokers/+/publishers/moved", QoS::AtMostOnce);

    let id = id_on_core("aff-pub", 0, 2);
    let mut c = connect_packet(V5, &id, true, 60);
    c.will = Some(LastWill {
        topic: ByteString::from("aff/will"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    let (mut publisher, ack) = Raw::connect(b.port, c);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // 1.5 s at 200/s: the move comes after three windows of 200 ms.
    let sent = trickle(&mut publisher, "aff/t", "m", 300);
    assert_eq!(receive(&mut subscriber, "aff/t", 300), sent);
    wait_moved(&mut monitor, 1);
    let sent = trickle(&mut publisher, "aff/t", "after", 20);
    assert_eq!(receive(&mut subscriber, "aff/t", 20), sent);

    // The will travelled with the session.
    drop(publisher);
    assert_eq!(receive(&mut subscriber, "aff/will", 1), ["gone"]);
    // The session ended where it was, and its owner serves the id again.
    let mut again = Raw::connected(b.port, V3, &id, true);
    let sent = trickle(&mut again, "aff/t", "again", 5);
    assert_eq!(receive(&mut subscriber, "aff/t", 5), sent);
}

/// A CONNECT for a moved publisher's client id reaches the core that
/// holds its session: the old connection is told 0x8E, the session goes
/// on with the new one.
#[test]
fn a_moved_publisher_is_taken_over_where_it_is() {
    let b = broker();
    let mut subscriber = Raw::connected(b.port, V3, &id_on_core("aff-sub", 0, 2), true);
    assert_eq!(
        subscriber.subscribe(1, "aff/t", QoS::AtMostOnce),
        ReasonCode(0)
    );
    let mut monitor = Raw::connected(b.port, V3, &id_on_core("aff-mon", 0, 2), true);
    monitor.subscribe(1, "$SYS/brokers/+/publishers/moved", QoS::AtMostOnce);
    let id = id_on_core("aff-pub", 1, 2);
    let mut c = connect_packet(V5, &id, true, 60);
    c.properties.session_expiry_interval = Some(60);
    let (mut old, _) = Raw::connect(b.port, c);
    let sent = trickle(&mut old, "aff/t", "m", 200);
    assert_eq!(receive(&mut subscriber, "aff/t", 200), sent);
    wait_moved(&mut monitor, 1);

    let mut c = connect_packet(V5, &id, false, 60);
    c.properties.session_expiry_interval = Some(60);
    let (mut new, ack) = Raw::connect(b.port, c);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(ack.session_present, "the session moved with the publisher");
    let packets = old.expect_closed(WAIT);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER),
        "{packets:?}"
    );
    let sent = trickle(&mut new, "aff/t", "new", 5);
    assert_eq!(receive(&mut subscriber, "aff/t", 5), sent);
}
