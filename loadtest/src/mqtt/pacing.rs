//! Rate pacing: how many events a pacer allows after some time, and when
//! the next one is due. A rate of 0 means unlimited.
//!
//! Event `n` (from 0) is due at `offset + n / rate`; several pacers of one
//! rate are spread over one period by their offsets so that they do not all
//! fire together.

use std::time::Duration;

/// A fixed-rate schedule.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    /// Events per second; 0 = unlimited.
    rate: f64,
    /// When event 0 is due, after the start.
    offset: Duration,
}

impl Pacer {
    /// A pacer of `rate` events per second (0 = unlimited), starting at 0.
    pub fn new(rate: f64) -> Self {
        Pacer {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            offset: Duration::ZERO,
        }
    }

    /// The `index`-th of `of` pacers of one rate: its first event is due
    /// `index / of` of a period after the start.
    pub fn spread(rate: f64, index: usize, of: usize) -> Self {
        let mut p = Pacer::new(rate);
        if p.rate > 0.0 && of > 1 {
            let period = 1.0 / p.rate;
            p.offset = Duration::from_secs_f64(period * (index % of) as f64 / of as f64);
        }
        p
    }

    /// Whether the rate is unlimited.
    pub fn unlimited(&self) -> bool {
        self.rate == 0.0
    }

    /// How many events (in total, from 0) are allowed by `elapsed`.
    pub fn allowed(&self, elapsed: Duration) -> u64 {
        if self.unlimited() {
            return u64::MAX;
        }
        let Some(t) = elapsed.checked_sub(self.offset) else {
            return 0;
        };
        // Event n is due at n / rate: events 0..=floor(t * rate) are due.
        (t.as_secs_f64() * self.rate + 1e-6).floor() as u64 + 1
    }

    /// When event `n` is due, after the start; `Duration::ZERO` if unlimited.
    pub fn due(&self, n: u64) -> Duration {
        if self.unlimited() {
            return Duration::ZERO;
        }
        self.offset + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn unlimited_allows_everything() {
        let p = Pacer::new(0.0);
        assert!(p.unlimited());
        assert_eq!(p.allowed(Duration::ZERO), u64::MAX);
        assert_eq!(p.due(1_000_000), Duration::ZERO);
        assert!(Pacer::new(-5.0).unlimited());
        assert!(Pacer::new(f64::NAN).unlimited());
    }

    #[test]
    fn allowed_counts_due_events() {
        let p = Pacer::new(200.0); // one every 5 ms
        assert_eq!(p.allowed(ms(0)), 1);
        assert_eq!(p.allowed(ms(4)), 1);
        assert_eq!(p.allowed(ms(5)), 2);
        assert_eq!(p.allowed(ms(999)), 200);
        assert_eq!(p.allowed(ms(1000)), 201);
        assert_eq!(p.allowed(Duration::from_secs(10)), 2001);
    }

    #[test]
    fn due_is_the_inverse_of_allowed() {
        let p = Pacer::new(2000.0);
        for n in [0u64, 1, 2, 1999, 2000, 123_456] {
            let t = p.due(n);
            assert_eq!(p.allowed(t), n + 1, "n = {n}");
            if n > 0 {
                assert_eq!(p.allowed(t - Duration::from_nanos(1000)), n, "n = {n}");
            }
        }
    }

    #[test]
    fn spread_offsets_pacers_within_one_period() {
        let a = Pacer::spread(200.0, 0, 4);
        let b = Pacer::spread(200.0, 1, 4);
        let d = Pacer::spread(200.0, 3, 4);
        assert_eq!(a.due(0), ms(0));
        assert_eq!(b.due(0), Duration::from_micros(1250));
        assert_eq!(d.due(0), Duration::from_micros(3750));
        assert_eq!(b.allowed(ms(1)), 0);
        assert_eq!(b.allowed(ms(2)), 1);
        assert_eq!(b.due(2), Duration::from_micros(11250));
        // Unlimited pacers are not offset.
        assert_eq!(Pacer::spread(0.0, 3, 4).due(0), Duration::ZERO);
    }
}
