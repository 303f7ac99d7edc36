//! Back-pressure over TCP: a subscriber that cannot keep up holds the
//! publishers that send to it (their sockets are not read) instead of
//! losing their messages; one that makes no progress is declared slow,
//! releases them, and the broker's memory stays bounded.

mod mqtt_support;

use std::time::{Duration, Instant};

use mqtt_support::*;
use robustmq_protocol::mqtt::{Packet, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

const PUBLISHERS: usize = 4;
/// Per publisher: together more than the queue's slack for messages on
/// their way between cores (2 x cores x 2048), so only holds keep them.
const PER_PUBLISHER: u32 = 5000;

/// Four publishers (two per core) each write `PER_PUBLISHER` QoS 1
/// messages in one burst to a subscriber whose queue holds 16; the
/// subscriber reads and acknowledges one by one. Returns how many it got,
/// after checking they came in order per publisher.
fn burst_into_small_queue(b: &Broker) -> u32 {
    let mut sub = Raw::connected(b.port, V5, &id_on_core("bp-sub", 0, 2), true);
    assert_eq!(sub.subscribe(1, "bp/#", QoS::AtLeastOnce), ReasonCode(1));
    let port = b.port;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|k| {
            std::thread::spawn(move || {
                let id = id_on_core(&format!("bp-pub{k}"), k % 2, 2);
                let mut p = Raw::connected(port, V3, &id, true);
                let mut bytes = Vec::new();
                for i in 0..PER_PUBLISHER {
                    let payload = format!("{k}:{i}");
                    let packet = Packet::Publish(publish(
                        &format!("bp/{k}"),
                        QoS::AtLeastOnce,
                        (i % 65535 + 1) as u16,
                        payload.as_bytes(),
                    ));
                    bytes.extend(encode(&packet, V3));
                }
                p.send_bytes(&bytes);
                let mut acked = 0;
                while acked < PER_PUBLISHER {
                    match p.expect(Duration::from_secs(60)) {
                        Packet::PubAck(_) => acked += 1,
                        other => panic!("publisher {k}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut next = [0u32; PUBLISHERS];
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < PER_PUBLISHER * PUBLISHERS as u32 && Instant::now() < deadline {
        let p = match sub.recv(Duration::from_secs(2)) {
            Recv::Packet(Packet::Publish(p)) => p,
            Recv::Timeout => break,
            other => panic!("subscriber: {other:?} after {next:?}"),
        };
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        let (k, i) = text.split_once(':').unwrap();
        let (k, i): (usize, u32) = (k.parse().unwrap(), i.parse().unwrap());
        assert!(i >= next[k], "publisher {k}: {i} after {}", next[k]);
        next[k] = i + 1;
        received += 1;
        sub.ack(&p);
    }
    for t in publishers {
        t.join().unwrap();
    }
    received
}

#[test]
fn a_subscriber_behind_holds_its_publishers_and_loses_nothing() {
    let b = BrokerConfig::default()
        .mqtt("max_queued_messages = 16")
        .mqtt("max_inflight = 4")
        // Not a slow subscriber, however loaded the test machine is.
        .mqtt("slow_subscriber_ms = 60000")
        .start();
    let received = burst_into_small_queue(&b);
    assert_eq!(received, PER_PUBLISHER * PUBLISHERS as u32, "all delivered");
}

/// The same burst with back-pressure off: the queue's limit drops most of
/// it, which is what the holds above prevent.
#[test]
fn without_backpressure_the_same_burst_overflows_the_queue() {
    let b = BrokerConfig::default()
        .mqtt("max_queued_messages = 16")
        .mqtt("max_inflight = 4")
        .mqtt("backpressure_bytes = 0")
        .start();
    let received = burst_into_small_queue(&b);
    assert!(
        received < PER_PUBLISHER * PUBLISHERS as u32 / 2,
        "only {received} expected to survive a queue of 16"
    );
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A subscriber that reads nothing while two publishers send 64 MB at
/// full speed: after `slow_subscriber_ms` it is slow, the publishers run
/// free, its QoS 0 messages are dropped at `max_outbound_buffer_bytes`,
/// the broker's RSS stays within a bound far below what was sent, and a
/// QoS 1 pair beside them keeps being served.
#[test]
fn a_subscriber_that_never_reads_is_slow_and_memory_stays_bounded() {
    const MESSAGES: u32 = 32 * 1024;
    const PAYLOAD: usize = 1024;
    let b = BrokerConfig::default()
        .mqtt("slow_subscriber_ms = 300")
        .mqtt("max_outbound_buffer_bytes = 1048576")
        .mqtt("sys_interval_secs = 1")
        .start();
    let mut stuck = Raw::connected(b.port, V3, &id_on_core("ov-stuck", 0, 2), true);
    assert_eq!(stuck.subscribe(1, "ov/#", QoS::AtMostOnce), ReasonCode(0));
    let mut watcher = Raw::connected(b.port, V3, &id_on_core("ov-watch", 1, 2), true);
    assert_eq!(
        watcher.subscribe(1, "side/#", QoS::AtLeastOnce),
        ReasonCode(1)
    );
    let mut side = Raw::connected(b.port, V3, &id_on_core("ov-side", 0, 2), true);
    let baseline = rss_bytes(b.pid());
    let port = b.port;
    let publishers: Vec<_> = (0..2usize)
        .map(|k| {
            std::thread::spawn(move || {
                let id = id_on_core(&format!("ov-pub{k}"), k, 2);
                let mut p = Raw::connected(port, V3, &id, true);
                let payload = vec![b'x'; PAYLOAD];
                let packet = encode(
                    &Packet::Publish(publish("ov/x", QoS::AtMostOnce, 0, &payload)),
                    V3,
                );
                let mut burst = Vec::new();
                for _ in 0..256 {
                    burst.extend_from_slice(&packet);
                }
                for _ in 0..MESSAGES / 256 {
                    p.send_bytes(&burst);
                }
                // Everything was read: a PINGREQ behind it is answered.
                p.send(&Packet::PingReq);
                assert!(matches!(
                    p.expect(Duration::from_secs(60)),
                    Packet::PingResp
                ));
            })
        })
        .collect();
    let mut peak = baseline;
    let mut n = 0u16;
    while publishers.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss_bytes(b.pid()));
        n += 1;
        let payload = format!("side-{n}");
        side.publish_acked(publish("side/x", QoS::AtLeastOnce, n, payload.as_bytes()));
        let got = watcher.expect_publish();
        assert_eq!(&got.payload[..], payload.as_bytes());
        watcher.ack(&got);
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in publishers {
        t.join().unwrap();
    }
    peak = peak.max(rss_bytes(b.pid()));
    let sent = u64::from(MESSAGES) * 2 * PAYLOAD as u64;
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "broker RSS: baseline {baseline}, peak {peak}, {sent} bytes sent, {n} side round trips"
    );
    assert!(
        grown < 48 << 20,
        "RSS grew by {grown} bytes while {sent} bytes were sent to a subscriber that reads nothing"
    );
    assert!(n > 0, "the side pair was served during the flood");
    // The broker says why: a slow subscriber, logged and counted in $SYS.
    assert!(b.log().contains("slow subscriber"), "{}", b.log());
    assert_eq!(
        watcher.subscribe(2, "$SYS/brokers/1/subscribers/slow", QoS::AtMostOnce),
        ReasonCode(0)
    );
    let slow = eventually(Duration::from_secs(4), || {
        let p = watcher.expect_publish();
        let n: u64 = String::from_utf8_lossy(&p.payload).parse().ok()?;
        (n >= 1).then_some(n)
    });
    assert!(slow.is_some(), "$SYS counts the slow subscriber");
    drop(stuck);
}
