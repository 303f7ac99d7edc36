//! `robust-bench` for MQTT brokers, ours or any other: `conn`, `pub`,
//! `sub`, `fanin`, `fanout`, `p2p`, `sharesub`, and `compare` (Mosquitto
//! against robust-server, written to docs/benchmarks.md).
//!
//! - [`client`]: one connection over a plain socket with the
//!   `robustmq-protocol` codec;
//! - [`scenario`]: the publish/subscribe engine (threads, tasks, batching,
//!   phases);
//! - [`conn`]: the connection storm;
//! - [`seq`], [`payload`], [`pacing`], [`topic`], [`stats`]: the pure parts;
//! - [`report`]: summary and JSON;
//! - [`compare`]: the matrix against Mosquitto.

pub mod client;
pub mod compare;
pub mod conn;
pub mod pacing;
pub mod payload;
pub mod report;
pub mod scenario;
pub mod seq;
pub mod stats;
pub mod topic;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, Subcommand};
use robustmq_protocol::mqtt::{ProtocolVersion, QoS};

use client::{parse_qos, parse_version, ConnOpts};
use report::Report;
use scenario::{Expect, Plan, PubSpec, SubSpec};

/// Options every MQTT scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT version: 3.1.1 (or 4) or 5.
    #[arg(long = "mqtt", default_value = "3.1.1", value_parser = parse_version)]
    pub version: ProtocolVersion,
    /// Client ids are PREFIX-pub-N, PREFIX-sub-N, PREFIX-conn-N.
    #[arg(long, default_value = "bench")]
    pub client_prefix: String,
    /// Keep alive, seconds (pings are sent every half of it).
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Connect with clean session (3.1.1) / clean start (5.0) off.
    #[arg(long)]
    pub no_clean: bool,
    /// Session expiry interval (5.0), seconds.
    #[arg(long)]
    pub session_expiry: Option<u32>,
    /// Worker threads; connections are dealt over them round robin.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds a connection (TCP and CONNACK) may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl CommonArgs {
    fn conn_opts(&self) -> Result<ConnOpts, String> {
        let addr: SocketAddr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.host))?;
        Ok(ConnOpts {
            addr,
            version: self.version,
            keep_alive: self.keepalive,
            clean: !self.no_clean,
            session_expiry: self.session_expiry,
            timeout: secs(self.connect_timeout),
        })
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Message options of the publish/subscribe scenarios.
#[derive(Debug, Clone, Args)]
pub struct MsgArgs {
    /// QoS of the publishers (and of the subscriptions unless --sub-qos).
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// QoS of the subscriptions.
    #[arg(long, value_parser = parse_qos)]
    pub sub_qos: Option<QoS>,
    /// Payload bytes (at least 16: send time, publisher, sequence).
    #[arg(short = 's', long, default_value_t = 64)]
    pub payload_size: usize,
    /// Messages per second per publisher; 0 = as fast as the broker takes
    /// them (TCP back-pressure).
    #[arg(short, long)]
    pub rate: Option<f64>,
    /// Messages per publisher; 0 = until the duration ends.
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Seconds of warm-up (sent, not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(short, long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for the last deliveries after the publishers stop.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Messages per second each subscriber reads at most (0 = unlimited):
    /// a slow consumer, to watch the broker's memory and other clients.
    #[arg(long, default_value_t = 0.0)]
    pub sub_read_rate: f64,
}

/// A scenario with publishers and subscribers.
#[derive(Debug, Clone, Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub msg: MsgArgs,
    /// Publishers (for p2p: pairs).
    #[arg(short = 'P', long)]
    pub publishers: Option<usize>,
    /// Subscribers.
    #[arg(short = 'S', long)]
    pub subscribers: Option<usize>,
    /// Topic the publishers publish to; %i is the publisher's index.
    #[arg(short, long)]
    pub topic: Option<String>,
    /// Filter the subscribers subscribe to; %i is the subscriber's index.
    #[arg(short, long)]
    pub filter: Option<String>,
}

/// `conn` options.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: usize,
    /// Connections opened per second; 0 = all at once.
    #[arg(short, long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds to hold them open once all are open.
    #[arg(short, long, default_value_t = 5.0)]
    pub duration: f64,
    /// The broker's pid: its VmRSS is read before and after.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// The MQTT subcommands of robust-bench.
#[derive(Debug, Subcommand)]
pub enum MqttCommand {
    /// Opens N connections at R per second and holds them (connect latency, failures, broker RSS).
    Conn(ConnArgs),
    /// Publishers only (sent and acknowledged rates).
    Pub(PubSubArgs),
    /// Subscribers only (received rate, latency, loss from sequence gaps).
    Sub(PubSubArgs),
    /// N publishers -> M subscribers on a wildcard (default 8 -> 1 on t/#).
    Fanin(PubSubArgs),
    /// 1 publisher -> N subscribers (default 1 -> 50).
    Fanout(PubSubArgs),
    /// N pairs, publisher i -> subscriber i (default 50 pairs at 200 msgs/s).
    P2p(PubSubArgs),
    /// N publishers -> a shared subscription of M members (default 8 -> $share/g/t/# x 4).
    Sharesub(PubSubArgs),
    /// Runs the matrix against Mosquitto and robust-server and writes docs/benchmarks.md.
    Compare(compare::CompareArgs),
}

/// Defaults of one scenario: publishers, subscribers, topic, filter, rate.
struct Defaults {
    publishers: usize,
    subscribers: usize,
    topic: &'static str,
    filter: &'static str,
    rate: f64,
}

fn build_plan(name: &str, a: &PubSubArgs, d: Defaults) -> Result<Plan, String> {
    let conn = a.common.conn_opts()?;
    let n_pub = a.publishers.unwrap_or(d.publishers);
    let n_sub = a.subscribers.unwrap_or(d.subscribers);
    let topic = a.topic.clone().unwrap_or_else(|| d.topic.to_string());
    let filter = a.filter.clone().unwrap_or_else(|| d.filter.to_string());
    let prefix = &a.common.client_prefix;
    let publishers = (0..n_pub)
        .map(|i| PubSpec {
            client_id: format!("{prefix}-pub-{i}"),
            topic: topic::expand(&topic, i),
        })
        .collect();
    let subscribers = (0..n_sub)
        .map(|i| SubSpec {
            client_id: format!("{prefix}-sub-{i}"),
            filter: topic::expand(&filter, i),
            group: match name {
                "sharesub" => 0,
                _ => i,
            },
            expect: match name {
                "sub" => Expect::Unknown,
                "p2p" => Expect::One(i as u32),
                _ => Expect::All,
            },
        })
        .collect();
    let m = &a.msg;
    Ok(Plan {
        scenario: name.to_string(),
        conn,
        publishers,
        subscribers,
        qos: m.qos,
        sub_qos: m.sub_qos.unwrap_or(m.qos),
        payload: m.payload_size,
        rate: m.rate.unwrap_or(d.rate),
        count: m.count,
        inflight: m.inflight,
        warmup: secs(m.warmup),
        duration: secs(m.duration),
        drain: secs(m.drain),
        sub_read_rate: m.sub_read_rate,
        threads: a.common.threads,
        progress: !a.common.quiet,
    })
}

/// The plan of a publish/subscribe subcommand.
pub fn plan_for(cmd: &MqttCommand) -> Result<Plan, String> {
    let d = |publishers, subscribers, topic, filter, rate| Defaults {
        publishers,
        subscribers,
        topic,
        filter,
        rate,
    };
    match cmd {
        MqttCommand::Pub(a) => build_plan("pub", a, d(1, 0, "t/%i", "t/#", 0.0)),
        MqttCommand::Sub(a) => build_plan("sub", a, d(0, 1, "t/%i", "t/#", 0.0)),
        MqttCommand::Fanin(a) => build_plan("fanin", a, d(8, 1, "t/%i", "t/#", 0.0)),
        MqttCommand::Fanout(a) => build_plan("fanout", a, d(1, 50, "t/%i", "t/#", 0.0)),
        MqttCommand::P2p(a) => {
            let n = a.publishers.or(a.subscribers).unwrap_or(50);
            let mut a = a.clone();
            a.publishers = Some(n);
            a.subscribers = Some(n);
            build_plan("p2p", &a, d(n, n, "p/%i", "p/%i", 200.0))
        }
        MqttCommand::Sharesub(a) => build_plan("sharesub", a, d(8, 4, "t/%i", "$share/g/t/#", 0.0)),
        MqttCommand::Conn(_) | MqttCommand::Compare(_) => Err("not a pub/sub scenario".into()),
    }
}

fn print(report: &Report, json: bool) {
    print!("{}", report.summary());
    if json {
        println!("{}", report.to_json());
    }
}

/// Runs an MQTT subcommand.
pub fn run(cmd: MqttCommand) -> Result<(), String> {
    match &cmd {
        MqttCommand::Conn(a) => {
            let plan = conn::ConnPlan {
                conn: a.common.conn_opts()?,
                client_prefix: a.common.client_prefix.clone(),
                count: a.count,
                rate: a.rate,
                hold: secs(a.duration),
                threads: a.common.threads,
                broker_pid: a.broker_pid,
                progress: !a.common.quiet,
            };
            let r = conn::run(plan)?;
            print(&r, a.common.json);
            if r.connect.failed > 0 {
                return Err(format!("{} connections failed", r.connect.failed));
            }
            Ok(())
        }
        MqttCommand::Compare(a) => compare::run(a),
        _ => {
            let json = match &cmd {
                MqttCommand::Pub(a)
                | MqttCommand::Sub(a)
                | MqttCommand::Fanin(a)
                | MqttCommand::Fanout(a)
                | MqttCommand::P2p(a)
                | MqttCommand::Sharesub(a) => a.common.json,
                _ => false,
            };
            let r = scenario::run(plan_for(&cmd)?)?;
            print(&r, json);
            Ok(())
        }
    }
}
