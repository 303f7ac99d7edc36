//! A deterministic simulation of the broker's cores and its clients, with
//! no sockets and no threads: several `CoreBroker`s pass their cross-core
//! messages through FIFO queues, model clients speak MQTT to them, and a
//! seeded random scheduler interleaves connects, subscribes, publishes,
//! clean and abrupt disconnects, takeovers, deliveries and clock ticks.
//!
//! Checked for every seed: per-publisher, per-topic order; no loss of QoS
//! 1/2 messages for persistent sessions; exactly-once for QoS 2.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use robustmq_core::acl::{Acl, Permission};
use robustmq_core::broker::mesh::CoreMsg;
use robustmq_core::broker::metrics::Metrics;
use robustmq_core::broker::{owner_core, BrokerContext, CoreBroker};
use robustmq_core::config::MqttConfig;
use robustmq_core::session::Outgoing as BrokerOutput;
use robustmq_protocol::mqtt::{
    Connect, Decoder, Disconnect, Packet, Properties, ProtocolVersion, PubReply, Publish, QoS,
    ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use robustmq_protocol::topic;

const TOPICS: [&str; 3] = ["t/0", "t/1", "t/2"];
const FILTERS: [&str; 4] = ["t/#", "t/1", "t/+", "t/2"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone)]
enum Outgoing {
    Published(Box<Publish>),
    Released,
}

/// One published message, as the test remembers it.
#[derive(Debug, Clone)]
struct Sent {
    publisher: usize,
    seq: u64,
    topic: &'static str,
    qos: QoS,
    /// The event index at which the broker processed it.
    at: usize,
}

/// A model MQTT client with a persistent client-side store.
struct Client {
    id: String,
    version: ProtocolVersion,
    persistent: bool,
    conn: Option<u64>,
    inbox: VecDeque<Packet>,
    /// filter -> (granted QoS, event index of its SUBACK)
    subs: HashMap<&'static str, (QoS, usize)>,
    /// SUBSCRIBE packet id -> filter and asked QoS
    pending_subs: HashMap<u16, (&'static str, QoS)>,
    /// Event index since which the session is continuous.
    session_since: usize,
    /// Whether the broker should hold a session for it.
    session_exists: bool,
    next_pid: u16,
    outgoing: BTreeMap<u16, Outgoing>,
    in_qos2: HashSet<u16>,
    /// Application deliveries: (publisher, seq, topic, qos).
    delivered: Vec<(usize, u64, String, QoS)>,
    next_seq: u64,
}

impl Client {
    fn pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.outgoing.contains_key(&self.next_pid)
                && !self.pending_subs.contains_key(&self.next_pid)
            {
                return self.next_pid;
            }
        }
    }
}

struct Sim {
    rng: Rng,
    cores: Vec<CoreBroker>,
    links: BTreeMap<(usize, usize), VecDeque<Vec<CoreMsg>>>,
    clients: Vec<Client>,
    conn_owner: HashMap<u64, (usize, usize)>,
    next_conn: u64,
    sent: Vec<Sent>,
    /// QoS 1 messages a publisher sent again after a reconnect: the broker
    /// rightly routes them again, after later ones.
    resent: HashSet<(usize, u64)>,
    now: Instant,
    step: usize,
}

