//! Counters shared with the progress line, and latency histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

/// One worker thread's counters. Only that thread writes them (one add per
/// batch, not per message); the main thread reads them for the progress
/// line. Padded so that two threads' counters never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// PUBLISH packets written by publishers.
    pub sent: AtomicU64,
    /// PUBACK / PUBCOMP received by publishers.
    pub acked: AtomicU64,
    /// PUBLISH packets received by subscribers.
    pub received: AtomicU64,
    /// Publishers that finished (sent all and got every acknowledgement).
    pub publishers_done: AtomicU64,
    /// Connections that ended with an error.
    pub errors: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter that only this thread writes.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.store(c.load(Relaxed) + n, Relaxed);
        }
    }
}

/// A snapshot of the counters of every thread, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub publishers_done: u64,
    pub errors: u64,
}

impl Totals {
    /// Sums the counters of all threads.
    pub fn of(counters: &[Counters]) -> Totals {
        let mut t = Totals::default();
        for c in counters {
            t.sent += c.sent.load(Relaxed);
            t.acked += c.acked.load(Relaxed);
            t.received += c.received.load(Relaxed);
            t.publishers_done += c.publishers_done.load(Relaxed);
            t.errors += c.errors.load(Relaxed);
        }
        t
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in nanoseconds, in milliseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
        }
    }
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat
/// (clock ticks of 1/100 s).
pub fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// `1234567.0` -> `"1.23M"`: for the progress line and the summary.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_threads() {
        let cs: Vec<Counters> = (0..3).map(|_| Counters::default()).collect();
        Counters::add(&cs[0].sent, 5);
        Counters::add(&cs[2].sent, 7);
        Counters::add(&cs[1].received, 3);
        let t = Totals::of(&cs);
        assert_eq!((t.sent, t.received, t.acked), (12, 3, 0));
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap(); // 1 us .. 1 ms
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 0.5).abs() < 0.001, "{p:?}");
        assert!((p.p99 - 0.99).abs() < 0.001, "{p:?}");
        assert!((p.max - 1.0).abs() < 0.001, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()).count, 0);
    }

    #[test]
    fn cpu_time_grows() {
        let a = process_cpu_secs();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_cpu_secs() >= a);
    }

    #[test]
    fn si_units() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(1_234_567.0), "1.23M");
    }
}
