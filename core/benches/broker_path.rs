//! The broker's own CPU per message, without sockets: what one core does
//! between a read buffer and a write buffer, measured stably on a noisy
//! machine where end-to-end rates swing by half.
//!
//! - `fanin_qos1`: 8 publishers send QoS 1 PUBLISHes (64 B payload, 3.1.1)
//!   on `t/<publisher>` to one subscriber on `t/#`; per message: decode,
//!   route, deliver, PUBACK to the publisher, encode the delivery, then
//!   the subscriber's PUBACK decoded and handled. Each publisher's
//!   messages come in a run, as the runtime decodes one socket's read
//!   after another (until 2026-11-27 they alternated message by message,
//!   which no read order produces).
//! - `fanin_qos0`: the same at QoS 0 (no acknowledgements).
//! - `fanout_qos0`: one QoS 0 PUBLISH to 50 subscribers (per delivery).
//!
//! One core (`cores = 1`): cross-core hops are not measured here. Time is
//! the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared 2-core machine a wall clock counts the other processes' turns.
//! `cargo bench -p robustmq-core --bench broker_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, Criterion, Throughput};
use robustmq_core::acl::{Acl, Permission};
use robustmq_core::broker::metrics::Metrics;
use robustmq_core::broker::{BrokerContext, CoreBroker};
use robustmq_core::config::MqttConfig;
use robustmq_protocol::mqtt::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1024;
const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;

/// One core's broker with `subscribers` clients on `t/#` (connections
/// 1..) and `publishers` more (connections after them).
struct Bench {
    broker: CoreBroker,
    subscribers: u64,
    now: Instant,
    out: BytesMut,
    /// The packet id the broker gives the subscriber's next delivery.
    next_id: u16,
}

impl Bench {
    fn new(subscribers: u64, publishers: u64, qos: QoS) -> Bench {
        let now = Instant::now();
        let config = MqttConfig {
            sys_interval_secs: 0,
            max_keepalive: 0,
            ..MqttConfig::default()
        };
        let ctx = BrokerContext {
            node_id: 1,
            core: 0,
            cores: 1,
            config: Arc::new(config),
            acl: Arc::new(Acl::new(&[], Permission::Allow).unwrap()),
            metrics: Arc::new(Metrics::new(1)),
            started: now,
        };
        let mut b = Bench {
            broker: CoreBroker::new(ctx, now),
            subscribers,
            now,
            out: BytesMut::with_capacity(1 << 20),
            next_id: 1,
        };
        for conn in 1..=subscribers + publishers {
            b.connect(conn);
        }
        for conn in 1..=subscribers {
            b.subscribe(conn, qos);
        }
        b.drain();
        b
    }

    fn connect(&mut self, conn: u64) {
        let connect = Connect {
            protocol: VERSION,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: ByteString::from(format!("client-{conn}")),
            will: None,
            username: None,
            password: None,
        };
        self.broker
            .on_connect(conn, Box::new(connect), false, None, self.now);
    }

    fn subscribe(&mut self, conn: u64, qos: QoS) {
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![SubscribeFilter {
                filter: ByteString::from_static("t/#"),
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        });
        self.broker.on_packet(conn, subscribe, self.now);
    }

    /// Encodes everything the broker has for its connections, as the
    /// runtime's flush does; returns how many PUBLISHes went to
    /// subscribers.
    fn drain(&mut self) -> usize {
        let mut delivered = 0;
        for conn in self.broker.take_dirty() {
            let output = self.broker.take_output(conn);
            assert!(!output.close, "connection {conn} closed by the broker");
            self.out.clear();
            for p in &output.packets {
                p.encode(VERSION, &mut self.out).unwrap();
            }
            if conn <= self.subscribers {
                delivered += output.packets.len();
            }
        }
        delivered
    }

    /// One batch: PUBLISHes decoded from `wire` (each publisher's in a
    /// run, as the runtime decodes one read of a socket after another),
    /// handled and flushed, then the subscribers' PUBACKs. The broker
    /// gives packet ids in sequence (1.., wrapping past 0), all acknowledged
    /// here before the next batch; a wrong guess closes the subscriber
    /// and fails the assertion in `drain`.
    fn run(&mut self, wire: &Bytes, qos: QoS, per_publisher: u64) -> usize {
        let mut decoder = Decoder::with_version(VERSION, usize::MAX);
        let mut buf = BytesMut::from(&wire[..]);
        let mut n = 0;
        while let Some(packet) = decoder.decode(&mut buf).unwrap() {
            let conn = self.subscribers + 1 + (n as u64 / per_publisher);
            self.broker.on_packet(conn, packet, self.now);
            n += 1;
        }
        let delivered = self.drain();
        if qos != QoS::AtMostOnce {
            assert_eq!(self.subscribers, 1, "acknowledges for one subscriber");
            // As the runtime hands them over: PUBACKs in a row together,
            // up to 64 (`on_pubacks`).
            let mut ids = Vec::with_capacity(64);
            for _ in 0..delivered {
                ids.push(self.next_id);
                self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                if ids.len() == 64 {
                    self.broker.on_pubacks(1, &ids, self.now);
                    ids.clear();
                }
            }
            self.broker.on_pubacks(1, &ids, self.now);
            self.drain();
        }
        n
    }
}