impl Sim {
    fn new(seed: u64, cores: usize, clients: usize) -> Sim {
        let config = Arc::new(MqttConfig {
            max_inflight: 3,
            max_queued_messages: 1_000_000,
            receive_maximum: 64,
            max_keepalive: 0,
            sys_interval_secs: 0,
            ..MqttConfig::default()
        });
        let metrics = Arc::new(Metrics::new(cores));
        let acl = Arc::new(Acl::new(&[], Permission::Allow).unwrap());
        let now = Instant::now();
        let brokers = (0..cores)
            .map(|core| {
                CoreBroker::new(
                    BrokerContext {
                        node_id: 1,
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
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let clients = (0..clients)
            .map(|i| Client {
                id: format!("client-{i}"),
                version: if rng.below(2) == 0 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V3_1_1
                },
                persistent: i % 3 != 2,
                conn: None,
                inbox: VecDeque::new(),
                subs: HashMap::new(),
                pending_subs: HashMap::new(),
                session_since: 0,
                session_exists: false,
                next_pid: 0,
                outgoing: BTreeMap::new(),
                in_qos2: HashSet::new(),
                delivered: Vec::new(),
                next_seq: 0,
            })
            .collect();
        Sim {
            rng,
            cores: brokers,
            links: BTreeMap::new(),
            clients,
            conn_owner: HashMap::new(),
            next_conn: 1,
            sent: Vec::new(),
            resent: HashSet::new(),
            now,
            step: 0,
        }
    }

    fn core_of(&self, c: usize) -> usize {
        owner_core(&self.clients[c].id, self.cores.len())
    }

    /// Moves what brokers produced to clients and links.
    fn pump_outputs(&mut self) {
        for core in 0..self.cores.len() {
            for conn in self.cores[core].take_dirty() {
                let out = self.cores[core].take_output(conn);
                let Some(&(_, c)) = self.conn_owner.get(&conn) else {
                    continue;
                };
                let client = &mut self.clients[c];
                if client.conn == Some(conn) {
                    client.inbox.extend(wire(client.version, &out.packets));
                    if out.close {
                        // Closed by the broker (takeover of an old conn is
                        // never the current one): the client sees it after
                        // reading what came before.
                        client.inbox.push_back(Packet::PingReq);
                    }
                }
            }
            for (to, msgs) in self.cores[core].take_core_messages() {
                self.links.entry((core, to)).or_default().push_back(msgs);
            }
        }
    }

    fn send(&mut self, c: usize, packet: Packet) {
        let Some(conn) = self.clients[c].conn else {
            return;
        };
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("  client {c} sends {packet:?}");
        }
        let core = self.core_of(c);
        self.cores[core].on_packet(conn, packet, self.now);
        self.pump_outputs();
    }

    fn connect(&mut self, c: usize) {
        let core = self.core_of(c);
        let conn = self.next_conn;
        self.next_conn += 1;
        if let Some(old) = self.clients[c].conn.take() {
            // The client restarts on a new connection (its store survives):
            // the broker takes the session over from the old one.
            self.conn_owner.remove(&old);
        }
        let client = &mut self.clients[c];
        client.inbox.clear();
        client.pending_subs.clear();
        client.conn = Some(conn);
        self.conn_owner.insert(conn, (core, c));
        let clean = !client.persistent;
        let mut properties = Properties::default();
        if client.version.is_v5() && client.persistent {
            properties.session_expiry_interval = Some(u32::MAX);
        }
        if clean {
            client.subs.clear();
            client.outgoing.clear();
            client.in_qos2.clear();
            client.session_since = self.step;
            client.session_exists = false;
        }
        let connect = Connect {
            protocol: client.version,
            clean_start: clean,
            keep_alive: 0,
            properties,
            client_id: ByteString::from(client.id.clone()),
            will: None,
            username: None,
            password: None,
        };
        self.cores[core].on_connect(conn, Box::new(connect), false, None, self.now);
        self.pump_outputs();
    }

    fn drop_connection(&mut self, c: usize) {
        if let Some(conn) = self.clients[c].conn.take() {
            let core = self.core_of(c);
            self.conn_owner.remove(&conn);
            self.clients[c].inbox.clear();
            self.clients[c].pending_subs.clear();
            self.cores[core].on_connection_lost(conn, self.now);
            self.pump_outputs();
        }
    }

    fn disconnect(&mut self, c: usize) {
        self.send(c, Packet::Disconnect(Disconnect::default()));
        if let Some(conn) = self.clients[c].conn.take() {
            self.conn_owner.remove(&conn);
        }
        self.clients[c].inbox.clear();
        self.clients[c].pending_subs.clear();
    }

    fn subscribe(&mut self, c: usize) {
        let filter = FILTERS[self.rng.below(FILTERS.len())];
        let qos = QoS::from_u8(self.rng.below(3) as u8).unwrap();
        let pid = self.clients[c].pid();
        self.clients[c].pending_subs.insert(pid, (filter, qos));
        // The broker replaces the subscription now; what it guarantees is
        // known again only with the SUBACK.
        self.clients[c].subs.remove(filter);
        self.send(
            c,
            Packet::Subscribe(Subscribe {
                packet_id: pid,
                properties: Properties::default(),
                filters: vec![SubscribeFilter {
                    filter: ByteString::from_static(filter),
                    options: SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                }],
            }),
        );
    }

    fn publish(&mut self, c: usize) {
        if self.clients[c].outgoing.len() >= 8 {
            return;
        }
        let topic = TOPICS[self.rng.below(TOPICS.len())];
        let qos = QoS::from_u8(self.rng.below(3) as u8).unwrap();
        let client = &mut self.clients[c];
        let seq = client.next_seq;
        client.next_seq += 1;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            client.pid()
        };
        let publish = Publish {
            qos,
            topic: ByteString::from_static(topic),
            packet_id,
            payload: Bytes::from(format!("{c}:{seq}")),
            ..Default::default()
        };
        if qos != QoS::AtMostOnce {
            client
                .outgoing
                .insert(packet_id, Outgoing::Published(Box::new(publish.clone())));
        }
        self.sent.push(Sent {
            publisher: c,
            seq,
            topic,
            qos,
            at: self.step,
        });
        self.send(c, Packet::Publish(publish));
    }

    /// The client reads one packet from its connection.
    fn read_one(&mut self, c: usize) {
        let Some(packet) = self.clients[c].inbox.pop_front() else {
            return;
        };
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("  client {c} reads {packet:?}");
        }
        let step = self.step;
        match packet {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
                let client = &mut self.clients[c];
                if client.persistent && client.session_exists && !ack.session_present {
                    panic!("{}: persistent session lost", client.id);
                }
                client.session_exists = true;
                // Send again what the broker has not acknowledged.
                let resend: Vec<Packet> = client
                    .outgoing
                    .iter()
                    .map(|(pid, o)| match o {
                        Outgoing::Published(p) => {
                            let mut p = (**p).clone();
                            p.dup = true;
                            Packet::Publish(p)
                        }
                        Outgoing::Released => Packet::PubRel(PubReply::new(*pid)),
                    })
                    .collect();
                for p in resend {
                    if let Packet::Publish(p) = &p {
                        if p.qos == QoS::AtLeastOnce {
                            let text = std::str::from_utf8(&p.payload).unwrap();
                            let seq = text.split_once(':').unwrap().1.parse().unwrap();
                            self.resent.insert((c, seq));
                        }
                    }
                    self.send(c, p);
                }
            }
            Packet::Publish(p) => {
                let text = std::str::from_utf8(&p.payload).unwrap().to_string();
                let (publisher, seq) = text.split_once(':').unwrap();
                let record = (
                    publisher.parse().unwrap(),
                    seq.parse().unwrap(),
                    p.topic.to_string(),
                    p.qos,
                );
                match p.qos {
                    QoS::AtMostOnce => self.clients[c].delivered.push(record),
                    QoS::AtLeastOnce => {
                        self.clients[c].delivered.push(record);
                        self.send(c, Packet::PubAck(PubReply::new(p.packet_id)));
                    }
                    QoS::ExactlyOnce => {
                        if self.clients[c].in_qos2.insert(p.packet_id) {
                            self.clients[c].delivered.push(record);
                        }
                        self.send(c, Packet::PubRec(PubReply::new(p.packet_id)));
                    }
                }
            }
            Packet::PubRel(r) => {
                self.clients[c].in_qos2.remove(&r.packet_id);
                self.send(c, Packet::PubComp(PubReply::new(r.packet_id)));
            }
            Packet::PubAck(r) | Packet::PubComp(r) => {
                self.clients[c].outgoing.remove(&r.packet_id);
            }
            Packet::PubRec(r) => {
                self.clients[c]
                    .outgoing
                    .insert(r.packet_id, Outgoing::Released);
                self.send(c, Packet::PubRel(PubReply::new(r.packet_id)));
            }
            Packet::SubAck(s) => {
                let client = &mut self.clients[c];
                if let Some((filter, _)) = client.pending_subs.remove(&s.packet_id) {
                    // A later SUBSCRIBE of the same filter has replaced it.
                    let replaced = client.pending_subs.values().any(|(f, _)| *f == filter);
                    if !replaced {
                        let granted = QoS::from_u8(s.reason_codes[0].0).unwrap();
                        client.subs.insert(filter, (granted, step));
                    }
                }
            }
            Packet::Disconnect(_) | Packet::PingReq => {
                // Closed by the broker.
                let client = &mut self.clients[c];
                if let Some(conn) = client.conn.take() {
                    self.conn_owner.remove(&conn);
                }
                client.inbox.clear();
                client.pending_subs.clear();
            }
            other => panic!("unexpected packet {other:?}"),
        }
    }

    fn deliver_link(&mut self) -> bool {
        let keys: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return false;
        }
        let (from, to) = keys[self.rng.below(keys.len())];
        let batch = self
            .links
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        for msg in batch {
            self.cores[to].on_core_message(from, msg, self.now);
        }
        self.pump_outputs();
        true
    }

    fn random_event(&mut self) {
        self.step += 1;
        let c = self.rng.below(self.clients.len());
        let connected = self.clients[c].conn.is_some();
        let roll = self.rng.below(100);
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "step {} client {c} roll {roll} connected {connected}",
                self.step
            );
        }
        match roll {
            0..=29 => {
                if !self.deliver_link() {
                    self.read_one(c);
                }
            }
            30..=54 => self.read_one(c),
            55..=59 if !connected => self.connect(c),
            55..=59 => self.subscribe(c),
            60..=79 if connected => self.publish(c),
            80..=81 if connected => self.drop_connection(c),
            82 if connected => self.disconnect(c),
            83 if connected && self.clients[c].persistent => self.connect(c),
            84..=86 => {
                self.now += Duration::from_millis(300);
                for core in &mut self.cores {
                    core.tick(self.now);
                }
                self.pump_outputs();
            }
            _ if !connected => self.connect(c),
            _ => self.read_one(c),
        }
    }

    /// Reconnects every persistent client and runs until nothing moves.
    fn settle(&mut self) {
        for c in 0..self.clients.len() {
            if self.clients[c].persistent {
                self.step += 1;
                self.connect(c);
            }
        }
        for _ in 0..1_000_000 {
            self.step += 1;
            if self.deliver_link() {
                continue;
            }
            let Some(c) = (0..self.clients.len()).find(|&c| !self.clients[c].inbox.is_empty())
            else {
                return;
            };
            self.read_one(c);
        }
        panic!("the simulation does not settle");
    }

    /// Returns how many (subscriber, message) pairs were owed delivery.
    fn check(&self, seed: u64) -> usize {
        let mut owed = 0;
        for (s, sub) in self.clients.iter().enumerate() {
            // Exactly once for QoS 2, and per-publisher per-topic order.
            let mut seen: HashMap<(usize, u64), usize> = HashMap::new();
            let mut last: HashMap<(usize, &str), u64> = HashMap::new();
            for (p, seq, topic, qos) in &sub.delivered {
                let n = seen.entry((*p, *seq)).or_default();
                *n += 1;
                if *qos == QoS::ExactlyOnce {
                    assert_eq!(
                        *n, 1,
                        "seed {seed}: {} got {p}:{seq} twice at QoS 2",
                        sub.id
                    );
                }
                if *n == 1 && !self.resent.contains(&(*p, *seq)) {
                    let prev = last.insert((*p, topic.as_str()), *seq);
                    assert!(
                        prev.is_none_or(|prev| prev < *seq),
                        "seed {seed}: {} got {p}:{seq} on {topic} after {prev:?}",
                        sub.id
                    );
                }
            }
            if !sub.persistent {
                continue;
            }
            // No loss for QoS 1/2 on a persistent session, of every message
            // published after its SUBACK.
            for m in &self.sent {
                let expected = sub.subs.iter().any(|(filter, (granted, since))| {
                    topic::matches(filter, m.topic)
                        && *since < m.at
                        && m.qos.min(*granted) != QoS::AtMostOnce
                        && sub.session_since < *since
                });
                owed += usize::from(expected);
                if expected && m.publisher != s {
                    assert!(
                        seen.contains_key(&(m.publisher, m.seq)),
                        "seed {seed}: {} lost {}:{} ({:?} on {})",
                        sub.id,
                        m.publisher,
                        m.seq,
                        m.qos,
                        m.topic
                    );
                }
                if expected && m.publisher == s {
                    assert!(seen.contains_key(&(m.publisher, m.seq)), "seed {seed}: own");
                }
            }
        }
        owed
    }
}

