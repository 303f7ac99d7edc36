//! The result of a run: a human summary and one JSON object.

use serde_json::{json, Value};

use super::stats::{si, Percentiles};

/// Connection figures (every scenario; the whole report of `conn`).
#[derive(Debug, Clone, Default)]
pub struct ConnectStats {
    pub attempted: u64,
    pub failed: u64,
    /// Connections still open at the end of the hold (`conn`).
    pub held: u64,
    /// Connections per second achieved while opening (`conn`).
    pub rate: f64,
    /// CONNECT sent (TCP connect started) to CONNACK received.
    pub latency: Percentiles,
    /// The broker's VmRSS before and after opening, KiB (`conn --broker-pid`).
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
}

impl ConnectStats {
    /// Broker memory per connection, bytes.
    pub fn bytes_per_conn(&self) -> Option<f64> {
        let (a, b) = (self.rss_before_kib?, self.rss_after_kib?);
        let opened = self.attempted.saturating_sub(self.failed);
        (opened > 0).then(|| (b as f64 - a as f64) * 1024.0 / opened as f64)
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub broker: String,
    pub version: String,
    pub qos: u8,
    pub payload: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub threads: usize,
    pub rate_per_publisher: f64,
    pub inflight: u16,
    /// The measured window (after warm-up, until the publishers stop).
    pub window_secs: f64,
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub unique: u64,
    /// Deliveries the subscribers should have had.
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Messages that were not the bench's (another publisher's).
    pub foreign: u64,
    pub sent_rate: f64,
    pub acked_rate: f64,
    pub received_rate: f64,
    /// End to end, from the send time in the payload.
    pub latency: Percentiles,
    pub connect: ConnectStats,
    pub errors: Vec<String>,
    pub total_received: u64,
    /// CPU the bench itself used over the run, in cores (1.0 = one core
    /// busy): what it takes from the broker on a shared machine.
    pub bench_cpu_cores: f64,
}

fn pct(p: &Percentiles) -> Value {
    json!({
        "count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99,
        "p999": p.p999, "max": p.max, "mean": p.mean,
    })
}

impl Report {
    /// Lost deliveries as a percentage of those expected.
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / self.expected as f64
        }
    }

    /// One JSON object (latencies in milliseconds, rates per second).
    pub fn to_json(&self) -> Value {
        let c = &self.connect;
        json!({
            "scenario": self.scenario,
            "broker": self.broker,
            "mqtt_version": self.version,
            "qos": self.qos,
            "payload": self.payload,
            "publishers": self.publishers,
            "subscribers": self.subscribers,
            "threads": self.threads,
            "rate_per_publisher": self.rate_per_publisher,
            "inflight": self.inflight,
            "window_secs": self.window_secs,
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "unique": self.unique,
            "expected": self.expected,
            "lost": self.lost,
            "loss_pct": self.loss_pct(),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "sent_rate": self.sent_rate,
            "acked_rate": self.acked_rate,
            "received_rate": self.received_rate,
            "latency_ms": pct(&self.latency),
            "connect": {
                "attempted": c.attempted,
                "failed": c.failed,
                "held": c.held,
                "rate": c.rate,
                "latency_ms": pct(&c.latency),
                "rss_before_kib": c.rss_before_kib,
                "rss_after_kib": c.rss_after_kib,
                "bytes_per_conn": c.bytes_per_conn(),
            },
            "errors": self.errors,
            "bench_cpu_cores": self.bench_cpu_cores,
        })
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.connect;
        s += &format!(
            "{} against {} (MQTT {}, QoS {}, {} B payload)\n",
            self.scenario, self.broker, self.version, self.qos, self.payload
        );
        if self.scenario == "conn" {
            s += &format!(
                "  connections: {} attempted, {} failed, {} held, {}/s opened\n",
                c.attempted,
                c.failed,
                c.held,
                si(c.rate)
            );
            s += &format!(
                "  connect latency ms: p50 {:.3}  p99 {:.3}  max {:.3}\n",
                c.latency.p50, c.latency.p99, c.latency.max
            );
            if let (Some(a), Some(b)) = (c.rss_before_kib, c.rss_after_kib) {
                s += &format!(
                    "  broker RSS: {a} KiB before, {b} KiB after, {:.0} B per connection\n",
                    c.bytes_per_conn().unwrap_or(0.0)
                );
            }
        } else {
            s += &format!(
                "  {} publishers, {} subscribers, {} threads, {:.2} s measured\n",
                self.publishers, self.subscribers, self.threads, self.window_secs
            );
            s += &format!(
                "  rates /s: sent {}  acked {}  received {}\n",
                si(self.sent_rate),
                si(self.acked_rate),
                si(self.received_rate)
            );
            s += &format!(
                "  totals: sent {}  acked {}  received {}  expected {}\n",
                self.sent, self.acked, self.received, self.expected
            );
            s += &format!(
                "  lost {} ({:.3}%)  duplicates {}  reordered {}  foreign {}\n",
                self.lost,
                self.loss_pct(),
                self.duplicates,
                self.reordered,
                self.foreign
            );
            let l = &self.latency;
            s += &format!(
                "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)\n",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
            s += &format!(
                "  connect ms: p50 {:.3}  p99 {:.3}  max {:.3}\n",
                c.latency.p50, c.latency.p99, c.latency.max
            );
            s += &format!(
                "  bench CPU: {:.2} cores over the run\n",
                self.bench_cpu_cores
            );
        }
        for e in self.errors.iter().take(5) {
            s += &format!("  error: {e}\n");
        }
        if self.errors.len() > 5 {
            s += &format!("  ... {} errors in all\n", self.errors.len());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_line_with_the_figures() {
        let r = Report {
            scenario: "fanin".into(),
            expected: 200,
            lost: 2,
            received: 198,
            ..Default::default()
        };
        let line = r.to_json().to_string();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["received"], 198);
        assert_eq!(v["lost"], 2);
        assert_eq!(v["loss_pct"], 1.0);
        assert!(r.summary().contains("lost 2 (1.000%)"));
    }

    #[test]
    fn bytes_per_connection() {
        let c = ConnectStats {
            attempted: 1000,
            failed: 0,
            rss_before_kib: Some(10_000),
            rss_after_kib: Some(11_000),
            ..Default::default()
        };
        assert_eq!(c.bytes_per_conn(), Some(1024.0));
    }
}