/// `count` PUBLISHes with a 64-byte payload: publisher 0's, then 1's...
/// (a run each, on topic `t/<publisher>`), packet ids 1.. per publisher.
fn publishes(count: usize, publishers: u64, qos: QoS) -> Bytes {
    assert_eq!(count as u64 % publishers, 0, "whole runs");
    let run = count as u64 / publishers;
    let mut wire = BytesMut::new();
    for i in 0..count as u64 {
        let id = (i % run) as u16 + 1;
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: ByteString::from(format!("t/{}", i / run)),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
            properties: Properties::default(),
            payload: Bytes::from(vec![7u8; 64]),
        })
        .encode(VERSION, &mut wire)
        .unwrap();
    }
    wire.freeze()
}

/// The calling thread's CPU time, in nanoseconds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU, shown as criterion shows wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n)) =
            throughput;
        let per = *n as f64;
        let _ = typical;
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v / 1e6);
        "M/s of CPU"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

type Cpu = Criterion<ThreadCpu>;

fn fanin(c: &mut Cpu, name: &str, qos: QoS) {
    let mut bench = Bench::new(1, 8, qos);
    // At most the inflight window per batch and publisher at QoS 1: the
    // subscriber's window (32) bounds what is sent before its PUBACKs.
    let count = if qos == QoS::AtMostOnce { BATCH } else { 8 * 4 };
    let wire = publishes(count, 8, qos);
    let mut group = c.benchmark_group("broker_path");
    group.throughput(Throughput::Elements(count as u64));
    let per_publisher = count as u64 / 8;
    group.bench_function(name, |b| {
        b.iter(|| black_box(bench.run(&wire, qos, per_publisher)))
    });
    group.finish();
}

fn fanout(c: &mut Cpu) {
    let mut bench = Bench::new(50, 1, QoS::AtMostOnce);
    let wire = publishes(16, 1, QoS::AtMostOnce);
    let mut group = c.benchmark_group("broker_path");
    group.throughput(Throughput::Elements(16 * 50));
    group.bench_function("fanout_qos0_per_delivery", |b| {
        b.iter(|| black_box(bench.run(&wire, QoS::AtMostOnce, 16)))
    });
    group.finish();
}

fn benches(c: &mut Cpu) {
    fanin(c, "fanin_qos1", QoS::AtLeastOnce);
    fanin(c, "fanin_qos0", QoS::AtMostOnce);
    fanout(c);
}

criterion_group! {
    name = broker_path;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = benches
}

/// `BROKER_PATH_ITERS=N broker_path <scenario>` runs a scenario N times
/// outside criterion, for an instruction count that does not drift with
/// the machine: `valgrind --tool=callgrind` at two N, the difference
/// divided by the messages in between.
fn fixed_iterations(iterations: u64, scenario: &str) {
    let (qos, subscribers, publishers, count) = match scenario {
        "fanin_qos1" => (QoS::AtLeastOnce, 1, 8, 32),
        "fanin_qos0" => (QoS::AtMostOnce, 1, 8, BATCH),
        "fanout_qos0" => (QoS::AtMostOnce, 50, 1, 16),
        other => panic!("unknown scenario {other}"),
    };
    let mut bench = Bench::new(subscribers, publishers, qos);
    let wire = publishes(count, publishers, qos);
    let per_publisher = count as u64 / publishers;
    for _ in 0..iterations {
        black_box(bench.run(&wire, qos, per_publisher));
    }
}

fn main() {
    if let Ok(iterations) = std::env::var("BROKER_PATH_ITERS") {
        let iterations = iterations.parse().expect("BROKER_PATH_ITERS is a count");
        let scenario = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .unwrap_or_else(|| "fanin_qos1".into());
        fixed_iterations(iterations, &scenario);
        return;
    }
    broker_path();
    Criterion::default().configure_from_args().final_summary();
}
