//! Deadlines: which connections' keep-alive and which offline sessions'
//! expiry may fall due, so that a clock tick looks only at those instead of
//! at every connection and session (a pass over 5,000 connections took
//! 1-1.7 ms of a core at every tick; at 100,000 it would stall the core
//! for tens of milliseconds five times a second).
//!
//! A min-heap of (when, key), read lazily: an entry only says "look at
//! this key then"; its owner decides at that time whether the key is due,
//! due later (pushed again), or gone (dropped). Entries of keys that went
//! away stay until their time comes or a compaction drops them;
//! compaction runs when the heap holds more than twice the live keys plus
//! [`SLACK`], so memory stays proportional to what is live, and its cost,
//! spread over the pushes that made it necessary, is constant per push.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Entries the heap may hold beyond twice the live keys before it is
/// compacted.
const SLACK: usize = 1024;

/// Keys in the order of their deadlines. A deadline is kept as
/// nanoseconds since `base` (8 bytes instead of an `Instant`'s 16: one
/// entry per connection with a keep-alive, 16 bytes with a connection id).
#[derive(Debug)]
pub(super) struct Deadlines<K: Ord> {
    base: Instant,
    heap: BinaryHeap<Reverse<(u64, K)>>,
}

impl<K: Ord> Deadlines<K> {
    /// Deadlines no earlier than `base`.
    pub(super) fn new(base: Instant) -> Self {
        Deadlines {
            base,
            heap: BinaryHeap::new(),
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Look at `key` at `at` (or at the first pop after it).
    pub(super) fn push(&mut self, at: Instant, key: K) {
        if self.heap.len() == self.heap.capacity() {
            // Grow by a quarter, not twice: the heap is as large as the
            // connections, and its slack counts in each one's memory.
            self.heap.reserve_exact(self.heap.len() / 4 + 16);
        }
        let at = self.offset(at);
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry, if its time has come by `now`: its deadline
    /// (exactly as pushed) and key.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let now = self.offset(now);
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((at, key))| (self.base + Duration::from_nanos(at), key)),
            _ => None,
        }
    }

    /// Entries held, live or not.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries `keep` rejects once the heap holds more than twice
    /// `live` (the keys that can have an entry) plus the slack.
    pub(super) fn compact(&mut self, live: usize, mut keep: impl FnMut(Instant, &K) -> bool) {
        if self.heap.len() <= live.saturating_mul(2).saturating_add(SLACK) {
            return;
        }
        let base = self.base;
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((at, key))| keep(base + Duration::from_nanos(*at), key));
        self.heap = BinaryHeap::from(entries);
        self.heap
            .shrink_to(live.saturating_mul(2).saturating_add(SLACK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::new(t0);
        d.push(at(30), 3u64);
        d.push(at(10), 1);
        d.push(at(20), 2);
        assert_eq!(d.pop_due(at(5)), None);
        assert_eq!(d.pop_due(at(20)), Some((at(10), 1)));
        assert_eq!(d.pop_due(at(20)), Some((at(20), 2)));
        assert_eq!(d.pop_due(at(20)), None);
        assert_eq!(d.pop_due(at(100)), Some((at(30), 3)));
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn compaction_keeps_the_live_and_bounds_the_dead() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        // 10 live keys, then churn: 100,000 keys that came and went.
        for k in 0..100_010u64 {
            d.push(t0 + Duration::from_secs(k % 97), k);
            d.compact(10, |_, k| *k < 10);
            assert!(d.len() <= 2 * 10 + SLACK + 1, "heap grew to {}", d.len());
        }
        let mut left = Vec::new();
        while let Some((_, k)) = d.pop_due(t0 + Duration::from_secs(1000)) {
            left.push(k);
        }
        // Every live key survives every compaction.
        for k in 0..10 {
            assert!(left.contains(&k), "live key {k} was dropped");
        }
    }
}