fn run(seed: u64, cores: usize, clients: usize, events: usize) -> usize {
    let mut sim = Sim::new(seed, cores, clients);
    for c in 0..clients {
        sim.connect(c);
    }
    for _ in 0..events {
        sim.random_event();
    }
    sim.settle();
    sim.check(seed)
}

#[test]
#[ignore]
fn one_seed_traced() {
    let seed = std::env::var("SIM_SEED").map_or(0, |s| s.parse().unwrap());
    let cores = std::env::var("SIM_CORES").map_or(1, |s| s.parse().unwrap());
    let clients = std::env::var("SIM_CLIENTS").map_or(5, |s| s.parse().unwrap());
    run(seed, cores, clients, 400);
}

#[test]
fn seeded_interleavings_on_three_cores() {
    let owed: usize = (0..300).map(|seed| run(seed, 3, 6, 400)).sum();
    // The checks are not vacuous: thousands of deliveries were owed.
    assert!(owed > 3_000, "only {owed} deliveries checked");
}

#[test]
fn seeded_interleavings_on_one_core() {
    let owed: usize = (1000..1100).map(|seed| run(seed, 1, 5, 400)).sum();
    assert!(owed > 1_000, "only {owed} deliveries checked");
}

/// What a client reads of a broker's output: encoded as the connection
/// writes it, decoded as the client reads it.
fn wire(version: ProtocolVersion, packets: &[BrokerOutput]) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    for p in packets {
        p.encode(version, &mut buf).expect("encodes");
    }
    let mut decoder = Decoder::with_version(version, usize::MAX);
    let mut out = Vec::new();
    while let Some(p) = decoder.decode(&mut buf).expect("decodes") {
        out.push(p);
    }
    assert!(buf.is_empty(), "whole packets only");
    out
}
