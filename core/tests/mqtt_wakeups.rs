//! A broker core that has gone to sleep is woken by what it waits for,
//! not by its next clock tick: a client's packet (a core sleeps in
//! `epoll_wait` with its sockets' epoll in the set, third_party/glommio)
//! and another core's message (through the executor's `eventfd` and
//! ring). A lost wake-up is not an error the client sees: the clock tick
//! makes the poller look at epoll every 200 ms, so it shows as a round
//! trip of up to a tick. These tests make 40 round trips with the broker
//! idle (asleep) before each, and bound their mean at a quarter of a
//! tick, which no working wake-up comes near and lost ones (100 ms on
//! average) exceed.

mod mqtt_support;

use std::time::{Duration, Instant};

use mqtt_support::*;
use robustmq_protocol::mqtt::{Packet, ProtocolVersion, QoS, ReasonCode};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const ROUNDS: u32 = 40;
/// A quarter of the clock tick.
const MEAN_BOUND: Duration = Duration::from_millis(50);

/// The mean time from a publish to its delivery, each after the broker
/// has been idle for 20 ms.
fn mean_round_trip(publisher: &mut Raw, subscriber: &mut Raw, topic: &str) -> Duration {
    let mut total = Duration::ZERO;
    for k in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(20));
        let payload = format!("w-{k}");
        let sent = Instant::now();
        publisher.publish(topic, QoS::AtMostOnce, 0, payload.as_bytes());
        subscriber.wait_for(WAIT, |p| match p {
            Packet::Publish(p) if p.payload == payload.as_bytes() => Some(()),
            _ => None,
        });
        total += sent.elapsed();
    }
    total / ROUNDS
}

fn pair(b: &Broker, topic: &str, publisher_core: usize, subscriber_core: usize) -> (Raw, Raw) {
    let mut subscriber = Raw::connected(
        b.port,
        V3,
        &id_on_core("wake-sub", subscriber_core, 2),
        true,
    );
    assert_eq!(
        subscriber.subscribe(1, topic, QoS::AtMostOnce),
        ReasonCode(0)
    );
    let publisher = Raw::connected(b.port, V3, &id_on_core("wake-pub", publisher_core, 2), true);
    (publisher, subscriber)
}

/// Both clients on one core: each publish wakes the core from its sleep
/// in epoll.
#[test]
fn a_sleeping_core_wakes_for_its_clients() {
    let b = BrokerConfig::default().cores(2).start();
    let (mut publisher, mut subscriber) = pair(&b, "wake/same", 0, 0);
    let mean = mean_round_trip(&mut publisher, &mut subscriber, "wake/same");
    assert!(mean < MEAN_BOUND, "mean round trip {mean:?}: wake-ups lost");
}

/// The subscriber on the other core (publishers do not move here): each
/// delivery wakes that core through its ring while it sleeps in epoll.
#[test]
fn a_sleeping_core_wakes_for_another_cores_message() {
    let b = BrokerConfig::default()
        .cores(2)
        .mqtt("move_publishers = false")
        .start();
    let (mut publisher, mut subscriber) = pair(&b, "wake/cross", 0, 1);
    let mean = mean_round_trip(&mut publisher, &mut subscriber, "wake/cross");
    assert!(mean < MEAN_BOUND, "mean round trip {mean:?}: wake-ups lost");
}
